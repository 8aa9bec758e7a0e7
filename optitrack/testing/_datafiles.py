"""The datafile CDN stand-in: :class:`DatafileAPI`, an ASGI 3 app, and its record.

Owns the datafiles served (one revision per SDK key: its bytes, ``ETag`` and
``Last-Modified``), the routing of ``GET /datafiles/{sdk_key}.json`` and
``GET /datafiles/auth/{sdk_key}.json``, the bearer token check, conditional requests
(``If-None-Match``, ``If-Modified-Since``), and :class:`DatafileRequest`, the record of
each request, under one lock.

It must not touch sockets or HTTP framing (:mod:`._server` runs it like any ASGI app), nor
the Events API stand-in (:mod:`._app`). Applying faults is :mod:`._applying`'s, reading a
request :mod:`._requests`'s, answering :mod:`._asgi`'s, waiting :mod:`._waiting`'s.
"""

# No ``from __future__ import annotations``: these classes say they are from
# ``optitrack.testing`` (see ``__init__``), and typing.get_type_hints (pydantic, docs
# tools) would look the names of string annotations up there, where they are not.

import datetime
import email.utils
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._applying import FaultControls, apply_fault
from ._asgi import ASGIReceive, ASGISend, Refusal, answer, lifespan, refuse, respond
from ._faults import Fault, FaultPlan, Respond, When
from ._requests import Seen, read_request
from ._waiting import WaitControls, Waiters

__all__ = ["DatafileAPI", "DatafileRequest"]

# /datafiles/{sdk_key}.json and /datafiles/auth/{sdk_key}.json
_PATH = re.compile(r"/datafiles/(?:(auth)/)?([^/]+)\.json")
# One entity tag of an If-None-Match list: its opaque part, weak or not.
_ETAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')
_JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class DatafileRequest:
    """One request that reached :class:`DatafileAPI`, whatever its method and path.

    Attributes:
        method: The HTTP method.
        path: The request path.
        headers: The request headers.
        sdk_key: The SDK key in a datafile path, known or not; ``None`` for other paths.
        status: The status answered; ``None`` for :class:`Hang` and :class:`Reset`.
        etag: The ``ETag`` answered with the datafile (with a ``200`` or a ``304``).
        fault: The fault applied to it, if any.
        client: The client's ``(host, port)``, when the server knows it.
        time: When it had arrived, on the serving event loop's clock
            (:func:`anyio.current_time`, which follows Trio's ``MockClock``).
    """

    method: str
    path: str
    headers: httpx.Headers
    sdk_key: str | None
    status: int | None
    etag: str | None
    fault: Fault | None
    client: tuple[str, int] | None
    time: float


@dataclass(frozen=True, slots=True)
class _Revision:
    body: bytes
    etag: str
    modified: int  # seconds since the epoch
    last_modified: str  # the same, as an HTTP date


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    revision: _Revision | None = None
    refusal: Refusal | None = None
    allow: bytes | None = None
    extra: tuple[tuple[bytes, bytes], ...] = ()


def _serialize(datafile: Mapping[str, Any] | str | bytes) -> bytes:
    if isinstance(datafile, bytes):
        return datafile
    if isinstance(datafile, str):
        return datafile.encode()
    if isinstance(datafile, Mapping):
        return json.dumps(datafile, separators=(",", ":"), allow_nan=False).encode()
    raise TypeError(f"a datafile is a mapping, str or bytes, not {type(datafile).__name__}")


def _modified_since(value: str, modified: int) -> bool:
    # Whether an If-Modified-Since date is not older than ``modified``; an invalid date
    # is ignored, as RFC 9110 says.
    try:
        since = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if since.tzinfo is None:  # "-0000": UTC, from nowhere in particular
        since = since.replace(tzinfo=datetime.UTC)
    return int(since.timestamp()) >= modified


def _matches(if_none_match: str, etag: str) -> bool:
    # Weak comparison, as RFC 9110 says for If-None-Match: W/"x" matches "x".
    if if_none_match.strip() == "*":
        return True
    return etag in _ETAG.findall(if_none_match)


class DatafileAPI(FaultControls, WaitControls):
    """The datafile CDN stand-in: an ASGI 3 app that serves datafiles, records and misbehaves.

    Serves each datafile at ``GET /datafiles/{sdk_key}.json``, as
    ``https://cdn.optimizely.com`` does, and at ``GET /datafiles/auth/{sdk_key}.json``, as
    ``https://config.optimizely.com`` does for a secure environment. Each request goes
    through, in order:

    1. the next scripted fault, or else the persistent one (:meth:`fail_all`);
    2. the rules (:meth:`fail_when`), first match wins, on the request's path (UTF-8; a
       ``GET`` has no body to match);
    3. ``405`` (``Allow: GET``) for a method other than ``GET``, ``404`` for a path other
       than the two above;
    4. with a ``token``, on the ``auth`` path: ``401`` (with ``WWW-Authenticate: Bearer``)
       without an ``Authorization: Bearer ...`` header, ``403`` with another token; on the
       plain path: ``404``, as the public CDN has no datafile of a secure environment.
       Without a ``token``, both paths serve freely, whatever ``Authorization`` says;
    5. ``404`` for an SDK key without a datafile;
    6. ``304`` (no body; ``ETag`` and ``Last-Modified``) when ``If-None-Match`` names the
       current ``ETag`` (weak comparison; ``*`` matches) or, without ``If-None-Match``,
       when ``If-Modified-Since`` is not older than ``Last-Modified``;
    7. ``200``, the datafile as set (``Content-Type: application/json``, even when it is
       not JSON), ``ETag`` and ``Last-Modified``.

    Refusals (3. to 5.) have a short JSON body (``{"error": ..., "message": ...}``). A
    :class:`Delay` waits and goes on; a 2xx :class:`Respond` replaces only the answer to a
    request that is served (``200`` or ``304``). Every request is recorded, as a
    :class:`DatafileRequest`, with what it was answered.

    Each :meth:`set_datafile` makes a new revision: a new strong ``ETag`` (a hash of the
    bytes and a revision number, so even the same bytes get a new one) and a new
    ``Last-Modified``: when it was set, to the second, and always later than the previous
    revision's of that SDK key (one second later when both came within the same second),
    so that ``If-Modified-Since`` alone tells revisions apart too.

    Thread-safe: a server in another thread (:func:`serve_in_thread`) can serve while the
    test sets datafiles and reads the record. Every property returns a snapshot.

    Args:
        datafiles: The datafiles to serve, by SDK key: a mapping is served as compact JSON;
            ``str`` (as UTF-8) and ``bytes`` are served as they are (invalid JSON too).
        token: The access token the ``auth`` path requires, as ``Authorization: Bearer
            <token>``; ``None`` serves both paths freely.
        faults: A fault script, one fault per request, in order; then requests are served
            as usual.
        rules: Faults for requests whose path matches a predicate, first match wins.

    Raises:
        ValueError: An SDK key is empty or holds a ``/``, or ``token`` is empty.
        TypeError: A datafile is not a mapping, ``str`` or ``bytes``.
    """

    def __init__(
        self,
        datafiles: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        faults: Iterable[Fault] = (),
        rules: Iterable[When] = (),
    ) -> None:
        if token is not None and not token:
            raise ValueError("token must not be empty: None serves without one")
        self.token = token
        self._faults = FaultPlan(faults, rules)
        # Guards the datafiles, the record and the waiters.
        self._lock = threading.RLock()
        self._waiters = Waiters(self._lock)
        self._revisions = itertools.count(1)
        self._datafiles: dict[str, _Revision] = {}
        self._modified: dict[str, int] = {}  # kept when a datafile is removed
        self._requests: list[DatafileRequest] = []
        for sdk_key, datafile in (datafiles or {}).items():
            self.set_datafile(sdk_key, datafile)

    def __repr__(self) -> str:
        with self._lock:
            return f"<DatafileAPI datafiles={len(self._datafiles)} requests={len(self._requests)}>"

    # Datafiles --------------------------------------------------------------------------

    def set_datafile(self, sdk_key: str, datafile: Mapping[str, Any] | str | bytes) -> str:
        """Serve a new revision of an SDK key's datafile from now on.

        Args:
            sdk_key: The SDK key.
            datafile: The datafile: a mapping is served as compact JSON (serialized now);
                ``str`` (as UTF-8) and ``bytes`` are served as they are.

        Returns:
            The new revision's ``ETag``, quotes included, as it is sent.

        Raises:
            ValueError: ``sdk_key`` is empty or holds a ``/``; or the mapping holds NaN or
                an infinity, which JSON cannot.
            TypeError: ``datafile`` is not a mapping, ``str`` or ``bytes``, or the mapping
                is not JSON-serializable.
        """
        if not sdk_key or "/" in sdk_key:
            raise ValueError(f"sdk_key ({sdk_key!r}) must be non-empty, without '/'")
        body = _serialize(datafile)
        digest = hashlib.sha256(body).hexdigest()[:16]
        with self._lock:
            etag = f'"{digest}-{next(self._revisions)}"'
            modified = max(int(time.time()), self._modified.get(sdk_key, 0) + 1)
            self._modified[sdk_key] = modified
            self._datafiles[sdk_key] = _Revision(
                body, etag, modified, email.utils.formatdate(modified, usegmt=True)
            )
        return etag

    def remove_datafile(self, sdk_key: str) -> None:
        """Stop serving an SDK key's datafile: its paths answer ``404`` from now on.

        Args:
            sdk_key: The SDK key.

        Raises:
            KeyError: No datafile is served for ``sdk_key``.
        """
        with self._lock:
            del self._datafiles[sdk_key]

    @property
    def sdk_keys(self) -> list[str]:
        """The SDK keys with a datafile, in the order they were first set."""
        with self._lock:
            return list(self._datafiles)

    # Faults: inject, fail_all, fail_when, heal, pending_faults (FaultControls) ----------

    # Reading ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[DatafileRequest]:
        """Every request received, in order, whatever its path and answer."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Requests received, whatever their path and answer."""
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        """Forget the requests received. The datafiles and the faults stay."""
        with self._lock:
            self._requests = []

    # Waiting ----------------------------------------------------------------------------

    async def wait_for_requests(self, n: int) -> None:
        """Wait until at least ``n`` requests were received, however answered.

        Args:
            n: The number of requests.
        """
        await self.wait_until(lambda: len(self._requests) >= n)

    # ASGI -------------------------------------------------------------------------------

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        """Serve one ASGI connection scope.

        Args:
            scope: The ASGI scope (``http`` or ``lifespan``).
            receive: The ASGI receive callable.
            send: The ASGI send callable.

        Raises:
            SimulatedReset: A :class:`Reset` fault applies to the request.
        """
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        seen = await read_request(scope, receive, 0)  # a body, if any, is not kept
        if seen is None:
            return
        match = _PATH.fullmatch(seen.path)
        sdk_key = match[2] if match else None

        async def apply(fault: Fault) -> tuple[bool, Respond | None]:
            def record(status: int | None) -> None:
                self._record(seen, sdk_key, status, None, fault)

            return await apply_fault(
                fault, receive, send, record, reset_message="connection reset by DatafileAPI"
            )

        applied = self._faults.take()
        override: Respond | None = None
        if applied is not None:
            answered, override = await apply(applied)
            if answered:
                return
        target = seen.path.encode()
        for rule in self._faults.rules():
            if rule.predicate(target):
                applied = rule.fault
                answered, rule_override = await apply(rule.fault)
                if answered:
                    return
                override = rule_override or override
                break

        with self._lock:
            # Routed and recorded at once: the record names the revision answered.
            found = self._route(seen, match)
            revision = found.revision
            if override is not None and revision is not None:
                self._record(seen, sdk_key, override.status, None, applied)
            else:
                etag = revision.etag if revision is not None else None
                self._record(seen, sdk_key, found.status, etag, applied)
        if override is not None and revision is not None:
            await respond(send, override)
        elif found.refusal is not None:
            await refuse(send, found.refusal, found.allow, found.extra)
        else:
            assert revision is not None
            headers = [
                (b"etag", revision.etag.encode()),
                (b"last-modified", revision.last_modified.encode()),
            ]
            await answer(send, found.status, revision.body, _JSON, headers)

    def _route(self, seen: Seen, match: re.Match[str] | None) -> _Answer:
        # Under the lock.
        if seen.method != "GET":
            refusal = Refusal(405, "method_not_allowed", "use GET")
            return _Answer(405, refusal=refusal, allow=b"GET")
        if match is None:
            return _Answer(404, refusal=Refusal(404, "not_found", f"no such path: {seen.path}"))
        auth, sdk_key = match[1] is not None, match[2]
        if self.token is not None:
            if not auth:
                return self._not_found(sdk_key)
            scheme, _, credentials = seen.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                refusal = Refusal(401, "unauthorized", "a bearer token is required")
                return _Answer(401, refusal=refusal, extra=((b"www-authenticate", b"Bearer"),))
            if credentials.strip() != self.token:
                return _Answer(403, refusal=Refusal(403, "forbidden", "invalid token"))
        revision = self._datafiles.get(sdk_key)
        if revision is None:
            return self._not_found(sdk_key)
        if_none_match = seen.headers.get("if-none-match")
        if if_none_match is not None:
            unchanged = _matches(if_none_match, revision.etag)
        else:
            since = seen.headers.get("if-modified-since")
            unchanged = since is not None and _modified_since(since, revision.modified)
        return _Answer(304 if unchanged else 200, revision=revision)

    def _not_found(self, sdk_key: str) -> _Answer:
        message = f"no datafile for sdk key {sdk_key!r}"
        return _Answer(404, refusal=Refusal(404, "not_found", message))

    def _record(
        self,
        seen: Seen,
        sdk_key: str | None,
        status: int | None,
        etag: str | None,
        fault: Fault | None,
    ) -> None:
        with self._lock:
            self._requests.append(
                DatafileRequest(
                    method=seen.method,
                    path=seen.path,
                    headers=seen.headers,
                    sdk_key=sdk_key,
                    status=status,
                    etag=etag,
                    fault=fault,
                    client=seen.client,
                    time=seen.time,
                )
            )
            self._waiters.check()
