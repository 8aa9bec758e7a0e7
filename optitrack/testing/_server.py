"""The loopback HTTP/1.1 server the Events API stand-in runs on, or any ASGI 3 app.

Owns :class:`Server`, :func:`serve` (in the caller's event loop, asyncio or Trio),
:func:`serve_in_thread`, the h11 handling of one connection (keep-alive, pipelining,
``100 Continue``, a :class:`SimulatedReset` turned into a real TCP reset) and the check
that only loopback addresses are bound.

It must not know what the app does: it imports no app, only the ASGI types and paths
(:mod:`._asgi`) and :class:`SimulatedReset` (:mod:`._faults`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.abc
import h11
from anyio.from_thread import start_blocking_portal

from .._exceptions import unwrap_single_group
from ._asgi import EVENTS_PATH, ASGIApp, ASGIMessage
from ._faults import SimulatedReset

__all__ = ["Server", "serve", "serve_in_thread"]

logger = logging.getLogger("optitrack.testing")

_RECEIVE_SIZE = 256 * 1024


class Server:
    """A running loopback server (from :func:`serve` or :func:`serve_in_thread`).

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        connections: How many connections it accepted so far.
        idle_timeout: Seconds a kept-alive connection may wait for its next request.
        read_timeout: Seconds a request's head may take in all, and its body may stall.
        timeouts: Connections closed by a timeout so far.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        idle_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.connections = 0
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.timeouts = 0
        self._app = app

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:8123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The events endpoint, e.g. ``http://127.0.0.1:8123/v1/events``."""
        return self.base_url + EVENTS_PATH

    def __repr__(self) -> str:
        return f"<Server {self.base_url}>"

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            connection = _Connection(self, stream)
            try:
                await connection.run()
            except _TimedOut as exc:
                self.timeouts += 1
                logger.debug("closing a connection: %s", exc)
                with contextlib.suppress(h11.ProtocolError, *_GONE):
                    await connection.time_out()
            except SimulatedReset:
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except _GONE:
                pass
            except h11.ProtocolError as exc:
                logger.debug("closing a connection after an HTTP protocol error: %s", exc)
                with contextlib.suppress(h11.ProtocolError, *_GONE):
                    await connection.refuse_malformed()


class _Disconnected(Exception):
    pass


class _TimedOut(Exception):
    pass


# What a socket raises when the client went away.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _Connection:
    """One HTTP/1.1 connection, served with h11, one request at a time (keep-alive)."""

    def __init__(self, server: Server, stream: anyio.abc.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER)
        remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
        self.client = (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None
        self._head_deadline: float | None = None

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                self._head_deadline = None
                return event  # type: ignore[return-value]
            # Waiting for the next request on a kept-alive connection: the idle timeout;
            # reading a request's body: the read timeout per read; a request's head: the
            # read timeout in all, from its first byte, however slowly it trickles in.
            in_head = self.conn.their_state is h11.IDLE
            idle = in_head and not self.conn.trailing_data[0]
            timeout = self.server.idle_timeout if idle else self.server.read_timeout
            wait = math.inf if timeout is None else timeout
            if in_head and not idle and timeout is not None:
                now = anyio.current_time()
                if self._head_deadline is None:
                    self._head_deadline = now + timeout
                wait = max(self._head_deadline - now, 0)
            with anyio.move_on_after(wait) as scope:
                try:
                    data = await self.stream.receive(_RECEIVE_SIZE)
                except anyio.EndOfStream:
                    data = b""
            if scope.cancelled_caught:
                what = "idle" if idle else "reading a request"
                raise _TimedOut(f"{what} for more than {timeout} s")
            self.conn.receive_data(data)

    async def run(self) -> None:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
            if not await self.exchange(event):
                return
            if self.conn.our_state is not h11.DONE:
                return
            while self.conn.their_state is h11.SEND_BODY:  # the app left some body unread
                if isinstance(await self.next_event(), h11.ConnectionClosed):
                    return
            if self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    async def exchange(self, request: h11.Request) -> bool:
        """Run the app for one request; return whether the connection may be reused."""
        target = request.target
        raw_path, _, query = target.partition(b"?")
        local = self.stream.extra(anyio.abc.SocketAttribute.local_address)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode(),
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),
            "client": self.client,
            "server": local if isinstance(local, tuple) else None,
            "extensions": {},
        }
        body_done = False
        disconnected = False
        started: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        finished = False

        async def receive() -> ASGIMessage:
            nonlocal body_done, disconnected
            if not body_done:
                try:
                    if self.conn.they_are_waiting_for_100_continue:
                        response = h11.InformationalResponse(status_code=100, headers=[])
                        await self.stream.send(self.conn.send(response))
                    event = await self.next_event()
                except (h11.RemoteProtocolError, anyio.BrokenResourceError, OSError):
                    event = h11.ConnectionClosed()
                if isinstance(event, h11.Data):
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
                if isinstance(event, h11.EndOfMessage):
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                disconnected = True
                return {"type": "http.disconnect"}
            if finished or disconnected:
                return {"type": "http.disconnect"}
            # The app waits for the client to go away (a hang): watch the socket, keeping
            # anything pipelined for the next request.
            while True:
                try:
                    data = await self.stream.receive(_RECEIVE_SIZE)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    disconnected = True
                    return {"type": "http.disconnect"}
                self.conn.receive_data(data)

        async def send(message: ASGIMessage) -> None:
            nonlocal finished, disconnected
            if disconnected:
                raise _Disconnected
            if message["type"] == "http.response.start":
                started.append((int(message["status"]), list(message.get("headers", []))))
                return
            if message["type"] != "http.response.body" or not started or finished:
                raise RuntimeError(f"unexpected ASGI message {message['type']!r}")
            status, headers = started[0]
            data = b""
            if self.conn.our_state is h11.SEND_RESPONSE:
                data = self.conn.send(h11.Response(status_code=status, headers=headers))
            body = message.get("body", b"")
            if body:
                data += self.conn.send(h11.Data(data=body))
            if not message.get("more_body", False):
                data += self.conn.send(h11.EndOfMessage())
                finished = True
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                disconnected = True
                raise _Disconnected from None

        try:
            await self.server._app(scope, receive, send)
        except (SimulatedReset, _TimedOut, anyio.get_cancelled_exc_class()):
            raise
        except _Disconnected:
            return False
        except Exception:
            logger.exception("the ASGI app failed on %s %s", scope["method"], scope["path"])
            if not started and not disconnected:
                await self._fail()
            return False
        if disconnected:
            return False
        if not finished:
            if not started:
                await self._fail()
            return False
        return True

    async def time_out(self) -> None:
        # A request's body came too slowly: 408, then close. Mid-head, or idle: just close.
        if self.conn.our_state is h11.SEND_RESPONSE:
            headers = [(b"content-length", b"0"), (b"connection", b"close")]
            response = h11.Response(status_code=408, headers=headers)
            await self.stream.send(self.conn.send(response) + self.conn.send(h11.EndOfMessage()))

    async def refuse_malformed(self) -> None:
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers = [(b"content-length", b"0"), (b"connection", b"close")]
            response = h11.Response(status_code=400, headers=headers)
            await self.stream.send(self.conn.send(response) + self.conn.send(h11.EndOfMessage()))

    async def _fail(self) -> None:
        response = h11.Response(
            status_code=500, headers=[(b"content-length", b"0"), (b"connection", b"close")]
        )
        await self.stream.send(self.conn.send(response) + self.conn.send(h11.EndOfMessage()))


def _check_loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host ({host!r}) must be a loopback IP address") from None
    if not address.is_loopback:
        raise ValueError(f"host ({host!r}) must be a loopback address, e.g. 127.0.0.1")
    return host


@asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    idle_timeout: float | None = None,
    read_timeout: float | None = None,
) -> AsyncIterator[Server]:
    """Serve an ASGI app over HTTP/1.1 on a loopback address, in the caller's event loop.

    Works on asyncio and Trio. Connections are kept alive between requests. On exit, the
    server stops listening and closes every connection, even one a :class:`Hang` holds.
    An exception raised in the ``async with`` block comes out as itself.

    Args:
        app: The ASGI 3 app, e.g. an :class:`EventsAPI`.
        host: A loopback address to listen on.
        port: The port; 0 picks a free one (see :attr:`Server.port`).
        allow_remote: Allow any address (e.g. ``0.0.0.0``), for the collector: give the
            app a token then.
        idle_timeout: Close a kept-alive connection that sends no new request for this
            many seconds (``None``: never; a :class:`Hang` is not affected).
        read_timeout: Close a connection whose request head is not complete this many
            seconds after its first byte, or whose body stalls this long (answered
            ``408``); ``None``: never.

    Yields:
        The running server; post events to :attr:`Server.url`.

    Raises:
        ValueError: ``host`` is not a loopback address (without ``allow_remote``), or a
            timeout is not positive.
        OSError: The address cannot be bound.
    """
    for name, timeout in (("idle_timeout", idle_timeout), ("read_timeout", read_timeout)):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"{name} ({timeout}) must be > 0")
    if not allow_remote:
        host = _check_loopback(host)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    try:
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        assert isinstance(sockname, tuple)
        server = Server(app, host, int(sockname[1]), idle_timeout, read_timeout)
        with unwrap_single_group():
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, server._handle, tg)
                try:
                    yield server
                finally:
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, backend: str = "asyncio"
) -> Iterator[Server]:
    """Serve an ASGI app from an event loop in a daemon thread, for sync code and benchmarks.

    The app is called in that thread: an :class:`EventsAPI` records under its lock, and its
    ``wait_for_*`` methods work from the caller's event loop too.

    Args:
        app: The ASGI 3 app, e.g. an :class:`EventsAPI`.
        host: A loopback address to listen on.
        port: The port; 0 picks a free one.
        backend: The anyio backend of the thread's loop, ``"asyncio"`` or ``"trio"``.

    Yields:
        The running server; it stops, and its thread ends, on exit.

    Raises:
        ValueError: ``host`` is not a loopback address.
        OSError: The address cannot be bound.
    """
    host = _check_loopback(host)
    with (
        start_blocking_portal(backend, name="optitrack-testing-server") as portal,
        portal.wrap_async_context_manager(serve(app, host=host, port=port)) as server,
    ):
        yield server
