"""A stand-in for the Optimizely Events API, for tests and benchmarks.

:class:`EventsAPI` is a plain ASGI 3 application that accepts ``POST /v1/events`` like the
real endpoint, validates each body strictly against :class:`optitrack._wire.EventBatch`,
answers ``204`` and records what arrived. It can be told to misbehave (:class:`Respond`,
:class:`Delay`, :class:`Hang`, :class:`Reset`), once per request from a script, for every
request, or for requests whose body matches a predicate.

Use it in-process, through :class:`httpx.ASGITransport`::

    api = EventsAPI()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        ...
    assert api.event_count == 3

or over real loopback sockets, when timeouts, resets and connection pooling matter::

    async with serve(EventsAPI()) as server:  # runs in the caller's event loop
        ... post to server.url ...

    with serve_in_thread(api) as server:  # an asyncio loop in a daemon thread
        ...

Both servers bind to loopback addresses only. :func:`serve` works on asyncio and Trio.

Besides ``POST /v1/events``, the app answers ``GET /`` with a small HTML results page and
``GET /v1/stats`` with the same summary as JSON (see :meth:`EventsAPI.statistics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import json
import logging
import math
import re
import socket
import struct
import threading
import zlib
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeAlias
from urllib.parse import unquote

import anyio
import anyio.abc
import h11
import httpx
import pydantic
from anyio.from_thread import start_blocking_portal

from ._exceptions import unwrap_single_group
from ._wire import EventBatch, SnapshotEvent, Visitor

__all__ = [
    "ASGIApp",
    "ASGIMessage",
    "ASGIReceive",
    "ASGISend",
    "Delay",
    "EventsAPI",
    "EventsAPIStatistics",
    "Fault",
    "Hang",
    "MAX_BODY_SIZE",
    "ReceivedRequest",
    "Reset",
    "Respond",
    "Server",
    "SimulatedReset",
    "VariationResults",
    "When",
    "serve",
    "serve_in_thread",
]

logger = logging.getLogger("optitrack.testing")

MAX_BODY_SIZE = 3_500_000
"""The Events API's limit on one request body, in bytes."""

EVENTS_PATH = "/v1/events"
STATS_PATH = "/v1/stats"
IMPRESSION_KEY = "campaign_activated"
_UUID_VALUE = re.compile(rb'"uuid"\s*:\s*"([^"\\]*)"')

_RECEIVE_SIZE = 256 * 1024
_MAX_ERRORS_SHOWN = 10

ASGIMessage: TypeAlias = MutableMapping[str, Any]
"""An ASGI message (or scope)."""
ASGIReceive: TypeAlias = Callable[[], Awaitable[ASGIMessage]]
"""The ASGI ``receive`` callable."""
ASGISend: TypeAlias = Callable[[ASGIMessage], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[MutableMapping[str, Any], ASGIReceive, ASGISend], Awaitable[None]]
"""An ASGI 3 application, as :class:`httpx.ASGITransport` types it."""


# Faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Base of the faults the stand-in can inject.

    The faults are :class:`Respond`, :class:`Delay`, :class:`Hang` and :class:`Reset`:
    frozen dataclasses, so comparable and hashable.
    """


@dataclass(frozen=True)
class Respond(Fault):
    """Answer with this status instead of the usual one.

    A non-2xx status answers at once: the body is neither validated nor counted. A 2xx
    status processes the request as usual (an invalid body still gets ``400``) and, when
    accepted, answers with this status and body instead of ``204``.

    Args:
        status: The HTTP status, 200 to 599.
        body: The response body; ``None`` for a short JSON reason on errors and no body
            otherwise. A ``str`` is sent as UTF-8.
        retry_after: The ``Retry-After`` header (seconds, or an HTTP date), if any.
        headers: More response headers, as ``(name, value)`` pairs.

    Raises:
        ValueError: The status is outside 200..599.
    """

    status: int
    _: KW_ONLY
    body: bytes | str | None = None
    retry_after: str | int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"status ({self.status}) must be between 200 and 599")


@dataclass(frozen=True)
class Delay(Fault):
    """Wait, then go on: as usual, or with another fault.

    Args:
        seconds: How long to wait before answering, in seconds.
        then: The fault to apply after the wait; ``None`` to process the request as usual.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """

    seconds: float
    then: Fault | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds ({self.seconds}) must be a finite number >= 0")


@dataclass(frozen=True)
class Hang(Fault):
    """Never answer: read the request, then wait until the client disconnects.

    Through :func:`serve`, the connection stays open until the client gives up or the
    server stops, so the client's read timeout fires. In-process through
    :class:`httpx.ASGITransport`, which has no timeouts, the request waits until the
    caller's cancel scope (e.g. :func:`anyio.fail_after`) cancels it.
    """


@dataclass(frozen=True)
class Reset(Fault):
    """Abort the connection with a TCP reset (RST) instead of answering.

    Through :func:`serve`, the socket is closed with ``SO_LINGER`` set to 0, and the client
    sees a connection reset (an :class:`httpx.TransportError`). The app itself raises
    :class:`SimulatedReset`, an :class:`httpx.ReadError`: in-process through
    :class:`httpx.ASGITransport`, that is what the client sees. Other ASGI servers (e.g.
    uvicorn) answer ``500`` instead.
    """


@dataclass(frozen=True)
class When:
    """A fault for every request whose body matches a predicate.

    Example: ``When(lambda body: b"poison" in body, Respond(400))`` rejects each batch
    that carries the marker, to exercise the client's bisection of a poisoned batch.

    Args:
        predicate: Called with the request body (after ``Content-Encoding`` decoding);
            returns whether the fault applies. It runs in the server's event loop.
        fault: The fault to apply.
    """

    predicate: Callable[[bytes], bool]
    fault: Fault


class SimulatedReset(httpx.ReadError):
    """Raised by :class:`EventsAPI` for a :class:`Reset` fault.

    :func:`serve` turns it into a real TCP reset. Through :class:`httpx.ASGITransport` the
    client gets it as is: being an :class:`httpx.ReadError`, it is a transport error, as a
    real reset would be.

    Args:
        message: What happened.
    """

    def __init__(self, message: str = "connection reset by the Events API stand-in") -> None:
        super().__init__(message)


# Records --------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class VariationResults:
    """Results of one variation, attributed the way the Events API backend does.

    A conversion counts for every variation its visitor had an impression for before it
    arrived (the first variation seen per experiment), like ``enrich_decisions`` does. Every
    conversion event counts, not unique visitors.

    Attributes:
        experiment: The rule (experiment) key of the impressions.
        variation: The variation key.
        impressions: Impression events received.
        visitors: Distinct visitors whose first impression in the experiment was this one.
        conversions: Conversions attributed to the variation, per event key.
        revenue: Revenue attributed to the variation.
    """

    experiment: str
    variation: str
    impressions: int
    visitors: int
    conversions: Mapping[str, int]
    revenue: int


@dataclass(frozen=True)
class EventsAPIStatistics:
    """A snapshot of what :class:`EventsAPI` received.

    Attributes:
        requests: Requests to ``POST /v1/events``, whatever was answered.
        statuses: Requests per status answered (hangs and resets are not counted).
        batches: Batches accepted.
        events: Events in accepted batches, duplicates included.
        impressions: Impression events accepted.
        conversions: Conversion events accepted.
        revenue: Sum of the conversions' ``revenue``.
        duplicates: Accepted events whose uuid had already been accepted.
        bytes_received: Body bytes received, as sent on the wire.
        conversions_by_event: Conversions per event key.
        impressions_by_variation: Impressions per ``(experiment key, variation key)``.
        variations: Results per variation, in order of first impression.
    """

    requests: int
    statuses: Mapping[int, int]
    batches: int
    events: int
    impressions: int
    conversions: int
    revenue: int
    duplicates: int
    bytes_received: int
    conversions_by_event: Mapping[str, int]
    impressions_by_variation: Mapping[tuple[str, str], int]
    variations: tuple[VariationResults, ...]

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data (what ``GET /v1/stats`` answers).

        Returns:
            A dict of plain JSON values.
        """
        return {
            "requests": self.requests,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "batches": self.batches,
            "events": self.events,
            "impressions": self.impressions,
            "conversions": self.conversions,
            "revenue": self.revenue,
            "duplicates": self.duplicates,
            "bytes_received": self.bytes_received,
            "conversions_by_event": dict(self.conversions_by_event),
            "variations": [
                {
                    "experiment": v.experiment,
                    "variation": v.variation,
                    "impressions": v.impressions,
                    "visitors": v.visitors,
                    "conversions": dict(v.conversions),
                    "revenue": v.revenue,
                }
                for v in self.variations
            ],
        }


# What one accepted event contributes: visitor id, uuid, key, revenue, and the
# (experiment key, variation key) of each decision (empty for a conversion).
_Tally: TypeAlias = tuple[str, str, str, int | None, list[tuple[str, str]]]


def _tally_batch(batch: EventBatch) -> Iterator[_Tally]:
    for visitor in batch.visitors:
        snapshot = visitor.snapshots[0]
        event = snapshot.events[0]
        decisions = snapshot.decisions
        arms = (
            [(d.metadata.rule_key, d.metadata.variation_key) for d in decisions]
            if decisions
            else []
        )
        yield visitor.visitor_id, event.uuid, event.key, event.revenue, arms


def _tally_json(data: Any) -> list[_Tally]:
    # Unvalidated input: a shape error raises KeyError, TypeError or IndexError, which the
    # caller turns into a 400. Built eagerly so that nothing is counted from a bad batch.
    tallies: list[_Tally] = []
    for visitor in data["visitors"]:
        snapshot = visitor["snapshots"][0]
        event = snapshot["events"][0]
        decisions = snapshot.get("decisions")
        arms = (
            [(d["metadata"]["rule_key"], d["metadata"]["variation_key"]) for d in decisions]
            if decisions
            else []
        )
        revenue = event.get("revenue")
        tallies.append(
            (
                str(visitor["visitor_id"]),
                str(event["uuid"]),
                str(event["key"]),
                revenue if type(revenue) is int else None,
                arms,
            )
        )
    return tallies


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


class _Arm:
    __slots__ = ("conversions", "impressions", "revenue", "visitors")

    def __init__(self) -> None:
        self.impressions = 0
        self.visitors = 0
        self.conversions: Counter[str] = Counter()
        self.revenue = 0


def _call_soon_threadsafe() -> Callable[[Callable[[], object]], object]:
    # anyio has no non-blocking way to run a callback in another thread's loop, and the
    # recording thread must never block on the waiting one.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    return loop.call_soon_threadsafe


class _Waiter:
    __slots__ = ("call_soon", "error", "event", "fired", "predicate", "thread")

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate
        self.event = anyio.Event()
        self.thread = threading.get_ident()
        self.call_soon = _call_soon_threadsafe()
        self.fired = False
        self.error: BaseException | None = None

    def check(self) -> None:
        try:
            done = self.predicate()
        except Exception as exc:
            self.error = exc
            done = True
        if done:
            self.fired = True
            if threading.get_ident() == self.thread:
                self.event.set()
            else:
                # RuntimeError: the waiting loop is gone, so nobody is waiting.
                with contextlib.suppress(RuntimeError):
                    self.call_soon(self.event.set)


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


# The app --------------------------------------------------------------------------------


class EventsAPI:
    """The Events API stand-in: an ASGI 3 app that validates, records and misbehaves.

    Each ``POST /v1/events`` goes through, in order:

    1. the next scripted fault, or else the persistent one (:meth:`fail_all`), before
       the body is looked at;
    2. ``413`` for a body over ``max_body_size`` bytes (as sent, or once decoded),
       ``415`` for a content type other than ``application/json`` or an encoding other
       than ``gzip``, ``400`` for broken gzip;
    3. the rules (:meth:`fail_when`), first match wins, on the decoded body;
    4. ``400`` with a JSON body giving the reason (``{"error": ..., "message": ...,
       "errors": [...]}``) for invalid JSON or a batch that breaks the wire format;
    5. ``204``, and the batch is counted.

    A :class:`Delay` waits and goes on; a 2xx :class:`Respond` only changes the answer to
    a valid batch. Every request is recorded with what it was answered.

    Recording is thread-safe: a server in another thread (:func:`serve_in_thread`) can
    record while the test reads. Every property returns a snapshot. ``GET /`` and
    ``GET /v1/stats`` show :meth:`statistics` as HTML and as JSON.

    Args:
        faults: A fault script, one fault per request, in order; then requests are served
            as usual.
        rules: Faults for requests whose body matches a predicate, first match wins.
        validate: Validate each body against :class:`~optitrack._wire.EventBatch`
            (the default). ``False`` only parses the JSON and checks the shape it counts
            from, about twice as fast, for benchmarks; a record's
            :attr:`~ReceivedRequest.batch` may then raise.
        parse: With ``validate=False``, ``False`` does not even parse the body, for
            benchmarks: events are counted, and duplicates found, by their ``"uuid"``
            values, picked out of the body by a regular expression (a string tag named
            ``uuid`` counts too); conversions, impressions and revenue are not tracked.
        record: Keep every request with its body (the default). ``False`` keeps only the
            counters and the uuids seen, for long benchmarks.
        max_body_size: The largest body accepted, in bytes.

    Raises:
        ValueError: ``max_body_size`` is not positive, or ``parse=False`` with
            ``validate=True``.
    """

    def __init__(
        self,
        *,
        faults: Iterable[Fault] = (),
        rules: Iterable[When] = (),
        validate: bool = True,
        parse: bool = True,
        record: bool = True,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if max_body_size <= 0:
            raise ValueError(f"max_body_size ({max_body_size}) must be > 0")
        if validate and not parse:
            raise ValueError("parse=False needs validate=False: validating parses the body")
        self.validate = validate
        self.parse = parse
        self.record = record
        self.max_body_size = max_body_size
        self._lock = threading.RLock()
        self._script: deque[Fault] = deque(faults)
        self._persistent: Fault | None = None
        self._rules: list[When] = list(rules)
        self._waiters: list[_Waiter] = []
        self._clear()

    def _clear(self) -> None:
        self._requests: list[ReceivedRequest] = []
        self._request_count = 0
        self._statuses: Counter[int] = Counter()
        self._batch_count = 0
        self._event_count = 0
        self._impression_count = 0
        self._conversion_count = 0
        self._revenue = 0
        self._bytes = 0
        self._conversions_by_event: Counter[str] = Counter()
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._first_seen: dict[str, dict[str, str]] = {}
        self._uuids: set[str] = set()
        self._duplicates: dict[str, int] = {}
        self._duplicate_count = 0

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"<EventsAPI requests={self._request_count} batches={self._batch_count}"
                f" events={self._event_count}>"
            )

    # Faults -----------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Append faults to the script: each one is used by one request, in order.

        Args:
            *faults: The faults.
        """
        with self._lock:
            self._script.extend(faults)

    def fail_all(self, fault: Fault) -> None:
        """Apply a fault to every request once the script is used up, until :meth:`heal`.

        Args:
            fault: The fault, e.g. ``Respond(503)`` for an endpoint that is down.
        """
        with self._lock:
            self._persistent = fault

    def fail_when(self, predicate: Callable[[bytes], bool], fault: Fault) -> None:
        """Apply a fault to every request whose body matches, until :meth:`heal`.

        Args:
            predicate: Called with the decoded body; returns whether the fault applies.
            fault: The fault, e.g. ``Respond(400)``.
        """
        with self._lock:
            self._rules.append(When(predicate, fault))

    def heal(self) -> None:
        """Remove every fault: the rest of the script, the persistent fault and the rules."""
        with self._lock:
            self._script.clear()
            self._persistent = None
            self._rules.clear()

    @property
    def pending_faults(self) -> int:
        """How many scripted faults are not used yet."""
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget everything received: requests, counters and uuids. Faults stay."""
        with self._lock:
            self._clear()

    # Reading ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request to ``POST /v1/events``, in order (empty when ``record=False``)."""
        with self._lock:
            return list(self._requests)

    @property
    def batches(self) -> list[EventBatch]:
        """Every accepted batch, in order (empty when ``record=False``)."""
        return [batch for r in self.requests if (batch := r.batch) is not None]

    @property
    def visitors(self) -> list[Visitor]:
        """Every visitor of the accepted batches, in order (empty when ``record=False``)."""
        return [visitor for batch in self.batches for visitor in batch.visitors]

    @property
    def events(self) -> list[SnapshotEvent]:
        """Every event of the accepted batches, in order (empty when ``record=False``)."""
        return [snapshot.events[0] for visitor in self.visitors for snapshot in visitor.snapshots]

    @property
    def request_count(self) -> int:
        """Requests to ``POST /v1/events``, whatever was answered."""
        with self._lock:
            return self._request_count

    @property
    def batch_count(self) -> int:
        """Batches accepted."""
        with self._lock:
            return self._batch_count

    @property
    def event_count(self) -> int:
        """Events in accepted batches, duplicates included."""
        with self._lock:
            return self._event_count

    @property
    def revenue(self) -> int:
        """Sum of the accepted conversions' ``revenue``."""
        with self._lock:
            return self._revenue

    @property
    def conversions(self) -> dict[str, int]:
        """Accepted conversions per event key."""
        with self._lock:
            return dict(self._conversions_by_event)

    @property
    def impressions(self) -> dict[tuple[str, str], int]:
        """Accepted impressions per ``(experiment key, variation key)``."""
        with self._lock:
            return {arm: stats.impressions for arm, stats in self._arms.items()}

    def duplicate_uuids(self) -> dict[str, int]:
        """Return the event uuids accepted more than once.

        Returns:
            How many times each duplicated uuid was accepted.
        """
        with self._lock:
            return dict(self._duplicates)

    def statistics(self) -> EventsAPIStatistics:
        """Return a snapshot of everything received.

        Returns:
            The counters, with results per variation.
        """
        with self._lock:
            return EventsAPIStatistics(
                requests=self._request_count,
                statuses=dict(self._statuses),
                batches=self._batch_count,
                events=self._event_count,
                impressions=self._impression_count,
                conversions=self._conversion_count,
                revenue=self._revenue,
                duplicates=self._duplicate_count,
                bytes_received=self._bytes,
                conversions_by_event=dict(self._conversions_by_event),
                impressions_by_variation={a: s.impressions for a, s in self._arms.items()},
                variations=tuple(
                    VariationResults(
                        experiment=experiment,
                        variation=variation,
                        impressions=stats.impressions,
                        visitors=stats.visitors,
                        conversions=dict(stats.conversions),
                        revenue=stats.revenue,
                    )
                    for (experiment, variation), stats in self._arms.items()
                ),
            )

    # Waiting ----------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked each time a request is recorded.

        Works on asyncio and Trio, with the server in the same event loop or in another
        thread (:func:`serve_in_thread`). Guard it with :func:`anyio.fail_after`.

        Args:
            predicate: Called without arguments, under the app's lock, in the thread that
                records; it may read this app's properties.

        Raises:
            Exception: Whatever ``predicate`` raised.
        """
        await anyio.lowlevel.checkpoint()
        with self._lock:
            if predicate():
                return
            waiter = _Waiter(predicate)
            self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            with self._lock:
                self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error

    async def wait_for_requests(self, n: int) -> None:
        """Wait until at least ``n`` requests reached ``POST /v1/events``, however answered.

        Args:
            n: The number of requests.
        """
        await self.wait_until(lambda: self._request_count >= n)

    async def wait_for_batches(self, n: int) -> None:
        """Wait until at least ``n`` batches were accepted.

        Args:
            n: The number of batches.
        """
        await self.wait_until(lambda: self._batch_count >= n)

    async def wait_for_events(self, n: int) -> None:
        """Wait until at least ``n`` events were accepted (duplicates count).

        Args:
            n: The number of events.
        """
        await self.wait_until(lambda: self._event_count >= n)

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
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == EVENTS_PATH:
            if method == "POST":
                await self._post_events(scope, receive, send)
            else:
                await _refuse(send, _Refusal(405, "method_not_allowed", "use POST"), b"POST")
        elif path in ("/", STATS_PATH):
            if method == "GET":
                if path == "/":
                    page = _render_html(self.statistics()).encode()
                    await _answer(send, 200, page, b"text/html; charset=utf-8")
                else:
                    data = json.dumps(self.statistics().as_dict()).encode()
                    await _answer(send, 200, data, b"application/json")
            else:
                await _refuse(send, _Refusal(405, "method_not_allowed", "use GET"), b"GET")
        else:
            await _refuse(send, _Refusal(404, "not_found", f"no such path: {path}"))

    async def _post_events(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            # Past the limit, keep reading (so the client gets its 413 instead of a reset)
            # without keeping anything.
            if size <= self.max_body_size:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks) if size <= self.max_body_size else b""
        headers = httpx.Headers(scope.get("headers") or [])
        client = scope.get("client")
        seen = _Seen(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            body=body,
            size=size,
            client=(str(client[0]), int(client[1])) if client else None,
            time=anyio.current_time(),
        )

        try:
            content, refusal = self._decode(seen), None
        except _Refusal as exc:
            content, refusal = b"", exc

        with self._lock:
            fault = self._script.popleft() if self._script else self._persistent
        applied: Fault | None = None
        override: Respond | None = None
        if fault is not None:
            applied = fault
            answered, override = await self._apply(fault, seen, content, receive, send)
            if answered:
                return
        if refusal is not None:
            self._record(seen, content, refusal.status, error=refusal.message, fault=applied)
            await _refuse(send, refusal)
            return

        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            if rule.predicate(content):
                applied = rule.fault
                answered, rule_override = await self._apply(
                    rule.fault, seen, content, receive, send
                )
                if answered:
                    return
                override = rule_override or override
                break

        tallies: Iterable[_Tally] = ()
        uuids: list[bytes] = []
        try:
            if self.validate:
                tallies = _tally_batch(_validate(content))
            elif self.parse:
                tallies = _parse(content)
            else:
                uuids = _UUID_VALUE.findall(content)
        except _Refusal as exc:
            self._record(seen, content, exc.status, error=exc.message, fault=applied)
            await _refuse(send, exc)
            return

        status = override.status if override is not None else 204
        self._record(seen, content, status, tallies=tallies, uuids=uuids, fault=applied)
        if override is not None:
            await _respond(send, override)
        else:
            await _answer(send, 204)

    async def _apply(
        self,
        fault: Fault,
        seen: _Seen,
        content: bytes,
        receive: ASGIReceive,
        send: ASGISend,
    ) -> tuple[bool, Respond | None]:
        # Returns whether the fault answered (or hung up), and a 2xx Respond to answer
        # with if the request turns out to be valid.
        step: Fault | None = fault
        while isinstance(step, Delay):
            await anyio.sleep(step.seconds)
            step = step.then
        if step is None:
            return False, None
        if isinstance(step, Respond):
            if 200 <= step.status < 300:
                return False, step
            self._record(seen, content, step.status, fault=fault)
            await _respond(send, step)
            return True, None
        if not isinstance(step, Hang | Reset):
            raise TypeError(f"unknown fault: {step!r}")
        self._record(seen, content, None, fault=fault)
        if isinstance(step, Reset):
            raise SimulatedReset
        while (await receive())["type"] != "http.disconnect":
            pass
        return True, None

    def _decode(self, seen: _Seen) -> bytes:
        if seen.size > self.max_body_size:
            raise _Refusal(
                413,
                "payload_too_large",
                f"body of {seen.size} bytes exceeds the limit of {self.max_body_size} bytes",
            )
        content_type = seen.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise _Refusal(
                415,
                "unsupported_media_type",
                f"content-type must be application/json, not {content_type!r}",
            )
        encoding = seen.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return seen.body
        if encoding != "gzip":
            raise _Refusal(
                415, "unsupported_media_type", f"content-encoding {encoding!r} is not supported"
            )
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            content = decompressor.decompress(seen.body, self.max_body_size + 1)
        except zlib.error as exc:
            raise _Refusal(400, "invalid_encoding", f"body is not valid gzip: {exc}") from exc
        if len(content) > self.max_body_size:
            raise _Refusal(
                413,
                "payload_too_large",
                f"decoded body exceeds the limit of {self.max_body_size} bytes",
            )
        if not decompressor.eof or decompressor.unused_data:
            raise _Refusal(400, "invalid_encoding", "body is not one complete gzip stream")
        return content

    def _record(
        self,
        seen: _Seen,
        content: bytes,
        status: int | None,
        *,
        error: str | None = None,
        tallies: Iterable[_Tally] = (),
        uuids: Sequence[bytes] = (),
        fault: Fault | None = None,
    ) -> None:
        with self._lock:
            self._request_count += 1
            self._bytes += seen.size
            if status is not None:
                self._statuses[status] += 1
            if self.record:
                self._requests.append(
                    ReceivedRequest(
                        method=seen.method,
                        path=seen.path,
                        headers=seen.headers,
                        body=seen.body,
                        content=content,
                        status=status,
                        error=error,
                        fault=fault,
                        client=seen.client,
                        time=seen.time,
                    )
                )
            if status is not None and 200 <= status < 300 and error is None:
                self._batch_count += 1
                if uuids:
                    self._count_uuids(uuids)
                for tally in tallies:
                    self._count(tally)
            for waiter in self._waiters:
                if not waiter.fired:
                    waiter.check()

    def _count_uuids(self, uuids: Sequence[bytes]) -> None:
        self._event_count += len(uuids)
        seen = self._uuids
        for raw in uuids:
            uuid = raw.decode("ascii", "replace")
            if uuid in seen:
                self._duplicates[uuid] = self._duplicates.get(uuid, 1) + 1
                self._duplicate_count += 1
            else:
                seen.add(uuid)

    def _count(self, tally: _Tally) -> None:
        visitor_id, uuid, key, revenue, arms = tally
        self._event_count += 1
        if uuid in self._uuids:
            self._duplicates[uuid] = self._duplicates.get(uuid, 1) + 1
            self._duplicate_count += 1
        else:
            self._uuids.add(uuid)
        if arms:
            self._impression_count += 1
            seen = self._first_seen.setdefault(visitor_id, {})
            for experiment, variation in arms:
                arm = self._arms.get((experiment, variation))
                if arm is None:
                    arm = self._arms[experiment, variation] = _Arm()
                arm.impressions += 1
                if experiment not in seen:
                    seen[experiment] = variation
                    arm.visitors += 1
            return
        self._conversion_count += 1
        self._conversions_by_event[key] += 1
        if revenue is not None:
            self._revenue += revenue
        for experiment, variation in self._first_seen.get(visitor_id, {}).items():
            arm = self._arms[experiment, variation]
            arm.conversions[key] += 1
            if revenue is not None:
                arm.revenue += revenue


@dataclass(frozen=True, slots=True)
class _Seen:
    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    size: int
    client: tuple[str, int] | None
    time: float


def _validate(content: bytes) -> EventBatch:
    try:
        return EventBatch.model_validate_json(content)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise _Refusal(400, "invalid_json", f"body is not JSON: {errors[0]['msg']}") from exc
        listed = [
            {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in errors
        ]
        shown = "; ".join(f"{e['loc']}: {e['msg']}" for e in listed[:_MAX_ERRORS_SHOWN])
        more = len(listed) - _MAX_ERRORS_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        raise _Refusal(400, "invalid_batch", f"invalid batch: {shown}", listed) from exc


def _parse(content: bytes) -> list[_Tally]:
    try:
        data = json.loads(content, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Refusal(400, "invalid_json", f"body is not JSON: {exc}") from exc
    try:
        return _tally_json(data)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _Refusal(400, "invalid_batch", f"invalid batch: {exc!r}") from exc


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(
    send: ASGISend,
    status: int,
    body: bytes = b"",
    content_type: bytes | None = None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
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


async def _refuse(send: ASGISend, refusal: _Refusal, allow: bytes | None = None) -> None:
    data: dict[str, Any] = {"error": refusal.code, "message": refusal.message}
    if refusal.details is not None:
        data["errors"] = refusal.details
    extra = [(b"allow", allow)] if allow is not None else []
    await _answer(send, refusal.status, json.dumps(data).encode(), b"application/json", extra)


async def _respond(send: ASGISend, fault: Respond) -> None:
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
    await _answer(send, fault.status, body, content_type, extra)


def _render_html(stats: EventsAPIStatistics) -> str:
    esc = html.escape

    def table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
        cells = "".join(f"<th>{esc(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><tr>{cells}</tr>{body}</table>"

    summary = table(
        ["requests", "batches", "events", "impressions", "conversions", "revenue", "duplicates"],
        [
            [
                stats.requests,
                stats.batches,
                stats.events,
                stats.impressions,
                stats.conversions,
                stats.revenue,
                stats.duplicates,
            ]
        ],
    )
    statuses = table(["status", "requests"], sorted(stats.statuses.items()))
    conversions = table(["event key", "conversions"], sorted(stats.conversions_by_event.items()))
    variations = table(
        ["experiment", "variation", "impressions", "visitors", "conversions", "revenue"],
        [
            [
                v.experiment,
                v.variation,
                v.impressions,
                v.visitors,
                ", ".join(f"{k}: {n}" for k, n in sorted(v.conversions.items())) or "-",
                v.revenue,
            ]
            for v in stats.variations
        ],
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='2'>"
        "<title>optitrack Events API stand-in</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:0 0 1em}"
        "td,th{border:1px solid #999;padding:2px 8px;text-align:left}</style></head><body>"
        "<h1>optitrack Events API stand-in</h1>"
        f"{summary}<h2>Responses</h2>{statuses}"
        f"<h2>Conversions per event</h2>{conversions}"
        f"<h2>Impressions per variation</h2>{variations}</body></html>"
    )


# The loopback server --------------------------------------------------------------------


class Server:
    """A running loopback server (from :func:`serve` or :func:`serve_in_thread`).

    Attributes:
        host: The address it listens on.
        port: The port it listens on.
        connections: How many connections it accepted so far.
    """

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.connections = 0
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

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive(_RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
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
        except (SimulatedReset, anyio.get_cancelled_exc_class()):
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
async def serve(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Server]:
    """Serve an ASGI app over HTTP/1.1 on a loopback address, in the caller's event loop.

    Works on asyncio and Trio. Connections are kept alive between requests. On exit, the
    server stops listening and closes every connection, even one a :class:`Hang` holds.
    An exception raised in the ``async with`` block comes out as itself.

    Args:
        app: The ASGI 3 app, e.g. an :class:`EventsAPI`.
        host: A loopback address to listen on.
        port: The port; 0 picks a free one (see :attr:`Server.port`).

    Yields:
        The running server; post events to :attr:`Server.url`.

    Raises:
        ValueError: ``host`` is not a loopback address.
        OSError: The address cannot be bound.
    """
    host = _check_loopback(host)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    try:
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        assert isinstance(sockname, tuple)
        server = Server(app, host, int(sockname[1]))
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
