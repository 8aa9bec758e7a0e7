"""The batch processor: a bounded queue, batches, delivery with retries, a bounded drain.

Events arrive serialized (``bytes``, one ``visitors[]`` entry each) with their
:class:`~optitrack._events.BatchContext`. The queue is a FIFO of *segments*, runs of
events that share a context, so that a batch never mixes contexts and the queue keeps
its order. The worker task sends a batch when it holds ``batch_size`` events, when the
next event would pass ``max_batch_bytes``, when ``flush_interval`` has passed since the
batch began to form, or at once on flush and close.

Bookkeeping is by sequence number: the n-th accepted event has ``seq == n - 1``, the queue
holds ``seq`` in ``[removed, accepted)``, and every batch holds a contiguous run. So
``flush()`` waits for a watermark, not for per-event records.

At every moment ``accepted == delivered + sum(dropped) + queued + in_flight``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import os
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

import anyio
import anyio.abc
import httpx

from ._events import BatchContext, new_uuid
from ._logging import Throttled
from ._notifications import LogEventNotification, NotificationCenter, NotificationType
from ._results import FlushResult, Reason, Statistics
from ._retry import RetryPolicy, is_retryable_status, parse_retry_after
from ._version import __version__

__all__ = ["BatchOptions", "BatchProcessor", "Overflow"]

logger = logging.getLogger("optitrack")

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH_BYTES = 1_000_000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 256 * 1024
DEFAULT_OVERFLOW_TIMEOUT = 1.0
DEFAULT_MAX_IN_FLIGHT = 2
DEFAULT_CLOSE_TIMEOUT = 5.0
#: The Events API's limit on one request body.
EVENTS_API_MAX_BODY = 3_500_000
#: Bodies at least this large are compressed in a worker thread, off the event loop.
GZIP_IN_THREAD_BYTES = 64 * 1024

IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Optitrack-Attempt"


class Overflow(StrEnum):
    """What track does when the queue is full."""

    #: Refuse the new event (``queue_full``). The default: the caller never waits.
    DROP_NEWEST = "drop_newest"
    #: Evict the oldest queued events to make room (counted as dropped, ``queue_full``).
    DROP_OLDEST = "drop_oldest"
    #: Wait up to ``overflow_timeout`` for room, then refuse (backpressure).
    BLOCK = "block"


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchOptions:
    """Queue, batch and delivery settings. Durations are in seconds, sizes in bytes.

    See :class:`optitrack.Client` for what each one means.

    Raises:
        ValueError: A value is out of range, or two values contradict each other; the
            message names the fix.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    overflow: Overflow = Overflow.DROP_NEWEST
    overflow_timeout: float = DEFAULT_OVERFLOW_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    gzip: bool = False
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overflow", Overflow(self.overflow))
        positive_ints = ("batch_size", "max_batch_bytes", "max_queue_size", "max_queue_bytes")
        for name in (*positive_ints, "max_event_bytes", "max_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({value!r}) must be an integer >= 1")
        for name in ("flush_interval", "overflow_timeout", "close_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} ({value!r}) must be a finite number of seconds >= 0")
        if self.batch_size > self.max_queue_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be <= max_queue_size ({self.max_queue_size})"
            )
        if self.max_batch_bytes > EVENTS_API_MAX_BODY:
            raise ValueError(
                f"max_batch_bytes ({self.max_batch_bytes}) must be <= {EVENTS_API_MAX_BODY}, "
                "the Events API's limit on one request"
            )
        if self.max_event_bytes > self.max_batch_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must be <= max_batch_bytes "
                f"({self.max_batch_bytes})"
            )
        if self.max_event_bytes > self.max_queue_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must be <= max_queue_bytes "
                f"({self.max_queue_bytes})"
            )


class _Segment:
    """A run of queued events that share one batch context."""

    __slots__ = ("ctx", "items", "nbytes")

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        self.items: deque[bytes] = deque()
        self.nbytes = 0


class _Part:
    """A batch, or a piece of one after a split, on its way to the Events API."""

    __slots__ = (
        "attempts",
        "body",
        "charged",
        "ctx",
        "done",
        "first_seq",
        "items",
        "key",
        "splits",
        "started",
    )

    def __init__(
        self,
        ctx: BatchContext,
        items: list[bytes],
        first_seq: int,
        splits: list[int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.items = items
        self.first_seq = first_seq
        # Splits left to the whole batch, shared by its pieces: isolating a few bad
        # events takes about 2 log2(n) requests; an endpoint that refuses everything
        # must not cost 2n.
        self.splits = splits if splits is not None else [3 * len(items).bit_length() + 2]
        self.key = new_uuid()
        self.body: bytes | None = None
        self.attempts = 0  # every attempt, for the attempt header
        self.charged = 0  # failed attempts that count against RetryPolicy.attempts
        self.started: float | None = None
        self.done = False

    def split(self) -> tuple[_Part, _Part]:
        half = len(self.items) // 2
        self.splits[0] -= 1
        return (
            _Part(self.ctx, self.items[:half], self.first_seq, self.splits),
            _Part(self.ctx, self.items[half:], self.first_seq + half, self.splits),
        )


class _FlushWaiter:
    __slots__ = ("delivered", "dropped", "event", "target")

    def __init__(self, target: int) -> None:
        self.target = target
        self.event = anyio.Event()
        self.delivered = 0
        self.dropped = 0


_live_processors: weakref.WeakSet[BatchProcessor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for processor in list(_live_processors):
        processor._abandon_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class BatchProcessor:
    """Queues serialized events and delivers them in batches, in the background.

    Run :meth:`run` in a task group (the client does); enqueue with :meth:`put_nowait`
    or :meth:`put`; stop with :meth:`close`.

    Args:
        options: Queue, batch and delivery settings.
        notifications: Where LOG_EVENT notifications go.
    """

    def __init__(self, options: BatchOptions, notifications: NotificationCenter) -> None:
        self.options = options
        self._http: httpx.AsyncClient | None = None
        self._notifications = notifications
        self._retry = options.retry
        self._batch_size = options.batch_size
        self._max_batch_bytes = options.max_batch_bytes
        self._max_queue_size = options.max_queue_size
        self._max_queue_bytes = options.max_queue_bytes
        self._max_event_bytes = options.max_event_bytes
        self._drop_oldest = options.overflow is Overflow.DROP_OLDEST

        self._segments: deque[_Segment] = deque()
        self._queued = 0
        self._queued_bytes = 0
        self._removed = 0  # events that left the queue: seq of the queue's head
        self._oldest_at = 0.0  # when the batch at the head began to form
        self._in_flight = 0
        self._parts: set[_Part] = set()  # in flight, retrying, or set aside
        self._set_aside: deque[_Part] = deque()  # interrupted by cancellation; resent first

        self._accepted = 0
        self._delivered = 0
        self._dropped: dict[str, int] = {}
        self._refused: dict[str, int] = {}
        self._batches = 0
        self._requests = 0
        self._retries = 0
        self._bytes_sent = 0

        self._wakeup: anyio.Event | None = None
        self._room: anyio.Event | None = None
        self._waiters: list[_FlushWaiter] = []
        self._flush_through = -1  # send at once every event with seq <= this
        self._limiter = anyio.CapacityLimiter(options.max_in_flight)
        self._failures = 0
        self._breaker_open = False
        # Set (then replaced) to end every backoff early: the endpoint answers again, or
        # the client is closing and each batch gets one last attempt.
        self._nudge = anyio.Event()
        # The clock of the running loop. Taken once in run(), so that intake works from
        # any code on the loop's thread (a callback too), where sniffio cannot tell.
        self._now: Callable[[], float] = anyio.current_time
        self._offers = 0  # calls since track last let the worker have a turn
        self._pressure = False  # the queue refused an event for want of room
        # Retry-After pauses, by endpoint, on the anyio clock.
        self._resume_at: dict[str, float] = {}

        self._closed = False  # intake stopped
        self._closing = False  # drain everything now
        self._forked = False
        self._deadline: float | None = None
        self._stopped = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._throttled = Throttled()
        _live_processors.add(self)

    # -- intake ----------------------------------------------------------------------

    def _offer(self, ctx: BatchContext, data: bytes) -> Reason | None:
        if self._closed:
            return Reason.CLOSED
        size = len(data)
        overhead = len(ctx.prefix) + 2  # a body is prefix + events joined by "," + "]}"
        if size > self._max_event_bytes or size + overhead > self._max_batch_bytes:
            return Reason.EVENT_TOO_LARGE
        if self._queued >= self._max_queue_size or (
            self._queued_bytes + size > self._max_queue_bytes
        ):
            if not self._drop_oldest:
                if not self._pressure:
                    self._pressure = True  # send now: waiting for the interval wastes room
                    self._wake()
                return Reason.QUEUE_FULL
            self._evict_for(size)
        segments = self._segments
        if segments and (segments[-1].ctx is ctx or segments[-1].ctx == ctx):
            segment = segments[-1]
        else:
            if segments and not segments[-1].items:
                segments.pop()  # the empty one kept for reuse: never leave it at the head
            segment = _Segment(ctx)
            segments.append(segment)
        items = segment.items
        items.append(data)
        segment.nbytes += size
        self._accepted += 1
        self._queued += 1
        self._queued_bytes += size
        wakeup = self._wakeup
        if wakeup is not None:
            if self._queued == 1:
                self._oldest_at = self._now()
                self._wakeup = None
                wakeup.set()
            elif len(items) >= self._batch_size or (
                segment.nbytes + len(items) - 1 + overhead >= self._max_batch_bytes
            ):
                self._wakeup = None
                wakeup.set()
        elif self._queued == 1:
            self._oldest_at = self._now()
        return None

    def put_nowait(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Enqueue a serialized event without waiting.

        Args:
            ctx: The event's batch context.
            data: The serialized visitor.

        Returns:
            ``None`` when accepted, else the reason it was refused (also counted).
        """
        reason = self._offer(ctx, data)
        if reason is not None:
            self.refuse(reason, f"Event refused: {reason.value}.")
        return reason

    async def put(self, ctx: BatchContext, data: bytes) -> Reason | None:
        """Enqueue a serialized event, waiting for room when the overflow policy is BLOCK.

        Args:
            ctx: The event's batch context.
            data: The serialized visitor.

        Returns:
            ``None`` when accepted, else the reason it was refused (also counted).
        """
        reason = self._offer(ctx, data)
        if reason is Reason.QUEUE_FULL and self.options.overflow is Overflow.BLOCK:
            with anyio.move_on_after(self.options.overflow_timeout):
                while reason is Reason.QUEUE_FULL:
                    if self._room is None:
                        self._room = anyio.Event()
                    await self._room.wait()
                    reason = self._offer(ctx, data)
        if reason is not None:
            self.refuse(reason, f"Event refused: {reason.value}.")
        return reason

    def refuse(self, reason: Reason, message: str = "", key: str = "") -> None:
        """Count a refused call, and log it without flooding.

        Args:
            reason: Why it was refused.
            message: What to log; defaults to the reason.
            key: What makes this refusal another one than the last of its reason (an
                event key, the argument at fault): each is logged, and a repeated one
                at most once per period, with the count of the others.
        """
        self._refused[reason] = self._refused.get(reason, 0) + 1
        capacity = reason in (Reason.QUEUE_FULL, Reason.CLOSED, Reason.EVENT_TOO_LARGE)
        self._throttled.log(
            logging.WARNING if capacity else logging.ERROR,
            f"{reason.value}:{key}",
            "%s",
            message or f"Event refused ({reason.value}).",
        )

    def _evict_for(self, size: int) -> None:
        evicted = 0
        first = self._removed
        while self._queued and (
            self._queued >= self._max_queue_size
            or self._queued_bytes + size > self._max_queue_bytes
        ):
            segment = self._segments[0]
            data = segment.items.popleft()
            segment.nbytes -= len(data)
            self._queued -= 1
            self._queued_bytes -= len(data)
            self._removed += 1
            evicted += 1
            if not segment.items:
                self._segments.popleft()
        self._account(first, evicted, Reason.QUEUE_FULL)
        self._throttled.warning(
            "evicted", "Queue full: dropped the %d oldest event(s) (drop_oldest).", evicted
        )

    # -- the worker ------------------------------------------------------------------

    async def run(
        self,
        http_client: httpx.AsyncClient,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver until closed, then drain within the close deadline.

        Args:
            http_client: What to send with (the processor does not close it).
            task_status: Set once the worker is ready.

        A cancellation from outside (the task owning the client was cancelled) also
        drains, shielded, within ``close_timeout``: then what is left is counted as
        dropped (``shutdown``), never silently lost.
        """
        self._http = http_client
        self._now = _loop_clock()
        try:
            # close() sets this scope's deadline: everything, the drain included, ends by it.
            with anyio.CancelScope(deadline=self._deadline or math.inf) as self._scope:
                async with anyio.create_task_group() as task_group:
                    self._task_group = task_group
                    task_status.started()
                    await self._pump()
                    await self._wait_until_idle()
                    task_group.cancel_scope.cancel()
        finally:
            self._closed = self._closing = True
            try:
                if not self._forked and (self._queued or self._parts):
                    # Cancelled from outside (the task owning the client was): drain
                    # anyway, shielded, within the deadline.
                    remaining = self._remaining()
                    if remaining > 0:
                        with anyio.move_on_after(remaining, shield=True):
                            async with anyio.create_task_group() as task_group:
                                self._task_group = task_group
                                await self._pump()
                                await self._wait_until_idle()
                                task_group.cancel_scope.cancel()
            finally:
                self._give_up(Reason.SHUTDOWN)
                self._task_group = None
                self._stopped.set()

    def _remaining(self) -> float:
        if self._deadline is None:
            self._deadline = self._now() + self.options.close_timeout
        return max(self._deadline - self._now(), 0.0)

    async def _wait_until_idle(self) -> None:
        waiter = _FlushWaiter(self._accepted - 1)
        if not self._done_through(waiter.target):
            self._waiters.append(waiter)
            try:
                with anyio.move_on_after(self._remaining()):
                    await waiter.event.wait()
            finally:
                self._waiters.remove(waiter)

    async def _pump(self) -> None:
        """Form batches and start their delivery; return once closing and all is out."""
        limiter = self._limiter
        while True:
            if self._set_aside:
                token = object()
                await limiter.acquire_on_behalf_of(token)
                if not self._set_aside:
                    limiter.release_on_behalf_of(token)
                    continue
                self._start(self._set_aside.popleft(), token)
                continue
            if not self._queued:
                if self._closing:
                    return
                await self._sleep_until(None)
                continue
            if not self._head_ready():
                due = self._oldest_at + self.options.flush_interval
                if self._now() < due:
                    await self._sleep_until(due)
                    continue
            token = object()
            await limiter.acquire_on_behalf_of(token)
            part = self._take_batch()
            if part is None:
                limiter.release_on_behalf_of(token)
                continue
            self._start(part, token)

    def _head_ready(self) -> bool:
        if (
            self._closing
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
        delay = math.inf if deadline is None else deadline - self._now()
        with anyio.move_on_after(delay):
            await wakeup.wait()
        self._wakeup = None

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def _take_batch(self) -> _Part | None:
        if not self._queued:
            return None
        segment = self._segments[0]
        items = segment.items
        ctx = segment.ctx
        # The events of a body are joined by commas: count one per event, and one more
        # in the budget for the last event, which has none.
        budget = self._max_batch_bytes - len(ctx.prefix) - len(ctx.SUFFIX) + 1
        pop = items.popleft
        taken = [pop() for _ in range(min(len(items), self._batch_size))]
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
        part = _Part(ctx, taken, self._removed)
        self._removed += count
        self._queued -= count
        self._queued_bytes -= nbytes - count
        self._in_flight += count
        self._parts.add(part)
        self._batches += 1
        if self._queued:
            self._oldest_at = self._now()
        self._pressure = False
        if self._room is not None:
            self._room.set()
            self._room = None
        return part

    def _start(self, part: _Part, token: object) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._deliver, part, token)

    async def _deliver(self, part: _Part, token: object) -> None:
        pieces = [part]
        try:
            while pieces:
                halves = await self._send(pieces[-1])
                pieces.pop()
                if halves is not None:
                    pieces.extend(reversed(halves))
        except anyio.get_cancelled_exc_class():
            if not self._forked:
                # Set aside for the drain: same body, same idempotency key.
                self._set_aside.extend(p for p in pieces if not p.done)
            raise
        finally:
            self._limiter.release_on_behalf_of(token)

    # -- sending ---------------------------------------------------------------------

    async def _body(self, part: _Part) -> bytes:
        if part.body is None:
            body = part.ctx.body(part.items)
            if self.options.gzip:
                if len(body) >= GZIP_IN_THREAD_BYTES:
                    body = await anyio.to_thread.run_sync(_gzip, body)
                else:
                    body = _gzip(body)
            part.body = body
        return part.body

    def _headers(self, part: _Part) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"optitrack/{__version__}",
            IDEMPOTENCY_HEADER: part.key,
            ATTEMPT_HEADER: str(part.attempts),
        }
        if self.options.gzip:
            headers["Content-Encoding"] = "gzip"
        return headers

    async def _send(self, part: _Part) -> tuple[_Part, _Part] | None:
        """Send one part until it is delivered or given up on, or must be split.

        Returns:
            The two halves to send instead, after a 400 or 413 on more than one event;
            else ``None`` (the part is accounted for).
        """
        retry = self._retry
        body = await self._body(part)
        while True:
            if part.started is None:
                part.started = self._now()
            pause = self._resume_at.get(part.ctx.endpoint, -math.inf) - self._now()
            if pause > 0:
                await anyio.sleep(pause)
            part.attempts += 1
            headers = self._headers(part)
            outage = self._breaker_open  # known down: a failure says nothing of this batch
            status, error, retry_after = await self._attempt(part, body, headers)
            count = len(part.items)

            if status is not None and 200 <= status < 300:
                self._on_success()
                self._log_event(part, headers, body, "delivered", status)
                self._finish(part, None)
                return None
            if status in (400, 413) and count > 1 and part.splits[0] > 0:
                self._log_event(part, headers, body, "split", status)
                part.done = True
                self._parts.discard(part)
                halves = part.split()
                self._parts.update(halves)
                return halves
            if status is not None and not is_retryable_status(status):
                self._log_event(part, headers, body, "dropped", status)
                self._throttled.warning(
                    f"http_{status}",
                    "Events API answered %d: dropped %d event(s). Response: %r",
                    status,
                    count,
                    error,
                )
                self._finish(part, f"http_{status}")
                return None

            self._on_failure()
            if not outage:
                part.charged += 1
            elapsed = self._now() - part.started
            wait = retry.backoff(part.attempts)
            if self._breaker_open:
                wait = min(wait, retry.probe_interval)
            if retry_after is not None:
                wait = max(wait, min(retry_after, retry.retry_after_max))
                endpoint = part.ctx.endpoint
                resume = self._resume_at.get(endpoint, -math.inf)
                self._resume_at[endpoint] = max(resume, self._now() + wait)
            if part.charged >= retry.attempts or elapsed + wait >= retry.timeout:
                self._log_event(part, headers, body, "dropped", status, error)
                logger.error(
                    "Gave up on %d event(s) after %d attempt(s) over %.1f s (last: %s).",
                    count,
                    part.attempts,
                    elapsed,
                    status if status is not None else error,
                )
                self._finish(part, Reason.RETRIES_EXHAUSTED)
                return None
            self._log_event(part, headers, body, "retry", status, error)
            self._throttled.warning(
                "retry",
                "Events API attempt failed (%s); retrying %d event(s) in %.2f s.",
                status if status is not None else error,
                count,
                wait,
            )
            # Back off, but go at once when the endpoint answers again or at close.
            with anyio.move_on_after(wait):
                await self._nudge.wait()

    async def _attempt(
        self, part: _Part, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None, float | None]:
        """One request. Returns (status, error or response excerpt, Retry-After)."""
        self._requests += 1
        if part.attempts > 1:
            self._retries += 1
        self._bytes_sent += len(body)
        timeout = self._retry.attempt_timeout
        assert self._http is not None
        response = None
        with anyio.move_on_after(timeout):
            try:
                response = await self._http.post(
                    part.ctx.endpoint, content=body, headers=headers, timeout=timeout
                )
            except httpx.TimeoutException:
                return None, "timeout", None
            except httpx.HTTPError as exc:
                return None, type(exc).__name__, None
            except Exception as exc:
                # Not a network failure (a closed or misconfigured http_client, a bug
                # below us): a failed attempt all the same, and never the worker's end.
                self._throttled.log(
                    logging.ERROR,
                    "unexpected",
                    "Sending to the Events API raised %r; counted as a failed attempt.",
                    exc,
                )
                return None, type(exc).__name__, None
        if response is None:
            return None, "timeout", None
        status = response.status_code
        excerpt = response.content[:200].decode("utf-8", "replace") if status >= 300 else None
        retry_after = None
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return status, excerpt, retry_after

    def _on_success(self) -> None:
        self._failures = 0
        if self._breaker_open:
            self._breaker_open = False
            self._limiter.total_tokens = self.options.max_in_flight
            self._nudge_senders()
            logger.warning("Events API answers again: resuming at full speed.")

    def _nudge_senders(self) -> None:
        self._nudge.set()
        self._nudge = anyio.Event()

    def _on_failure(self) -> None:
        self._failures += 1
        if not self._breaker_open and self._failures >= self._retry.breaker_threshold:
            self._breaker_open = True
            self._limiter.total_tokens = 1
            logger.warning(
                "Events API failed %d times in a row: probing with one request at a time.",
                self._failures,
            )

    def _log_event(
        self,
        part: _Part,
        headers: dict[str, str],
        body: bytes,
        outcome: str,
        status: int | None,
        error: str | None = None,
    ) -> None:
        if self._notifications.has_listeners(NotificationType.LOG_EVENT):
            self._notifications.send(
                NotificationType.LOG_EVENT,
                LogEventNotification(
                    url=part.ctx.endpoint,
                    headers=MappingProxyType(headers),
                    body=body,
                    event_count=len(part.items),
                    attempt=part.attempts,
                    outcome=outcome,
                    status=status,
                    error=error if status is None else None,
                ),
            )

    # -- the ledger ------------------------------------------------------------------

    def _finish(self, part: _Part, dropped: str | None) -> None:
        if part.done:
            return
        part.done = True
        self._parts.discard(part)
        self._in_flight -= len(part.items)
        self._account(part.first_seq, len(part.items), dropped)
        part.body = None

    def _account(self, first_seq: int, count: int, dropped: str | None) -> None:
        if not count:
            return
        if dropped is None:
            self._delivered += count
        else:
            self._dropped[dropped] = self._dropped.get(dropped, 0) + count
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
        if self._queued and self._removed <= target:
            return False
        return all(part.first_seq > target for part in self._parts if not part.done)

    def _pending_through(self, target: int) -> int:
        queued = min(max(target - self._removed + 1, 0), self._queued)
        in_flight = sum(
            min(max(target - p.first_seq + 1, 0), len(p.items)) for p in self._parts if not p.done
        )
        return queued + in_flight

    def _give_up(self, reason: Reason) -> None:
        """Count everything queued or in flight as dropped."""
        lost = self._queued + self._in_flight
        for part in list(self._parts):
            self._finish(part, reason)
        self._set_aside.clear()
        first = self._removed
        count = self._queued
        self._removed += count
        self._queued = self._queued_bytes = 0
        self._segments.clear()
        self._account(first, count, reason)
        if lost and reason is Reason.SHUTDOWN:
            logger.error(
                "Shutdown deadline passed: %d event(s) still queued or in flight were dropped.",
                lost,
            )

    def _abandon_after_fork(self) -> None:
        # In a forked child: the parent owns these events and sends them itself.
        self._forked = True
        self._closed = self._closing = True
        self._give_up(Reason.FORKED)
        if self._task_group is not None:
            try:
                self._task_group.cancel_scope.cancel()
            except Exception:  # the child may have no running loop at all
                logger.debug("Could not cancel the worker after fork.", exc_info=True)

    # -- control ---------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything accepted so far now, and wait until it is accounted for.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as it takes (the
                retry policy bounds that).

        Returns:
            The outcome for the events accepted before the call.
        """
        target = self._accepted - 1
        waiter = _FlushWaiter(target)
        if not self._done_through(target):
            self._flush_through = max(self._flush_through, target)
            self._wake()
            self._waiters.append(waiter)
            try:
                with anyio.move_on_after(math.inf if timeout is None else timeout):
                    await waiter.event.wait()
            finally:
                self._waiters.remove(waiter)
        pending = self._pending_through(target)
        return FlushResult(
            complete=pending == 0,
            delivered=waiter.delivered,
            dropped=waiter.dropped,
            pending=pending,
        )

    def close(self, timeout: float | None = None) -> None:
        """Stop intake and start the drain; it ends within ``timeout`` seconds.

        Args:
            timeout: The drain's deadline from now; defaults to ``close_timeout``.
        """
        self._closed = self._closing = True
        deadline = self._now() + (self.options.close_timeout if timeout is None else timeout)
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        if self._scope is not None:
            self._scope.deadline = self._deadline
        self._nudge_senders()
        self._wake()
        if self._room is not None:
            self._room.set()
            self._room = None

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has returned."""
        await self._stopped.wait()

    def turn(self) -> bool:
        """Whether the caller should let the worker run now.

        True once per ``batch_size`` calls, and whenever the queue is short of room: a
        tight loop of calls that never awaits anything else still lets delivery run.
        """
        self._offers += 1
        if self._offers >= self._batch_size or self._pressure:
            self._offers = 0
            return True
        return False

    @property
    def queued(self) -> int:
        """Events in the queue now."""
        return self._queued

    @property
    def closed(self) -> bool:
        """Whether intake has stopped."""
        return self._closed

    def statistics(self) -> Statistics:
        """A snapshot of the ledger (see :class:`~optitrack.Statistics`)."""
        return Statistics(
            accepted=self._accepted,
            delivered=self._delivered,
            dropped=MappingProxyType(dict(self._dropped)),
            refused=MappingProxyType(dict(self._refused)),
            pending=self._queued + self._in_flight,
            queued=self._queued,
            queued_bytes=self._queued_bytes,
            in_flight=self._in_flight,
            batches=self._batches,
            requests=self._requests,
            retries=self._retries,
            bytes_sent=self._bytes_sent,
        )


def _loop_clock() -> Callable[[], float]:
    """The running event loop's clock, callable from any code on the loop's thread."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not asyncio: the other backend anyio runs on is Trio
        import trio

        return trio.current_time


def _gzip(body: bytes) -> bytes:
    # mtime=0: the same body always compresses to the same bytes.
    return gzip.compress(body, compresslevel=6, mtime=0)
