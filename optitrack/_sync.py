"""The sync client: optitrack for WSGI apps, workers and scripts.

A :class:`SyncClient` runs an async :class:`~optitrack.Client` on one background thread
with its own event loop. Each call does its pure work in the caller's thread (validation,
serialization, the decision) and offers the event bytes to a bounded, thread-safe
hand-off (:mod:`._handoff`); a task on the loop moves them into the delivery queue a
batch at a time. Lifecycle calls (flush, close, statistics) cross to the loop through
anyio's thread API; nothing else does.

It starts on first use (or on ``with``), drains at interpreter exit if nobody closed it,
and in a process forked from the one that made it (gunicorn ``--preload``, Celery
prefork, uWSGI) it starts afresh: the parent's queue is the parent's to send.

Owns: the thread, its loop, the hand-off pump, fork and exit handling. Must not touch:
validation, decisions or delivery themselves (the async client's rooms do them).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.lowlevel

from ._classic import SyncCalls
from ._client import Client, DatafileSource
from ._delivery import BatchContext
from ._exceptions import ClientStateError
from ._handoff import Handoff
from ._intake import Intake
from ._loop_calls import LoopCalls
from ._results import ACCEPTED, FlushResult, Reason, Statistics, TrackResult
from ._sync_user import SyncUserContext
from ._user import UserContext

__all__ = ["SyncClient"]

_T = TypeVar("_T")
_NEW, _RUNNING, _CLOSED = "new", "running", "closed"
#: The loop moves the hand-off at least this often (seconds), and at once when a batch's
#: worth is waiting or on flush and close.
_TICK = 0.02


class SyncClient(SyncCalls):
    """An Optimizely client for sync code: the async client's pipeline on a thread.

    The same options as :class:`Client`, plus ``backend``. Calls never do I/O in the
    caller's thread: ``track`` validates and serializes there, then hands the bytes to
    the background loop without waiting for it. Many threads may call it at once::

        client = optitrack.SyncClient(sdk_key="...")  # starts on first use
        client.track("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})
        client.close()  # or let interpreter exit drain it, within close_timeout

    Args:
        datafile: As for :class:`Client`.
        backend: The background loop's anyio backend, ``"asyncio"`` or ``"trio"``.
        **options: Every other option of :class:`Client`.

    Raises:
        DatafileError: The datafile is invalid.
        ValueError: An option is out of range.
        TypeError: Neither ``datafile`` nor ``sdk_key`` was given, or an unknown option.
    """

    def __init__(
        self, datafile: DatafileSource | None = None, *, backend: str = "asyncio", **options: Any
    ) -> None:
        self._datafile = datafile
        self._backend = backend
        self._options = options
        self._lock = threading.Lock()
        self._state = _NEW
        self._make_client()
        _live.add(self)

    def _make_client(self) -> None:
        self._client = Client(self._datafile, **self._options)
        self._decider = self._client._decider
        self.notification_center = self._client.notification_center
        opts = self._client._options
        self._handoff = Handoff(
            max_items=opts.max_queue_size,
            max_bytes=opts.max_queue_bytes,
            overflow=opts.overflow,
            overflow_timeout=opts.overflow_timeout,
            wake=self._wake,
            batch_size=opts.batch_size,
        )
        self._max_event_bytes = opts.max_event_bytes
        self._close_timeout = opts.close_timeout
        self._thread: threading.Thread | None = None
        self._loop: LoopCalls | None = None
        self._call_soon: Callable[[Callable[[], object]], object] | None = None
        self._wakeup: anyio.Event | None = None
        #: Held on the loop while items taken from the hand-off are put in the queue, so
        #: that flush sees each item either still in the hand-off or already queued.
        self._moving: anyio.Lock | None = None
        #: The pump's cancel scope: close() gives it the close deadline.
        self._pump_scope: anyio.CancelScope | None = None
        self._closing = False
        #: When the close deadline passes, on the loop's clock.
        self._close_deadline: float | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread and enter the async client (waits for it).

        Calls start it too; with ``sdk_key`` and no datafile, this waits up to
        ``datafile_timeout`` for the first one.

        Raises:
            ClientStateError: The client was closed.
        """
        with self._lock:
            if self._state == _RUNNING:
                return
            if self._state == _CLOSED:
                raise ClientStateError("this SyncClient is closed")
            thread = threading.Thread(target=self._run, name="optitrack", daemon=True)
            self._thread = thread
            thread.start()
            self._started.wait()
            if self._error is not None:
                raise self._error
            self._state = _RUNNING

    def _run(self) -> None:
        try:
            anyio.run(self._main, backend=self._backend)
        except BaseException as exc:  # reported to start() or close()
            self._error = exc
        finally:
            self._started.set()
            self._stopped.set()

    async def _main(self) -> None:
        async with self._client:
            self._loop = LoopCalls()
            self._call_soon = self._loop.call_soon
            self._moving = anyio.Lock()
            self._pump_scope = anyio.CancelScope()
            self._started.set()
            with self._pump_scope:
                await self._pump()
            # The hand-off is in the queue now (or counted lost, if the queue had no room
            # for it before the deadline): drain the queue within what is left.
            deadline = self._close_deadline
            remaining = None if deadline is None else max(deadline - anyio.current_time(), 0.0)
            await self._client.aclose(remaining)

    async def _pump(self) -> None:
        """Move the hand-off into the delivery queue until closing, then once more.

        Runs in ``_pump_scope``: once closing, a move still waiting for room in a full
        queue (the Events API not answering) ends at the close deadline.
        """
        assert self._moving is not None
        while True:
            closing = self._closing
            async with self._moving:
                await self._move(self._handoff.take())
            if closing:
                return
            self._wakeup = anyio.Event()
            with anyio.move_on_after(_TICK):
                await self._wakeup.wait()
            self._wakeup = None

    async def _move(self, items: list[tuple[BatchContext, bytes]]) -> None:
        """Put items taken from the hand-off in the delivery queue, with ``_moving`` held.

        Waits for room as long as it takes; if cancelled meanwhile (the close deadline
        passed), the items not in the queue are counted as lost (``shutdown``).
        """
        handoff = self._handoff
        queue = self._client._intake.queue
        batch = self._client._options.batch_size
        done = 0
        try:
            for ctx, data in items:
                reason = await queue.put_waiting(ctx, data)
                done += 1
                if reason is None:
                    handoff.moved(len(data))
                else:
                    handoff.lost(len(data), Reason.SHUTDOWN)
                if done % batch == 0:
                    # Let the loop deliver; flush() waits for the rest of this move.
                    await anyio.lowlevel.checkpoint()
        finally:
            for _, data in items[done:]:
                handoff.lost(len(data), Reason.SHUTDOWN)

    def _wake(self) -> None:
        # From any thread: have the pump move the hand-off now.
        call_soon = self._call_soon
        if call_soon is not None:
            # RuntimeError: the loop is gone (closing); its last pass took everything.
            with contextlib.suppress(RuntimeError):
                call_soon(self._set_wakeup)

    def _set_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _ensure_running(self) -> None:
        if self._state != _RUNNING:
            if self._state == _CLOSED:
                raise ClientStateError("this SyncClient is closed")
            self.start()

    def _on_loop(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` (async) on the background loop and wait for its result."""
        assert self._loop is not None
        return self._loop.run(func, *args)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued and stop, within ``timeout`` seconds.

        What is still queued or in flight at the deadline is counted as dropped
        (``shutdown``). Calls made after it are refused (``closed``).

        Args:
            timeout: The deadline in seconds; defaults to ``close_timeout``.
        """
        with self._lock:
            if self._state != _RUNNING:
                self._state = _CLOSED
                return
            self._state = _CLOSED
        timeout = self._close_timeout if timeout is None else timeout
        self._on_loop(self._close_on_loop, timeout)
        self._stopped.wait(timeout + 5.0)
        if self._handoff.drop_all(Reason.SHUTDOWN):
            pass  # counted in statistics(); the drain had no time left for them

    async def _close_on_loop(self, timeout: float) -> None:
        self._handoff.close()
        self._close_deadline = anyio.current_time() + timeout
        if self._pump_scope is not None:
            self._pump_scope.deadline = self._close_deadline
        self._closing = True
        self._set_wakeup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything tracked so far, and wait until it is delivered or given up on.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as the retry
                policy allows.

        Returns:
            What became of the events in the delivery queue when the hand-off had been
            moved into it.
        """
        self._ensure_running()
        result: FlushResult = self._on_loop(self._flush_on_loop, timeout)
        return result

    async def _flush_on_loop(self, timeout: float | None) -> FlushResult:
        assert self._moving is not None
        # After the pump's move in progress, if any: what it took is queued by then.
        async with self._moving:
            await self._move(self._handoff.take())
        return await self._client.flush(timeout)

    def statistics(self) -> Statistics:
        """The ledger, the hand-off included (its events count as queued)."""
        stats: Statistics
        handoff: tuple[int, int, dict[str, int]]
        if self._state == _RUNNING and self._loop is not None:
            try:
                # Both read on the loop: the pump moves the hand-off there.
                stats, handoff = self._on_loop(self._statistics_on_loop)
            except RuntimeError:  # the loop just stopped
                stats, handoff = self._client.statistics(), self._handoff.snapshot()
        else:
            stats, handoff = self._client.statistics(), self._handoff.snapshot()
        pending, pending_bytes, dropped = handoff
        merged = dict(stats.dropped)
        for reason, count in dropped.items():
            merged[reason] = merged.get(reason, 0) + count
        return dataclasses.replace(
            stats,
            accepted=stats.accepted + pending + sum(dropped.values()),
            dropped=merged,
            pending=stats.pending + pending,
            queued=stats.queued + pending,
            queued_bytes=stats.queued_bytes + pending_bytes,
        )

    async def _statistics_on_loop(self) -> tuple[Statistics, tuple[int, int, dict[str, int]]]:
        return self._client.statistics(), self._handoff.snapshot()

    @property
    def is_ready(self) -> bool:
        """Whether a datafile is in use."""
        return self._client.is_ready

    def update_datafile(self, datafile: DatafileSource) -> None:
        """Decide and track with a new datafile from now on (see :meth:`Client.update_datafile`).

        Args:
            datafile: The new datafile.
        """
        self._ensure_running()
        self._on_loop(self._update_on_loop, datafile)

    async def _update_on_loop(self, datafile: DatafileSource) -> None:
        self._client.update_datafile(datafile)

    # -- track -----------------------------------------------------------------------

    def track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
        event_tags: Mapping[str, Any] | None = None,
    ) -> TrackResult:
        """Record a conversion of ``event_key`` for ``user_id`` (see :meth:`Client.track`).

        Validates and serializes in the calling thread; never waits, except with
        ``overflow="block"`` for room, up to ``overflow_timeout``.

        Returns:
            Whether the event was accepted and, when not, why.

        Raises:
            TrackError: The event was refused and the client is strict.
        """
        return self._track(event_key, user_id, attributes, event_tags, None)

    def _track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
        user: UserContext | None,
    ) -> TrackResult:
        if self._state != _RUNNING:
            if self._state == _CLOSED:
                return self._client._intake.refused(Reason.CLOSED, "the client is closed")
            self._ensure_running()
        intake = self._client._intake
        rendered = None if user is None else user.rendered_attributes(intake.factory)
        data = None
        if user is None or rendered is not None:
            data = intake.fast(event_key, user_id, attributes, event_tags, rendered)
        if data is None:
            conversion = intake.conversion(event_key, user_id, attributes, event_tags, user)
            if type(conversion) is not bytes:
                return conversion  # type: ignore[return-value]
            data = conversion
        if len(data) > self._max_event_bytes:  # _offer, inlined: this runs per event
            reason: Reason | None = Reason.EVENT_TOO_LARGE
        else:
            reason = self._handoff.offer(intake.context, data)
        if reason is None and not intake.track_listeners:
            return ACCEPTED
        return intake.submitted(reason, event_key, user_id, attributes, event_tags)

    @property
    def _intake(self) -> Intake:
        return self._client._intake

    def _offer(self, ctx: Any, data: bytes) -> Reason | None:
        if len(data) > self._max_event_bytes:
            return Reason.EVENT_TOO_LARGE
        return self._handoff.offer(ctx, data)

    def _queue_impressions(self, impressions: Iterable[bytes]) -> None:
        intake = self._client._intake
        for data in impressions:
            reason = self._offer(intake.context, data)
            if reason is not None:
                intake.refusals.refuse_event(reason)

    # -- decisions -------------------------------------------------------------------

    def create_user_context(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> SyncUserContext:
        """A user, to track events and make decisions for (see :class:`SyncUserContext`).

        Args:
            user_id: The user's id.
            attributes: The user's attributes (copied).

        Returns:
            The user context.

        Raises:
            TypeError: ``user_id`` is not a str or ``attributes`` is not a mapping.
        """
        return SyncUserContext(self, self._client.create_user_context(user_id, attributes))

    def activate(
        self, experiment_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> str | None:
        """Bucket a user into an experiment and send its impression (see :meth:`Client.activate`).

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The variation's key, or ``None``.
        """
        self._ensure_running()
        key, impression = self._decider.activate_nowait(experiment_key, user_id, attributes)
        if impression is not None:
            self._queue_impressions((impression,))
        return key

    def is_feature_enabled(
        self, feature_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether a flag is on for a user (see :meth:`Client.is_feature_enabled`).

        Args:
            feature_key: The flag's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            Whether the flag is enabled for the user.
        """
        self._ensure_running()
        enabled, impression = self._decider.is_feature_enabled_nowait(
            feature_key, user_id, attributes
        )
        if impression is not None:
            self._queue_impressions((impression,))
        return enabled

    def get_enabled_features(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> list[str]:
        """The keys of the flags enabled for a user (see :meth:`is_feature_enabled`).

        Args:
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The enabled flags' keys, in datafile order.
        """
        return [
            flag.key
            for flag in self._decider.config.datafile.feature_flags
            if self.is_feature_enabled(flag.key, user_id, attributes)
        ]

    def __repr__(self) -> str:
        return f"SyncClient(state={self._state!r}, backend={self._backend!r})"

    def _after_fork(self) -> None:
        # In a child: the thread is gone and the queue is the parent's. Start afresh
        # on first use, with the same options. A client the parent never started (a
        # gunicorn --preload master's) is rebuilt too: the fork gave up its delivery
        # queue (the processor abandons every live queue in a child), so the inherited
        # one would take every event and drop it as ``shutdown``.
        self._lock = threading.Lock()
        if self._state != _CLOSED:
            self._state = _NEW
            self._make_client()


_live: weakref.WeakSet[SyncClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_live):
        client._after_fork()


def _close_at_exit() -> None:
    # Scripts that forget close() still send what they tracked, within close_timeout.
    for client in list(_live):
        with contextlib.suppress(Exception):  # one client's failure must not stop the others
            client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_at_exit)
