"""The sender reading answers (optitrack/_delivery/sender.py): a 2xx counts at its status
line whatever its body, an answer is read at most RESPONSE_READ_CAP bytes, 307/308 are
followed once, other 3xx dropped aloud, and a 413 teaches the endpoint's size limit.

Huge and slow bodies come from a small h11 server on 127.0.0.1 that counts the bytes it
managed to write before the client closed the connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import h11
import httpx
import pytest

import optitrack
from optitrack._delivery.sender import RESPONSE_READ_CAP
from optitrack.testing import EventsAPI, Hang
from tests.conftest import check_ledger
from tests.delivery.conftest import FAST

pytestmark = pytest.mark.anyio

ORIGIN = "http://events.test"


@asynccontextmanager
async def client_at(
    app: Any, datafile: dict[str, Any], endpoint: str, **options: Any
) -> AsyncIterator[optitrack.Client]:
    """A running client posting to ``endpoint``, in-process to ``app``."""
    options.setdefault("retry", FAST)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
        optitrack.Client(datafile, event_endpoint=endpoint, http_client=http, **options) as client,
    ):
        yield client


class Redirecting:
    """Answers ``status`` with ``location`` on ``/old`` (and ``/older``), after ``delay``
    seconds; passes the rest."""

    def __init__(self, app: Any, status: int, location: str, delay: float = 0.0) -> None:
        self.app = app
        self.status = status
        self.location = location
        self.delay = delay  # before answering: a slow endpoint
        self.redirected = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http" and scope["path"] in ("/old", "/older"):
            self.redirected += 1
            while (await receive()).get("more_body"):
                pass
            if self.delay:
                await anyio.sleep(self.delay)
            headers = [(b"location", self.location.encode())]
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            await send({"type": "http.response.body", "body": b"moved"})
            return
        await self.app(scope, receive, send)


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("location", ["/v1/events", f"{ORIGIN}/v1/events"])
async def test_307_and_308_are_followed_once_with_the_same_body(
    datafile: dict[str, Any], status: int, location: str
) -> None:
    api = EventsAPI()
    app = Redirecting(api, status, location)
    async with client_at(app, datafile, f"{ORIGIN}/old") as client:
        for n in range(3):
            await client.track("purchase", f"u{n}")
        result = await client.flush()
        stats = client.statistics()
    assert result.delivered == 3
    assert app.redirected == 1
    assert [v.visitor_id for v in api.visitors] == ["u0", "u1", "u2"]
    assert [r.method for r in api.requests] == ["POST"]
    assert stats.dropped == {}
    check_ledger(stats)


async def test_a_redirect_and_its_follow_up_share_the_attempts_time_limit(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Hang())  # the follow-up is never answered
    app = Redirecting(api, 307, "/v1/events", delay=0.4)
    retry = optitrack.RetryPolicy(attempts=1, attempt_timeout=0.6)
    async with client_at(app, datafile, f"{ORIGIN}/old", retry=retry) as client:
        await client.track("purchase", "u")
        started = anyio.current_time()
        with anyio.fail_after(5):
            result = await client.flush()
        elapsed = anyio.current_time() - started
        stats = client.statistics()
    assert result.dropped == 1
    assert stats.dropped == {"retries_exhausted": 1}
    assert (app.redirected, len(api.requests)) == (1, 1)
    # 0.6 s for the attempt, both requests in it; not 0.6 s for each (1.0 s in all).
    assert 0.55 < elapsed < 0.9
    check_ledger(stats)


@pytest.mark.parametrize(
    ("status", "location"),
    [
        (301, "/v1/events"),
        (302, "/v1/events"),
        (303, "/v1/events"),
        (307, "ftp://events.test/v1/events"),
        (308, "/older"),  # a second redirect is not followed
        (307, ""),
    ],
)
async def test_other_redirects_are_dropped_with_a_warning(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture, status: int, location: str
) -> None:
    api = EventsAPI()
    app = Redirecting(api, status, location)
    async with client_at(app, datafile, f"{ORIGIN}/old") as client:
        await client.track("purchase", "u1")
        await client.track("purchase", "u2")
        result = await client.flush()
        stats = client.statistics()
    assert result.dropped == 2
    assert stats.dropped == {f"http_{status}": 2}
    assert api.requests == []
    assert app.redirected == (2 if location == "/older" else 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"answered {status}" in m and "redirect" in m for m in warnings)
    check_ledger(stats)


async def test_answer_bodies_stay_out_of_warnings(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    secret = "visitor u1 bought " + "x" * 5000
    api = EventsAPI(faults=[optitrack.testing.Respond(422, body=secret)])
    async with client_at(api, datafile, f"{ORIGIN}/v1/events") as client:
        await client.track("purchase", "u1")
        await client.flush()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("answered 422" in m for m in loud)
    assert not any("bought" in m for m in loud)
    quiet = [r.getMessage() for r in caplog.records if "bought" in r.getMessage()]
    assert quiet
    assert all(len(m) < 1000 for m in quiet)  # capped


class BodyServer:
    """An HTTP/1.1 server answering every POST with ``status`` and a body of ``length``
    bytes, written ``chunk`` bytes at a time, every ``pause`` seconds, until the client
    closes the connection. Counts requests and the body bytes written."""

    def __init__(self, status: int, length: int, chunk: int, pause: float) -> None:
        self.status = status
        self.length = length
        self.chunk = chunk
        self.pause = pause
        self.requests = 0
        self.written = 0
        self.port = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive(65536))
                        continue
                    if isinstance(event, h11.EndOfMessage):
                        break
                    if isinstance(event, h11.ConnectionClosed):
                        return
                self.requests += 1
                head = h11.Response(
                    status_code=self.status, headers=[("Content-Length", str(self.length))]
                )
                await stream.send(conn.send(head) or b"")
                block = b"x" * self.chunk
                while True:
                    await stream.send(conn.send(h11.Data(data=block)) or b"")
                    self.written += len(block)
                    if self.pause:
                        await anyio.sleep(self.pause)  # the server's pace, not a wait
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                return
            except OSError:
                return


@asynccontextmanager
async def body_server(server: BodyServer) -> AsyncIterator[str]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
    assert isinstance(sockname, tuple)
    server.port = int(sockname[1])
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield f"http://127.0.0.1:{server.port}/v1/events"
        finally:
            tg.cancel_scope.cancel()


async def test_a_200_with_a_huge_body_is_delivered_once_and_not_read(
    datafile: dict[str, Any],
) -> None:
    server = BodyServer(200, length=1 << 30, chunk=64 * 1024, pause=0.0)
    with anyio.fail_after(20):
        async with (
            body_server(server) as url,
            httpx.AsyncClient() as http,
            optitrack.Client(
                datafile, event_endpoint=url, http_client=http, retry=FAST, batch_size=2
            ) as client,
        ):
            for n in range(6):
                await client.track("purchase", f"u{n}")
            result = await client.flush()
            stats = client.statistics()
    assert result.delivered == 6
    assert stats.requests == server.requests == 3  # once per batch: no duplicates
    assert stats.retries == 0
    # What the server got out before the client closed: the read cap plus what the
    # sockets' buffers hold, far from the 1 GiB announced.
    assert server.written <= 3 * (RESPONSE_READ_CAP + 16 * 1024 * 1024)
    check_ledger(stats)


async def test_a_200_with_a_slow_body_is_delivered_once(datafile: dict[str, Any]) -> None:
    server = BodyServer(200, length=10_000_000, chunk=1, pause=0.05)
    retry = optitrack.RetryPolicy(attempts=3, attempt_timeout=2.0, wait_initial=0.001)
    with anyio.fail_after(20):
        async with (
            body_server(server) as url,
            httpx.AsyncClient() as http,
            optitrack.Client(
                datafile, event_endpoint=url, http_client=http, retry=retry, batch_size=2
            ) as client,
        ):
            for n in range(4):
                await client.track("purchase", f"u{n}")
            result = await client.flush()
            stats = client.statistics()
    assert result.delivered == 4
    assert stats.dropped == {}
    assert stats.requests == server.requests == 2
    assert server.written < 100  # a trickle, cut off: never waited out
    check_ledger(stats)


async def test_a_413_teaches_the_limit_and_every_event_that_fits_is_delivered(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(max_body_size=10_000)
    async with client_at(
        api, datafile, f"{ORIGIN}/v1/events", batch_size=500, flush_interval=60
    ) as client:
        for n in range(5000):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
        stats = client.statistics()
    assert stats.delivered == 5000
    assert stats.dropped == {}
    assert api.event_count == 5000
    assert api.duplicate_uuids() == {}
    refused = [r for r in api.requests if r.status == 413]
    # Learned once: later batches are split before they are sent.
    assert len(refused) <= 12
    assert len(api.requests) - len(refused) == len(api.batches)
    check_ledger(stats)


async def test_a_100kb_limit_costs_a_few_refusals_not_some_per_batch(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(max_body_size=100_000)
    async with client_at(
        api, datafile, f"{ORIGIN}/v1/events", batch_size=1000, flush_interval=60
    ) as client:
        for n in range(10_000):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
    assert client.statistics().delivered == 10_000
    assert client.statistics().dropped == {}
    refused = [r for r in api.requests if r.status == 413]
    assert 1 <= len(refused) <= 8


async def test_only_an_event_refused_alone_is_dropped_as_413(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(max_body_size=3000)
    async with client_at(
        api, datafile, f"{ORIGIN}/v1/events", batch_size=100, flush_interval=60
    ) as client:
        for n in range(100):
            tags = {"blob": "y" * 5000} if n == 42 else {"revenue": 1}
            await client.track("purchase", f"u{n}", None, tags)
        assert (await client.flush()).complete
        stats = client.statistics()
    assert stats.delivered == 99
    assert stats.dropped == {"http_413": 1}
    delivered = [v.visitor_id for v in api.visitors]
    assert delivered == [f"u{n}" for n in range(100) if n != 42]
    check_ledger(stats)
