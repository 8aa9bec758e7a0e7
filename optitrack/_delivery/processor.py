"""The batch processor: the worker that wires the queue to the sender, and its lifecycle.

Owns the worker: ``max_in_flight`` long-lived senders that take turns waiting for a due
batch, each delivering the batch it took (no task, limiter or cancel scope per batch);
the in-flight limit (one sender at a time while the circuit breaker is open), the close
deadline and the drain, the shielded drain after a cancellation from outside (parts cut
off are set aside and resent first, same body and key), abandoning everything in a forked
child, opening and closing the spool (when there is one; its queue is a ``SpoolQueue``),
and the :class:`~optitrack._results.Statistics` snapshot. It must not decide when
a batch is due or how it is sent (the queue and the sender do), and it counts nothing
about refusals (the caller passes its counts to :meth:`BatchProcessor.statistics`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType

import anyio
import anyio.abc
import httpx

from .._logging import logger
from .._notifications import NotificationCenter
from .._results import FlushResult, Reason, Statistics
from .batch import Part
from .options import BatchOptions
from .queue import BatchQueue
from .sender import Sender
from .spool import DEFAULT_SEGMENT_BYTES, Spool
from .spool_queue import SpoolQueue
from .transport import Transport

__all__ = ["BatchProcessor", "running_processors"]


_NOTHING_REFUSED: Mapping[str, int] = MappingProxyType({})

_live_processors: weakref.WeakSet[BatchProcessor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for processor in list(_live_processors):
        processor._abandon_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def running_processors(thread: int) -> list[BatchProcessor]:
    """The processors whose worker runs on ``thread``'s loop and has not stopped."""
    return [
        p
        for p in list(_live_processors)
        if p.thread == thread and not p._stopped.is_set() and not p._forked
    ]


class BatchProcessor:
    """Queues serialized items and delivers them in batches, in the background.

    Run :meth:`run` in a task group (the client does); enqueue through :attr:`queue`
    (``await queue.put(ctx, data)``, or ``queue.put_nowait`` from sync code); stop with
    :meth:`close`.

    Args:
        options: Queue, batch and delivery settings.
        notifications: Where LOG_EVENT notifications go.

    Attributes:
        queue: The queue to put items in.
    """

    def __init__(self, options: BatchOptions, notifications: NotificationCenter) -> None:
        self.options = options
        self.spool: Spool | None = None
        self.queue: BatchQueue
        if options.spool is None:
            self.queue = BatchQueue(options)
        else:
            self.spool = Spool(
                options.spool,
                max_bytes=options.max_spool_bytes,
                fsync=options.spool_fsync,
                # Segments go whole: at most an eighth of the bound each, so that a
                # partly sent one never holds much disk beyond it.
                segment_bytes=min(
                    DEFAULT_SEGMENT_BYTES, max(options.max_spool_bytes // 8, 1 << 16)
                ),
            )
            self.queue = SpoolQueue(options, self.spool)
        # Senders that may deliver at once (one while the circuit breaker is open), and
        # those delivering now; the sender waiting for a turn waits on _freed for a slot.
        self._allowed = options.max_in_flight
        self._busy = 0
        self._freed: anyio.Event | None = None
        self._sender = Sender(
            options.retry, notifications, gzip=options.gzip, on_breaker=self._on_breaker
        )
        self._set_aside: deque[Part] = deque()  # interrupted by cancellation; resent first
        self._now: Callable[[], float] = anyio.current_time
        self._forked = False
        self._deadline: float | None = None
        self._stopped = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self.thread: int | None = None  # the thread whose loop runs the worker

    async def open(self, endpoint: str) -> None:
        """Open the spool, if there is one: take its lock, read what was left in it.

        Args:
            endpoint: Where the events an earlier process left in the spool are sent.

        Raises:
            SpoolLockedError: Another client holds the spool.
        """
        if isinstance(self.queue, SpoolQueue):
            await self.queue.open(endpoint)

    def close_spool(self) -> None:
        """Write out and release the spool, if there is one (again: a no-op)."""
        if self.spool is not None and not self._forked:
            self.spool.close()

    # -- the worker ------------------------------------------------------------------

    async def run(
        self,
        transport: Transport | httpx.AsyncClient,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver until closed, then drain within the close deadline.

        Args:
            transport: What to send with (the processor does not close it); an
                ``httpx.AsyncClient`` is sent with as it is.
            task_status: Set once the worker is ready.

        A cancellation from outside (the task owning the client was cancelled) also
        drains, shielded, within ``close_timeout``: then what is left is counted as
        dropped (``shutdown``), never silently lost.
        """
        # Only a running processor has events a fork must leave to the parent: a client
        # made before a fork and first entered in the child is the child's own.
        _live_processors.add(self)
        self.thread = threading.get_ident()
        self._now = self.queue.clock = _loop_clock()
        self._sender.attach(transport, self._now)
        try:
            # close() sets this scope's deadline: everything, the drain included, ends by it.
            with anyio.CancelScope(deadline=self._deadline or math.inf) as self._scope:
                async with anyio.create_task_group() as task_group:
                    if self.spool is not None:
                        task_group.start_soon(self.spool.writer)
                    task_status.started()
                    await self._pump()
                    await self.queue.wait_idle(self._remaining())
                    task_group.cancel_scope.cancel()
        finally:
            self.queue.close()
            try:
                queue = self.queue
                if not self._forked and (queue.queued or queue.in_flight or queue.spilled):
                    # Cancelled from outside (the task owning the client was): drain
                    # anyway, shielded, within the deadline.
                    remaining = self._remaining()
                    if remaining > 0:
                        with anyio.move_on_after(remaining, shield=True):
                            await self._pump()
                            await self.queue.wait_idle(self._remaining())
            finally:
                self._give_up(Reason.SHUTDOWN)
                self.close_spool()
                self._stopped.set()

    def _remaining(self) -> float:
        if self._deadline is None:
            self._deadline = self._now() + self.options.close_timeout
        return max(self._deadline - self._now(), 0.0)

    async def _pump(self) -> None:
        """Deliver due batches with ``max_in_flight`` senders; return once closed and all out."""
        turn = anyio.Lock(fast_acquire=True)
        self._freed = None  # one a cancelled sender may have left
        async with anyio.create_task_group() as senders:
            for _ in range(self.options.max_in_flight):
                senders.start_soon(self._send_loop, turn)

    async def _send_loop(self, turn: anyio.Lock) -> None:
        """One sender: take the turn and, with it, the next part; deliver it; again.

        Only the sender holding the turn waits for a part, so a batch wakes one task, not
        all of them. It passes the turn on as soon as it has one, and delivers it itself.
        """
        while True:
            async with turn:
                part = await self._next_part()
                if part is None:
                    return
                self._busy += 1
            try:
                await self._deliver(part)
            finally:
                self._busy -= 1
                self._free()

    async def _next_part(self) -> Part | None:
        """A free slot (while the breaker is open, the others finished), then the next
        part: one set aside first, else a due batch; ``None`` once closed and all out."""
        queue = self.queue
        while True:
            while self._busy >= self._allowed:
                freed = self._freed = anyio.Event()
                await freed.wait()
            if self._set_aside:
                return self._set_aside.popleft()
            if not await queue.ready():
                return None
            # The breaker may have opened while this sender waited for a batch.
            if self._busy < self._allowed:
                part = queue.take()
                if part is not None:
                    return part

    def _free(self) -> None:
        if self._freed is not None:
            self._freed.set()
            self._freed = None

    async def _deliver(self, part: Part) -> None:
        pieces = [part]
        try:
            while pieces:
                outcome = await self._sender.send(pieces[-1])
                piece = pieces.pop()
                if isinstance(outcome, tuple):
                    self.queue.split(piece, outcome)
                    pieces.extend(reversed(outcome))
                else:
                    self.queue.finish(piece, outcome)
        except anyio.get_cancelled_exc_class():
            if not self._forked:
                # Set aside for the drain: same body, same idempotency key.
                self._set_aside.extend(p for p in pieces if not p.done)
            raise

    def _on_breaker(self, is_open: bool) -> None:
        self._allowed = 1 if is_open else self.options.max_in_flight
        if not is_open:
            self._free()

    def _give_up(self, reason: Reason) -> None:
        """Count everything queued or in flight as dropped."""
        kept = self.queue.kept
        lost = self.queue.give_up(reason)
        self._set_aside.clear()
        if self.queue.kept > kept:
            logger.warning(
                "Shutdown deadline passed: %d event(s) not yet sent were kept in the spool %r "
                "for the next client.",
                self.queue.kept - kept,
                self.options.spool,
            )
        if lost and reason is Reason.SHUTDOWN:
            logger.error(
                "Shutdown deadline passed: %d event(s) still queued or in flight were dropped.",
                lost,
            )

    def _abandon_after_fork(self) -> None:
        # In a forked child: the parent owns these items and sends them itself. Only
        # count them: the inherited loop, its cancel scopes and sockets are the parent's.
        # Cancelling a scope here would make Trio re-register the parent's sockets in the
        # epoll instance both processes share, stalling the parent's requests.
        self._forked = True
        self.queue.abandon(Reason.FORKED)
        self._set_aside.clear()

    @property
    def forked(self) -> bool:
        """Whether this is a forked child's copy of a running processor (it sends nothing)."""
        return self._forked

    # -- control ---------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything accepted so far now, and wait until it is accounted for.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as it takes (the
                retry policy bounds that).

        Returns:
            The outcome for the items accepted before the call.
        """
        if self._forked:
            return FlushResult(complete=True, delivered=0, dropped=0, pending=0)
        return await self.queue.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop intake and start the drain; it ends within ``timeout`` seconds.

        Args:
            timeout: The drain's deadline from now; defaults to ``close_timeout``.
        """
        if self._forked:
            return
        deadline = self._now() + (self.options.close_timeout if timeout is None else timeout)
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        if self._scope is not None:
            self._scope.deadline = self._deadline
        self._sender.close()
        self.queue.close()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has returned."""
        await self._stopped.wait()

    def statistics(self, refused: Mapping[str, int] = _NOTHING_REFUSED) -> Statistics:
        """A snapshot of the ledger (see :class:`~optitrack.Statistics`).

        Args:
            refused: The caller's count of refused calls, by reason, reported as is.
        """
        queue = self.queue
        sender = self._sender
        return Statistics(
            accepted=queue.accepted,
            delivered=queue.delivered,
            dropped=MappingProxyType(dict(queue.dropped)),
            refused=refused,
            pending=queue.queued + queue.in_flight,
            queued=queue.queued,
            queued_bytes=queue.queued_bytes,
            in_flight=queue.in_flight,
            batches=queue.batches,
            requests=sender.requests,
            retries=sender.retries,
            bytes_sent=sender.bytes_sent,
            spooled=queue.spilled + queue.kept,
            recovered=self.spool.recovered if self.spool is not None else 0,
            spool_skipped=self.spool.skipped if self.spool is not None else 0,
            spool_bytes=self.spool.live_bytes if self.spool is not None else 0,
        )


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock, callable from any code on the loop's thread."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio: the other backend anyio runs on is Trio
        import trio

        return trio.current_time
