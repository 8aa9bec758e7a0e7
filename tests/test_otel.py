"""optitrack.otel: the instruments' values and attributes, read with the SDK's in-memory
reader from a client that sends to the Events API stand-in (in-process), on asyncio and
Trio; uninstrumenting; and that ``import optitrack`` never imports opentelemetry.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import opentelemetry.metrics
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.util.types import Attributes

import optitrack
import optitrack.otel
from optitrack import LogEventNotification, NotificationType, RetryPolicy
from optitrack.otel import REQUEST_DURATION_BUCKETS, instrument
from optitrack.testing import Delay, EventsAPI, Hang, Respond
from tests.conftest import EVENTS_URL, asgi_client, check_ledger
from tests.delivery.conftest import FAST, Gate

#: Every instrument: its unit, and whether it is a monotonic sum (a counter), a
#: non-monotonic one (an up-down counter) or a histogram.
INSTRUMENTS = {
    "optitrack.event.accepted": ("{event}", "counter"),
    "optitrack.event.delivered": ("{event}", "counter"),
    "optitrack.event.dropped": ("{event}", "counter"),
    "optitrack.event.refused": ("{event}", "counter"),
    "optitrack.event.queued": ("{event}", "up_down_counter"),
    "optitrack.event.in_flight": ("{event}", "up_down_counter"),
    "optitrack.queue.size": ("By", "up_down_counter"),
    "optitrack.event.spooled": ("{event}", "up_down_counter"),
    "optitrack.event.recovered": ("{event}", "counter"),
    "optitrack.spool.skipped": ("{record}", "counter"),
    "optitrack.spool.size": ("By", "up_down_counter"),
    "optitrack.request.count": ("{request}", "counter"),
    "optitrack.request.retries": ("{request}", "counter"),
    "optitrack.request.body.size": ("By", "counter"),
    "optitrack.request.duration": ("s", "histogram"),
}

Key = frozenset[tuple[str, Any]]


def key(**attributes: Any) -> Key:
    """A data point's attributes, as the readings index them (dots spelt ``__``)."""
    return frozenset((name.replace("__", "."), value) for name, value in attributes.items())


class Readings:
    """One collection: each instrument's data points, by their attributes."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.metrics: dict[str, Metric] = {}
        data = reader.get_metrics_data()
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                assert scope_metrics.scope.name == "optitrack"
                assert scope_metrics.scope.version == optitrack.__version__
                for metric in scope_metrics.metrics:
                    self.metrics[metric.name] = metric

    def sums(self, name: str) -> dict[Key, int | float]:
        """A counter's or up-down counter's values, by attributes ({} when absent)."""
        metric = self.metrics.get(name)
        if metric is None:
            return {}
        assert isinstance(metric.data, Sum)
        points = metric.data.data_points
        assert all(isinstance(p, NumberDataPoint) for p in points)
        return {frozenset((p.attributes or {}).items()): p.value for p in points}

    def value(self, name: str, **attributes: Any) -> int | float:
        """One value of a counter or up-down counter."""
        return self.sums(name)[key(**attributes)]

    def durations(self) -> dict[Key, HistogramDataPoint]:
        """The request duration's data points, by attributes ({} when absent)."""
        metric = self.metrics.get("optitrack.request.duration")
        if metric is None:
            return {}
        assert isinstance(metric.data, Histogram)
        points = metric.data.data_points
        return {frozenset((p.attributes or {}).items()): p for p in points}


class Metrics:
    """A meter provider with an in-memory reader."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def collect(self) -> Readings:
        return Readings(self.reader)


@pytest.fixture
def otel() -> Iterator[Metrics]:
    metrics = Metrics()
    yield metrics
    metrics.provider.shutdown()


@asynccontextmanager
async def client_of(
    app: Any, datafile: Mapping[str, Any], **options: Any
) -> AsyncIterator[optitrack.Client]:
    """A client sending in-process to ``app``, not entered yet."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield optitrack.Client(datafile, event_endpoint=EVENTS_URL, http_client=http, **options)


# -- the values ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("when", ["before entering", "after entering"])
async def test_every_instrument_reports_the_ledger(
    datafile: dict[str, Any], otel: Metrics, when: str
) -> None:
    api = EventsAPI()
    async with client_of(api, datafile) as client:
        if when == "before entering":
            instrument(client, otel.provider)
        async with client:
            if when == "after entering":
                instrument(client, otel.provider)
            for n in range(5):
                assert await client.track("purchase", f"u{n}")
            assert not await client.track("no_such_event", "u")
            assert (await client.flush()).complete
            readings = otel.collect()
            stats = client.statistics()
    check_ledger(stats)
    assert set(readings.metrics) == set(INSTRUMENTS) - {"optitrack.event.dropped"}
    for name, metric in readings.metrics.items():
        unit, kind = INSTRUMENTS[name]
        assert metric.unit == unit, name
        assert metric.description, name
        if kind == "histogram":
            assert isinstance(metric.data, Histogram)
        else:
            assert isinstance(metric.data, Sum)
            assert metric.data.is_monotonic == (kind == "counter"), name

    assert readings.value("optitrack.event.accepted") == stats.accepted == 5
    assert readings.value("optitrack.event.delivered") == stats.delivered == 5
    assert readings.sums("optitrack.event.dropped") == {}
    assert readings.sums("optitrack.event.refused") == {key(reason="unknown_event"): 1}
    assert readings.value("optitrack.event.queued") == 0
    assert readings.value("optitrack.event.in_flight") == 0
    assert readings.value("optitrack.queue.size") == 0
    assert readings.value("optitrack.event.spooled") == 0
    assert readings.value("optitrack.event.recovered") == 0
    assert readings.value("optitrack.spool.skipped") == 0
    assert readings.value("optitrack.spool.size") == 0
    assert readings.value("optitrack.request.count") == stats.requests == len(api.requests)
    assert readings.value("optitrack.request.retries") == 0
    body_size = readings.value("optitrack.request.body.size")
    assert body_size == stats.bytes_sent == sum(len(r.body) for r in api.requests) > 0

    durations = readings.durations()
    assert list(durations) == [key(outcome="delivered", http__response__status_code=204)]
    (point,) = durations.values()
    assert point.count == stats.requests
    assert point.sum >= 0
    assert tuple(point.explicit_bounds) == REQUEST_DURATION_BUCKETS


@pytest.mark.anyio
async def test_a_503_then_a_success_is_a_retry_and_two_durations(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    # The 503 comes after 0.05 s: its duration says so.
    api = EventsAPI(faults=[Delay(0.05, Respond(503))])
    async with asgi_client(api, datafile, retry=FAST) as client:
        instrument(client, otel.provider)
        await client.track("purchase", "u")
        assert (await client.flush()).complete
        readings = otel.collect()
    assert readings.value("optitrack.event.delivered") == 1
    assert readings.value("optitrack.request.count") == 2
    assert readings.value("optitrack.request.retries") == 1
    durations = readings.durations()
    retry = durations.pop(key(outcome="retry", http__response__status_code=503, error__type="503"))
    delivered = durations.pop(key(outcome="delivered", http__response__status_code=204))
    assert durations == {}
    assert retry.count == delivered.count == 1
    assert retry.sum >= 0.04  # the loop's clock; asyncio may wake a hair early
    assert retry.min == retry.max == retry.sum


@pytest.mark.anyio
async def test_an_attempt_without_an_answer_has_an_error_type_and_no_status(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    api = EventsAPI(faults=[Hang()])
    policy = RetryPolicy(attempt_timeout=0.05, wait_initial=0.001, wait_max=0.01)
    async with asgi_client(api, datafile, retry=policy) as client:
        instrument(client, otel.provider)
        await client.track("purchase", "u")
        with anyio.fail_after(10):  # a guard: the timeout ends the attempt after 0.05 s
            assert (await client.flush()).complete
        readings = otel.collect()
    durations = readings.durations()
    timed_out = durations.pop(key(outcome="retry", error__type="timeout"))
    assert list(durations) == [key(outcome="delivered", http__response__status_code=204)]
    assert timed_out.count == 1
    assert timed_out.sum >= 0.04


@pytest.mark.anyio
async def test_a_refused_batch_is_dropped_with_its_status(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    api = EventsAPI(faults=[Respond(404)])
    async with asgi_client(api, datafile) as client:
        instrument(client, otel.provider)
        await client.track("purchase", "u1")
        await client.track("purchase", "u2")
        await client.flush()
        readings = otel.collect()
        stats = client.statistics()
    assert stats.dropped == {"http_404": 2}
    assert readings.sums("optitrack.event.dropped") == {key(reason="http_404"): 2}
    assert readings.sums("optitrack.event.delivered") == {key(): 0}
    assert list(readings.durations()) == [
        key(outcome="dropped", http__response__status_code=404, error__type="404")
    ]


@pytest.mark.anyio
async def test_the_queue_depth_and_size_while_events_wait(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=100, flush_interval=60) as client:
        instrument(client, otel.provider)
        for n in range(3):
            await client.track("purchase", f"u{n}")
        readings = otel.collect()
        stats = client.statistics()
    assert stats.queued == 3
    assert readings.value("optitrack.event.queued") == 3
    assert readings.value("optitrack.queue.size") == stats.queued_bytes > 0
    assert readings.value("optitrack.event.in_flight") == 0
    assert readings.value("optitrack.request.count") == 0
    assert readings.durations() == {}


def _damage(spool: Path) -> None:
    (spool / "000000000000.seg").write_bytes(b"not a segment")  # counted, then removed


@pytest.mark.anyio
async def test_the_spools_figures_after_an_outage(
    datafile: dict[str, Any], otel: Metrics, tmp_path: Path
) -> None:
    down = EventsAPI()
    down.fail_all(Respond(503))
    async with asgi_client(
        down, datafile, spool=tmp_path, close_timeout=0.1, retry=FAST, batch_size=5
    ) as client:
        for n in range(12):
            await client.track("purchase", f"u{n}")
    _damage(tmp_path)
    up = EventsAPI()
    gate = Gate(up)
    async with asgi_client(gate, datafile, spool=tmp_path, batch_size=100) as later:
        instrument(later, otel.provider)
        readings = otel.collect()
        stats = later.statistics()
        gate.open.set()
    assert (stats.recovered, stats.spool_skipped) == (12, 1)
    assert readings.value("optitrack.event.recovered") == 12
    assert readings.value("optitrack.spool.skipped") == 1
    assert readings.value("optitrack.event.spooled") == stats.spooled
    assert readings.value("optitrack.spool.size") == stats.spool_bytes > 12 * 200
    assert readings.value("optitrack.event.accepted") == 12


@pytest.mark.anyio
async def test_events_in_flight_while_a_request_is_out(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    gate = Gate(EventsAPI())
    async with asgi_client(gate, datafile, batch_size=3, flush_interval=60) as client:
        instrument(client, otel.provider)
        for n in range(3):  # a full batch: it leaves at once, and waits at the gate
            await client.track("purchase", f"u{n}")
        await anyio.wait_all_tasks_blocked()
        readings = otel.collect()
        gate.open.set()
        assert (await client.flush()).complete
        after = otel.collect()
    assert gate.max_active == 1
    assert readings.value("optitrack.event.in_flight") == 3
    assert readings.value("optitrack.event.queued") == 0
    assert readings.value("optitrack.event.delivered") == 0
    assert after.value("optitrack.event.in_flight") == 0
    assert after.value("optitrack.event.delivered") == 3


# -- uninstrumenting, sharing, the defaults --------------------------------------------


@pytest.mark.anyio
async def test_uninstrument_stops_recording(datafile: dict[str, Any], otel: Metrics) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        instrumentation = instrument(client, otel.provider)
        assert instrumentation.active
        await client.track("purchase", "u1")
        await client.flush()
        before = otel.collect()
        instrumentation.uninstrument()
        instrumentation.uninstrument()  # idempotent
        assert not instrumentation.active
        assert not client.notification_center.has_listeners(NotificationType.LOG_EVENT)
        await client.track("purchase", "u2")
        await client.flush()
        after = otel.collect()
    assert api.event_count == 2
    assert before.value("optitrack.event.accepted") == 1
    # No client left: the observable instruments say nothing; no duration was recorded.
    assert set(after.metrics) == {"optitrack.request.duration"}
    (point,) = after.durations().values()
    assert point.count == 1


def test_the_handle_is_a_context_manager(datafile: dict[str, Any], otel: Metrics) -> None:
    client = optitrack.Client(datafile)
    with instrument(client, otel.provider) as instrumentation:
        assert instrumentation.active
        assert "active" in repr(instrumentation)
        readings = otel.collect()
    assert not instrumentation.active
    assert "uninstrumented" in repr(instrumentation)
    # A client never entered: every count is zero.
    assert readings.value("optitrack.event.accepted") == 0
    assert readings.value("optitrack.event.queued") == 0
    assert readings.sums("optitrack.event.refused") == {}


def test_instrumenting_a_client_twice_gives_the_same_handle(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    client = optitrack.Client(datafile)
    first = instrument(client, otel.provider)
    assert instrument(client, otel.provider) is first
    first.uninstrument()
    second = instrument(client, otel.provider)
    assert second is not first
    assert second.active


@pytest.mark.anyio
async def test_clients_sharing_a_meter_provider_are_summed_and_counters_never_go_back(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    api = EventsAPI()
    async with (
        asgi_client(api, datafile, flush_interval=60) as a,
        asgi_client(api, datafile, flush_interval=60) as b,
    ):
        handle_a = instrument(a, otel.provider)
        instrument(b, otel.provider)
        for n in range(2):
            await a.track("purchase", f"a{n}")
        for n in range(3):
            await b.track("purchase", f"b{n}")
        assert not await a.track("no_such_event", "a")
        readings = otel.collect()
        assert readings.value("optitrack.event.accepted") == 5
        assert readings.value("optitrack.event.queued") == 5
        assert readings.value("optitrack.event.refused", reason="unknown_event") == 1

        handle_a.uninstrument()
        await a.track("purchase", "a-unseen")
        await b.track("purchase", "b3")
        readings = otel.collect()
        # a's counts so far stay in the counters; its queue is no longer reported.
        assert readings.value("optitrack.event.accepted") == 2 + 4
        assert readings.value("optitrack.event.queued") == 4
        assert readings.value("optitrack.event.refused", reason="unknown_event") == 1

        instrument(a, otel.provider)  # a's counts come back once, not twice
        readings = otel.collect()
        assert readings.value("optitrack.event.accepted") == 3 + 4
        assert readings.value("optitrack.event.queued") == 7
        assert readings.value("optitrack.event.refused", reason="unknown_event") == 1

        await a.flush()
        await b.flush()
        readings = otel.collect()
    assert readings.value("optitrack.event.delivered") == 7
    assert api.event_count == 7


def test_the_default_is_the_global_meter_provider(
    datafile: dict[str, Any], otel: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opentelemetry.metrics, "get_meter_provider", lambda: otel.provider)
    client = optitrack.Client(datafile)
    with instrument(client):
        assert otel.collect().value("optitrack.event.accepted") == 0


def test_an_attempt_that_was_not_timed_is_not_recorded(
    datafile: dict[str, Any], otel: Metrics
) -> None:
    client = optitrack.Client(datafile)
    instrument(client, otel.provider)
    untimed = LogEventNotification(
        url=EVENTS_URL,
        headers={},
        body=b"",
        event_count=1,
        attempt=1,
        outcome="delivered",
        status=204,
    )
    assert untimed.duration is None
    client.notification_center.send(NotificationType.LOG_EVENT, untimed)
    client.notification_center.send(
        NotificationType.LOG_EVENT,
        LogEventNotification(
            url=EVENTS_URL,
            headers={},
            body=b"",
            event_count=1,
            attempt=1,
            outcome="retry",
            status=None,
            duration=0.5,
        ),
    )
    (point,) = otel.collect().durations().values()
    assert point.count == 1
    assert point.sum == 0.5
    assert dict(point.attributes or {}) == {"outcome": "retry", "error.type": "_OTHER"}


class MeterOfApi120(opentelemetry.metrics.NoOpMeter):
    """A meter as opentelemetry-api 1.20 to 1.22 made them: no bucket advice."""

    def create_histogram(  # type: ignore[override]
        self, name: str, unit: str = "", description: str = ""
    ) -> opentelemetry.metrics.Histogram:
        self.histogram = name
        return super().create_histogram(name, unit, description)


class MeterProviderOfApi120(opentelemetry.metrics.NoOpMeterProvider):
    def __init__(self) -> None:
        self.meter = MeterOfApi120("optitrack")

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> opentelemetry.metrics.Meter:
        return self.meter


def test_an_older_api_gets_the_histogram_without_bucket_advice(
    datafile: dict[str, Any],
) -> None:
    provider = MeterProviderOfApi120()
    with instrument(optitrack.Client(datafile), provider) as instrumentation:
        assert instrumentation.active
    assert provider.meter.histogram == "optitrack.request.duration"


# -- the module ------------------------------------------------------------------------


def test_import_optitrack_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, optitrack, optitrack.testing\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'opentelemetry']\n"
        "assert not loaded, loaded\n"
        "import optitrack.otel\n"
        "assert 'opentelemetry.metrics' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_names_are_sorted_and_documented() -> None:
    exported = optitrack.otel.__all__
    assert exported == sorted(exported)
    assert optitrack.otel.__doc__
    for name in exported:
        member = getattr(optitrack.otel, name)
        if callable(member):
            assert member.__doc__, name
            assert member.__module__ == "optitrack.otel", name
