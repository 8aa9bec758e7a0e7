"""How one POST reaches the endpoint: the transports under the sender.

Owns :class:`Answer` and :class:`Timeouts`, the :class:`Transport` interface, and its two
implementations: :class:`LeanTransport` (HTTP/1.1 keep-alive over anyio streams, framed by
h11, pooled by origin and process) and :class:`HttpxTransport` (an ``httpx.AsyncClient``
the application gave). Both read an answer the same way (its status and headers, then at
most :data:`RESPONSE_READ_CAP` bytes of its body), raise httpx's exceptions for every
failure before the status line, so that the sender maps them one way, and keep to the
whole POST's time limit (:attr:`Timeouts.total`) themselves, so that the sender needs no
cancel scope around a POST. It must not decide what an answer means, nor retry anything
but a stale keep-alive connection: the sender does.
"""

from __future__ import annotations

import math
import os
import select
import ssl
import urllib.request
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import h11
import httpx

__all__ = [
    "RESPONSE_READ_CAP",
    "Answer",
    "HttpxTransport",
    "LeanTransport",
    "Timeouts",
    "Transport",
    "open_transports",
    "uses_proxy",
]

#: The most of an answer's body read (for the DEBUG log); the rest is never read.
RESPONSE_READ_CAP = 64 * 1024

_RECEIVE_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Time limits of one POST, in seconds.

    Attributes:
        connect: Opening a connection (TLS handshake included).
        read: The answer's status line and headers, and a non-2xx answer's body.
        write: Sending the request.
        pool: Waiting for a free connection.
        success_body: How long a 2xx answer's body is read at most: it changes nothing.
        total: The whole POST, every phase within it: past it before the status line is
            a timeout; past it after, the answer stands with what of its body came.
    """

    connect: float
    read: float
    write: float
    pool: float
    success_body: float
    total: float = math.inf

    @classmethod
    def uniform(cls, timeout: float, success_body: float) -> Timeouts:
        """The same limit for every phase and for the whole, as ``httpx.Timeout(timeout)``
        and a deadline of ``timeout`` around it."""
        return cls(timeout, timeout, timeout, timeout, success_body, timeout)


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer to a POST.

    Attributes:
        status: The status code.
        headers: The headers; names are looked up in lower case.
        body: The body's first :data:`RESPONSE_READ_CAP` bytes at most: less when it was
            cut off (too slow, or the connection failed after the status line).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one POST and reads its answer."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> Answer:
        """POST ``body`` to ``url``, within ``timeouts``.

        Raises:
            httpx.TimeoutException: A time limit passed before the status line.
            httpx.TransportError: The connection failed before the status line.
        """
        ...  # pragma: no cover

    async def aclose(self) -> None:
        """Close what the transport owns."""
        ...  # pragma: no cover


class HttpxTransport:
    """Sends with an ``httpx.AsyncClient``, which it never closes.

    Args:
        client: The client.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> Answer:
        """POST ``body`` to ``url`` (see :meth:`Transport.post`)."""
        timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        )
        answer: Answer | None = None
        excerpt = bytearray()
        with anyio.move_on_after(timeouts.total):
            try:
                async with self.client.stream(
                    "POST", url, content=body, headers=headers, timeout=timeout
                ) as response:
                    status = response.status_code
                    answer = Answer(status, response.headers, b"")
                    # Read a little of the answer: for the log, and so that a short one
                    # leaves the connection reusable. Past the cap, or when the body is
                    # slow, the connection is closed on exit rather than drained.
                    wait = timeouts.read if status >= 300 else timeouts.success_body
                    with anyio.move_on_after(wait) as reading:
                        async for chunk in response.aiter_raw():
                            excerpt += chunk[: RESPONSE_READ_CAP - len(excerpt)]
                            if len(excerpt) >= RESPONSE_READ_CAP:
                                # Cancelled, not left by ``break``: the stream's
                                # generators end now, and the connection is closed.
                                reading.cancel()
            except Exception:
                if answer is None:
                    raise
        if answer is None:
            raise httpx.ReadTimeout("no answer within the attempt's time limit")
        return Answer(answer.status, answer.headers, bytes(excerpt))

    async def aclose(self) -> None:
        """Nothing: the client belongs to whoever made it."""


def uses_proxy(url: str) -> bool:
    """Whether the environment (``HTTP(S)_PROXY``, ``NO_PROXY``) proxies ``url``."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc)


async def open_transports(
    stack: AsyncExitStack,
    endpoint: str,
    http: httpx.AsyncClient | None,
    *,
    max_in_flight: int,
    attempt_timeout: float,
    need_httpx: bool,
) -> tuple[Transport, httpx.AsyncClient | None]:
    """A client's transport for its events, and its httpx client when it needs one.

    Events go through the lean transport unless the application gave its own httpx
    client or the environment asks for a proxy (httpx speaks to proxies). An httpx client
    is made when events need one, or when ``need_httpx`` (the datafile is fetched).
    What is made here is closed with ``stack``.

    Args:
        stack: Where what is opened here is closed.
        endpoint: The Events API endpoint.
        http: The application's httpx client, or ``None``.
        max_in_flight: Requests in flight at most (the pools' size).
        attempt_timeout: The timeout of an httpx client made here, in seconds.
        need_httpx: Whether an httpx client is needed for something else.

    Returns:
        The transport, and the httpx client (the application's, one made here, or ``None``).
    """
    lean = http is None and not uses_proxy(endpoint)
    if http is None and (need_httpx or not lean):
        connections = max_in_flight + 1
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        http = await stack.enter_async_context(
            httpx.AsyncClient(limits=limits, timeout=attempt_timeout)
        )
    if not lean:
        assert http is not None
        return HttpxTransport(http), http
    transport = LeanTransport(max_in_flight)
    stack.push_async_callback(transport.aclose)
    return transport, http


class _Stale(Exception):
    """A reused connection ended before any byte of the answer: the request is resent."""


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    target: bytes  # path and query
    authority: bytes  # the Host header


class _Connection:
    __slots__ = ("fd", "h11", "stream")

    def __init__(self, stream: anyio.abc.ByteStream, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.h11 = h11.Connection(h11.CLIENT)

    def is_stale(self) -> bool:
        """Whether an idle connection has anything to read: the server closed it."""
        try:
            if _HAS_POLL:  # no limit on descriptor numbers, unlike select()
                poller = select.poll()
                poller.register(self.fd, select.POLLIN)
                return bool(poller.poll(0))
            readable, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


_HAS_POLL = hasattr(select, "poll")


class _Pool:
    """The connections to one origin: at most ``size`` at once, idle ones kept."""

    __slots__ = ("idle", "slots")

    def __init__(self, size: int) -> None:
        self.slots = anyio.Semaphore(size)
        self.idle: list[_Connection] = []

    async def take_idle(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.is_stale():
                return connection
            await anyio.aclose_forcefully(connection.stream)
        return None


class LeanTransport:
    """HTTP/1.1 keep-alive over anyio streams, framed by h11.

    Connections are pooled by origin, at most ``max_connections`` each, and by process: a
    forked child never touches its parent's sockets. An idle connection the server
    closed is noticed before it is used; a reused one that ends before any byte of the
    answer (the server closed it as the request went out) is replaced by a fresh one and
    the request sent again, once. Nothing else is retried here.

    Args:
        max_connections: Connections per origin, at most.
        ssl_context: For https; by default ``httpx.create_ssl_context()`` (certificates
            verified, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` honoured), made when first
            needed.
    """

    def __init__(self, max_connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._size = max_connections
        self._ssl_context = ssl_context
        self._pools: dict[tuple[int, str, str, int], _Pool] = {}
        self._origins: dict[str, _Origin] = {}
        #: Connections opened so far (for tests and benchmarks).
        self.connections = 0

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts
    ) -> Answer:
        """POST ``body`` to ``url`` (see :meth:`Transport.post`)."""
        deadline = anyio.current_time() + timeouts.total
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= 64:  # redirect targets could be many
                self._origins.clear()
            origin = self._origins[url] = _parse(url)
        key = (os.getpid(), origin.scheme, origin.host, origin.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self._size)
        request = _request(origin, body, headers)
        try:
            pool.slots.acquire_nowait()
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(min(timeouts.pool, deadline - anyio.current_time())):
                    await pool.slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in time") from None
        try:
            connection = await pool.take_idle()
            if connection is not None:
                try:
                    return await _exchange(
                        pool, connection, request, body, timeouts, deadline, True
                    )
                except _Stale:
                    pass
            wait = min(timeouts.connect, deadline - anyio.current_time())
            connection = await self._connect(origin, wait)  # the CA bundle's loading too
            return await _exchange(pool, connection, request, body, timeouts, deadline, False)
        finally:
            pool.slots.release()

    async def aclose(self) -> None:
        """Close the idle connections this process opened."""
        pid = os.getpid()
        for key, pool in list(self._pools.items()):
            if key[0] == pid:
                while pool.idle:
                    await anyio.aclose_forcefully(pool.idle.pop().stream)
                del self._pools[key]

    async def _connect(self, origin: _Origin, timeout: float) -> _Connection:
        try:
            with anyio.fail_after(timeout):
                context = None
                if origin.scheme == "https":
                    if self._ssl_context is None:
                        # Loading the CA bundle takes tens of milliseconds: off the loop.
                        self._ssl_context = await anyio.to_thread.run_sync(httpx.create_ssl_context)
                    context = self._ssl_context
                stream: anyio.abc.ByteStream
                if context is None:
                    stream = await anyio.connect_tcp(origin.host, origin.port)
                else:
                    stream = await anyio.connect_tcp(
                        origin.host,
                        origin.port,
                        ssl_context=context,
                        tls_hostname=origin.host,
                        # An answer is framed by HTTP: no TLS close_notify is waited for.
                        tls_standard_compatible=False,
                    )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin.host}:{origin.port}") from None
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise httpx.ConnectError(f"{origin.host}:{origin.port}: {exc}") from exc
        self.connections += 1
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        return _Connection(stream, raw.fileno())


def _parse(url: str) -> _Origin:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot send to {url!r}: not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Origin(
        parts.scheme,
        parts.hostname,
        port,
        target.encode("ascii"),
        parts.netloc.rpartition("@")[2].encode("ascii"),
    )


def _request(origin: _Origin, body: bytes, headers: Mapping[str, str]) -> h11.Request:
    fields = [(b"Host", origin.authority)]
    fields += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    fields.append((b"Content-Length", str(len(body)).encode("ascii")))
    return h11.Request(method=b"POST", target=origin.target, headers=fields)


_GONE = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


async def _exchange(
    pool: _Pool,
    connection: _Connection,
    request: h11.Request,
    body: bytes,
    timeouts: Timeouts,
    deadline: float,
    reused: bool,
) -> Answer:
    """One request and its answer on ``connection``, kept in ``pool`` if still usable.

    One cancel scope times every phase and the whole POST (its deadline moves on as the
    phases do, never past ``deadline``): a scope each costs more than the rest of the
    exchange's bookkeeping.
    """
    conn = connection.h11
    stream = connection.stream
    kept = False
    phase = _WRITE
    received = False
    answer: Answer | None = None
    excerpt = bytearray()
    try:
        data = b"".join(
            conn.send(event) or b"" for event in (request, h11.Data(data=body), h11.EndOfMessage())
        )
        unsent: BaseException | None = None
        now = anyio.current_time()
        with anyio.CancelScope(deadline=min(now + timeouts.write, deadline)) as scope:
            try:
                try:
                    await stream.send(data)
                except _GONE as exc:
                    # The server may have answered before it stopped reading (a 413
                    # for a body too large): its answer, if any, says more.
                    unsent = exc
                phase = _READ
                scope.deadline = min(anyio.current_time() + timeouts.read, deadline)
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        chunk = await _receive(stream)
                        received = received or bool(chunk)
                        conn.receive_data(chunk)
                    elif isinstance(event, h11.Response):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise anyio.EndOfStream
            except (h11.RemoteProtocolError, *_GONE) as exc:
                if reused and not received:
                    raise _Stale from exc
                if unsent is not None:
                    raise httpx.WriteError(f"sending the request failed: {unsent!r}") from exc
                if isinstance(exc, h11.RemoteProtocolError):
                    raise httpx.RemoteProtocolError(str(exc)) from exc
                if isinstance(exc, anyio.EndOfStream):
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response."
                    ) from exc
                raise httpx.ReadError(f"reading the answer failed: {exc!r}") from exc

            status = event.status_code
            answer = Answer(
                status,
                {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers},
                b"",
            )
            phase = _BODY
            wait = timeouts.read if status >= 300 else timeouts.success_body
            scope.deadline = min(anyio.current_time() + wait, deadline)
            try:
                while len(excerpt) < RESPONSE_READ_CAP:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await _receive(stream))
                    elif isinstance(event, h11.Data):
                        excerpt += event.data[: RESPONSE_READ_CAP - len(excerpt)]
                    elif isinstance(event, h11.EndOfMessage):
                        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                            conn.start_next_cycle()
                            pool.idle.append(connection)
                            kept = True
                        break
                    else:  # the connection closed mid-body: what came counts
                        break
            except (h11.RemoteProtocolError, *_GONE):
                pass  # the status line is in: a failure now changes nothing
        if answer is None:  # only our own deadline ends the scope without an answer
            if phase is _WRITE:
                raise httpx.WriteTimeout("sending the request timed out")
            raise httpx.ReadTimeout("no answer within the read timeout")
        return Answer(answer.status, answer.headers, bytes(excerpt))
    finally:
        if not kept:
            await anyio.aclose_forcefully(stream)


_WRITE = "write"
_READ = "read"
_BODY = "body"


async def _receive(stream: anyio.abc.ByteStream) -> bytes:
    try:
        return await stream.receive(_RECEIVE_SIZE)
    except anyio.EndOfStream:
        return b""  # h11 learns of the end from an empty chunk
