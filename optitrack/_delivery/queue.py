"""The bounded queue, the ledger, and when a batch is due.

Items arrive serialized (opaque ``bytes``) with their :class:`~.batch.BatchContext`. The
queue is a FIFO of *segments*, runs of items that share a context, so that a batch never
mixes contexts and the queue keeps its order. A batch is due when the head holds
``batch_size`` items, when the next item would pass ``max_batch_bytes``, when
``flush_interval`` has passed since the batch began to form, at once on flush and close,
and while the queue is short of room.

Items are numbered as they are accepted: the n-th accepted item has ``seq == n - 1``, the
queue holds ``seq`` in ``[removed, accepted)``, and every batch holds a contiguous run,
which the ledger (:mod:`.ledger`, the queue's base) accounts for.

Owns: the segments, the bounds and the overflow policies (``drop_newest``,
``drop_oldest``, ``block``), the yield policy (:meth:`BatchQueue.offered`), taking a batch,
and giving up on what is left. It must not touch HTTP, retries, the in-flight limit
or tasks (the processor runs the worker, the sender sends), and it counts nothing about
refusals: it returns a :class:`~optitrack._results.Reason`, the caller counts and logs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio
from anyio.lowlevel import checkpoint

from .._logging import Throttled
from .._results import Reason
from .batch import BatchContext, Part
from .ledger import Ledger
from .options import BatchOptions, Overflow

__all__ = ["YIELD_IN_FLIGHT", "BatchQueue"]

# A module global is cheaper to read than an enum's class attribute: put is a hot path.
_QUEUE_FULL = Reason.QUEUE_FULL
#: While a batch is in flight, a caller lets the worker have a turn every this many
#: calls (see :meth:`BatchQueue.offered`): a request needs several turns of the event
#: loop, and a tight loop that yields once per batch leaves most of the sending to the
#: drain, and the Events API idle meanwhile. Measured: 20 to 100 all deliver more per
#: second than once per batch (``docs/benchmarks.md``).
YIELD_IN_FLIGHT = 32


class _Segment:
    """A run of queued items that share one batch context."""

    __slots__ = ("ctx", "items", "nbytes")

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        self.items: deque[bytes] = deque()
        self.nbytes = 0


class _Blocked:
    """A caller waiting for room (``overflow="block"``), with its item."""

    __slots__ = ("ctx", "data", "event", "reason", "served")

    def __init__(self, ctx: BatchContext, data: bytes) -> None:
        self.ctx = ctx
        self.data = data
        self.event = anyio.Event()
        self.reason: Reason | None = _QUEUE_FULL
        self.served = False


class BatchQueue(Ledger):
    """A bounded FIFO of serialized items, taken in batches, with the ledger.

    The caller enqueues with :meth:`put` (or :meth:`put_nowait` from sync code); the
    worker waits with :meth:`ready`, takes with :meth:`take`, and reports each part's
    outcome with :meth:`finish` or :meth:`split`.

    Args:
        options: The bounds, the overflow policy and the batch settings.

    Attributes:
        accepted: Items accepted so far (read only, as are the others).
        delivered: Accepted items the endpoint acknowledged.
        dropped: Accepted items given up on, by reason.
        queued: Items in the queue now.
        queued_bytes: Serialized bytes in the queue now.
        in_flight: Items in parts taken and not yet accounted for.
        batches: Batches taken (a split batch counts once).
        clock: The clock of the running loop; the processor sets it when it starts.
        spilled: Accepted items held on disk only (always 0 here: see ``SpoolQueue``).
        kept: Items kept on disk at shutdown (always 0 here: see ``SpoolQueue``).
    """

    spilled = 0
    kept = 0

    def __init__(self, options: BatchOptions) -> None:
        self._batch_size = options.batch_size
        self._max_batch_bytes = options.max_batch_bytes
        self._max_queue_size = options.max_queue_size
        self._max_queue_bytes = options.max_queue_bytes
        self._max_event_bytes = options.max_event_bytes
        self._flush_interval = options.flush_interval
        self._drop_oldest = options.overflow is Overflow.DROP_OLDEST
        self._block = options.overflow is Overflow.BLOCK
        self._overflow_timeout = options.overflow_timeout

        self._segments: deque[_Segment] = deque()
        # The item count a new item is checked against: 0 while callers wait for room
        # (overflow="block"), so that nobody jumps ahead of them.
        self._admit_size = options.max_queue_size
        self._blocked: deque[_Blocked] = deque()  # first come, first served
        self.queued = 0
        self.queued_bytes = 0
        self._removed = 0  # items that left the queue: seq of the queue's head
        self._oldest_at = 0.0  # when the batch at the head began to form
        self.in_flight = 0
        self._parts: set[Part] = set()  # taken and not accounted for

        self.accepted = 0
        self._open_ledger()
        self.batches = 0

        self._wakeup: anyio.Event | None = None
        self._room: anyio.Event | None = None
        # Taken by the processor from the running loop, so that intake works from any
        # code on the loop's thread (a callback too), where sniffio cannot tell.
        self.clock: Callable[[], float] = anyio.current_time
        self._offers = 0  # puts since the last one that let the worker have a turn
        self._pressure = False  # the queue refused an item for want of room
        self._closed = False  # intake stopped; every batch is due at once
        self._throttled = Throttled()

    # -- intake ----------------------------------------------------------------------

    def put_nowait(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Enqueue a serialized item without waiting.

        With BLOCK, the queue is full for it while callers of :meth:`put` wait for room.

        Args:
            ctx: The item's batch context.
            data: The serialized item.

        Returns:
            ``None`` when accepted, else why it was refused (the queue counts nothing
            about refusals).
        """
        if self._closed:
            return Reason.CLOSED
        size = len(data)
        overhead = ctx.overhead
        if size > self._max_event_bytes or size + overhead > self._max_batch_bytes:
            return Reason.EVENT_TOO_LARGE
        if self.queued >= self._admit_size or (self.queued_bytes + size > self._max_queue_bytes):
            if not self._drop_oldest:
                if not self._pressure:
                    self._pressure = True  # send now: waiting for the interval wastes room
                    self._wake()
                return Reason.QUEUE_FULL
            self._evict_for(size)
        segments = self._segments
        segment = segments[-1] if segments else None
        if segment is None or not (segment.ctx is ctx or segment.ctx == ctx):
            if segment is not None and not segment.items:
                segments.pop()  # the empty one kept for reuse: never leave it at the head
            segment = _Segment(ctx)
            segments.append(segment)
        items = segment.items
        items.append(data)
        segment.nbytes += size
        self.accepted += 1
        queued = self.queued = self.queued + 1
        self.queued_bytes += size
        wakeup = self._wakeup
        if wakeup is not None:
            if queued == 1:
                self._oldest_at = self.clock()
                self._wakeup = None
                wakeup.set()
            elif len(items) >= self._batch_size or (
                segment.nbytes + len(items) - 1 + overhead >= self._max_batch_bytes
            ):
                self._wakeup = None
                wakeup.set()
        elif queued == 1:
            self._oldest_at = self.clock()
        return None

    @property
    def blocks(self) -> bool:
        """Whether a full queue makes :meth:`put` wait for room (``overflow="block"``)."""
        return self._block

    def offered(self) -> bool:
        """Count a call that offered an item without :meth:`put`; whether it should now
        let the worker have a turn (``await anyio.lowlevel.checkpoint()``), as :meth:`put`
        does: once per ``batch_size`` calls; every :data:`YIELD_IN_FLIGHT` calls while a
        batch is in flight, so that its request goes on while a tight loop of calls
        awaits nothing else; and at every call while the queue is short of room."""
        offers = self._offers = self._offers + 1
        if (
            offers >= self._batch_size
            or (offers >= YIELD_IN_FLIGHT and self.in_flight)
            or self._pressure
        ):
            self._offers = 0
            return True
        return False

    async def put(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Enqueue a serialized item; with the BLOCK policy, wait for room.

        With BLOCK, a full queue is waited on for up to ``overflow_timeout``, first come
        first served: room goes to the callers waiting longest, a new caller queues up
        behind them, and one that stops waiting (timeout, cancellation) passes its turn
        on. An item admitted while its caller was being cancelled stays accepted. Whatever
        the policy, the call lets the worker run once per ``batch_size`` calls and at
        every call while the queue is short of room, so that a tight loop of calls that
        awaits nothing else still lets delivery run.

        Args:
            ctx: The item's batch context.
            data: The serialized item.

        Returns:
            ``None`` when accepted, else why it was refused (the queue counts nothing
            about refusals).
        """
        reason = self.put_nowait(ctx, data)
        if reason is not None:
            return await self.refused(ctx, data, reason)
        if self.offered():
            await checkpoint()
        return None

    async def refused(self, ctx: BatchContext, data: bytes, reason: Reason) -> Reason | None:
        """The rest of :meth:`put` after :meth:`put_nowait` refused an item.

        For a hot path that calls :meth:`put_nowait` itself: when it accepts, the caller
        calls :meth:`offered` (and yields when it says so); when it refuses, this waits
        for room with BLOCK and counts the offer.

        Returns:
            ``None`` when the item was accepted after all, else why not.
        """
        outcome: Reason | None = reason
        if reason is _QUEUE_FULL and self._block:
            outcome = await self._wait_for_room(ctx, data)
        if self.offered():
            await checkpoint()
        return outcome

    async def put_waiting(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Enqueue an item someone already accepted, waiting for room as long as it takes.

        For a hand-off in front of this queue (the sync client's): its own bounds and
        overflow policy answered the caller; here a full queue only slows the hand-off
        down. Refused only when the queue is closed or the item is too large.

        Args:
            ctx: The item's batch context.
            data: The serialized item.

        Returns:
            ``None`` when accepted, else why it was refused.
        """
        reason = self.put_nowait(ctx, data)
        while reason is _QUEUE_FULL:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
            reason = self.put_nowait(ctx, data)
        return reason

    async def _wait_for_room(self, ctx: BatchContext, data: bytes) -> Reason | None:
        # Whoever makes room admits the waiters in their order of arrival (see _admit):
        # a woken caller finds its item already queued, and cannot take another's turn.
        blocked = _Blocked(ctx, data)
        self._blocked.append(blocked)
        self._admit_size = 0
        try:
            with anyio.move_on_after(self._overflow_timeout):
                await blocked.event.wait()
        finally:
            if not blocked.served:  # timed out or cancelled: its turn passes on
                self._blocked.remove(blocked)
                self._admit()
        return blocked.reason

    def _admit(self) -> None:
        """Queue the waiting callers' items, first come first served, while they fit."""
        blocked = self._blocked
        while blocked:
            head = blocked[0]
            self._admit_size = self._max_queue_size
            reason = self.put_nowait(head.ctx, head.data)
            if reason is _QUEUE_FULL:
                self._admit_size = 0
                return
            blocked.popleft()
            head.reason = reason
            head.served = True
            head.event.set()
        self._admit_size = self._max_queue_size
        if self._room is not None:
            self._room.set()
            self._room = None

    def _evict_for(self, size: int) -> None:
        evicted = 0
        first = self._removed
        while self.queued and (
            self.queued >= self._max_queue_size or self.queued_bytes + size > self._max_queue_bytes
        ):
            segment = self._segments[0]
            data = segment.items.popleft()
            segment.nbytes -= len(data)
            self.queued -= 1
            self.queued_bytes -= len(data)
            self._removed += 1
            evicted += 1
            if not segment.items:
                self._segments.popleft()
        self._account(first, evicted, Reason.QUEUE_FULL)
        self._throttled.warning(
            "evicted", "Queue full: dropped the %d oldest event(s) (drop_oldest).", evicted
        )

    def close(self) -> None:
        """Stop intake (later puts are refused, ``closed``); every batch is due at once."""
        self._closed = True
        self._wake()
        self._admit()
        if self._room is not None:
            self._room.set()
            self._room = None

    @property
    def closed(self) -> bool:
        """Whether intake has stopped."""
        return self._closed

    # -- taking batches --------------------------------------------------------------

    async def ready(self) -> bool:
        """Wait until a batch is due.

        Returns:
            True when one is; False once the queue is closed and empty.
        """
        while True:
            if not self.queued:
                if self._closed:
                    return False
                await self._sleep_until(None)
                continue
            if self._head_ready():
                return True
            due = self._oldest_at + self._flush_interval
            if self.clock() >= due:
                return True
            await self._sleep_until(due)

    def _head_ready(self) -> bool:
        if (
            self._closed
            or self._pressure
            or self._flush_through >= self._removed
            or len(self._segments) > 1
        ):
            return True
        segment = self._segments[0]
        count = len(segment.items)
        return count >= self._batch_size or (
            segment.ctx.body_size(segment.nbytes, count) >= self._max_batch_bytes
        )

    async def _sleep_until(self, deadline: float | None) -> None:
        wakeup = self._wakeup = anyio.Event()
        if deadline is None:
            await wakeup.wait()  # no cancel scope where there is no deadline to keep
        else:
            with anyio.move_on_after(deadline - self.clock()):
                await wakeup.wait()
        self._wakeup = None

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def take(self) -> Part | None:
        """Take the batch at the head (``None`` when the queue is empty).

        The batch holds at most ``batch_size`` items of one context, in a body of at
        most ``max_batch_bytes``. It is in flight until :meth:`finish` or :meth:`split`.
        """
        if not self.queued:
            return None
        segment = self._segments[0]
        items = segment.items
        ctx = segment.ctx
        # The items of a body are joined by commas: count one per item, and one more
        # in the budget for the last item, which has none.
        budget = self._max_batch_bytes - ctx.overhead + 1
        if len(items) <= self._batch_size:
            taken = list(items)  # the whole segment, the common case: copied in C
            items.clear()
        else:
            pop = items.popleft
            taken = [pop() for _ in range(self._batch_size)]
        nbytes = sum(map(len, taken)) + len(taken)
        if nbytes > budget:  # rare: the byte cap binds before batch_size
            keep, nbytes = 1, len(taken[0]) + 1
            while nbytes + len(taken[keep]) + 1 <= budget:
                nbytes += len(taken[keep]) + 1
                keep += 1
            items.extendleft(reversed(taken[keep:]))
            del taken[keep:]
        count = len(taken)
        segment.nbytes -= nbytes - count
        if not items and len(self._segments) > 1:
            self._segments.popleft()
        part = Part(ctx, taken, self._removed)
        self._removed += count
        self.queued -= count
        self.queued_bytes -= nbytes - count
        self.in_flight += count
        self._parts.add(part)
        self.batches += 1
        if self.queued:
            self._oldest_at = self.clock()
        self._pressure = False
        if self._blocked:
            self._admit()
        elif self._room is not None:
            self._room.set()
            self._room = None
        return part

    # -- giving up -------------------------------------------------------------------

    def give_up(self, reason: Reason) -> int:
        """Stop intake, and count everything queued or in flight as dropped for ``reason``.

        Wakes the flush waiters it settles (in a forked child, :meth:`abandon` wakes nobody).

        Returns:
            How many items that was.
        """
        self._closed = True
        self._admit()  # the callers waiting for room are refused (closed)
        lost = self.queued + self.in_flight
        for part in list(self._parts):
            self.finish(part, reason)
        first = self._removed
        count = self.queued
        self._removed += count
        self.queued = self.queued_bytes = 0
        self._segments.clear()
        self._account(first, count, reason)
        return lost

    def abandon(self, reason: Reason) -> int:
        """In a forked child: count everything queued or in flight as dropped, wake nobody.

        The waiters, events and the loop they belong to are the parent's: they are
        forgotten, never set.

        Returns:
            How many items that was.
        """
        self._waiters = []
        self._blocked.clear()
        self._wakeup = self._room = None
        return self.give_up(reason)
