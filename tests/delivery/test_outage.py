"""A long outage, compressed in time: the endpoint answers 503 for hundreds of probe
intervals while traffic goes on. The queue stays within its bounds, the breaker probes at
most once per ``probe_interval``, and the ledger is exact at the end.

On Trio the clock is ``MockClock(autojump_threshold=0)``: ten minutes pass in a moment.
asyncio has no mock clock: the same scenario runs on small intervals.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

import optitrack
from optitrack import RetryPolicy
from optitrack.testing import EventsAPI, Respond
from tests.conftest import EVENTS_URL, check_ledger, load_fixture

THRESHOLD = 3
MAX_IN_FLIGHT = 4
MAX_QUEUE_SIZE = 40
MAX_QUEUE_BYTES = 8_000  # about 20 events: the byte bound binds first


@pytest.mark.parametrize(
    ("backend", "interval", "outage"),
    [
        pytest.param("asyncio", 0.05, 40, id="asyncio"),  # 2 s of real time
        pytest.param("trio", 1.0, 600, id="trio"),  # 10 minutes of MockClock time
    ],
)
def test_a_long_outage_probes_once_per_interval_and_keeps_the_bounds(
    backend: str, interval: float, outage: int
) -> None:
    datafile = load_fixture("datafile_example.json")
    options: dict[str, Any] = {}
    if backend == "trio":
        options["clock"] = trio.testing.MockClock(autojump_threshold=0)
    result = anyio.run(
        _scenario, datafile, interval, outage, backend=backend, backend_options=options
    )
    api, stats, samples, outage_start, outage_end = result

    # The bounds hold at every moment sampled.
    assert max(queued for queued, _ in samples) <= MAX_QUEUE_SIZE
    assert max(nbytes for _, nbytes in samples) <= MAX_QUEUE_BYTES
    # Once the breaker is open (after THRESHOLD failures of up to MAX_IN_FLIGHT requests
    # in flight), one probe per interval at most.
    during = [r.time for r in api.requests if outage_start <= r.time < outage_end]
    probes = during[THRESHOLD + MAX_IN_FLIGHT :]
    gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
    assert len(probes) >= outage // 2, len(probes)
    assert min(gaps) >= interval * 0.9, sorted(gaps)[:5]
    assert len(during) <= outage + THRESHOLD + MAX_IN_FLIGHT + 1
    # The ledger is exact: what was delivered arrived, once; the rest is counted.
    check_ledger(stats)
    assert stats.pending == 0
    assert stats.delivered == api.event_count
    assert api.duplicate_uuids() == {}
    assert stats.dropped_total > 0  # batches outlived their time budget in the outage
    assert set(stats.dropped) <= {"retries_exhausted"}
    assert stats.refused.get("queue_full", 0) > 0  # the queue was full meanwhile


async def _scenario(
    datafile: dict[str, Any], interval: float, outage: int
) -> tuple[EventsAPI, optitrack.Statistics, list[tuple[int, int]], float, float]:
    api = EventsAPI()
    retry = RetryPolicy(
        attempts=1_000,
        attempt_timeout=interval,
        timeout=interval * 20,
        wait_initial=interval / 10,
        wait_max=interval * 4,
        breaker_threshold=THRESHOLD,
        probe_interval=interval,
    )
    samples: list[tuple[int, int]] = []
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        optitrack.Client(
            datafile,
            event_endpoint=EVENTS_URL,
            http_client=http,
            batch_size=5,
            flush_interval=interval / 10,
            max_queue_size=MAX_QUEUE_SIZE,
            max_queue_bytes=MAX_QUEUE_BYTES,
            max_event_bytes=1_000,
            max_in_flight=MAX_IN_FLIGHT,
            retry=retry,
        ) as client,
    ):
        api.fail_all(Respond(503))
        outage_start = anyio.current_time()
        outage_end = outage_start + outage * interval
        n = 0
        # Traffic: four events per probe interval, through the outage.
        while anyio.current_time() < outage_end:
            await client.track("purchase", f"user-{n}", {"plan": "pro"}, {"revenue": n})
            n += 1
            stats = client.statistics()
            check_ledger(stats)
            samples.append((stats.queued, stats.queued_bytes))
            await anyio.sleep(interval / 4)
        api.heal()
        with anyio.fail_after(interval * 200):
            flushed = await client.flush()
        assert flushed.complete
        stats = client.statistics()
    return api, stats, samples, outage_start, outage_end
