"""OpenTelemetry metrics for a client: its ledger, its queue, and each request's duration.

Install the extra, ``pip install 'optitrack[otel]'``, and instrument a client (before or
after entering it)::

    import optitrack.otel

    instrumentation = optitrack.otel.instrument(client)  # the global meter provider
    ...
    instrumentation.uninstrument()

The counters and the queue's gauges are observable instruments read from
:meth:`optitrack.Client.statistics` when the SDK collects (a snapshot: cheap, and safe
from the SDK's export thread); ``optitrack.request.duration`` is recorded from each
``LOG_EVENT`` notification, one per Events API attempt. ``docs/observability.md`` lists
the instruments.

Owns: the instruments (one set per meter provider, shared by the clients instrumented
with it, which they sum over) and the handles. Must not touch: the client's internals; it
reads ``statistics()`` and listens through ``notification_center``, nothing else.
Nothing else in optitrack imports this module: ``import optitrack`` never imports
opentelemetry.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from . import Client, LogEventNotification, NotificationType, Statistics, __version__

__all__ = ["Instrumentation", "METER_NAME", "REQUEST_DURATION_BUCKETS", "instrument"]

#: The instrumentation scope (the meter's name); its version is ``optitrack.__version__``.
METER_NAME = "optitrack"

#: The boundaries advised for ``optitrack.request.duration``, in seconds: those the
#: semantic conventions advise for ``http.client.request.duration``.
REQUEST_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

_Read = Callable[[Statistics], int]
_ReadByReason = Callable[[Statistics], Mapping[str, int]]


def instrument(client: Client, meter_provider: MeterProvider | None = None) -> Instrumentation:
    """Report ``client``'s metrics through OpenTelemetry, until uninstrumented.

    Works on a client before or after it is entered, and after it is closed (its final
    counts). Clients instrumented with the same meter provider share its instruments,
    which report their sum. Instrumenting a client again with the same provider returns
    the handle it already has.

    Args:
        client: The client to report on.
        meter_provider: Where the instruments are made; defaults to the global one
            (``opentelemetry.metrics.get_meter_provider()``), which should be set first.

    Returns:
        The handle: :meth:`Instrumentation.uninstrument` stops the reporting.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _registry_lock:
        instruments = _registry.get(provider)
        if instruments is None:
            instruments = _registry[provider] = _Instruments(
                provider.get_meter(METER_NAME, __version__)
            )
    return instruments.add(client)


class Instrumentation:
    """A client whose metrics are reported; :func:`instrument` makes it.

    Also a context manager, which uninstruments on exit.

    Attributes:
        client: The client reported on.
    """

    def __init__(self, instruments: _Instruments, client: Client) -> None:
        self.client = client
        self._instruments = instruments
        self._listener_id: int | None = client.notification_center.add_listener(
            NotificationType.LOG_EVENT, instruments.record_attempt
        )

    @property
    def active(self) -> bool:
        """Whether the client's metrics are being reported."""
        return self._listener_id is not None

    def uninstrument(self) -> None:
        """Stop reporting the client's metrics; calling it again does nothing.

        The counters keep the client's counts so far, so they never go backwards while
        other clients are reported through the same meter provider; the queue's gauges
        and the request durations leave it out from now on. With no client left, the
        observable instruments report nothing.
        """
        self._instruments.remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        state = "active" if self.active else "uninstrumented"
        return f"<Instrumentation of {self.client!r}, {state}>"


class _Instruments:
    """One meter's instruments, and the clients they report on."""

    def __init__(self, meter: Meter) -> None:
        # Callbacks run on the SDK's thread (a periodic reader's, or the caller of
        # collect), add and remove on the caller's: the lock keeps each reading whole.
        self._lock = threading.Lock()
        self._active: dict[int, Instrumentation] = {}  # by id(client)
        # The counts of clients no longer reported, so that counters never go back...
        self._retired = _NOTHING
        # ...but not twice when such a client is instrumented again.
        self._retired_by_client: weakref.WeakKeyDictionary[Client, Statistics] = (
            weakref.WeakKeyDictionary()
        )
        counter = meter.create_observable_counter
        up_down = meter.create_observable_up_down_counter
        counter(
            "optitrack.event.accepted",
            [self._total(lambda s: s.accepted)],
            unit="{event}",
            description="Events accepted by track and decision calls.",
        )
        counter(
            "optitrack.event.delivered",
            [self._total(lambda s: s.delivered)],
            unit="{event}",
            description="Events the Events API acknowledged.",
        )
        counter(
            "optitrack.event.dropped",
            [self._by_reason(lambda s: s.dropped)],
            unit="{event}",
            description="Events given up on after acceptance, by reason.",
        )
        counter(
            "optitrack.event.refused",
            [self._by_reason(lambda s: s.refused)],
            unit="{event}",
            description="Events refused at the call, never accepted, by reason.",
        )
        up_down(
            "optitrack.event.queued",
            [self._current(lambda s: s.queued)],
            unit="{event}",
            description="Events waiting in the queue (its depth).",
        )
        up_down(
            "optitrack.event.in_flight",
            [self._current(lambda s: s.in_flight)],
            unit="{event}",
            description="Events in batches being sent or waiting to be retried.",
        )
        up_down(
            "optitrack.queue.size",
            [self._current(lambda s: s.queued_bytes)],
            unit="By",
            description="Serialized bytes waiting in the queue.",
        )
        up_down(
            "optitrack.event.spooled",
            [self._current(lambda s: s.spooled)],
            unit="{event}",
            description="Accepted events held in the spool only (spilled, or kept at shutdown).",
        )
        counter(
            "optitrack.event.recovered",
            [self._total(lambda s: s.recovered)],
            unit="{event}",
            description="Events an earlier process left in the spool, found at start.",
        )
        counter(
            "optitrack.spool.skipped",
            [self._total(lambda s: s.spool_skipped)],
            unit="{record}",
            description="Damaged spool records skipped at start (checksum, torn tail).",
        )
        up_down(
            "optitrack.spool.size",
            [self._current(lambda s: s.spool_bytes)],
            unit="By",
            description="Bytes the spool holds for events not yet delivered or dropped.",
        )
        counter(
            "optitrack.request.count",
            [self._total(lambda s: s.requests)],
            unit="{request}",
            description="Events API requests made, retries included.",
        )
        counter(
            "optitrack.request.retries",
            [self._total(lambda s: s.retries)],
            unit="{request}",
            description="Events API requests that retried an earlier failed attempt.",
        )
        counter(
            "optitrack.request.body.size",
            [self._total(lambda s: s.bytes_sent)],
            unit="By",
            description="Request body bytes sent (after compression), retries included.",
        )
        self._duration = _histogram(
            meter,
            "optitrack.request.duration",
            unit="s",
            description="How long each Events API attempt took.",
        )

    # -- clients ---------------------------------------------------------------------

    def add(self, client: Client) -> Instrumentation:
        with self._lock:
            found = self._active.get(id(client))
            if found is not None:
                return found
            final = self._retired_by_client.pop(client, None)
            if final is not None:
                # Reported again: its counts so far come back with it, not twice.
                self._retired = _combine(self._retired, final, -1)
            instrumentation = Instrumentation(self, client)
            self._active[id(client)] = instrumentation
            return instrumentation

    def remove(self, instrumentation: Instrumentation) -> None:
        client = instrumentation.client
        with self._lock:
            listener_id = instrumentation._listener_id
            if listener_id is None:
                return
            instrumentation._listener_id = None
            client.notification_center.remove_listener(listener_id)
            del self._active[id(client)]
            final = client.statistics()
            self._retired = _combine(self._retired, final)
            self._retired_by_client[client] = final

    # -- the callbacks ---------------------------------------------------------------

    def _total(self, read: _Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                if not self._active:
                    return ()
                total = read(self._retired)
                total += sum(read(i.client.statistics()) for i in self._active.values())
            return (Observation(total),)

        return observe

    def _current(self, read: _Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                if not self._active:
                    return ()
                total = sum(read(i.client.statistics()) for i in self._active.values())
            return (Observation(total),)

        return observe

    def _by_reason(self, read: _ReadByReason) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            counts: dict[str, int] = {}
            with self._lock:
                if not self._active:
                    return ()
                snapshots = [i.client.statistics() for i in self._active.values()]
                for stats in (self._retired, *snapshots):
                    for reason, count in read(stats).items():
                        counts[reason] = counts.get(reason, 0) + count
            return [Observation(count, {"reason": reason}) for reason, count in counts.items()]

        return observe

    def record_attempt(self, notification: LogEventNotification) -> None:
        """The LOG_EVENT listener: an attempt's duration, by outcome and answer."""
        duration = notification.duration
        if duration is None:
            return
        status = notification.status
        attributes: dict[str, str | int] = {"outcome": notification.outcome}
        if status is not None:
            attributes["http.response.status_code"] = status
            if status >= 400:
                attributes["error.type"] = str(status)
        else:
            attributes["error.type"] = notification.error or "_OTHER"
        self._duration.record(duration, attributes)


_NOTHING = Statistics(
    accepted=0,
    delivered=0,
    pending=0,
    queued=0,
    queued_bytes=0,
    in_flight=0,
    batches=0,
    requests=0,
    retries=0,
    bytes_sent=0,
)


def _combine(base: Statistics, stats: Statistics, sign: int = 1) -> Statistics:
    """``base`` plus (or minus) the counts of ``stats``; the queue's figures are zero."""
    return Statistics(
        accepted=base.accepted + sign * stats.accepted,
        delivered=base.delivered + sign * stats.delivered,
        dropped=_combine_counts(base.dropped, stats.dropped, sign),
        refused=_combine_counts(base.refused, stats.refused, sign),
        pending=0,
        queued=0,
        queued_bytes=0,
        in_flight=0,
        batches=base.batches + sign * stats.batches,
        requests=base.requests + sign * stats.requests,
        retries=base.retries + sign * stats.retries,
        bytes_sent=base.bytes_sent + sign * stats.bytes_sent,
        recovered=base.recovered + sign * stats.recovered,
        spool_skipped=base.spool_skipped + sign * stats.spool_skipped,
    )


def _combine_counts(
    base: Mapping[str, int], counts: Mapping[str, int], sign: int
) -> Mapping[str, int]:
    combined = dict(base)
    for reason, count in counts.items():
        combined[reason] = combined.get(reason, 0) + sign * count
    return {reason: count for reason, count in combined.items() if count}


def _histogram(meter: Meter, name: str, *, unit: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=REQUEST_DURATION_BUCKETS,
        )
    except TypeError:  # opentelemetry-api < 1.23 takes no advice: the SDK's buckets
        return meter.create_histogram(name, unit=unit, description=description)


_registry_lock = threading.Lock()
_registry: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()
