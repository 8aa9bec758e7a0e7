"""The queue with a spool behind it: a window in memory, the rest on disk.

:class:`SpoolQueue` is a :class:`~.queue.BatchQueue` whose every accepted item is first
appended to a :class:`~.spool.Spool`. While the memory window has room, items go to it
as well; once it is full they *spill*: they stay on disk only, and every later item
spills too (the order is kept) until the worker reads them back as room frees. Sequence
numbers stay contiguous: memory holds ``[removed, removed + queued)``, the disk alone
``[removed + queued, accepted)``. The bound that refuses is the spool's
(``max_spool_bytes``), with the client's overflow policy.

At shutdown what is left (queued, in flight, spilled) is *kept* in the spool for the
next client, not dropped; in a forked child it is abandoned, and the spool untouched.

Owns: spilling and reading back, the overflow policy at the spool's bound, telling the
spool what is done. Must not touch: the file format or files (the spool does), HTTP.
"""

from __future__ import annotations

import anyio

from .._logging import logger
from .._results import FlushResult, Reason
from .batch import BatchContext, Part
from .options import BatchOptions, Overflow
from .queue import BatchQueue, _Segment
from .spool import Spool
from .spool_records import EVENT_OVERHEAD

__all__ = ["SpoolQueue"]

_QUEUE_FULL = Reason.QUEUE_FULL
# Reads of up to this many items run on the loop's thread (tens of microseconds);
# larger ones in a worker thread.
_READ_IN_LOOP = 256


class SpoolQueue(BatchQueue):
    """A :class:`BatchQueue` that journals every item and spills to disk when full.

    Args:
        options: As for :class:`BatchQueue`; ``max_queue_size`` and ``max_queue_bytes``
            bound the memory window, ``max_spool_bytes`` what is accepted.
        spool: The journal (opened by :meth:`open`).

    Attributes:
        spilled: Accepted items on disk only, waiting to be read back.
        kept: Items left in the spool at shutdown, for the next client.
    """

    def __init__(self, options: BatchOptions, spool: Spool) -> None:
        super().__init__(options)
        self.spool = spool
        self._spool_drop_oldest = options.overflow is Overflow.DROP_OLDEST
        self._drop_oldest = False  # a full memory window spills; it never evicts
        self.spilled = 0
        self.kept = 0
        self._reading = False  # the worker is reading spilled items back, in a thread
        self._given_up = False

    async def open(self, endpoint: str) -> None:
        """Open the spool; what an earlier process left is accepted first, on disk.

        Args:
            endpoint: Where the events an earlier process left are sent.
        """
        self.spool.readdress = endpoint
        await anyio.to_thread.run_sync(self.spool.open)
        recovered = self.spool.recovered
        self.accepted += recovered
        self.spilled += recovered

    # -- intake ----------------------------------------------------------------------

    def put_nowait(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Journal an item, and queue it in memory when the window has room.

        Args:
            ctx: The item's batch context.
            data: The serialized item.

        Returns:
            ``None`` when accepted, else why it was refused.
        """
        if self._closed:
            return Reason.CLOSED
        size = len(data)
        if size > self._max_event_bytes or size + ctx.overhead > self._max_batch_bytes:
            return Reason.EVENT_TOO_LARGE
        spool = self.spool
        if spool.live_bytes + size + EVENT_OVERHEAD > spool.max_bytes and not self._make_room(size):
            return _QUEUE_FULL
        spool.append(ctx, data)
        if not self.spilled and BatchQueue.put_nowait(self, ctx, data) is None:
            return None
        self.spilled += 1
        self.accepted += 1
        if not self._pressure:
            self._pressure = True
            self._wake()
        return None

    def _make_room(self, size: int) -> bool:
        """Apply the overflow policy at the spool's bound: whether there is room now."""
        spool = self.spool
        if not self._spool_drop_oldest:
            if not self._pressure:
                self._pressure = True
                self._wake()
            return False
        first = self._removed
        evicted = 0
        while spool.live_bytes + size + EVENT_OVERHEAD > spool.max_bytes:
            if self.queued:
                segment = self._segments[0]
                data = segment.items.popleft()
                segment.nbytes -= len(data)
                self.queued -= 1
                self.queued_bytes -= len(data)
                if not segment.items:
                    self._segments.popleft()
            elif self.spilled and not self._reading:
                # The memory window is empty: the oldest waiting item is the first on
                # disk. Reading it moves the read cursor past it.
                read = spool.read(spool.reading_plan(), self._removed, 1, 1)
                if not read:
                    break
                data = read[0][1]
                self.spilled -= 1
            else:
                break  # what is left is in flight
            self._removed += 1
            spool.done(self._removed - 1, 1, len(data))
            evicted += 1
        self._account(first, evicted, Reason.QUEUE_FULL)
        if evicted:
            self._throttled.warning(
                "evicted",
                "Spool full: dropped the %d oldest event(s) (drop_oldest).",
                evicted,
            )
        return spool.live_bytes + size + EVENT_OVERHEAD <= spool.max_bytes

    # -- reading back ----------------------------------------------------------------

    async def ready(self) -> bool:
        """Read spilled items back while the window has room, then as the queue does."""
        while self.spilled and (
            self.queued < self._max_queue_size and self.queued_bytes < self._max_queue_bytes
        ):
            await self._read_back()
        return await super().ready()

    async def _read_back(self) -> None:
        spool = self.spool
        start = self._removed + self.queued
        plan = spool.reading_plan()
        count = min(self._max_queue_size - self.queued, self.spilled)
        nbytes = self._max_queue_bytes - self.queued_bytes
        try:
            if count <= _READ_IN_LOOP:
                items = spool.read(plan, start, count, nbytes)  # small: no thread hop
            else:
                self._reading = True
                try:
                    items = await anyio.to_thread.run_sync(spool.read, plan, start, count, nbytes)
                finally:
                    self._reading = False
        except OSError as exc:
            logger.error("Spool %r: cannot read events back (%s).", spool.path, exc)
            items = []
        if self._given_up:
            return
        if not items:
            # The journal no longer holds them (damaged, or unreadable, since it was opened).
            lost = self.spilled
            self.spilled = 0
            spool.done(start, lost, lost * spool.mean_item_bytes())  # their sizes are lost too
            self._account(start, lost, Reason.SPOOL_DAMAGED)
            return
        segments = self._segments
        for ctx, data in items:
            if segments and segments[-1].ctx == ctx:
                segment = segments[-1]
            else:
                if segments and not segments[-1].items:
                    segments.pop()
                segment = _Segment(ctx)
                segments.append(segment)
            segment.items.append(data)
            segment.nbytes += len(data)
            self.queued_bytes += len(data)
        if not self.queued:
            self._oldest_at = self.clock()
        self.queued += len(items)
        self.spilled -= len(items)
        if not self.spilled:
            self._pressure = False

    def _head_ready(self) -> bool:
        return self.spilled > 0 or super()._head_ready()

    # -- the ledger ------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Write the journal out first (a crash now loses nothing), then as the queue does.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as it takes.

        Returns:
            The outcome for the items accepted before the call.
        """
        await self.spool.commit()
        return await super().flush(timeout)

    def finish(self, part: Part, dropped: str | None) -> None:
        """Account for a part, as the queue does, and tell the spool it is done."""
        if part.done:
            return
        self.spool.done(part.first_seq, len(part.items), sum(map(len, part.items)))
        super().finish(part, dropped)
        # Delivered items free the spool's bound: callers blocked at it go first.
        if self._blocked:
            self._admit()
        elif self._room is not None:
            self._room.set()
            self._room = None

    def _done_through(self, target: int) -> bool:
        if self.spilled and self._removed + self.queued <= target:
            return False
        return super()._done_through(target)

    def _pending_through(self, target: int) -> int:
        first_spilled = self._removed + self.queued
        spilled = min(max(target - first_spilled + 1, 0), self.spilled)
        return super()._pending_through(target) + spilled

    def give_up(self, reason: Reason) -> int:
        """At shutdown, keep what is left in the spool; else (a fork) abandon it.

        Returns:
            How many items were dropped (none at shutdown: they are kept).
        """
        self._given_up = True
        if reason is not Reason.SHUTDOWN:
            self.spool.abandon()
            first = self._removed + self.queued
            spilled, self.spilled = self.spilled, 0
            lost = super().give_up(reason)
            self._account(first, spilled, reason)
            return lost + spilled
        self._closed = True
        kept = self.queued + self.in_flight + self.spilled
        for part in self._parts:
            part.done = True
        self._parts.clear()
        self.in_flight = 0
        self._removed += self.queued
        self.queued = self.queued_bytes = self.spilled = 0
        self._segments.clear()
        self.kept += kept
        for waiter in self._waiters:
            waiter.event.set()
        return 0
