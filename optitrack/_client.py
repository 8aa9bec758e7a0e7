"""The client: ``await client.track(...)`` and the resource that owns delivery."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import httpx

from ._datafile import ProjectConfig, load_datafile
from ._events import EventFactory, InvalidTagsError
from ._exceptions import ClientStateError, TrackError, unwrap_single_group
from ._notifications import NotificationCenter, NotificationType, TrackNotification
from ._processor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_OVERFLOW_TIMEOUT,
    BatchOptions,
    BatchProcessor,
    Overflow,
)
from ._results import ACCEPTED, FlushResult, Reason, Statistics, TrackResult
from ._retry import RetryPolicy

__all__ = ["Client", "UserContext"]

DatafileSource = str | bytes | os.PathLike[str] | Mapping[str, Any] | ProjectConfig

_NEW, _RUNNING, _CLOSED = "new", "running", "closed"


class Client:
    """An Optimizely client for async code: track conversions, deliver them in batches.

    Use it as an ``async with`` resource. Entering starts the background batch
    processor in the client's own task group; leaving (or :meth:`aclose`) stops intake
    and sends what is queued within ``close_timeout``::

        async with optitrack.Client(datafile) as client:
            await client.track("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})

    Args:
        datafile: The project datafile: JSON text or bytes, a path, a mapping, or a
            :class:`ProjectConfig` already loaded.
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
            By default the client makes and closes its own.
        strict: Raise :class:`TrackError` (and :class:`DecisionError`) instead of
            returning a refusal: for tests and development.

    Raises:
        DatafileError: The datafile is invalid (the message says what and where).
        ValueError: An option is out of range or contradicts another.
    """

    def __init__(
        self,
        datafile: DatafileSource,
        *,
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
    ) -> None:
        self._config = datafile if isinstance(datafile, ProjectConfig) else load_datafile(datafile)
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
        )
        self.event_endpoint = event_endpoint or self._config.default_event_endpoint
        self._factory = EventFactory(self._config, self.event_endpoint)
        self._context = self._factory.context
        self._http = http_client
        self.notification_center = NotificationCenter()
        self._processor = BatchProcessor(self._options, self.notification_center)
        self._block = self._options.overflow is Overflow.BLOCK
        self._strict = strict
        self._state = _NEW
        self._stack: AsyncExitStack | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise ClientStateError(f"a client can be entered once (this one is {self._state})")
        async with AsyncExitStack() as stack:
            http = self._http
            if http is None:
                connections = self._options.max_in_flight + 1
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        limits=httpx.Limits(
                            max_connections=connections, max_keepalive_connections=connections
                        ),
                        timeout=self._options.retry.attempt_timeout,
                    )
                )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._processor.run, http)
            self._stack = stack.pop_all()
        self._state = _RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        self._processor.close()
        self._state = _CLOSED
        with unwrap_single_group():
            return await self._stack.__aexit__(exc_type, exc, tb)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, send what is queued, and wait for it, within ``timeout`` seconds.

        Calls made after it are refused (``closed``). What is still queued or in flight at
        the deadline is counted as dropped (``shutdown``) and logged. Leaving
        ``async with`` does the same with ``close_timeout``.

        Args:
            timeout: The deadline in seconds from now; defaults to ``close_timeout``.
        """
        if self._state == _NEW:
            self._state = _CLOSED
            return
        self._processor.close(timeout)
        await self._processor.wait_stopped()

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
        if self._state == _NEW:
            raise ClientStateError("flush() needs a running client: use `async with client:`")
        return await self._processor.flush(timeout)

    def statistics(self) -> Statistics:
        """A snapshot of the delivery ledger: accepted, delivered, dropped, pending..."""
        return self._processor.statistics()

    @property
    def config(self) -> ProjectConfig:
        """The project config the client was made with."""
        return self._config

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
        data = self._conversion(event_key, user_id, attributes, event_tags)
        if type(data) is not bytes:
            return data  # type: ignore[return-value]
        processor = self._processor
        if self._block:
            reason = await processor.put(self._context, data)
        else:
            reason = processor.put_nowait(self._context, data)
        if reason is not None:
            return self._refused(
                reason, f"event {event_key!r} refused: {reason.value}", counted=True
            )
        if processor._queued % processor._batch_size == 0:
            # A full batch is waiting: let the worker (and the network) have a turn, so a
            # tight loop of track calls cannot starve delivery.
            await anyio.lowlevel.checkpoint()
        if self.notification_center.has_listeners(NotificationType.TRACK):
            self._notify_track(event_key, user_id, attributes, event_tags)
        return ACCEPTED

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
        data = self._conversion(event_key, user_id, attributes, event_tags)
        if type(data) is not bytes:
            return data  # type: ignore[return-value]
        reason = self._processor.put_nowait(self._context, data)
        if reason is not None:
            return self._refused(
                reason, f"event {event_key!r} refused: {reason.value}", counted=True
            )
        if self.notification_center.has_listeners(NotificationType.TRACK):
            self._notify_track(event_key, user_id, attributes, event_tags)
        return ACCEPTED

    def _conversion(
        self,
        event_key: Any,
        user_id: Any,
        attributes: Any,
        event_tags: Any,
    ) -> bytes | TrackResult:
        if self._state != _RUNNING:
            if self._state == _NEW:
                raise ClientStateError("track() needs a running client: use `async with client:`")
            return self._refused(Reason.CLOSED, "the client is closed")
        if type(event_key) is not str or not event_key:
            return self._invalid(f"event_key must be a non-empty str, not {event_key!r:.60}")
        if not isinstance(user_id, str):
            return self._invalid(f"user_id must be a str, not {type(user_id).__name__}")
        if not (attributes is None or type(attributes) is dict or isinstance(attributes, Mapping)):
            return self._invalid(f"attributes must be a mapping, not {type(attributes).__name__}")
        if not (event_tags is None or type(event_tags) is dict or isinstance(event_tags, Mapping)):
            return self._invalid(f"event_tags must be a mapping, not {type(event_tags).__name__}")
        try:
            data = self._factory.conversion(event_key, user_id, attributes, event_tags)
        except InvalidTagsError as exc:
            return self._refused(Reason.INVALID_TAGS, f"event {event_key!r} not tracked: {exc}")
        if data is None:
            return self._refused(Reason.UNKNOWN_EVENT, f'Event "{event_key}" is not in datafile.')
        return data

    def _invalid(self, message: str) -> TrackResult:
        return self._refused(Reason.INVALID_INPUT, f"track() refused: {message}")

    def _refused(self, reason: Reason, message: str, *, counted: bool = False) -> TrackResult:
        if not counted:
            self._processor.refuse(reason, message)
        if self._strict:
            raise TrackError(reason, message)
        return TrackResult(accepted=False, reason=reason, message=message)

    def _notify_track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> None:
        self.notification_center.send(
            NotificationType.TRACK,
            TrackNotification(event_key, user_id, attributes, event_tags),
        )

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
        if attributes is not None and not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        return UserContext(self, user_id, attributes)


class UserContext:
    """One user: their id and attributes, to track events and make decisions for.

    Made by :meth:`Client.create_user_context`.

    Attributes:
        user_id: The user's id.
    """

    def __init__(
        self, client: Client, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        self.client = client
        self.user_id = user_id
        self._attributes: dict[str, Any] = dict(attributes or {})

    @property
    def attributes(self) -> dict[str, Any]:
        """A copy of the user's attributes."""
        return dict(self._attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute.

        Args:
            key: The attribute key.
            value: Its value.
        """
        self._attributes[key] = value

    async def track_event(
        self, event_key: str, event_tags: Mapping[str, Any] | None = None
    ) -> TrackResult:
        """Record a conversion for this user (see :meth:`Client.track`).

        Args:
            event_key: The key of an event of the datafile.
            event_tags: Event tags.

        Returns:
            Whether the event was accepted and, when not, why.
        """
        return await self.client.track(event_key, self.user_id, self._attributes, event_tags)

    def __repr__(self) -> str:
        return f"UserContext(user_id={self.user_id!r}, attributes={self._attributes!r})"
