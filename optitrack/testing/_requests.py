"""One request to ``POST /v1/events``: its body read, decoded, and the record kept of it.

Owns :data:`MAX_BODY_SIZE`, :class:`ReceivedRequest` (the record), :class:`Seen` (the
request as read, before anything is decided) and the two steps every request goes through
before faults and validation: :func:`read_request` and :func:`decode_body` (size limit,
``Content-Type``, gzip). :class:`DatafileAPI` reads its requests with the first too.

It must not touch the app's state: it decides nothing about faults, counts nothing and
keeps nothing. It imports :mod:`._asgi` and :mod:`._faults`, and the wire format.
"""

# No ``from __future__ import annotations``: these classes say they are from
# ``optitrack.testing`` (see ``__init__``), and typing.get_type_hints (pydantic, docs
# tools) would look the names of string annotations up there, where they are not.

import json
import zlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from .._wire import EventBatch
from ._asgi import ASGIReceive, Refusal
from ._faults import Fault

__all__ = ["MAX_BODY_SIZE", "ReceivedRequest", "Seen", "decode_body", "read_request"]

MAX_BODY_SIZE = 3_500_000
"""The Events API's limit on one request body, in bytes."""


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request that reached :class:`EventsAPI` on ``POST /v1/events``.

    Attributes:
        method: The HTTP method.
        path: The request path.
        headers: The request headers.
        body: The body as received (compressed, if it was); empty when it was too large.
        content: The body after ``Content-Encoding`` decoding (``body`` when not encoded).
        status: The status answered; ``None`` for :class:`Hang` and :class:`Reset`.
        error: Why the request was refused, when it was.
        fault: The fault applied to it, if any.
        client: The client's ``(host, port)``, when the server knows it.
        time: When its body had arrived, on the serving event loop's clock
            (:func:`anyio.current_time`, which follows Trio's ``MockClock``).
    """

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    content: bytes
    status: int | None
    error: str | None
    fault: Fault | None
    client: tuple[str, int] | None
    time: float
    _batch: EventBatch | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def accepted(self) -> bool:
        """Whether the batch was accepted (answered with a 2xx status)."""
        return self.status is not None and 200 <= self.status < 300 and self.error is None

    @property
    def batch(self) -> EventBatch | None:
        """The accepted batch, as a model; ``None`` when the request was not accepted.

        The model is built from :attr:`content` on first access, then kept: keeping a
        model of every batch as it arrives would slow a busy server down (the garbage
        collector would walk them all, again and again).

        Raises:
            pydantic.ValidationError: The batch is invalid (possible only when it was
                accepted by an app created with ``validate=False``).
        """
        if self._batch is None and self.accepted:
            object.__setattr__(self, "_batch", EventBatch.model_validate_json(self.content))
        return self._batch

    def json(self) -> Any:
        """Parse the (decoded) body as JSON.

        Returns:
            The parsed JSON value.

        Raises:
            ValueError: The body is not JSON.
        """
        return json.loads(self.content)


@dataclass(frozen=True, slots=True)
class Seen:
    """A request to ``POST /v1/events`` as read, before it is decoded or answered.

    Attributes:
        method: The HTTP method.
        path: The request path.
        headers: The request headers.
        body: The body as received; empty when it was over the size limit.
        size: The body's size as sent.
        client: The client's ``(host, port)``, when the server knows it.
        time: When the body had arrived, on the event loop's clock.
    """

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    size: int
    client: tuple[str, int] | None
    time: float


async def read_request(
    scope: MutableMapping[str, Any], receive: ASGIReceive, max_body_size: int
) -> Seen | None:
    """Read a request's body to its end, keeping it only within the size limit.

    Args:
        scope: The ASGI ``http`` scope.
        receive: The ASGI receive callable.
        max_body_size: The largest body kept, in bytes.

    Returns:
        The request; ``None`` when the client went away before the end of its body.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        # Past the limit, keep reading (so the client gets its 413 instead of a reset)
        # without keeping anything.
        if size <= max_body_size:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks) if size <= max_body_size else b""
    headers = httpx.Headers(scope.get("headers") or [])
    client = scope.get("client")
    return Seen(
        method=scope["method"],
        path=scope["path"],
        headers=headers,
        body=body,
        size=size,
        client=(str(client[0]), int(client[1])) if client else None,
        time=anyio.current_time(),
    )


def decode_body(seen: Seen, max_body_size: int) -> bytes:
    """Check a request's size and media type, and undo its ``Content-Encoding``.

    Args:
        seen: The request.
        max_body_size: The largest body accepted, as sent or once decoded, in bytes.

    Returns:
        The decoded body.

    Raises:
        Refusal: ``413``, ``415``, or ``400`` for broken gzip.
    """
    if seen.size > max_body_size:
        raise Refusal(
            413,
            "payload_too_large",
            f"body of {seen.size} bytes exceeds the limit of {max_body_size} bytes",
        )
    content_type = seen.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Refusal(
            415,
            "unsupported_media_type",
            f"content-type must be application/json, not {content_type!r}",
        )
    encoding = seen.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return seen.body
    if encoding != "gzip":
        raise Refusal(
            415, "unsupported_media_type", f"content-encoding {encoding!r} is not supported"
        )
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        content = decompressor.decompress(seen.body, max_body_size + 1)
    except zlib.error as exc:
        raise Refusal(400, "invalid_encoding", f"body is not valid gzip: {exc}") from exc
    if len(content) > max_body_size:
        raise Refusal(
            413,
            "payload_too_large",
            f"decoded body exceeds the limit of {max_body_size} bytes",
        )
    if not decompressor.eof or decompressor.unused_data:
        raise Refusal(400, "invalid_encoding", "body is not one complete gzip stream")
    return content
