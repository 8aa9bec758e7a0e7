"""Delivery under faults: retries, splits, the circuit breaker, overflow, shutdown, fork.

HTTP goes to the Events API stand-in: in-process through httpx.ASGITransport, or over
real loopback sockets (``serve``) where timeouts, resets and hangs matter.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import threading
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import NotificationType, Reason, RetryPolicy
from optitrack._events import BatchContext
from optitrack._notifications import NotificationCenter
from optitrack._processor import BatchOptions, BatchProcessor
from optitrack._results import ACCEPTED
from optitrack.testing import Delay, EventsAPI, Hang, Reset, Respond, serve
from tests.conftest import EVENTS_URL, asgi_client, check_ledger

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=50, wait_initial=0.001, wait_max=0.01, timeout=30)


class Gate:
    """Wraps an app: requests wait until the gate opens; counts concurrent requests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open = anyio.Event()
        self.active = 0
        self.max_active = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.open.wait()
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def test_5xx_is_retried_byte_identical_with_the_same_idempotency_key(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(faults=[Respond(503), Respond(500)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        for n in range(3):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
        stats = client.statistics()
    first, second, third = api.requests
    assert [r.status for r in api.requests] == [503, 500, 204]
    assert first.body == second.body == third.body
    keys = {r.headers["idempotency-key"] for r in api.requests}
    assert len(keys) == 1
    assert [r.headers["x-optitrack-attempt"] for r in api.requests] == ["1", "2", "3"]
    assert stats.requests == 3
    assert stats.retries == 2
    assert stats.batches == 1
    assert stats.delivered == 3
    assert stats.dropped == {}


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_retryable_statuses_are_retried(datafile: dict[str, Any], status: int) -> None:
    api = EventsAPI(faults=[Respond(status)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "u")
    assert [r.status for r in api.requests] == [status, 204]


@pytest.mark.parametrize("status", [404, 401, 403, 422, 501, 505])
async def test_other_errors_drop_the_batch_with_the_status(
    datafile: dict[str, Any], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    api = EventsAPI(faults=[Respond(status, body="go away")])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "u1")
        await client.track("purchase", "u2")
        result = await client.flush()
        stats = client.statistics()
    assert result == optitrack.FlushResult(complete=True, delivered=0, dropped=2, pending=0)
    assert stats.dropped == {f"http_{status}": 2}
    assert len(api.requests) == 1
    assert f"answered {status}" in caplog.text
    assert "go away" in caplog.text
    check_ledger(stats)


async def test_a_poison_event_is_isolated_and_the_rest_delivered(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_when(lambda body: b"poison" in body, Respond(400))
    async with asgi_client(api, datafile, batch_size=500, flush_interval=60) as client:
        for n in range(500):
            tags = {"marker": "poison"} if n == 321 else {"revenue": 1}
            await client.track("purchase", f"u{n}", None, tags)
        result = await client.flush()
        stats = client.statistics()
    assert result.delivered == 499
    assert result.dropped == 1
    assert stats.dropped == {"http_400": 1}
    assert stats.batches == 1
    delivered = [v.visitor_id for v in api.visitors]
    assert len(delivered) == 499
    assert "u321" not in delivered
    assert delivered == [f"u{n}" for n in range(500) if n != 321]  # order kept
    assert api.duplicate_uuids() == {}
    # Bisection: about 2 * log2(500) requests, not 500.
    assert len(api.requests) < 40


async def test_413_splits_too(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_when(lambda body: body.count(b"visitor_id") > 4, Respond(413))
    async with asgi_client(api, datafile, batch_size=16, flush_interval=60) as client:
        for n in range(16):
            await client.track("purchase", f"u{n}")
    assert api.event_count == 16
    assert all(len(b.visitors) <= 4 for b in api.batches)


async def test_retry_after_is_honoured(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(429, retry_after="0.3")])
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=FAST) as client,
    ):
        await client.track("purchase", "u")
        assert (await client.flush()).complete
    first, second = api.requests
    assert second.time - first.time >= 0.29


async def test_retry_after_is_clamped(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503, retry_after="3600")])
    policy = RetryPolicy(wait_initial=0.001, wait_max=0.01, retry_after_max=0.05)
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        with anyio.fail_after(10):  # a guard: the clamp makes this return in about 0.05 s
            assert (await client.flush()).complete


async def test_retry_after_pauses_every_batch(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503, retry_after="0.3")])
    async with (
        serve(api) as server,
        optitrack.Client(
            datafile, event_endpoint=server.url, retry=FAST, batch_size=1, max_in_flight=2
        ) as client,
    ):
        await client.track("purchase", "a")
        with anyio.fail_after(5):
            await api.wait_for_requests(1)
        await client.track("purchase", "b")
        await client.flush()
    refused_at = api.requests[0].time
    later = [r.time for r in api.requests[1:]]
    assert len(later) == 2
    assert min(later) - refused_at >= 0.29


async def test_retries_are_bounded_by_attempts(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.001)
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        result = await client.flush()
        stats = client.statistics()
    assert result.dropped == 1
    assert stats.dropped == {"retries_exhausted": 1}
    assert len(api.requests) == 3


async def test_retries_are_bounded_by_the_time_budget(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        attempts=1000, timeout=0.2, wait_initial=0.02, wait_max=0.02, wait_jitter=0.0
    )
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        with anyio.fail_after(10):
            result = await client.flush()
    assert result.dropped == 1
    assert 2 <= len(api.requests) <= 11  # 0.2 s of 0.02 s waits


async def test_connection_reset_is_retried(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Reset(), Reset()])
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=FAST) as client,
    ):
        for n in range(20):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
        stats = client.statistics()
    assert api.event_count == 20
    assert stats.retries == 2
    assert api.duplicate_uuids() == {}


async def test_a_slow_answer_times_out_and_is_retried(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Hang()])
    policy = RetryPolicy(attempt_timeout=0.2, wait_initial=0.001, wait_max=0.01)
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=policy) as client,
    ):
        await client.track("purchase", "u")
        assert (await client.flush()).complete
    assert api.event_count == 1
    assert len(api.requests) == 2


async def test_outage_then_recovery_loses_nothing_and_duplicates_nothing(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(attempts=10_000, timeout=60, wait_initial=0.005, wait_max=0.02)
    async with (
        serve(api) as server,
        optitrack.Client(
            datafile, event_endpoint=server.url, retry=policy, batch_size=100, flush_interval=0.01
        ) as client,
    ):
        for n in range(1000):
            await client.track("purchase", f"u{n}", None, {"revenue": 1})
        with anyio.fail_after(10):
            await api.wait_for_requests(30)
        check_ledger(client.statistics())
        assert client.statistics().delivered == 0
        api.heal()
        with anyio.fail_after(20):
            assert (await client.flush()).complete
        stats = client.statistics()
    assert api.event_count == 1000
    assert api.revenue == 1000
    assert api.duplicate_uuids() == {}
    assert stats.delivered == 1000
    assert stats.dropped == {}
    check_ledger(stats)


async def test_an_outage_does_not_use_up_attempts(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        attempts=3,
        breaker_threshold=2,
        wait_initial=0.001,
        wait_max=0.005,
        probe_interval=0.005,
        timeout=60,
    )
    async with asgi_client(api, datafile, retry=policy, batch_size=10) as client:
        for n in range(30):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(10):
            await api.wait_for_requests(40)  # far more failures than attempts=3
        assert client.statistics().dropped == {}
        api.heal()
        with anyio.fail_after(10):
            assert (await client.flush()).complete
        stats = client.statistics()
    assert stats.delivered == 30
    assert stats.dropped == {}
    assert api.event_count == 30


async def test_the_circuit_breaker_probes_one_request_at_a_time(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Delay(0.01, then=Respond(503)))
    gate = Gate(api)
    gate.open.set()
    policy = RetryPolicy(
        attempts=10_000, wait_initial=0.001, wait_max=0.005, timeout=60, breaker_threshold=3
    )
    async with asgi_client(
        gate,
        datafile,
        retry=policy,
        batch_size=10,
        max_in_flight=4,
        flush_interval=0.001,
    ) as client:
        for n in range(200):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(10):
            await api.wait_for_requests(8)  # the breaker is open by now
        in_flight_batches = gate.max_active
        gate.max_active = 0
        with anyio.fail_after(10):
            await api.wait_for_requests(60)
        # Batches that were already in flight may finish their attempt; no new ones start.
        assert gate.max_active <= in_flight_batches
        assert client.statistics().delivered == 0
        api.heal()
        with anyio.fail_after(20):
            assert (await client.flush()).complete
    assert api.event_count == 200
    assert api.duplicate_uuids() == {}


async def test_the_breaker_limits_concurrency_to_one(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    gate = Gate(api)
    gate.open.set()
    policy = RetryPolicy(attempts=10_000, wait_initial=0.001, wait_max=0.002, breaker_threshold=2)
    options = BatchOptions(batch_size=1, max_in_flight=3, flush_interval=0, retry=policy)
    processor = BatchProcessor(options, NotificationCenter())
    ctx = _context(EVENTS_URL)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=gate)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        with anyio.fail_after(10):
            assert processor.put_nowait(ctx, b'{"n":0}') is None
            await api.wait_for_requests(5)  # the breaker opened after two
            for n in range(1, 3):
                assert processor.put_nowait(ctx, b'{"n":%d}' % n) is None
            await api.wait_for_requests(20)
            assert processor.statistics().delivered == 0
            # Three batches are waiting but only one retries at a time now.
            gate.max_active = 0
            await api.wait_for_requests(40)
            assert gate.max_active == 1
        processor.close(0)
    assert processor.statistics().dropped == {"shutdown": 3}


async def test_a_hanging_endpoint_cannot_hold_up_aclose(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Hang())
    policy = RetryPolicy(attempt_timeout=30)
    async with (
        serve(api) as server,
        optitrack.Client(
            datafile, event_endpoint=server.url, retry=policy, batch_size=50, close_timeout=30
        ) as client,
    ):
        for n in range(120):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(10):
            await api.wait_for_requests(2)
        started = anyio.current_time()
        await client.aclose(timeout=2)
        elapsed = anyio.current_time() - started
        stats = client.statistics()
    assert elapsed <= 2.1
    assert stats.dropped == {"shutdown": 120}
    assert stats.pending == 0
    check_ledger(stats)


async def test_a_failing_endpoint_cannot_hold_up_leaving(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(attempts=10_000, timeout=600, wait_initial=0.01, wait_max=0.05)
    async with serve(api) as server:
        async with optitrack.Client(
            datafile, event_endpoint=server.url, retry=policy, close_timeout=0.5
        ) as client:
            for n in range(1000):
                await client.track("purchase", f"u{n}")
            leaving = anyio.current_time()
        elapsed = anyio.current_time() - leaving
    assert elapsed <= 0.5 + 0.3  # the deadline, with room for a loaded machine
    stats = client.statistics()
    assert stats.dropped == {"shutdown": 1000}
    check_ledger(stats)
    assert "1000 event(s) still queued or in flight were dropped" in caplog.text


async def test_flush_with_a_timeout_reports_what_is_pending(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    async with asgi_client(api, datafile, retry=FAST, close_timeout=0.1) as client:
        for n in range(3):
            await client.track("purchase", f"u{n}")
        result = await client.flush(timeout=0.1)
        assert result == optitrack.FlushResult(complete=False, delivered=0, dropped=0, pending=3)
        assert not result


async def test_cancelling_the_owner_still_drains(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:

        async def owner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with optitrack.Client(
                datafile, event_endpoint=EVENTS_URL, http_client=http, flush_interval=60
            ) as client:
                for n in range(30):
                    await client.track("purchase", f"u{n}")
                task_status.started()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            await tg.start(owner)
            tg.cancel_scope.cancel()
    assert api.event_count == 30


async def test_cancelled_in_flight_requests_are_resent_in_the_drain(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(faults=[Hang()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:

        async def owner(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with optitrack.Client(
                datafile, event_endpoint=EVENTS_URL, http_client=http, close_timeout=5
            ) as client:
                await client.track("purchase", "u")
                task_status.started()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            await tg.start(owner)
            with anyio.fail_after(5):
                await api.wait_for_requests(1)  # in flight, hanging
            tg.cancel_scope.cancel()
    assert [r.status for r in api.requests] == [None, 204]
    first, second = api.requests
    assert first.body == second.body
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


@pytest.mark.parametrize("seed", range(6))
async def test_the_ledger_holds_under_random_faults(datafile: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    menu = [
        Respond(503),
        Respond(500),
        Respond(429, retry_after="0.01"),
        Respond(400),
        Respond(404),
        Reset(),
        Delay(0.005),
        Hang(),
    ]
    api = EventsAPI(faults=[rng.choice(menu) for _ in range(rng.randrange(5, 40))])
    policy = RetryPolicy(
        attempts=rng.randrange(1, 6), attempt_timeout=0.2, wait_initial=0.001, wait_max=0.01
    )
    violations: list[optitrack.Statistics] = []
    async with (
        serve(api) as server,
        optitrack.Client(
            datafile,
            event_endpoint=server.url,
            retry=policy,
            batch_size=rng.randrange(1, 30),
            flush_interval=0.005,
            max_in_flight=rng.randrange(1, 4),
        ) as client,
    ):

        def check(_: object) -> None:
            stats = client.statistics()
            if stats.accepted != stats.delivered + stats.dropped_total + stats.pending:
                violations.append(stats)

        client.notification_center.add_listener(NotificationType.LOG_EVENT, check)
        for n in range(rng.randrange(50, 300)):
            await client.track("purchase", f"u{n}")
            check(None)
        with anyio.fail_after(20):
            await client.flush()
        check(None)
    stats = client.statistics()
    assert violations == []
    check_ledger(stats)
    assert stats.pending == 0
    # What the stand-in accepted is exactly what the client counts as delivered.
    assert len({e.uuid for e in api.events}) == stats.delivered
    assert api.duplicate_uuids() == {}


async def test_drop_newest_refuses_when_full(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with asgi_client(
        gate,
        datafile,
        batch_size=5,
        max_queue_size=10,
        max_in_flight=1,
        flush_interval=60,
    ) as client:
        results = [await client.track("purchase", f"u{n}") for n in range(5)]
        await anyio.wait_all_tasks_blocked()  # the first batch is in flight, held
        results += [await client.track("purchase", f"u{n}") for n in range(5, 20)]
        refused = [r.reason for r in results if not r]
        assert refused == [Reason.QUEUE_FULL] * 5  # 5 in flight, 10 queued
        assert client.statistics().refused == {"queue_full": 5}
        gate.open.set()
    delivered = [v.visitor_id for v in api.visitors]
    assert delivered == [f"u{n}" for n in range(15)]


async def test_drop_oldest_evicts_the_oldest(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with asgi_client(
        gate,
        datafile,
        batch_size=5,
        max_queue_size=10,
        max_in_flight=1,
        flush_interval=60,
        overflow="drop_oldest",
    ) as client:
        results = [await client.track("purchase", f"u{n}") for n in range(5)]
        await anyio.wait_all_tasks_blocked()  # the first batch is in flight, held
        results += [await client.track("purchase", f"u{n}") for n in range(5, 20)]
        assert all(results)
        stats = client.statistics()
        assert stats.dropped == {"queue_full": 5}
        check_ledger(stats)
        gate.open.set()
    delivered = [v.visitor_id for v in api.visitors]
    assert delivered == [f"u{n}" for n in range(5)] + [f"u{n}" for n in range(10, 20)]


async def test_block_waits_for_room(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with asgi_client(
        gate,
        datafile,
        batch_size=5,
        max_queue_size=5,
        max_in_flight=1,
        flush_interval=60,
        overflow="block",
        overflow_timeout=30,
    ) as client:
        for n in range(5):
            assert await client.track("purchase", f"u{n}")
        await anyio.wait_all_tasks_blocked()  # the first batch is in flight, held
        for n in range(5, 10):
            assert await client.track("purchase", f"u{n}")
        waiting = anyio.Event()

        async def open_when_blocked() -> None:
            await anyio.wait_all_tasks_blocked()
            waiting.set()
            gate.open.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_when_blocked)
            assert await client.track("purchase", "u10")  # waits until there is room
        assert waiting.is_set()
    assert api.event_count == 11


async def test_block_gives_up_after_the_timeout(datafile: dict[str, Any]) -> None:
    gate = Gate(EventsAPI())
    async with asgi_client(
        gate,
        datafile,
        batch_size=1,
        max_queue_size=1,
        max_in_flight=1,
        flush_interval=60,
        overflow="block",
        overflow_timeout=0.05,
        close_timeout=0.1,
    ) as client:
        assert await client.track("purchase", "a")
        await anyio.wait_all_tasks_blocked()
        assert await client.track("purchase", "b")
        result = await client.track("purchase", "c")
        assert result.reason is Reason.QUEUE_FULL
        assert not client.track_nowait("purchase", "d")


async def test_the_queue_is_bounded_in_bytes(datafile: dict[str, Any]) -> None:
    gate = Gate(EventsAPI())  # never opens: what is sent stays in flight
    async with asgi_client(
        gate,
        datafile,
        max_queue_bytes=5_000,
        max_event_bytes=2_000,
        max_in_flight=1,
        flush_interval=60,
        close_timeout=0.1,
    ) as client:
        results = []
        for n in range(20):
            results.append(await client.track("purchase", f"u{n}", None, {"pad": "x" * 900}))
            assert client.statistics().queued_bytes <= 5_000
        stats = client.statistics()
    # Each event is a little over 1,000 bytes: four fit in 5,000. A full queue is sent at
    # once (no waiting for flush_interval), so four more fit; then the one request allowed
    # in flight is held, and the queue stays full.
    assert results[:4] == [ACCEPTED] * 4
    assert sum(1 for r in results if r) == 8
    assert stats.refused == {"queue_full": 12}
    assert stats.in_flight == 4
    assert stats.queued == 4


async def test_an_event_too_large_is_refused_at_the_call(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, max_event_bytes=1_000) as client:
        result = await client.track("purchase", "u", None, {"pad": "x" * 2_000})
        assert result.reason is Reason.EVENT_TOO_LARGE
        assert await client.track("purchase", "u", None, {"pad": "x" * 100})
    assert api.event_count == 1


async def test_batches_stay_under_the_byte_cap(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(
        api, datafile, batch_size=500, max_batch_bytes=5_000, max_event_bytes=2_000
    ) as client:
        for n in range(100):
            await client.track("purchase", f"u{n}", None, {"pad": "x" * 200})
    assert api.event_count == 100
    assert all(len(r.body) <= 5_000 for r in api.requests)
    assert len(api.requests) > 1


async def test_gzip(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, gzip=True, batch_size=500) as client:
        for n in range(600):  # a large body is compressed off the event loop
            await client.track("purchase", f"u{n}", None, {"pad": "y" * 100})
    assert api.event_count == 600
    for request in api.requests:
        assert request.headers["content-encoding"] == "gzip"
        assert json.loads(gzip.decompress(request.body))["visitors"]
        assert len(request.body) < len(request.content)


async def test_contexts_are_never_mixed(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    us = _context("http://us.test/v1/events")
    eu = _context("http://eu.test/v1/events")
    options = BatchOptions(batch_size=10, flush_interval=60)
    processor = BatchProcessor(options, NotificationCenter())
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        for n, ctx in enumerate([us, us, eu, us, eu, eu]):
            assert processor.put_nowait(ctx, _visitor(f"u{n}")) is None
        await processor.flush()
        processor.close()
    hosts = [
        (r.headers["host"], [v["visitor_id"] for v in r.json()["visitors"]]) for r in api.requests
    ]
    assert hosts == [
        ("us.test", ["u0", "u1"]),
        ("eu.test", ["u2"]),
        ("us.test", ["u3"]),
        ("eu.test", ["u4", "u5"]),
    ]


async def test_a_new_context_after_an_empty_queue(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    us = _context("http://us.test/v1/events")
    eu = _context("http://eu.test/v1/events")
    processor = BatchProcessor(BatchOptions(flush_interval=60), NotificationCenter())
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        for n, ctx in enumerate([us, eu, us]):
            assert processor.put_nowait(ctx, _visitor(f"u{n}")) is None
            assert (await processor.flush()).complete  # the queue is empty after each
        processor.close()
    assert [r.headers["host"] for r in api.requests] == ["us.test", "eu.test", "us.test"]
    assert all(r.status == 204 for r in api.requests)


async def test_a_raising_listener_never_stops_delivery(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = EventsAPI()
    outcomes: list[str] = []

    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    async with asgi_client(api, datafile) as client:
        client.notification_center.add_listener(NotificationType.LOG_EVENT, broken)
        client.notification_center.add_listener(NotificationType.TRACK, broken)
        client.notification_center.add_listener(
            NotificationType.LOG_EVENT,
            lambda n: outcomes.append(n.outcome),
        )
        assert await client.track("purchase", "u")
    assert api.event_count == 1
    assert outcomes == ["delivered"]
    assert "listener raised" in caplog.text


async def test_log_event_notifications_describe_each_request(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503)])
    seen: list[optitrack.LogEventNotification] = []
    async with asgi_client(api, datafile, retry=FAST) as client:
        client.notification_center.add_listener(NotificationType.LOG_EVENT, seen.append)
        await client.track("purchase", "u")
    assert [(n.outcome, n.status, n.attempt) for n in seen] == [
        ("retry", 503, 1),
        ("delivered", 204, 2),
    ]
    assert seen[0].url == EVENTS_URL
    assert seen[0].event_count == 1
    assert seen[0].body == api.requests[0].body


async def test_no_payload_is_logged_at_info_or_above(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI(faults=[Respond(503), Respond(400)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "secret-user", {"plan": "pro"}, {"revenue": 1})
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert "secret-user" not in record.getMessage()


def _context(endpoint: str) -> BatchContext:
    return BatchContext(
        account_id="12001",
        project_id="111001",
        revision="42",
        anonymize_ip=False,
        endpoint=endpoint,
    )


def _visitor(user_id: str) -> bytes:
    return json.dumps(
        {
            "visitor_id": user_id,
            "attributes": [],
            "snapshots": [
                {
                    "events": [
                        {
                            "entity_id": "30101",
                            "key": "purchase",
                            "timestamp": 1,
                            "uuid": f"uuid-{user_id}",
                        }
                    ]
                }
            ],
        },
        separators=(",", ":"),
    ).encode()


async def test_a_forked_child_never_sends_the_parents_events(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, flush_interval=60) as client,
    ):
        for n in range(10):
            await client.track("purchase", f"parent-{n}")
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read)
            report = _child(client, datafile, server.url)
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with anyio.fail_after(30):
            await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        report = json.loads(os.read(read, 65536))
        os.close(read)
        # The child only sent its own event; the parent's are still queued here.
        assert [v.visitor_id for v in api.visitors] == ["child"]
        assert client.statistics().queued == 10
    assert report == {
        "inherited": {"accepted": 10, "dropped": {"forked": 10}, "pending": 0},
        "inherited_track": "closed",
        "own_delivered": 1,
    }
    assert sorted(v.visitor_id for v in api.visitors) == sorted(
        ["child"] + [f"parent-{n}" for n in range(10)]
    )
    assert api.duplicate_uuids() == {}


def _child(inherited: optitrack.Client, datafile: dict[str, Any], url: str) -> dict[str, Any]:
    stats = inherited.statistics()
    report: dict[str, Any] = {
        "inherited": {
            "accepted": stats.accepted,
            "dropped": dict(stats.dropped),
            "pending": stats.pending,
        },
        "inherited_track": str(inherited.track_nowait("purchase", "x").reason),
    }

    async def own_client() -> int:
        async with optitrack.Client(datafile, event_endpoint=url) as client:
            await client.track("purchase", "child")
        return client.statistics().delivered

    # A fresh event loop in a fresh thread: the parent's loop is not ours to run.
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(anyio.run(own_client)))
    thread.start()
    thread.join(20)
    report["own_delivered"] = result[0] if result else None
    return report


async def test_backoff_still_waits_after_an_outage_ended(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        breaker_threshold=2,
        wait_initial=0.3,
        wait_max=0.3,
        wait_jitter=0.0,
        probe_interval=0.01,
    )
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=policy) as client,
    ):
        await client.track("purchase", "before")
        with anyio.fail_after(10):
            await api.wait_for_requests(4)  # the breaker opened
        api.heal()
        assert (await client.flush()).complete  # and closed again
        api.inject(Respond(503))
        await client.track("purchase", "after")
        assert (await client.flush()).complete
    failed, retried = api.requests[-2:]
    assert failed.status == 503
    assert retried.status == 204
    assert retried.time - failed.time >= 0.29  # a real backoff, not an instant retry


async def test_a_closed_http_client_fails_attempts_not_the_worker(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=EventsAPI()))
    await http.aclose()  # a user mistake: requests now raise RuntimeError
    policy = RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.001)
    async with optitrack.Client(
        datafile, event_endpoint=EVENTS_URL, http_client=http, retry=policy
    ) as client:
        await client.track("purchase", "u")
        result = await client.flush()
    stats = client.statistics()
    assert result.dropped == 1
    assert stats.dropped == {"retries_exhausted": 1}
    assert stats.pending == 0
    assert "counted as a failed attempt" in caplog.text


@pytest.mark.parametrize(
    "endpoint", ["http://[::1/v1/events", "localhost:8765/v1/events", "ftp://x/v1/events", ""]
)
def test_a_bad_endpoint_is_refused_up_front(datafile: dict[str, Any], endpoint: str) -> None:
    if not endpoint:
        datafile["region"] = "EU"  # "" means the default: fine
        assert optitrack.Client(datafile, event_endpoint=endpoint).event_endpoint.startswith(
            "https://eu."
        )
        return
    with pytest.raises(ValueError, match="event_endpoint"):
        optitrack.Client(datafile, event_endpoint=endpoint)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_track_nowait_from_a_loop_callback(datafile: dict[str, Any]) -> None:
    import asyncio

    api = EventsAPI()
    results: list[optitrack.TrackResult] = []
    done = anyio.Event()
    async with asgi_client(api, datafile, flush_interval=0.01) as client:

        def callback() -> None:
            results.append(client.track_nowait("purchase", "from-a-callback"))
            done.set()

        asyncio.get_running_loop().call_soon(callback)
        with anyio.fail_after(5):
            await done.wait()
            await api.wait_for_events(1)
    assert results == [ACCEPTED]


async def test_a_tight_loop_never_starves_delivery(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(
        api, datafile, batch_size=100, max_queue_size=150, flush_interval=60
    ) as client:
        results = [await client.track("purchase", f"u{n}") for n in range(3000)]
        sent_during_the_loop = api.event_count
    assert sent_during_the_loop > 1000
    assert sum(1 for r in results if r) == api.event_count


async def test_decisions_in_a_tight_loop_let_delivery_run(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(
        api, datafile, batch_size=10, max_queue_size=50, flush_interval=60
    ) as client:
        for n in range(500):
            await client.create_user_context(f"u{n}").decide("new_checkout")
        for n in range(500):
            await client.activate("checkout_test", f"v{n}")
        sent_during_the_loops = api.event_count
        stats = client.statistics()
    assert sent_during_the_loops > 500
    assert stats.accepted > 900


async def test_an_endpoint_that_refuses_everything_costs_few_requests(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(400))
    async with asgi_client(api, datafile, batch_size=1000, flush_interval=60) as client:
        for n in range(1000):
            await client.track("purchase", f"u{n}")
        result = await client.flush()
    assert result.dropped == 1000
    assert client.statistics().dropped == {"http_400": 1000}
    assert len(api.requests) <= 65  # 32 splits (3 log2 n + 2), 2 requests each, and 1


async def test_refusal_logs_do_not_flood(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    import datetime

    async with asgi_client(EventsAPI(), datafile) as client:
        for _ in range(200):
            await client.track("purchase", "u", None, {"when": datetime.datetime.now()})
            await client.track("unknown", "u")
            await client.track("purchase", 42)  # type: ignore[arg-type]
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 3  # one of each, the rest held back for the period


async def test_many_distinct_bad_keys_do_not_flood_either(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Keys may come from callers: at most 100 are followed per period, the rest share a line.
    async with asgi_client(EventsAPI(), datafile) as client:
        for _ in range(3):
            for n in range(1100):
                await client.track(f"unknown-{n}", "u")
                await client.track("purchase", "u", {f"attribute-{n}": 1})
    events = [r for r in caplog.records if "is not in datafile" in r.getMessage()]
    assert len([r for r in events if r.getMessage().startswith("Event")]) == 101
    assert len([r for r in events if r.getMessage().startswith("Attribute")]) == 101


async def test_each_bad_event_key_and_argument_is_logged(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        for n in range(5):
            await client.track(f"unknown-{n}", "u")
        await client.track("purchase", None)  # type: ignore[arg-type]
        await client.track("purchase", "u", [])  # type: ignore[arg-type]
        await client.track("purchase", "u", None, [])  # type: ignore[arg-type]
        await client.track("purchase", "u", {"nope": 1})
        await client.track("purchase", "u", {"nope": 2, "plan": "pro"})
        await client.track("purchase", "u", {"nope_too": 1})
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        *(f'Event "unknown-{n}" is not in datafile.' for n in range(5)),
        "track() refused: user_id must be a str, not NoneType",
        "track() refused: attributes must be a mapping, not list",
        "track() refused: event_tags must be a mapping, not list",
        'Attribute "nope" is not in datafile.',
        'Attribute "nope_too" is not in datafile.',
    ]
