"""The hand-off: sync callers' serialized events, on their way to the client's event loop.

:class:`~optitrack.SyncClient` validates and serializes each call in the caller's thread,
then offers the bytes here: a bounded, thread-safe buffer that answers at once with the
client's overflow policy (refuse the newest, evict the oldest, or wait up to
``overflow_timeout`` for room). A task on the client's loop moves what is here into the
delivery queue a batch at a time: never a round trip per call.

Owns: the buffer, its bounds and its share of the ledger (what it holds, what it
evicted). Must not touch: the delivery queue (the sync client's pump moves the items).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ._delivery import BatchContext, Overflow
from ._results import Reason

__all__ = ["Handoff"]


class Handoff:
    """A bounded buffer of ``(context, bytes)`` between threads and an event loop.

    Args:
        max_items: Items held at most.
        max_bytes: Bytes held at most.
        overflow: What a full buffer does to a new item.
        overflow_timeout: How long ``block`` waits for room, in seconds.
        wake: Called (from a caller's thread) when a batch's worth is waiting, so the
            loop moves it now rather than at its next tick.
        batch_size: How many items make a batch's worth.
    """

    def __init__(
        self,
        *,
        max_items: int,
        max_bytes: int,
        overflow: Overflow,
        overflow_timeout: float,
        wake: Callable[[], None],
        batch_size: int,
    ) -> None:
        self._items: deque[tuple[BatchContext, bytes]] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._overflow = overflow
        self._overflow_timeout = overflow_timeout
        self._wake = wake
        self._batch_size = batch_size
        #: Items offered and not yet in the delivery queue (taken or not), and their bytes.
        self.pending = 0
        self.pending_bytes = 0
        #: Items dropped here, by reason (evicted by ``drop_oldest``, lost at shutdown).
        self.dropped: dict[str, int] = {}
        self.closed = False

    def offer(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Take an item, or say why not (at once, or after ``block``'s wait)."""
        size = len(data)
        with self._lock:
            if self.closed:
                return Reason.CLOSED
            if self.pending >= self._max_items or self.pending_bytes + size > self._max_bytes:
                reason = self._make_room(size)
                if reason is not None:
                    return reason
            self._items.append((ctx, data))
            self.pending += 1
            self.pending_bytes += size
            wake = len(self._items) == self._batch_size
        if wake:
            self._wake()
        return None

    def _make_room(self, size: int) -> Reason | None:
        # Called with the lock held.
        if self._overflow is Overflow.DROP_OLDEST:
            while self._items and (
                self.pending >= self._max_items or self.pending_bytes + size > self._max_bytes
            ):
                _, old = self._items.popleft()
                self._forget(len(old), Reason.QUEUE_FULL)
            return None
        if self._overflow is Overflow.BLOCK:
            self._wake()
            deadline = time.monotonic() + self._overflow_timeout
            while self.pending >= self._max_items or self.pending_bytes + size > self._max_bytes:
                left = deadline - time.monotonic()
                if self.closed:
                    return Reason.CLOSED
                if left <= 0 or not self._room.wait(left):
                    if self.pending < self._max_items and (
                        self.pending_bytes + size <= self._max_bytes
                    ):
                        return None
                    return Reason.QUEUE_FULL
            return None
        self._wake()  # full: move what is here now
        return Reason.QUEUE_FULL

    def take(self) -> list[tuple[BatchContext, bytes]]:
        """Everything waiting (still counted as pending until :meth:`moved`)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def moved(self, size: int) -> None:
        """One taken item is in the delivery queue now."""
        with self._lock:
            self.pending -= 1
            self.pending_bytes -= size
            self._room.notify()

    def lost(self, size: int, reason: Reason) -> None:
        """One taken item could not be queued (the queue closed): dropped."""
        with self._lock:
            self._forget(size, reason)
            self._room.notify()

    def _forget(self, size: int, reason: Reason) -> None:
        self.pending -= 1
        self.pending_bytes -= size
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def close(self) -> None:
        """Take nothing more; wake callers waiting for room."""
        with self._lock:
            self.closed = True
            self._room.notify_all()

    def drop_all(self, reason: Reason) -> int:
        """Drop everything waiting (the shutdown deadline passed); returns how many."""
        with self._lock:
            count = len(self._items)
            for _, data in self._items:
                self._forget(len(data), reason)
            self._items.clear()
            self._room.notify_all()
        return count

    def reset_after_fork(self) -> None:
        """In a forked child: what is here is the parent's to send; start empty."""
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._items.clear()
        self.pending = self.pending_bytes = 0
        self.dropped = {}
        self.closed = False

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        """``(pending, pending_bytes, dropped)``, read together."""
        with self._lock:
            return self.pending, self.pending_bytes, dict(self.dropped)
