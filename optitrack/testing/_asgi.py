"""The ASGI side of the stand-ins: the callable types, answering and refusing.

Owns the ASGI 3 types (:data:`ASGIApp` and the rest), the stand-in's paths, and the
stateless helpers the app answers with: a plain answer, a refusal with a JSON reason, a
:class:`Respond` fault's answer, and the lifespan protocol.

It must not touch state (no records, counters or faults armed) nor sockets: the apps
(:mod:`._app`, :mod:`._datafiles`) and the server (:mod:`._server`) all build on it. It imports only
:mod:`._faults`, for :class:`Respond`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

from ._faults import Respond

__all__ = [
    "ASGIApp",
    "ASGIMessage",
    "ASGIReceive",
    "ASGISend",
    "EVENTS_PATH",
    "RESULTS_PATH",
    "STATS_PATH",
    "Refusal",
    "answer",
    "lifespan",
    "refuse",
    "respond",
]

EVENTS_PATH = "/v1/events"
STATS_PATH = "/v1/stats"
RESULTS_PATH = "/v1/results"

ASGIMessage: TypeAlias = MutableMapping[str, Any]
"""An ASGI message (or scope)."""
ASGIReceive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
"""The ASGI ``receive`` callable."""
ASGISend: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[MutableMapping[str, Any], ASGIReceive, ASGISend], Awaitable[None]]
"""An ASGI 3 application, as :class:`httpx.ASGITransport` types it."""


class Refusal(Exception):
    """Why a request is refused: raised where that is found, answered by :func:`refuse`.

    Args:
        status: The HTTP status.
        code: The machine-readable reason (the body's ``"error"``).
        message: What is wrong (the body's ``"message"``).
        details: More about it (the body's ``"errors"``), if anything.
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


async def lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    """Complete the startup and the shutdown of the ASGI lifespan protocol.

    Args:
        receive: The ASGI receive callable.
        send: The ASGI send callable.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def answer(
    send: ASGISend,
    status: int,
    body: bytes = b"",
    content_type: bytes | None = None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response: no body for 204 and 304, a ``Content-Length`` otherwise.

    Args:
        send: The ASGI send callable.
        status: The HTTP status.
        body: The body.
        content_type: The ``Content-Type`` header, sent only with a body.
        extra: More headers.
    """
    headers: list[tuple[bytes, bytes]] = []
    if status in (204, 304):
        body = b""
    else:
        headers.append((b"content-length", str(len(body)).encode()))
    if content_type is not None and body:
        headers.append((b"content-type", content_type))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def refuse(
    send: ASGISend,
    refusal: Refusal,
    allow: bytes | None = None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer a refusal, with its reason as JSON.

    Args:
        send: The ASGI send callable.
        refusal: The refusal.
        allow: The ``Allow`` header, for a ``405``.
        extra: More headers, e.g. ``WWW-Authenticate`` for a ``401``.
    """
    data: dict[str, Any] = {"error": refusal.code, "message": refusal.message}
    if refusal.details is not None:
        data["errors"] = refusal.details
    headers = [(b"allow", allow)] if allow is not None else []
    headers.extend(extra)
    await answer(send, refusal.status, json.dumps(data).encode(), b"application/json", headers)


async def respond(send: ASGISend, fault: Respond) -> None:
    """Answer what a :class:`Respond` fault says.

    Args:
        send: The ASGI send callable.
        fault: The fault.
    """
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fault.headers]
    if fault.retry_after is not None:
        extra.append((b"retry-after", str(fault.retry_after).encode("latin-1")))
    has_type = any(name == b"content-type" for name, _ in extra)
    if fault.body is None:
        if fault.status >= 400:
            message = f"injected fault: {fault.status}"
            body = json.dumps({"error": "injected_fault", "message": message}).encode()
            content_type: bytes | None = None if has_type else b"application/json"
        else:
            body, content_type = b"", None
    else:
        body = fault.body.encode() if isinstance(fault.body, str) else fault.body
        content_type = None if has_type else b"text/plain; charset=utf-8"
    await answer(send, fault.status, body, content_type, extra)
