"""The Events API stand-in itself: :class:`EventsAPI`, an ASGI 3 app.

Owns the routing, the ``POST /v1/events`` pipeline (faults, refusals, validation, the
answer) and the record of what arrived, under one lock. It owns one :class:`FaultPlan`
(:mod:`._faults`), one :class:`Tallies` (:mod:`._tallies`) and one :class:`Waiters`
(:mod:`._waiting`), and delegates arming faults, counting and waiting to them; applying a
fault to a request, and the methods that arm faults, are :mod:`._applying`'s.

It must not touch sockets or HTTP framing: that is :mod:`._server`, which never imports
this module (it runs any ASGI app). Reading and decoding a body is :mod:`._requests`,
answering :mod:`._asgi`, the results page :mod:`._html`.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

import anyio

from .._wire import EventBatch, SnapshotEvent, Visitor
from ._applying import FaultControls, apply_fault
from ._asgi import (
    EVENTS_PATH,
    RESULTS_PATH,
    STATS_PATH,
    ASGIReceive,
    ASGISend,
    Refusal,
    answer,
    lifespan,
    refuse,
    respond,
)
from ._faults import Fault, FaultPlan, Respond, When
from ._html import render_html, render_results_html
from ._requests import MAX_BODY_SIZE, ReceivedRequest, Seen, decode_body, read_request
from ._results import compute_results
from ._store import EventRow, EventStore, NotJSONError, rows_from_body
from ._tallies import (
    BatchError,
    EventsAPIStatistics,
    Tallies,
    Tally,
    find_uuids,
    parse_tallies,
    tally_batch,
    validate_batch,
)
from ._waiting import WaitControls, Waiters

__all__ = ["EventsAPI"]


class EventsAPI(FaultControls, WaitControls):
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
        db: Store the accepted events in SQLite: a file path (WAL; events survive a
            restart and a re-sent uuid is still a duplicate), ``":memory:"``, or an
            :class:`EventStore`. Then ``GET /v1/results`` answers the experiment results,
            ``GET /`` draws them, duplicates are found by the database, and nothing that
            grows with the events is kept in memory (with ``record=False``). ``None``
            (the default) keeps today's in-memory counters only.
        token: Require ``Authorization: Bearer <token>`` on every request (``401``
            otherwise).
        datafile: The project's datafile, to name experiments and variations and order
            variations in the results.

    Raises:
        ValueError: ``max_body_size`` is not positive, or ``parse=False`` with
            ``validate=True``, or with ``db``.
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
        db: str | EventStore | None = None,
        token: str | None = None,
        datafile: Mapping[str, Any] | None = None,
    ) -> None:
        if max_body_size <= 0:
            raise ValueError(f"max_body_size ({max_body_size}) must be > 0")
        if validate and not parse:
            raise ValueError("parse=False needs validate=False: validating parses the body")
        if db is not None and not parse:
            raise ValueError("parse=False cannot store events: the database needs their fields")
        if token is not None and not token:
            raise ValueError("token must not be empty")
        self.store = EventStore(db) if isinstance(db, str) else db
        self.datafile = datafile
        self._authorization = f"Bearer {token}".encode() if token is not None else None
        self.validate = validate
        self.parse = parse
        self.record = record
        self.max_body_size = max_body_size
        self._faults = FaultPlan(faults, rules)
        # Guards what is recorded (the requests and the tallies) and the waiters.
        self._lock = threading.RLock()
        self._waiters = Waiters(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._tallies = Tallies(index=self.store is None)

    def __repr__(self) -> str:
        with self._lock:
            tallies = self._tallies
            return (
                f"<EventsAPI requests={tallies.request_count} batches={tallies.batch_count}"
                f" events={tallies.event_count}>"
            )

    # Faults: inject, fail_all, fail_when, heal, pending_faults (FaultControls) ----------

    def reset(self) -> None:
        """Forget everything received: requests, counters and uuids. Faults stay.

        The database, when there is one, keeps its events (and so its uuids).
        """
        with self._lock:
            self._requests = []
            self._tallies = Tallies(index=self.store is None)

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
            return self._tallies.request_count

    @property
    def batch_count(self) -> int:
        """Batches accepted."""
        with self._lock:
            return self._tallies.batch_count

    @property
    def event_count(self) -> int:
        """Events in accepted batches, duplicates included."""
        with self._lock:
            return self._tallies.event_count

    @property
    def revenue(self) -> int:
        """Sum of the accepted conversions' ``revenue``."""
        with self._lock:
            return self._tallies.revenue

    @property
    def conversions(self) -> dict[str, int]:
        """Accepted conversions per event key."""
        with self._lock:
            return dict(self._tallies.conversions_by_event)

    @property
    def impressions(self) -> dict[tuple[str, str], int]:
        """Accepted impressions per ``(experiment key, variation key)``."""
        with self._lock:
            return self._tallies.impressions()

    def duplicate_uuids(self) -> dict[str, int]:
        """Return the event uuids accepted more than once.

        Returns:
            How many times each duplicated uuid was accepted.
        """
        with self._lock:
            return dict(self._tallies.duplicates)

    def statistics(self) -> EventsAPIStatistics:
        """Return a snapshot of everything received.

        Returns:
            The counters, with results per variation.
        """
        with self._lock:
            return self._tallies.statistics()

    def results(self) -> dict[str, Any]:
        """Return the experiment results computed from the stored events.

        Blocking (a query): from async code, prefer ``GET /v1/results`` or run it in a
        worker thread.

        Returns:
            ``{"experiments": [...]}``, JSON-ready, as ``GET /v1/results`` answers.

        Raises:
            RuntimeError: The app has no database (``db=None``).
        """
        if self.store is None:
            raise RuntimeError("no results without a database: create EventsAPI(db=...)")
        return compute_results(self.store.tables(), self.datafile)

    # Waiting ----------------------------------------------------------------------------

    async def wait_for_requests(self, n: int) -> None:
        """Wait until at least ``n`` requests reached ``POST /v1/events``, however answered.

        Args:
            n: The number of requests.
        """
        await self.wait_until(lambda: self._tallies.request_count >= n)

    async def wait_for_batches(self, n: int) -> None:
        """Wait until at least ``n`` batches were accepted.

        Args:
            n: The number of batches.
        """
        await self.wait_until(lambda: self._tallies.batch_count >= n)

    async def wait_for_events(self, n: int) -> None:
        """Wait until at least ``n`` events were accepted (duplicates count).

        Args:
            n: The number of events.
        """
        await self.wait_until(lambda: self._tallies.event_count >= n)

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
        path: str = scope["path"]
        method: str = scope["method"]
        if self._authorization is not None and not self._authorized(scope):
            refusal = Refusal(401, "unauthorized", "send Authorization: Bearer <token>")
            await refuse(send, refusal, extra=[(b"www-authenticate", b"Bearer")])
            return
        if path == RESULTS_PATH or (path == "/" and self.store is not None):
            if method != "GET":
                await refuse(send, Refusal(405, "method_not_allowed", "use GET"), b"GET")
            elif self.store is None:
                message = "no results without a database: run the collector with --db"
                await refuse(send, Refusal(404, "no_database", message))
            else:
                results = await anyio.to_thread.run_sync(self.results)
                if path == "/":
                    page = render_results_html(results, self.statistics()).encode()
                    await answer(send, 200, page, b"text/html; charset=utf-8")
                else:
                    await answer(send, 200, json.dumps(results).encode(), b"application/json")
        elif path == EVENTS_PATH:
            if method == "POST":
                await self._post_events(scope, receive, send)
            else:
                await refuse(send, Refusal(405, "method_not_allowed", "use POST"), b"POST")
        elif path in ("/", STATS_PATH):
            if method == "GET":
                if path == "/":
                    page = render_html(self.statistics()).encode()
                    await answer(send, 200, page, b"text/html; charset=utf-8")
                else:
                    data = json.dumps(self.statistics().as_dict()).encode()
                    await answer(send, 200, data, b"application/json")
            else:
                await refuse(send, Refusal(405, "method_not_allowed", "use GET"), b"GET")
        else:
            await refuse(send, Refusal(404, "not_found", f"no such path: {path}"))

    def _authorized(self, scope: MutableMapping[str, Any]) -> bool:
        assert self._authorization is not None
        for name, value in scope.get("headers", ()):
            if bytes(name).lower() == b"authorization":
                return hmac.compare_digest(bytes(value), self._authorization)
        return False

    async def _post_events(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        seen = await read_request(scope, receive, self.max_body_size)
        if seen is None:
            return

        try:
            content, refusal = decode_body(seen, self.max_body_size), None
        except Refusal as exc:
            content, refusal = b"", exc

        fault = self._faults.take()
        applied: Fault | None = None
        override: Respond | None = None
        if fault is not None:
            applied = fault
            answered, override = await self._apply(fault, seen, content, receive, send)
            if answered:
                return
        if refusal is not None:
            self._record(seen, content, refusal.status, error=refusal.message, fault=applied)
            await refuse(send, refusal)
            return

        for rule in self._faults.rules():
            if rule.predicate(content):
                applied = rule.fault
                answered, rule_override = await self._apply(
                    rule.fault, seen, content, receive, send
                )
                if answered:
                    return
                override = rule_override or override
                break

        tallies: Iterable[Tally] = ()
        uuids: list[bytes] = []
        rows: list[EventRow] | None = None
        try:
            if self.validate:
                tallies = tally_batch(validate_batch(content))
                if self.store is not None:
                    rows = _rows(content)
            elif self.store is not None:  # one parse for both
                rows = _rows(content)
                tallies = [_tally(row) for row in rows]
            elif self.parse:
                tallies = parse_tallies(content)
            else:
                uuids = find_uuids(content)
        except BatchError as exc:
            self._record(seen, content, 400, error=exc.message, fault=applied)
            await refuse(send, Refusal(400, exc.code, exc.message, exc.details))
            return

        status = override.status if override is not None else 204
        duplicates = 0
        if self.store is not None and rows is not None and 200 <= status < 300:
            new = await anyio.to_thread.run_sync(self.store.add, rows)
            duplicates = len(rows) - new
        self._record(
            seen,
            content,
            status,
            tallies=tallies,
            uuids=uuids,
            fault=applied,
            duplicates=duplicates,
        )
        if override is not None:
            await respond(send, override)
        else:
            await answer(send, 204)

    async def _apply(
        self,
        fault: Fault,
        seen: Seen,
        content: bytes,
        receive: ASGIReceive,
        send: ASGISend,
    ) -> tuple[bool, Respond | None]:
        def record(status: int | None) -> None:
            self._record(seen, content, status, fault=fault)

        return await apply_fault(fault, receive, send, record)

    def _record(
        self,
        seen: Seen,
        content: bytes,
        status: int | None,
        *,
        error: str | None = None,
        tallies: Iterable[Tally] = (),
        uuids: Sequence[bytes] = (),
        fault: Fault | None = None,
        duplicates: int = 0,
    ) -> None:
        with self._lock:
            self._tallies.count_request(seen.size, status)
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
                self._tallies.count_batch(tallies, uuids)
                self._tallies.duplicate_count += duplicates
            self._waiters.check()


def _rows(content: bytes) -> list[EventRow]:
    try:
        return rows_from_body(content)
    except NotJSONError as exc:
        raise BatchError("invalid_json", f"body is not JSON: {exc}") from exc
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        raise BatchError("invalid_batch", f"invalid batch: {exc!r}") from exc


def _tally(row: EventRow) -> Tally:
    arms = [(d[2], d[4]) for d in row.decisions]
    return row.visitor_id, row.uuid, row.key, row.revenue, arms
