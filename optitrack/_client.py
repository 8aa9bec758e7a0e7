"""The client: the resource that owns delivery, and the front of every call.

Owns: the options, the lifecycle (entering starts the batch processor in the client's
task group; leaving drains it), ``track``, ``flush``, ``statistics``,
``update_datafile`` and user contexts. Every call is a few lines that hand over to the
room that does the work: the intake (events in), the decider (decisions), the batch
processor (delivery). Must not touch: how events are serialized, decided or sent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from threading import get_ident
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from anyio.lowlevel import checkpoint

from ._classic import ClassicCalls
from ._datafile_manager import (
    DEFAULT_DATAFILE_TIMEOUT,
    DEFAULT_UPDATE_INTERVAL,
    DatafileManager,
    DatafileOptions,
)
from ._decider import Decider
from ._decisions import DecisionEngine, ProjectConfig, empty_config, load_datafile
from ._delivery import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_SPOOL_BYTES,
    DEFAULT_OVERFLOW_TIMEOUT,
    BatchOptions,
    BatchProcessor,
    Overflow,
    RetryPolicy,
    SpoolFsync,
    check_endpoint,
)
from ._delivery.transport import open_transports
from ._exceptions import ClientStateError, unwrap_single_group
from ._intake import CLOSED, NEW, NO_DATAFILE, RUNNING, Intake
from ._logging import log_closed, log_started
from ._notifications import ConfigUpdateNotification, NotificationCenter, NotificationType
from ._profiles import ProfileStore, UserProfileService
from ._results import ACCEPTED, FlushResult, Statistics, TrackResult
from ._user import DecideOption, UserContext

__all__ = ["Client"]

DatafileSource = str | bytes | os.PathLike[str] | Mapping[str, Any] | ProjectConfig


def _config(datafile: DatafileSource) -> ProjectConfig:
    return datafile if isinstance(datafile, ProjectConfig) else load_datafile(datafile)


class Client(ClassicCalls):
    """An Optimizely client for async code: track conversions, deliver them in batches.

    Use it as an ``async with`` resource. Entering starts the background batch
    processor in the client's own task group; leaving (or :meth:`aclose`) stops intake
    and sends what is queued within ``close_timeout``::

        async with optitrack.Client(datafile) as client:
            await client.track("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})

    Args:
        datafile: The project datafile: JSON text or bytes, a path (a string that is
            not JSON names a file), a mapping, or a :class:`ProjectConfig` already
            loaded. With ``sdk_key`` it is optional: the datafile used until a fetch
            succeeds. One of the two is required.
        sdk_key: The project environment's SDK key: the client fetches its datafile at
            start and keeps it current (see ``docs/datafile.md``).
        datafile_url_template: Where the datafile is fetched from, with ``{sdk_key}``;
            defaults to Optimizely's CDN (its authenticated endpoint with
            ``datafile_access_token``).
        datafile_access_token: A token for an authenticated datafile, sent as
            ``Authorization: Bearer`` (never logged).
        update_interval: Seconds between two fetches of the datafile.
        datafile_timeout: Seconds entering ``async with`` waits for the first datafile
            when none was given; after it the cached one is used, if any.
        datafile_cache: A file where every fetched datafile is kept, for a start when
            the datafile cannot be fetched.
        event_endpoint: Where events go. Defaults to the Optimizely Events API of the
            datafile's region (EU or US).
        batch_size: Events per request at most.
        max_batch_bytes: Request body bytes at most (the Events API accepts 3.5 MB).
        flush_interval: Seconds a batch may wait for more events after its first one.
        max_queue_size: Queued events at most.
        max_queue_bytes: Queued serialized bytes at most.
        max_event_bytes: A single serialized event's bytes at most; larger ones are
            refused at the call (``event_too_large``).
        overflow: What to do with a full queue: ``"drop_newest"`` (refuse the new event),
            ``"drop_oldest"`` (evict the oldest) or ``"block"`` (wait up to
            ``overflow_timeout`` for room, then refuse).
        overflow_timeout: Seconds ``track`` may wait for room with ``overflow="block"``.
        max_in_flight: Requests in flight at once.
        gzip: Compress request bodies (``Content-Encoding: gzip``). Off by default: the
            Optimizely Events API does not document support for it.
        close_timeout: Seconds the drain on close may take, at most.
        retry: The retry policy.
        http_client: An ``httpx.AsyncClient`` to send with; the client does not close it.
            By default events go through optitrack's own HTTP/1.1 keep-alive transport
            (through httpx when ``HTTP(S)_PROXY`` applies), and datafiles through an
            ``httpx.AsyncClient`` the client makes and closes.
        strict: Raise :class:`TrackError` (and :class:`DecisionError`) instead of
            returning a refusal: for tests and development.
        user_profile_service: Where sticky bucketing is kept (see
            :class:`UserProfileService`); none by default.
        default_decide_options: Options added to every ``decide``.
        spool: A directory for a durable spool (off by default): accepted events are
            journaled there, a full queue spills to it, what the close deadline could not
            send stays in it, and the next client on it sends what is left
            (``docs/reliability.md``). One client at a time: entering raises
            :class:`SpoolLockedError` while another holds it.
        max_spool_bytes: The spool's bound in bytes; ``overflow`` applies when it is full.
        spool_fsync: When the spool is forced to disk: ``"batch"``, ``"always"`` or
            ``"never"`` (see :class:`SpoolFsync`).

    Raises:
        DatafileError: The datafile is invalid (the message says what and where).
        ValueError: An option is out of range or contradicts another, or
            ``event_endpoint`` is not an http(s) URL.
        TypeError: Neither ``datafile`` nor ``sdk_key`` was given.
    """

    def __init__(
        self,
        datafile: DatafileSource | None = None,
        *,
        sdk_key: str | None = None,
        datafile_url_template: str | None = None,
        datafile_access_token: str | None = None,
        update_interval: float = DEFAULT_UPDATE_INTERVAL,
        datafile_timeout: float = DEFAULT_DATAFILE_TIMEOUT,
        datafile_cache: str | os.PathLike[str] | None = None,
        event_endpoint: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        overflow_timeout: float = DEFAULT_OVERFLOW_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        gzip: bool = False,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        strict: bool = False,
        user_profile_service: UserProfileService | None = None,
        default_decide_options: Iterable[DecideOption | str] = (),
        spool: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        spool_fsync: SpoolFsync | str = SpoolFsync.BATCH,
    ) -> None:
        if datafile is None and sdk_key is None:
            raise TypeError("Client() needs a datafile, an sdk_key, or both")
        self._manager: DatafileManager | None = None
        if sdk_key is not None:
            options = DatafileOptions(
                sdk_key=sdk_key,
                url_template=datafile_url_template,
                access_token=datafile_access_token,
                update_interval=update_interval,
                timeout=datafile_timeout,
                cache=datafile_cache,
            )
            self._manager = DatafileManager(options, self._use)
        config = _config(datafile) if datafile is not None else empty_config()
        self._ready = datafile is not None
        self._ready_event: anyio.Event | None = None
        if self._manager is not None and self._ready:
            self._manager.use_revision(config.revision)
        self._options = BatchOptions(
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            max_event_bytes=max_event_bytes,
            overflow=Overflow(overflow),
            overflow_timeout=overflow_timeout,
            max_in_flight=max_in_flight,
            gzip=gzip,
            close_timeout=close_timeout,
            retry=retry if retry is not None else RetryPolicy(),
            spool=os.fspath(spool) if spool is not None else None,
            max_spool_bytes=max_spool_bytes,
            spool_fsync=spool_fsync,  # type: ignore[arg-type]  # BatchOptions checks it
        )
        self._endpoint_given = event_endpoint
        self.event_endpoint = check_endpoint(event_endpoint or config.default_event_endpoint)
        self._http = http_client
        self.notification_center = NotificationCenter()
        self._processor = BatchProcessor(self._options, self.notification_center)
        engine = DecisionEngine(config)
        self._intake = Intake(
            config,
            self.event_endpoint,
            self._processor.queue,
            self.notification_center,
            strict=strict,
            impression_variation=engine.impression_variation,
        )
        # UserContext.track_event: track, with the attributes the context rendered once.
        self._track_user = self._intake.track_user
        self._decider = Decider(
            engine,
            self._ready,
            self._intake,
            self.notification_center,
            ProfileStore(user_profile_service),
            strict=strict,
            default_options=default_decide_options,
        )
        self._stack: AsyncExitStack | None = None

    @property
    def default_decide_options(self) -> frozenset[DecideOption]:
        """The options added to every ``decide``."""
        return self._decider.options.default_options

    @default_decide_options.setter
    def default_decide_options(self, options: Iterable[DecideOption | str]) -> None:
        self._decider.options.default_options = options

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._intake.state != NEW:
            raise ClientStateError(
                f"a client can be entered once (this one is {self._intake.state})"
            )
        await self._processor.open(self.event_endpoint)
        async with AsyncExitStack() as stack:
            stack.callback(self._processor.close_spool)  # also if starting fails
            transport, http = await open_transports(
                stack,
                self.event_endpoint,
                self._http,
                max_in_flight=self._options.max_in_flight,
                attempt_timeout=self._options.retry.attempt_timeout,
                need_httpx=self._manager is not None,
            )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._processor.run, transport)
            self._ready_event = anyio.Event()
            self._intake.thread = get_ident()
            self._intake.state = RUNNING if self._ready else NO_DATAFILE
            if self._ready:
                self._ready_event.set()
            if self._manager is not None:
                assert http is not None
                await task_group.start(self._manager.run, http)
                if not self._ready:
                    await self._manager.wait_first(lambda: self._ready)
            self._stack = stack.pop_all()
        log_started(
            self.event_endpoint,
            f"sdk_key {self._manager.options.sdk_key!r}" if self._manager else "given",
            self._decider.config.revision if self._ready else None,
            self._options,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        if self._manager is not None:
            self._manager.close()
        self._processor.close()
        self._intake.state = CLOSED
        try:
            with unwrap_single_group():
                return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            log_closed(self.statistics())

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, send what is queued, and wait for it, within ``timeout`` seconds.

        Calls made after it are refused (``closed``). What is still queued or in flight at
        the deadline is counted as dropped (``shutdown``) and logged. Leaving
        ``async with`` does the same with ``close_timeout``.

        In a process forked from the one that entered the client, it returns at once: the
        parent's events are the parent's to send (counted ``forked`` here).

        Args:
            timeout: The deadline in seconds from now; defaults to ``close_timeout``.
        """
        intake = self._intake
        if intake.state == NEW or self._processor.forked:
            # In a forked child the worker runs only in the parent: nothing to wait for.
            intake.state = CLOSED
            return
        if self._manager is not None:
            self._manager.close()
        self._processor.close(timeout)
        await self._processor.wait_stopped()
        intake.state = CLOSED

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything tracked so far, and wait until it is delivered or given up on.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as the retry
                policy allows.

        Returns:
            What became of the events tracked before the call.

        Raises:
            ClientStateError: The client was never entered.
        """
        self._intake.require_started("flush")
        return await self._processor.flush(timeout)

    def statistics(self) -> Statistics:
        """A snapshot of the delivery ledger: accepted, delivered, dropped, pending..."""
        return self._processor.statistics(refused=self._intake.refusals.counts())

    @property
    def config(self) -> ProjectConfig:
        """The project config the client decides and tracks with.

        Raises:
            ClientStateError: The client has no datafile yet (see :attr:`is_ready`).
        """
        if not self._ready:
            raise ClientStateError("the client has no datafile yet: see is_ready, wait_ready")
        return self._decider.config

    @property
    def is_ready(self) -> bool:
        """Whether a datafile is in use (given, fetched or cached)."""
        return self._ready

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until a datafile is in use.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as it takes.

        Returns:
            Whether a datafile is in use.

        Raises:
            ClientStateError: The client was never entered.
        """
        self._intake.require_started("wait_ready")
        assert self._ready_event is not None
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            await self._ready_event.wait()
        return self._ready

    def update_datafile(self, datafile: DatafileSource) -> None:
        """Decide and track with a new datafile from now on: a new revision of the project.

        For a long-running app, which fetches the datafile as Optimizely's SDKs poll it
        and hands each new revision over. The new datafile is validated first: a bad one
        raises and the current one stays. Events already queued go out with the revision
        they were made with (a batch never mixes revisions); forced variations set on the
        client are kept. The event endpoint follows the new datafile's region, unless
        ``event_endpoint`` was given to the client.

        Args:
            datafile: The new datafile (as for :class:`Client`).

        Raises:
            DatafileError: The datafile is invalid; nothing changed.
        """
        config = _config(datafile)
        if self._manager is not None:
            self._manager.use_revision(config.revision)
        self._use(config, "update_datafile")

    def _use(self, config: ProjectConfig, source: str) -> None:
        # A new datafile, validated: from update_datafile, a fetch or the cache.
        if self._endpoint_given is None:
            self.event_endpoint = config.default_event_endpoint
        self._decider.update(config)
        self._intake.use(config, self.event_endpoint)
        if not self._ready:
            self._ready = True
            if self._intake.state == NO_DATAFILE:
                self._intake.state = RUNNING
            if self._ready_event is not None:
                self._ready_event.set()
        if self.notification_center.has_listeners(NotificationType.CONFIG_UPDATE):
            self.notification_center.send(
                NotificationType.CONFIG_UPDATE,
                ConfigUpdateNotification(config.revision, config.sdk_key, source),
            )

    # -- track -----------------------------------------------------------------------

    async def track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
        event_tags: Mapping[str, Any] | None = None,
    ) -> TrackResult:
        """Record a conversion of ``event_key`` for ``user_id``.

        Validates against the datafile, serializes the event and queues it: no I/O, a
        few microseconds. It never sends an impression: a conversion counts in an
        experiment only for a user who got one earlier (activate, is_feature_enabled,
        decide).

        Args:
            event_key: The key of an event of the datafile.
            user_id: The user's id (``""`` is allowed).
            attributes: User attributes, for results segmentation. Values that are not
                strings, booleans or finite numbers are left out; keys that are neither
                datafile attributes nor ``$opt_`` reserved ones are left out and logged.
            event_tags: Tags sent as given; an integer ``revenue`` (minor units) and a
                numeric ``value`` are also sent as the event's metrics.

        Returns:
            Whether the event was accepted and, when not, why. With
            ``overflow="block"``, the call may wait up to ``overflow_timeout`` for room.

        Raises:
            TrackError: The event was refused and the client is strict.
            ClientStateError: The client was never entered.
        """
        intake = self._intake
        if get_ident() != intake.thread:
            intake.wrong_thread("track")
        data = intake.fast(event_key, user_id, attributes, event_tags, None)
        if data is None:
            conversion = intake.conversion(event_key, user_id, attributes, event_tags)
            if type(conversion) is not bytes:
                return conversion  # type: ignore[return-value]
            data = conversion
        # queue.put without its coroutine: a refusal waits for room with
        # overflow="block", and the worker (and the network) has a turn now and then, so
        # that a tight loop of track calls cannot starve it.
        queue = intake.queue
        reason = queue.put_nowait(intake.context, data)
        if reason is None:
            if queue.offered():
                await checkpoint()
            if not intake.track_listeners:
                return ACCEPTED
        else:
            reason = await queue.refused(intake.context, data, reason)
        return intake.submitted(reason, event_key, user_id, attributes, event_tags)

    def track_nowait(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
        event_tags: Mapping[str, Any] | None = None,
    ) -> TrackResult:
        """Like :meth:`track`, from sync code: never waits, even with ``overflow="block"``.

        Args:
            event_key: The key of an event of the datafile.
            user_id: The user's id.
            attributes: User attributes.
            event_tags: Event tags.

        Returns:
            Whether the event was accepted and, when not, why.

        Raises:
            TrackError: The event was refused and the client is strict.
            ClientStateError: The client was never entered.
        """
        intake = self._intake
        if get_ident() != intake.thread:
            intake.wrong_thread("track_nowait")
        data = intake.fast(event_key, user_id, attributes, event_tags, None)
        if data is None:
            conversion = intake.conversion(event_key, user_id, attributes, event_tags)
            if type(conversion) is not bytes:
                return conversion  # type: ignore[return-value]
            data = conversion
        reason = intake.queue.put_nowait(intake.context, data)
        if reason is None and not intake.track_listeners:
            return ACCEPTED
        return intake.submitted(reason, event_key, user_id, attributes, event_tags)

    # -- users -----------------------------------------------------------------------

    def create_user_context(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> UserContext:
        """A user, to track events and make decisions for.

        Args:
            user_id: The user's id.
            attributes: The user's attributes (copied).

        Returns:
            The user context.

        Raises:
            TypeError: ``user_id`` is not a str or ``attributes`` is not a mapping.
        """
        if not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
        if not (attributes is None or type(attributes) is dict or isinstance(attributes, Mapping)):
            raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        return UserContext(self, self._decider, user_id, attributes)
