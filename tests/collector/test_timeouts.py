"""The server closes idle and slow connections, when given timeouts."""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc
import pytest

from optitrack.testing import EventsAPI, serve

pytestmark = pytest.mark.anyio

GUARD = 5  # seconds: only a guard against a hung test, never a wait


async def _read_until_closed(stream: anyio.abc.SocketStream) -> bytes:
    received = b""
    with anyio.fail_after(GUARD):
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return received


async def test_an_idle_connection_is_closed() -> None:
    async with serve(EventsAPI(), idle_timeout=0.2, read_timeout=5) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            await stream.send(b"GET /v1/stats HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = await _read_until_closed(stream)  # served, then closed when idle
        assert answer.startswith(b"HTTP/1.1 200")
        assert server.timeouts == 1


async def test_a_slow_request_head_is_closed() -> None:
    async with serve(EventsAPI(), idle_timeout=5, read_timeout=0.2) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            await stream.send(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")  # and no more
            assert await _read_until_closed(stream) == b""
        assert server.timeouts == 1


async def test_a_request_head_trickling_in_is_closed_all_the_same() -> None:
    async def trickle(stream: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            for _ in range(100):  # a header byte every 0.05 s: each read is quick
                await stream.send(b"x")
                await anyio.sleep(0.05)

    async with serve(EventsAPI(), idle_timeout=5, read_timeout=0.3) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(trickle, stream)
                await _read_until_closed(stream)
                closed = anyio.current_time() - started
                tg.cancel_scope.cancel()
        assert closed < 2.5  # the head's 0.3 s in all, not the 5 s of trickling
        assert server.timeouts == 1


async def test_a_slow_body_is_closed_and_nothing_is_counted() -> None:
    api = EventsAPI()
    async with serve(api, idle_timeout=5, read_timeout=0.2) as server:
        async with await anyio.connect_tcp(server.host, server.port) as stream:
            await stream.send(
                b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 100\r\n\r\n{"
            )
            assert (await _read_until_closed(stream)).startswith(b"HTTP/1.1 408")
        assert server.timeouts == 1
    assert api.batch_count == 0


async def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        async with serve(EventsAPI(), idle_timeout=0):
            pass
