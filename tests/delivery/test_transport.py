"""The lean transport (optitrack/_delivery/transport.py): keep-alive reuse, stale
connections, resets, timeouts, answer framing and the read cap, TLS, the pool bound, and
the pool kept by process.

Servers are small scripted ones on 127.0.0.1 (each connection handled by a function of
its own), the Events API stand-in through ``serve``, or both behind TLS with a trustme CA.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import h11
import httpx
import pytest
import trustme
from anyio.streams.tls import TLSListener

from optitrack._delivery.transport import (
    RESPONSE_READ_CAP,
    Answer,
    HttpxTransport,
    LeanTransport,
    Timeouts,
)
from optitrack.testing import EventsAPI, serve
from tests.delivery.conftest import Gate, context, visitor

pytestmark = pytest.mark.anyio

QUICK = Timeouts.uniform(5.0, 0.5)
HEADERS = {"Content-Type": "application/json"}
BODY = context("http://127.0.0.1/v1/events").body([visitor("u")])  # the stand-in takes it

Handler = Callable[[anyio.abc.ByteStream, int], Awaitable[None]]


class Scripted:
    """A loopback server whose ``n``-th connection (from 0) is handled by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self.url = ""

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        number = self.connections
        self.connections += 1
        async with stream:
            with suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                await self.handler(stream, number)

    async def read_request(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> bool:
        """Read one whole request; ``False`` when the client closed the connection."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    conn.receive_data(b"")
            elif isinstance(event, h11.EndOfMessage):
                self.requests += 1
                return True
            elif isinstance(event, h11.ConnectionClosed):
                return False


@asynccontextmanager
async def scripted(
    handler: Handler, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Scripted]:
    server = Scripted(handler)
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = tcp
    if tls is not None:
        listener = TLSListener(tcp, tls, standard_compatible=False)
    server.url = f"{'https' if tls else 'http'}://{host}:{port}/v1/events"
    with anyio.fail_after(30):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, server.handle)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()


def answer(status: int = 204, body: bytes = b"", **headers: str) -> bytes:
    """A complete answer's bytes, framed by Content-Length."""
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def reset(stream: anyio.abc.ByteStream) -> None:
    """Make closing ``stream`` abort the connection with a TCP reset."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def keep_alive(server: Scripted, stream: anyio.abc.ByteStream, count: int) -> None:
    """Answer 204 to ``count`` requests on one connection, then close it."""
    conn = h11.Connection(h11.SERVER)
    for _ in range(count):
        if not await server.read_request(stream, conn):
            return
        await stream.send(answer(204))
        conn.send(h11.Response(status_code=204, headers=[("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


async def test_a_connection_is_kept_alive_and_reused() -> None:
    api = EventsAPI()
    transport = LeanTransport(4)
    async with serve(api) as server:
        try:
            for _ in range(5):
                got = await transport.post(server.url, BODY, HEADERS, QUICK)
                assert got.status == 204
        finally:
            await transport.aclose()
    assert transport.connections == server.connections == 1
    assert len(api.requests) == 5
    assert api.requests[0].headers["content-type"] == "application/json"


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    closed = anyio.Event()

    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await keep_alive(server, stream, 1 if number == 0 else 10)
        if number == 0:
            await stream.aclose()
            closed.set()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        assert (await transport.post(server.url, BODY, HEADERS, QUICK)).status == 204
        await closed.wait()
        assert (await transport.post(server.url, BODY, HEADERS, QUICK)).status == 204
        await transport.aclose()
    assert server.connections == 2
    assert server.requests == 2  # the closed connection was noticed before sending


async def test_a_reused_connection_closed_before_any_answer_is_retried_once_fresh() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        if number == 0:
            conn = h11.Connection(h11.SERVER)
            await server.read_request(stream, conn)
            await stream.send(answer(204))
            conn = h11.Connection(h11.SERVER)
            await server.read_request(stream, conn)  # read, then closed unanswered
            return
        await keep_alive(server, stream, 10)

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        assert (await transport.post(server.url, BODY, HEADERS, QUICK)).status == 204
        assert (await transport.post(server.url, BODY, HEADERS, QUICK)).status == 204
        await transport.aclose()
    assert server.connections == 2
    assert server.requests == 3


async def test_a_fresh_connection_closed_before_any_answer_is_an_error() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await transport.post(server.url, BODY, HEADERS, QUICK)
    assert server.connections == server.requests == 1  # not retried here


async def test_a_reset_before_the_answer_is_a_read_error() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        reset(stream)

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        with pytest.raises(httpx.TransportError):
            await transport.post(server.url, BODY, HEADERS, QUICK)
    assert server.requests == 1


async def test_a_reset_mid_answer_keeps_the_status_and_drops_the_connection() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        await stream.send(b"HTTP/1.1 503 X\r\nContent-Length: 1000\r\nRetry-After: 3\r\n\r\nbusy")
        reset(stream)

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        for _ in range(2):
            got = await transport.post(server.url, BODY, HEADERS, QUICK)
            assert (got.status, got.headers["retry-after"]) == (503, "3")
            assert got.body in (b"", b"busy")
    assert transport.connections == server.connections == 2


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_answers_framed_either_way_are_read_and_the_connection_kept(framing: str) -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        conn = h11.Connection(h11.SERVER)
        for _ in range(2):
            await server.read_request(stream, conn)
            if framing == "chunked":
                head = [("Transfer-Encoding", "chunked"), ("Location", "/next")]
            else:
                head = [("Content-Length", "11"), ("Location", "/next")]
            data = conn.send(h11.Response(status_code=400, headers=head)) or b""
            data += conn.send(h11.Data(data=b"hello ")) or b""
            data += conn.send(h11.Data(data=b"world")) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send(data)
            conn.start_next_cycle()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        for _ in range(2):
            got = await transport.post(server.url, BODY, HEADERS, QUICK)
            assert got == Answer(400, got.headers, b"hello world")
            assert got.headers["location"] == "/next"
        await transport.aclose()
    assert transport.connections == 1


async def test_a_large_answer_is_capped_and_its_connection_closed() -> None:
    done = anyio.Event()

    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        size = 64 * 1024 * 1024
        await stream.send(f"HTTP/1.1 500 X\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                await stream.send(chunk)
        finally:
            done.set()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        got = await transport.post(server.url, BODY, HEADERS, QUICK)
        assert got.status == 500
        assert got.body == b"x" * RESPONSE_READ_CAP
        await done.wait()  # the server's writes failed: the client closed it


async def test_an_answer_before_the_whole_body_is_read() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        await stream.send(answer(413, b"too large", connection="close"))
        with suppress(anyio.EndOfStream):
            while True:  # drained, so that closing sends no reset over the answer
                await stream.receive()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        got = await transport.post(server.url, b"x" * 4_000_000, HEADERS, QUICK)
        assert (got.status, got.body) == (413, b"too large")
    assert transport.connections == 1


async def test_a_slow_success_body_is_cut_off_after_success_body() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab")
        await anyio.sleep_forever()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        with anyio.fail_after(3):
            got = await transport.post(server.url, BODY, HEADERS, Timeouts.uniform(30, 0.1))
    assert (got.status, got.body) == (200, b"ab")


async def test_a_stalled_answer_is_a_read_timeout() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        await anyio.sleep_forever()

    transport = LeanTransport(4)
    async with scripted(handler) as server:
        with pytest.raises(httpx.ReadTimeout):
            await transport.post(server.url, BODY, HEADERS, Timeouts(5, 0.2, 5, 5, 0.5))


async def post_to_a_trickle(kind: str, head: bytes) -> Answer | httpx.HTTPError:
    """POST with a whole-POST limit of 0.3 s (each phase's: 5 s) to a server that answers
    ``head``, then one more byte every 20 ms, for ever: the answer, or what was raised."""

    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await server.read_request(stream, h11.Connection(h11.SERVER))
        await stream.send(head)
        while True:
            await anyio.sleep(0.02)
            await stream.send(b"c")

    timeouts = Timeouts(5, 5, 5, 5, 5, total=0.3)
    async with scripted(handler) as server, httpx.AsyncClient() as http:
        transport = LeanTransport(4) if kind == "lean" else HttpxTransport(http)
        with anyio.fail_after(3):
            try:
                return await transport.post(server.url, BODY, HEADERS, timeouts)
            except httpx.HTTPError as exc:  # raised out of the server's task group, wrapped
                return exc


@pytest.mark.parametrize("kind", ["lean", "httpx"])
async def test_an_answer_trickling_in_keeps_to_the_whole_posts_limit(kind: str) -> None:
    # Every byte comes well within the read timeout; the headers never end.
    got = await post_to_a_trickle(kind, b"HTTP/1.1 200 OK\r\nX-Slow: ")
    assert isinstance(got, httpx.TimeoutException)


@pytest.mark.parametrize("kind", ["lean", "httpx"])
async def test_an_answer_whose_status_came_in_time_stands_past_the_limit(kind: str) -> None:
    got = await post_to_a_trickle(kind, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab")
    assert isinstance(got, Answer)
    assert got.status == 200
    assert got.body.startswith(b"abc")


async def test_a_server_that_never_reads_is_a_write_timeout() -> None:
    # A listening socket nobody accepts from: the kernel takes the connection, and no
    # event loop reads its data into memory.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = "http://127.0.0.1:%d/v1/events" % listener.getsockname()[1]
        transport = LeanTransport(4)
        body = b"x" * (64 * 1024 * 1024)  # far more than the sockets' buffers hold
        with anyio.fail_after(10), pytest.raises(httpx.WriteTimeout):
            await transport.post(url, body, HEADERS, Timeouts(5, 5, 0.3, 5, 0.5))


async def test_a_stalled_tls_handshake_is_a_connect_timeout() -> None:
    async def handler(stream: anyio.abc.ByteStream, number: int) -> None:
        await anyio.sleep_forever()

    transport = LeanTransport(4, ssl_context=ssl.create_default_context())
    async with scripted(handler) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(httpx.ConnectTimeout):
            await transport.post(url, BODY, HEADERS, Timeouts(0.2, 5, 5, 5, 0.5))


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = LeanTransport(4)
    with pytest.raises(httpx.ConnectError):
        await transport.post(f"http://127.0.0.1:{port}/v1/events", BODY, HEADERS, QUICK)


async def test_only_http_and_https_are_spoken() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await LeanTransport(4).post("ftp://127.0.0.1/v1/events", BODY, HEADERS, QUICK)


class Counted(Gate):
    """A gate that also says when ``count`` requests are held at once."""

    def __init__(self, app: Any, count: int) -> None:
        super().__init__(app)
        self.count = count
        self.held = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.active + 1 >= self.count:
            self.held.set()
        await super().__call__(scope, receive, send)


async def test_the_pool_bound_is_respected_and_waiting_for_it_times_out() -> None:
    gate = Counted(EventsAPI(), 2)
    transport = LeanTransport(2)
    answers: list[int] = []

    async def post() -> None:
        answers.append((await transport.post(server.url, BODY, HEADERS, QUICK)).status)

    async with serve(gate) as server, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(post)
        with anyio.fail_after(5):
            await gate.held.wait()
        with pytest.raises(httpx.PoolTimeout):
            await transport.post(server.url, BODY, HEADERS, Timeouts(5, 5, 5, 0.05, 0.5))
        gate.open.set()
    await transport.aclose()
    assert answers == [204] * 5
    assert gate.max_active == 2
    assert transport.connections == server.connections == 2


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


async def https_handler(stream: anyio.abc.ByteStream, number: int) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    return
            elif isinstance(event, h11.EndOfMessage):
                break
        await stream.send(answer(200, b"tls ok"))
        conn.send(h11.Response(status_code=200, headers=[("Content-Length", "6")]))
        conn.send(h11.Data(data=b"tls ok"))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


async def test_tls_with_a_trusted_ca_is_verified_and_kept_alive(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    transport = LeanTransport(4, ssl_context=client_context)
    async with scripted(https_handler, tls=server_context(ca), host="localhost") as server:
        for _ in range(3):
            got = await transport.post(server.url, BODY, HEADERS, QUICK)
            assert (got.status, got.body) == (200, b"tls ok")
        await transport.aclose()
    assert transport.connections == 1


async def test_tls_with_an_untrusted_certificate_fails_to_connect(ca: trustme.CA) -> None:
    transport = LeanTransport(4)  # the default context: trustme's CA is not trusted
    async with scripted(https_handler, tls=server_context(ca), host="localhost") as server:
        with pytest.raises(httpx.ConnectError):
            await transport.post(server.url, BODY, HEADERS, QUICK)


async def test_tls_for_another_name_fails_to_connect(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    transport = LeanTransport(4, ssl_context=client_context)
    async with scripted(https_handler, tls=server_context(ca), host="127.0.0.1") as server:
        with pytest.raises(httpx.ConnectError):
            await transport.post(server.url, BODY, HEADERS, QUICK)


async def test_a_forked_child_never_reuses_the_parents_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = EventsAPI()
    transport = LeanTransport(4)
    async with serve(api) as server:
        await transport.post(server.url, BODY, HEADERS, QUICK)
        parent = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: parent + 1)  # as seen in a child
        await transport.post(server.url, BODY, HEADERS, QUICK)
        await transport.aclose()  # the child's own, only
        monkeypatch.setattr(os, "getpid", lambda: parent)
        await transport.post(server.url, BODY, HEADERS, QUICK)
        await transport.aclose()
    assert transport.connections == server.connections == 2
    assert len(api.requests) == 3


async def test_the_httpx_transport_reads_answers_the_same_way() -> None:
    api = EventsAPI()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        transport = HttpxTransport(http)
        got = await transport.post("http://events.test/v1/events", b"{}", HEADERS, QUICK)
        await transport.aclose()
    assert got.status == 400
    assert got.body
    assert got.headers["content-type"].startswith("application/json")
