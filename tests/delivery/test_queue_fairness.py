"""overflow="block" is first come, first served: order of arrival is order of admission,
a new caller waits behind the waiting ones, and a caller that stops waiting passes its
turn on. On the queue alone, with a worker that takes every batch as soon as it is due.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.lowlevel import checkpoint

from optitrack import Reason
from optitrack._delivery import BatchOptions, BatchQueue, Overflow
from tests.conftest import EVENTS_URL
from tests.delivery.conftest import context

pytestmark = pytest.mark.anyio

CTX = context(EVENTS_URL)


def blocking_queue(max_queue_size: int, batch_size: int) -> BatchQueue:
    return BatchQueue(
        BatchOptions(
            batch_size=batch_size,
            max_queue_size=max_queue_size,
            overflow=Overflow.BLOCK,
            overflow_timeout=30,
        )
    )


@asynccontextmanager
async def worker(queue: BatchQueue, taken: list[bytes]) -> AsyncIterator[None]:
    """Take every batch as soon as it is due, one per turn, until the queue is closed."""

    async def run() -> None:
        while await queue.ready():
            part = queue.take()
            assert part is not None
            taken.extend(part.items)
            queue.finish(part, None)
            await checkpoint()

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(run)
        yield
        queue.close()


async def test_waiters_are_admitted_in_order_of_arrival() -> None:
    queue = blocking_queue(max_queue_size=10, batch_size=4)
    arrived: list[bytes] = []
    taken: list[bytes] = []

    async def caller(n: int) -> None:
        item = b"%d" % n
        arrived.append(item)  # put queues or waits before anyone else runs
        assert await queue.put(CTX, item) is None

    with anyio.fail_after(20):
        async with worker(queue, taken), anyio.create_task_group() as callers:
            for n in range(500):
                callers.start_soon(caller, n)
                if n % 7 == 0:
                    await checkpoint()  # later callers arrive while others wait
    assert len(taken) == 500
    assert taken == arrived
    assert queue.accepted == queue.delivered == 500


async def test_no_caller_takes_all_the_room() -> None:
    tasks, per_task, room = 40, 25, 10
    queue = blocking_queue(max_queue_size=room, batch_size=5)
    arrivals: dict[bytes, int] = {}  # item: how many items were admitted before it arrived
    taken: list[bytes] = []

    async def caller(task: int) -> None:
        for n in range(per_task):
            item = b"%d-%d" % (task, n)
            arrivals[item] = queue.accepted
            assert await queue.put(CTX, item) is None

    with anyio.fail_after(20):
        async with worker(queue, taken), anyio.create_task_group() as callers:
            for task in range(tasks):
                callers.start_soon(caller, task)
    assert len(taken) == tasks * per_task
    # Each caller has at most one item waiting: at most one per other caller, and the
    # queue's room, are admitted while an item waits.
    overtaken = max(position - arrivals[item] for position, item in enumerate(taken))
    assert overtaken <= tasks - 1 + room


async def test_a_new_caller_waits_behind_the_waiting_ones() -> None:
    queue = blocking_queue(max_queue_size=2, batch_size=2)
    for item in (b"a", b"b"):
        assert queue.put_nowait(CTX, item) is None
    results: dict[bytes, Reason | None] = {}

    async def caller(item: bytes) -> None:
        results[item] = await queue.put(CTX, item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(caller, b"c")
            await anyio.wait_all_tasks_blocked()
            part = queue.take()  # room for two: "c" is admitted, and there is room left
            assert part is not None
            queue.finish(part, None)
            # ...which a caller that never waits does not get ahead of "c" in.
            assert queue.put_nowait(CTX, b"now") is None
            task_group.start_soon(caller, b"d")
            await anyio.wait_all_tasks_blocked()
            assert queue.put_nowait(CTX, b"jump") is Reason.QUEUE_FULL
            part = queue.take()
            assert part is not None
            assert part.items == [b"c", b"now"]
    assert results == {b"c": None, b"d": None}
    assert queue.queued == 1


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    queue = blocking_queue(max_queue_size=2, batch_size=2)
    for item in (b"a", b"b"):
        assert queue.put_nowait(CTX, item) is None
    results: dict[bytes, Reason | None] = {}
    scopes: dict[bytes, anyio.CancelScope] = {}

    async def caller(item: bytes) -> None:
        with anyio.CancelScope() as scopes[item]:
            results[item] = await queue.put(CTX, item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            for item in (b"w0", b"w1", b"w2", b"w3"):
                task_group.start_soon(caller, item)
                await anyio.wait_all_tasks_blocked()  # arrive in this order
            scopes[b"w0"].cancel()  # the head of the line
            scopes[b"w2"].cancel()
            await anyio.wait_all_tasks_blocked()
            part = queue.take()
            assert part is not None
            queue.finish(part, None)
    assert results == {b"w1": None, b"w3": None}
    part = queue.take()
    assert part is not None
    assert part.items == [b"w1", b"w3"]


async def test_closing_refuses_the_waiting_callers() -> None:
    queue = blocking_queue(max_queue_size=1, batch_size=1)
    assert queue.put_nowait(CTX, b"a") is None
    results: list[Reason | None] = []

    async def caller(item: bytes) -> None:
        results.append(await queue.put(CTX, item))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            for item in (b"b", b"c"):
                task_group.start_soon(caller, item)
            await anyio.wait_all_tasks_blocked()
            queue.close()
    assert results == [Reason.CLOSED, Reason.CLOSED]
