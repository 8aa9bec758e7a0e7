"""The queue (optitrack/_delivery/queue.py): bounds, overflow policies, contexts, batch
sizes, flush watermarks, the yield policy of put, and the ledger.

Through the client where the behaviour is the client's too, and on the queue alone where
it is the queue's. HTTP goes to the Events API stand-in, in-process.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import Reason
from optitrack._delivery import BatchOptions, BatchProcessor, BatchQueue, Overflow
from optitrack._delivery.queue import YIELD_IN_FLIGHT
from optitrack._notifications import NotificationCenter
from optitrack._results import ACCEPTED
from optitrack.testing import EventsAPI, Respond
from tests.conftest import EVENTS_URL, asgi_client, check_ledger
from tests.delivery.conftest import FAST, Gate, context, visitor

pytestmark = pytest.mark.anyio


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


async def test_contexts_are_never_mixed(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    us = context("http://us.test/v1/events")
    eu = context("http://eu.test/v1/events")
    options = BatchOptions(batch_size=10, flush_interval=60)
    processor = BatchProcessor(options, NotificationCenter())
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        for n, ctx in enumerate([us, us, eu, us, eu, eu]):
            assert processor.queue.put_nowait(ctx, visitor(f"u{n}")) is None
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
    us = context("http://us.test/v1/events")
    eu = context("http://eu.test/v1/events")
    processor = BatchProcessor(BatchOptions(flush_interval=60), NotificationCenter())
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        anyio.create_task_group() as tg,
    ):
        await tg.start(processor.run, http)
        for n, ctx in enumerate([us, eu, us]):
            assert processor.queue.put_nowait(ctx, visitor(f"u{n}")) is None
            assert (await processor.flush()).complete  # the queue is empty after each
        processor.close()
    assert [r.headers["host"] for r in api.requests] == ["us.test", "eu.test", "us.test"]
    assert all(r.status == 204 for r in api.requests)


async def test_flush_with_a_timeout_reports_what_is_pending(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    async with asgi_client(api, datafile, retry=FAST, close_timeout=0.1) as client:
        for n in range(3):
            await client.track("purchase", f"u{n}")
        result = await client.flush(timeout=0.1)
        assert result == optitrack.FlushResult(complete=False, delivered=0, dropped=0, pending=3)
        assert not result


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


# Its thresholds assume the in-process stand-in: a server sharing the event loop over
# 127.0.0.1 takes several loop turns per batch, whatever the transport.
@pytest.mark.in_process
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


# -- the queue alone: a test plays the worker ------------------------------------------

CTX = context(EVENTS_URL)


def _balanced(queue: BatchQueue) -> bool:
    dropped = sum(queue.dropped.values())
    return queue.accepted == queue.delivered + dropped + queue.queued + queue.in_flight


async def _yields(queue: BatchQueue, data: bytes) -> bool:
    """Whether ``await queue.put`` let other tasks run (a cancelled scope catches it)."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.put(CTX, data)
    return scope.cancelled_caught


async def test_put_returns_a_reason_and_counts_nothing_about_refusals() -> None:
    queue = BatchQueue(
        BatchOptions(batch_size=2, max_queue_size=2, max_event_bytes=100, max_batch_bytes=1000)
    )
    assert await queue.put(CTX, b"x" * 101) is Reason.EVENT_TOO_LARGE
    assert queue.put_nowait(CTX, b"1") is None
    assert queue.put_nowait(CTX, b"2") is None
    assert queue.put_nowait(CTX, b"3") is Reason.QUEUE_FULL
    assert await queue.put(CTX, b"3") is Reason.QUEUE_FULL
    queue.close()
    assert queue.put_nowait(CTX, b"4") is Reason.CLOSED
    assert await queue.put(CTX, b"4") is Reason.CLOSED
    assert (queue.accepted, queue.queued, queue.dropped) == (2, 2, {})


async def test_put_yields_once_per_batch_size_calls_and_while_short_of_room() -> None:
    queue = BatchQueue(
        BatchOptions(batch_size=3, max_queue_bytes=60, max_event_bytes=10, max_batch_bytes=1000)
    )
    assert [await _yields(queue, b"x" * 10) for _ in range(6)] == [False, False, True] * 2
    # Short of room (60 bytes are queued): every call yields, so that the worker can
    # make room, until a batch is taken.
    assert [await _yields(queue, b"x" * 10) for _ in range(2)] == [True, True]
    assert queue.accepted == 6
    assert queue.take() is not None
    assert [await _yields(queue, b"x" * 10) for _ in range(3)] == [False, False, True]
    assert queue.accepted == 9


async def test_put_yields_every_few_calls_while_a_batch_is_in_flight() -> None:
    # A request needs several turns of the loop: while one is in flight, a tight loop
    # lets it go on every YIELD_IN_FLIGHT calls, not only once per batch.
    queue = BatchQueue(BatchOptions(batch_size=1000, max_batch_bytes=1_000_000))
    every = YIELD_IN_FLIGHT
    assert queue.put_nowait(CTX, b"x") is None
    part = queue.take()
    assert part is not None
    pattern = [False] * (every - 1) + [True]
    assert [await _yields(queue, b"x") for _ in range(2 * every)] == pattern * 2
    queue.finish(part, None)  # nothing in flight: once per batch again
    assert [await _yields(queue, b"x") for _ in range(2 * every)] == [False] * (2 * every)
    assert queue.offered() is False


async def test_a_tight_loop_of_put_lets_the_worker_run() -> None:
    queue = BatchQueue(BatchOptions(batch_size=10, flush_interval=60))
    taken: list[int] = []

    async def worker() -> None:
        while await queue.ready():
            part = queue.take()
            assert part is not None
            taken.append(len(part.items))
            queue.finish(part, None)

    peak = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.wait_all_tasks_blocked()
        for n in range(200):  # awaits nothing but put
            assert await queue.put(CTX, b"%d" % n) is None
            peak = max(peak, queue.queued)
        queue.close()
    assert peak <= 2 * 10  # the worker took batches while the loop ran; else 200
    assert sum(taken) == 200
    assert queue.delivered == 200


async def test_block_waits_at_most_overflow_timeout() -> None:
    queue = BatchQueue(
        BatchOptions(batch_size=1, max_queue_size=1, overflow=Overflow.BLOCK, overflow_timeout=0.05)
    )
    assert await queue.put(CTX, b"a") is None
    with anyio.fail_after(10):  # a guard: nothing makes room, the wait ends at the timeout
        assert await queue.put(CTX, b"b") is Reason.QUEUE_FULL
    assert (queue.accepted, queue.queued) == (1, 1)


async def test_block_takes_the_room_a_batch_leaves_and_close_ends_the_wait() -> None:
    queue = BatchQueue(
        BatchOptions(batch_size=1, max_queue_size=1, overflow=Overflow.BLOCK, overflow_timeout=30)
    )
    assert queue.put_nowait(CTX, b"a") is None
    results: list[Reason | None] = []

    async def put(data: bytes) -> None:
        results.append(await queue.put(CTX, data))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(put, b"b")
            await anyio.wait_all_tasks_blocked()
            assert results == []  # waiting for room
            part = queue.take()
            assert part is not None
            assert part.items == [b"a"]
        assert results == [None]
        async with anyio.create_task_group() as tg:
            tg.start_soon(put, b"c")
            await anyio.wait_all_tasks_blocked()
            assert results == [None]
            queue.close()
        assert results == [None, Reason.CLOSED]
    assert queue.accepted == 2


async def test_the_ledger_balances_through_take_split_finish_and_give_up() -> None:
    queue = BatchQueue(BatchOptions(batch_size=4, flush_interval=60))
    for n in range(10):
        assert queue.put_nowait(CTX, visitor(f"u{n}")) is None
    assert _balanced(queue)
    part = queue.take()
    assert part is not None
    assert (len(part.items), part.first_seq, queue.queued, queue.in_flight) == (4, 0, 6, 4)
    assert _balanced(queue)
    halves = part.split()
    queue.split(part, halves)
    assert queue.in_flight == 4
    assert _balanced(queue)
    queue.finish(halves[0], None)
    queue.finish(halves[1], "http_400")
    queue.finish(halves[1], None)  # already accounted for: left alone
    assert (queue.delivered, queue.dropped, queue.in_flight) == (2, {"http_400": 2}, 0)
    assert _balanced(queue)
    assert queue.take() is not None
    assert queue.give_up(Reason.SHUTDOWN) == 6  # 2 queued, 4 in flight
    assert queue.dropped == {"http_400": 2, "shutdown": 6}
    assert (queue.queued, queue.in_flight) == (0, 0)
    assert _balanced(queue)
    assert queue.put_nowait(CTX, visitor("late")) is Reason.CLOSED


async def test_a_flush_makes_its_items_due_and_reports_only_them() -> None:
    queue = BatchQueue(BatchOptions(batch_size=10, flush_interval=60))
    for n in range(3):
        assert queue.put_nowait(CTX, visitor(f"u{n}")) is None
    results: list[optitrack.FlushResult] = []

    async def flush() -> None:
        results.append(await queue.flush())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            assert await queue.ready()  # due now, not in flush_interval (60 s)
            assert queue.put_nowait(CTX, visitor("after")) is None
            part = queue.take()
            assert part is not None
            assert len(part.items) == 4
            assert results == []
            queue.finish(part, None)
    assert results == [optitrack.FlushResult(complete=True, delivered=3, dropped=0, pending=0)]
    assert queue.delivered == 4
