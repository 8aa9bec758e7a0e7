"""The ledger: what became of every accepted item, and waiting for it (``flush``).

Bookkeeping is by sequence number: the n-th accepted item has ``seq == n - 1``, the queue
holds ``seq`` in ``[removed, accepted)``, and every batch (a :class:`~.batch.Part`) holds
a contiguous run. So ``flush()`` waits for a watermark, not for per-item records. At
every moment ``accepted == delivered + sum(dropped) + queued + in_flight``.

Owns: accounting each part's outcome (delivered, or dropped and why), the flush waiters
and the watermark they wait for. Must not touch: the segments, the bounds, taking a
batch (:mod:`.queue`, whose base this is).
"""

from __future__ import annotations

import math

import anyio

from .._results import FlushResult
from .batch import Part

__all__ = ["Ledger"]


class _FlushWaiter:
    __slots__ = ("delivered", "dropped", "event", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.event = anyio.Event()
        self.delivered = 0
        self.dropped = 0


class Ledger:
    """The accounting half of :class:`~.queue.BatchQueue`, its base.

    Attributes:
        delivered: Accepted items the endpoint acknowledged.
        dropped: Accepted items given up on, by reason.
    """

    # The queue's, read here.
    accepted: int
    queued: int
    in_flight: int
    _removed: int
    _parts: set[Part]

    def _open_ledger(self) -> None:
        self.delivered = 0
        self.dropped: dict[str, int] = {}
        self._waiters: list[_FlushWaiter] = []
        self._flush_through = -1  # a batch is due for every item with seq <= this

    def _wake(self) -> None:
        raise NotImplementedError  # the queue's: a batch may be due now

    def finish(self, part: Part, dropped: str | None) -> None:
        """Account for a part: delivered (``dropped`` is ``None``) or dropped, and why.

        A part already accounted for is left alone.
        """
        if part.done:
            return
        part.done = True
        self._parts.discard(part)
        self.in_flight -= len(part.items)
        self._account(part.first_seq, len(part.items), dropped)
        part.body = None

    def split(self, part: Part, halves: tuple[Part, Part]) -> None:
        """Put the halves of a part in flight instead of the part."""
        part.done = True
        self._parts.discard(part)
        self._parts.update(halves)

    def _account(self, first_seq: int, count: int, dropped: str | None) -> None:
        if not count:
            return
        if dropped is None:
            self.delivered += count
        else:
            self.dropped[dropped] = self.dropped.get(dropped, 0) + count
        for waiter in self._waiters:
            mine = min(max(waiter.target - first_seq + 1, 0), count)
            if mine:
                if dropped is None:
                    waiter.delivered += mine
                else:
                    waiter.dropped += mine
            if not waiter.event.is_set() and self._done_through(waiter.target):
                waiter.event.set()

    def _done_through(self, target: int) -> bool:
        if self.queued and self._removed <= target:
            return False
        return all(part.first_seq > target for part in self._parts if not part.done)

    def _pending_through(self, target: int) -> int:
        queued = min(max(target - self._removed + 1, 0), self.queued)
        in_flight = sum(
            min(max(target - p.first_seq + 1, 0), len(p.items)) for p in self._parts if not p.done
        )
        return queued + in_flight

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Make every item accepted so far due now, and wait until it is accounted for.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as it takes.

        Returns:
            The outcome for the items accepted before the call.
        """
        target = self.accepted - 1
        waiter = _FlushWaiter(target)
        if not self._done_through(target):
            self._flush_through = max(self._flush_through, target)
            self._wake()
            await self._wait(waiter, math.inf if timeout is None else timeout)
        pending = self._pending_through(target)
        return FlushResult(
            complete=pending == 0,
            delivered=waiter.delivered,
            dropped=waiter.dropped,
            pending=pending,
        )

    async def wait_idle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until every item accepted so far is accounted for."""
        waiter = _FlushWaiter(self.accepted - 1)
        if not self._done_through(waiter.target):
            await self._wait(waiter, timeout)

    async def _wait(self, waiter: _FlushWaiter, timeout: float) -> None:
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter.event.wait()
        finally:
            self._waiters.remove(waiter)
