"""optitrack.testing._server: serve() and serve_in_thread() over loopback sockets."""

from __future__ import annotations

import gzip
from collections.abc import MutableMapping
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from optitrack.testing import (
    MAX_BODY_SIZE,
    ASGIReceive,
    ASGISend,
    EventsAPI,
    Hang,
    Reset,
    Respond,
    SimulatedReset,
    serve,
    serve_in_thread,
)
from tests.testing.conftest import CONVERSION_BODY, GUARD, IMPRESSION_BODY, JSON, server_threads

pytestmark = pytest.mark.anyio


async def test_serve_accepts_and_keeps_connections_alive() -> None:
    api = EventsAPI()
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            assert server.url == f"http://127.0.0.1:{server.port}/v1/events"
            assert server.base_url == f"http://127.0.0.1:{server.port}"
            responses = [
                await http.post(server.url, content=body, headers=JSON)
                for body in (IMPRESSION_BODY, CONVERSION_BODY, CONVERSION_BODY)
            ]
            stats = await http.get(server.base_url + "/v1/stats")

    assert [r.status_code for r in responses] == [204, 204, 204]
    assert stats.json()["events"] == 3
    assert server.connections == 1
    clients = {r.client for r in api.requests}
    assert len(clients) == 1
    assert next(iter(clients)) is not None


async def test_serve_hang_lets_the_client_timeout_fire() -> None:
    api = EventsAPI(faults=[Hang()])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON, timeout=0.1)
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert after.status_code == 204
    assert api.requests[0].fault == Hang()


async def test_serve_stops_cleanly_while_a_request_hangs() -> None:
    api = EventsAPI()
    api.fail_all(Hang())
    outcome: list[BaseException] = []
    with anyio.fail_after(GUARD):
        # The task group outlives the server: leaving serve() must end the hung requests.
        async with (
            httpx.AsyncClient() as http,
            anyio.create_task_group() as tg,
            serve(api) as server,
        ):

            async def hang() -> None:
                try:
                    await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
                except httpx.TransportError as exc:
                    outcome.append(exc)

            tg.start_soon(hang)
            tg.start_soon(hang)
            await api.wait_for_requests(2)

    # The server closed the held connections: the client saw them go.
    assert len(outcome) == 2
    assert all(isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) for exc in outcome)


async def test_serve_reset_is_a_transport_error() -> None:
    api = EventsAPI(faults=[Reset()])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            with pytest.raises(httpx.TransportError) as caught:
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert not isinstance(caught.value, SimulatedReset)  # a real reset, from the socket
    assert after.status_code == 204
    assert server.connections == 2


async def test_serve_retry_after_gzip_and_413() -> None:
    api = EventsAPI(faults=[Respond(429, retry_after="3")])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            throttled = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
            zipped = await http.post(
                server.url,
                content=gzip.compress(CONVERSION_BODY),
                headers={**JSON, "content-encoding": "gzip"},
            )
            too_large = await http.post(
                server.url, content=b" " * (MAX_BODY_SIZE + 1), headers=JSON
            )
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "3")
    assert zipped.status_code == 204
    assert too_large.status_code == 413  # the body was drained: a 413, not a reset
    assert after.status_code == 204
    assert server.connections == 1


async def test_serve_answers_pipelined_requests_in_order() -> None:
    api = EventsAPI()
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(CONVERSION_BODY)
    ) + CONVERSION_BODY
    closing = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(request + request + closing)
                received = b""
                while True:
                    try:
                        received += await stream.receive()
                    except anyio.EndOfStream:
                        break

    assert received.count(b"HTTP/1.1 204 ") == 2
    assert received.rstrip().endswith(b'"no such path: /nope"}')
    assert api.event_count == 2


async def test_serve_answers_500_when_the_app_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        raise RuntimeError("bug")

    with anyio.fail_after(GUARD):
        async with serve(broken) as server, httpx.AsyncClient() as http:
            response = await http.get(server.base_url)

    assert response.status_code == 500
    assert "the ASGI app failed" in caplog.text


async def raw_exchange(server: Any, *chunks: bytes) -> bytes:
    """Send raw bytes on a fresh connection, then read until the server closes it."""
    stream = await anyio.connect_tcp(server.host, server.port)
    async with stream:
        for chunk in chunks:
            await stream.send(chunk)
        received = b""
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


async def test_serve_answers_400_to_malformed_http() -> None:
    with anyio.fail_after(GUARD):
        async with serve(EventsAPI()) as server:
            received = await raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n")

    assert received.startswith(b"HTTP/1.1 400 ")


async def test_serve_survives_a_client_leaving_mid_body() -> None:
    api = EventsAPI()
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(
                    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n" + CONVERSION_BODY[:10]
                )
            async with httpx.AsyncClient() as http:
                response = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert response.status_code == 204
    assert api.request_count == 1


async def test_serve_sends_100_continue() -> None:
    api = EventsAPI()
    head = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(CONVERSION_BODY)
    )
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(head)
                interim = await stream.receive()
                await stream.send(CONVERSION_BODY)
                final = await stream.receive()

    assert interim.startswith(b"HTTP/1.1 100 ")
    assert final.startswith(b"HTTP/1.1 204 ")
    assert api.event_count == 1


async def test_serve_runs_any_asgi_app() -> None:
    async def app(scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["path"] == "/silent":
            return  # never answers: the server answers 500
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    with anyio.fail_after(GUARD):
        async with serve(app) as server, httpx.AsyncClient() as http:
            streamed = await http.get(server.base_url + "/stream")
            silent = await http.get(server.base_url + "/silent")

    assert (streamed.status_code, streamed.text) == (200, "one two")
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert silent.status_code == 500
    assert repr(server) == f"<Server http://127.0.0.1:{server.port}>"


async def test_serve_lets_the_callers_exception_out_as_itself() -> None:
    cause = OSError("cause")
    with pytest.raises(KeyError, match="mine") as caught:
        async with serve(EventsAPI()):
            raise KeyError("mine") from cause

    assert caught.value.__cause__ is cause


def raise_while_handling() -> None:
    try:
        raise OSError("first")
    except OSError:
        raise KeyError("second")  # noqa: B904 - the implicit chaining is the point


async def test_serve_keeps_the_callers_implicit_chaining() -> None:
    with pytest.raises(KeyError) as caught:
        async with serve(EventsAPI()):
            raise_while_handling()

    assert isinstance(caught.value.__context__, OSError)
    assert not caught.value.__suppress_context__


async def test_serve_stops_when_the_caller_is_cancelled() -> None:
    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:
        async with serve(EventsAPI()) as server, httpx.AsyncClient() as http:
            await http.post(server.url, content=CONVERSION_BODY, headers=JSON)  # a live connection
            scope.cancel()
            await anyio.sleep_forever()

    assert scope.cancelled_caught


async def test_serve_binds_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with serve(EventsAPI(), host="0.0.0.0"):
            pass
    with pytest.raises(ValueError, match="loopback"):
        async with serve(EventsAPI(), host="example.com"):
            pass
    async with serve(EventsAPI(), host="localhost") as server:
        assert server.host == "127.0.0.1"


# In a thread --------------------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_thread")
def test_serve_in_thread_for_sync_code() -> None:
    api = EventsAPI(faults=[Respond(503)])
    with serve_in_thread(api) as server, httpx.Client() as http:
        assert len(server_threads()) == 1
        statuses = [
            http.post(server.url, content=CONVERSION_BODY, headers=JSON).status_code
            for _ in range(2)
        ]

    assert statuses == [503, 204]
    assert api.event_count == 1
