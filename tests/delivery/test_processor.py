"""The processor (optitrack/_delivery/processor.py): the in-flight limit, the drain and its
deadline, cancellation from outside, fork, and the ledger under random faults.

HTTP goes to the Events API stand-in: in-process through httpx.ASGITransport, or over
real loopback sockets (``serve``) where timeouts, resets and hangs matter.
"""

from __future__ import annotations

import json
import os
import random
import threading
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import NotificationType, RetryPolicy
from optitrack._delivery import BatchOptions, BatchProcessor
from optitrack._notifications import NotificationCenter
from optitrack.testing import Delay, EventsAPI, Hang, Reset, Respond, serve
from tests.conftest import EVENTS_URL, check_ledger
from tests.delivery.conftest import Gate, context, visitor

pytestmark = pytest.mark.anyio


#: Retries at once and a breaker that opens after two failures, probing every 1 ms.
BREAKER = RetryPolicy(
    attempts=10_000, wait_initial=0.001, wait_max=0.002, breaker_threshold=2, probe_interval=0.001
)
CTX = context(EVENTS_URL)


@asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[BatchProcessor]:
    """A processor with ``options`` delivering in-process to ``app``; closed at once on exit."""
    processor = BatchProcessor(BatchOptions(**options), NotificationCenter())
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        try:
            yield processor
        finally:
            processor.close(0)


async def test_the_breaker_limits_concurrency_to_one(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    gate = Gate(api)
    gate.open.set()
    options = {"batch_size": 1, "max_in_flight": 3, "flush_interval": 0, "retry": BREAKER}
    async with running(gate, **options) as processor:
        with anyio.fail_after(10):
            assert processor.queue.put_nowait(CTX, b'{"n":0}') is None
            await api.wait_for_requests(5)  # the breaker opened after two
            for n in range(1, 3):
                assert processor.queue.put_nowait(CTX, b'{"n":%d}' % n) is None
            await api.wait_for_requests(20)
            assert processor.statistics().delivered == 0
            # Three batches are waiting but only one retries at a time now.
            gate.max_active = 0
            await api.wait_for_requests(40)
            assert gate.max_active == 1
    assert processor.statistics().dropped == {"shutdown": 3}


async def test_max_in_flight_requests_go_at_once_and_never_more(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with running(gate, batch_size=1, max_in_flight=3, flush_interval=0) as processor:
        with anyio.fail_after(10):
            for n in range(7):
                assert processor.queue.put_nowait(CTX, visitor(f"u{n}")) is None
            await anyio.wait_all_tasks_blocked()
            # Three batches are in flight, held at the gate; the other four wait.
            assert (gate.active, processor.statistics().queued) == (3, 4)
            gate.open.set()
            assert (await processor.flush()).complete
    assert gate.max_active == 3
    assert processor.statistics().delivered == 7
    assert len(api.requests) == 7


async def test_no_new_batch_leaves_the_queue_while_the_breaker_is_open(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    retry = replace(BREAKER, probe_interval=0.05)
    async with running(
        api, batch_size=1, max_in_flight=3, flush_interval=0, retry=retry
    ) as processor:
        with anyio.fail_after(10):
            assert processor.queue.put_nowait(CTX, visitor("u0")) is None
            # The breaker opened after two; a sender was already waiting for a batch.
            await api.wait_for_requests(3)
            for n in (1, 2):
                assert processor.queue.put_nowait(CTX, visitor(f"u{n}")) is None
            await anyio.wait_all_tasks_blocked()
            stats = processor.statistics()
            assert (stats.in_flight, stats.queued) == (1, 2)  # one batch out, probing
    assert processor.statistics().dropped == {"shutdown": 3}


class HoldWhen:
    """Wraps an app: holds each request whose body ``holds`` until ``open`` is set."""

    def __init__(self, app: Any, holds: Callable[[bytes], bool]) -> None:
        self.app = app
        self.holds = holds
        self.open = anyio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.holds(body):
            await self.open.wait()
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def test_full_width_returns_when_the_breaker_closes_mid_delivery(
    datafile: dict[str, Any],
) -> None:
    # The probe that closes the breaker is the first half of a split batch: its sender
    # goes on with the second half (held here), and a waiting batch must go at once.
    api = EventsAPI()
    api.fail_all(Respond(503))
    app = HoldWhen(api, lambda body: b'"u1"' in body and b'"u0"' not in body)
    async with running(
        app, batch_size=2, max_in_flight=2, flush_interval=60, retry=BREAKER
    ) as processor:
        with anyio.fail_after(10):
            for n in (0, 1):
                assert processor.queue.put_nowait(CTX, visitor(f"u{n}")) is None
            await api.wait_for_requests(3)  # the breaker opened after two
            for n in (2, 3):
                assert processor.queue.put_nowait(CTX, visitor(f"u{n}")) is None
            api.heal()
            api.fail_when(lambda body: b'"u0"' in body and b'"u1"' in body, Respond(400))
            # u0 alone closes the breaker; u2 and u3 go while u1 is held.
            await api.wait_for_events(3)
            app.open.set()
            assert (await processor.flush()).complete
    assert sorted(v.visitor_id for v in api.visitors) == ["u0", "u1", "u2", "u3"]


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
        # A guard: without the deadline, the hanging attempts would hold aclose for 30 s.
        with anyio.fail_after(10):
            await client.aclose(timeout=2)
        stats = client.statistics()
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
        # A guard: without the deadline, leaving would retry for the 600 s time budget.
        with anyio.fail_after(10):
            async with optitrack.Client(
                datafile, event_endpoint=server.url, retry=policy, close_timeout=0.5
            ) as client:
                for n in range(1000):
                    await client.track("purchase", f"u{n}")
    stats = client.statistics()
    assert stats.dropped == {"shutdown": 1000}
    check_ledger(stats)
    assert "1000 event(s) still queued or in flight were dropped" in caplog.text


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
