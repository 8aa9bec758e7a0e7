"""The intake: where a call's events are checked, serialized and handed to the queue.

``track`` and every decision call that sends an impression go through here: the
client's state (new, running, closed), the event format of the datafile in use
(:class:`~optitrack._events.EventFactory` and its batch context), the refusal policy
(counted and logged once, raised when the client is strict) and TRACK notifications.

Owns: turning a call into queued bytes or a refusal. Must not touch: deciding, or what
the queue does with the bytes (``_delivery``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from threading import get_ident
from typing import Any, Final, NoReturn, Protocol

from ._decisions import Experiment, Holdout, ProjectConfig, Variation
from ._delivery import BatchQueue
from ._events import EventFactory, InvalidInputError, InvalidTagsError
from ._exceptions import ClientStateError, TrackError
from ._notifications import NotificationCenter, NotificationType, TrackNotification
from ._refusals import Refusals
from ._results import ACCEPTED, Reason, TrackResult
from ._user import UserContext

__all__ = [
    "CLOSED",
    "MAX_FUTURE_MS",
    "NEW",
    "NO_DATAFILE",
    "RUNNING",
    "Intake",
    "timestamp_problem",
]

NEW: Final = "new"
RUNNING: Final = "running"
#: Running, but without a datafile yet: calls are refused with ``no_datafile``.
NO_DATAFILE: Final = "no_datafile"
CLOSED: Final = "closed"
#: How far ahead of the clock an event's own timestamp may be (a day, in ms): more is
#: a mistake (seconds or microseconds for milliseconds, a wrong clock).
MAX_FUTURE_MS: Final = 86_400_000
_TRACK = NotificationType.TRACK

#: ``(flag_key, rule, decided variation, rule_type)`` -> the variation an impression names.
ImpressionVariation = Callable[
    [str, Experiment | Holdout | None, Variation | None, str], Variation | None
]


class FastConversion(Protocol):
    """A conversion's bytes, or ``None`` to decline the call (see
    :meth:`EventFactory.fast_conversion`)."""

    def __call__(
        self,
        event_key: Any,
        user_id: Any,
        attributes: Any,
        tags: Any,
        attributes_json: str | None = None,
        timestamp: int | None = None,
        /,
    ) -> bytes | None: ...


def _declined(*call: Any) -> None:
    return None  # the fast path of a client that is not running: every call declined


def timestamp_problem(timestamp: Any) -> str | None:
    """What is wrong with an event's own timestamp (ms since the epoch), or ``None``."""
    if type(timestamp) is not int:
        return f"must be an int (ms since the epoch), not {type(timestamp).__name__}"
    if timestamp <= 0:
        return f"must be positive (ms since the epoch), not {timestamp}"
    if timestamp > time.time_ns() // 1_000_000 + MAX_FUTURE_MS:
        return f"is more than a day in the future ({timestamp} ms since the epoch)"
    return None


class Intake:
    """Checks, serializes and queues a client's events; counts what it refuses.

    Args:
        config: The project config events are made for.
        endpoint: Where they go.
        queue: The delivery queue.
        notifications: The client's notification center.
        strict: Raise :class:`TrackError` instead of returning a refusal.
        impression_variation: The variation an impression names for a decision.

    Attributes:
        state: ``"new"``, ``"running"``, ``"no_datafile"`` (running, without a datafile
            yet) or ``"closed"`` (the client sets it).
        factory: The event format of the datafile in use.
        context: Its batch context.
        refusals: Refused calls, by reason.
    """

    def __init__(
        self,
        config: ProjectConfig,
        endpoint: str,
        queue: BatchQueue,
        notifications: NotificationCenter,
        *,
        strict: bool,
        impression_variation: ImpressionVariation,
    ) -> None:
        self._state: str = NEW
        #: Whether :attr:`state` is ``"running"``: read on the hot paths.
        self.running = False
        #: ``EventFactory.fast_conversion`` while running, else a stand-in that always
        #: declines: the common ``track`` takes one call to become bytes.
        self.fast: FastConversion = _declined
        #: The identity of the thread whose event loop runs the client (set on entering).
        self.thread: int | None = None
        self.queue = queue
        self.refusals = Refusals()
        self._notifications = notifications
        #: TRACK's listeners, live: while empty, an accepted event needs no notification.
        self.track_listeners = notifications.listeners_of(_TRACK)
        self._strict = strict
        self._impression_variation = impression_variation
        self.use(config, endpoint)

    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"no_datafile"`` or ``"closed"``."""
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state
        self.running = state == RUNNING
        self.fast = self.factory.fast_conversion if self.running else _declined

    def use(self, config: ProjectConfig, endpoint: str) -> None:
        """Make events for another datafile (or endpoint) from now on."""
        self.factory = EventFactory(config, endpoint, self._impression_variation)
        self.context = self.factory.context
        self.state = self._state  # the fast path of the new factory

    def require_started(self, method: str) -> None:
        """Raise :class:`ClientStateError` when the client was never entered."""
        if self._state == NEW:
            raise ClientStateError(f"{method}() needs a running client: use `async with client:`")

    def wrong_thread(self, method: str) -> NoReturn:
        """Raise for a call made off the client's loop thread (or before entering)."""
        self.require_started(method)
        raise ClientStateError(
            f"{method}() was called from a thread other than the one whose event loop runs "
            "this client: nothing it queued would be sent in time. From sync code or other "
            "threads, use optitrack.SyncClient."
        )

    def conversion(
        self,
        event_key: Any,
        user_id: Any,
        attributes: Any,
        event_tags: Any,
        user: UserContext | None = None,
        *,
        timestamp: Any = None,
    ) -> bytes | TrackResult:
        """A conversion serialized, or the refusal of a call that cannot be tracked.

        The general way, for every call :meth:`fast` declines: it checks everything and
        says what is wrong.

        Args:
            event_key: The event key.
            user_id: The user id.
            attributes: The attributes.
            event_tags: The event tags.
            user: The user context the call comes from, which renders its attributes once.
            timestamp: When the event happened (ms since the epoch), for events recorded
                earlier; ``None`` means now. One that is not a positive int, or is more
                than :data:`MAX_FUTURE_MS` ahead of the clock, is refused as
                ``invalid_input``.

        Raises:
            TrackError: The call is refused and the client is strict.
            ClientStateError: The client was never entered.
        """
        if self._state != RUNNING:
            if self._state == NEW:
                raise ClientStateError("track() needs a running client: use `async with client:`")
            if self._state == NO_DATAFILE:
                return self.refused(
                    Reason.NO_DATAFILE, f"event {event_key!r} not tracked: no datafile yet"
                )
            return self.refused(Reason.CLOSED, "the client is closed")
        if not isinstance(event_key, str) or not event_key:
            return self._invalid("event_key", f"must be a non-empty str, not {event_key!r:.60}")
        if not isinstance(user_id, str):
            return self._invalid("user_id", f"must be a str, not {type(user_id).__name__}")
        if not (attributes is None or type(attributes) is dict or isinstance(attributes, Mapping)):
            return self._invalid(
                "attributes", f"must be a mapping, not {type(attributes).__name__}"
            )
        if not (event_tags is None or type(event_tags) is dict or isinstance(event_tags, Mapping)):
            return self._invalid(
                "event_tags", f"must be a mapping, not {type(event_tags).__name__}"
            )
        if timestamp is not None:
            problem = timestamp_problem(timestamp)
            if problem is not None:
                return self._invalid("timestamp", problem)
        factory = self.factory
        try:
            data = factory.conversion(
                event_key,
                user_id,
                attributes,
                event_tags,
                None if user is None else user.wire_attributes(factory),
                timestamp=timestamp,
            )
        except InvalidTagsError as exc:
            return self.refused(
                Reason.INVALID_TAGS, f"event {event_key!r} not tracked: {exc}", key=event_key
            )
        except InvalidInputError as exc:
            return self._invalid(exc.argument, exc.problem)
        if data is None:
            return self.refused(
                Reason.UNKNOWN_EVENT, f"Event {event_key!r} is not in datafile.", key=event_key
            )
        return data

    def track_at_nowait(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
        timestamp: int | None,
    ) -> TrackResult | bytes:
        """Track with the event's own timestamp (``optitrack send``), without waiting.

        Returns:
            The result; or, when the queue is full, the event's bytes (nothing queued)
            for :meth:`put_waiting`.
        """
        data = None
        if timestamp is None or (
            type(timestamp) is int and 0 < timestamp <= time.time_ns() // 1_000_000 + MAX_FUTURE_MS
        ):
            data = self.fast(event_key, user_id, attributes, event_tags, None, timestamp)
        if data is None:
            conversion = self.conversion(
                event_key, user_id, attributes, event_tags, timestamp=timestamp
            )
            if type(conversion) is not bytes:
                return conversion
            data = conversion
        reason = self.queue.put_nowait(self.context, data)
        if reason is None and not self.track_listeners:
            return ACCEPTED
        if reason is Reason.QUEUE_FULL:
            return data
        return self.submitted(reason, event_key, user_id, attributes, event_tags)

    async def put_waiting(
        self,
        data: bytes,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> TrackResult:
        """Queue a conversion :meth:`track_at_nowait` made, waiting for room as long as
        it takes (an import never drops for a full queue)."""
        reason = await self.queue.put_waiting(self.context, data)
        return self.submitted(reason, event_key, user_id, attributes, event_tags)

    async def track_at(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
        timestamp: int | None,
    ) -> TrackResult:
        """:meth:`track_at_nowait`, waiting for room in the queue as long as it takes."""
        result = self.track_at_nowait(event_key, user_id, attributes, event_tags, timestamp)
        if isinstance(result, bytes):
            return await self.put_waiting(result, event_key, user_id, attributes, event_tags)
        return result

    async def track_user(
        self, user: UserContext, event_key: str, event_tags: Mapping[str, Any] | None
    ) -> TrackResult:
        # UserContext.track_event: track, with the attributes the context rendered once.
        intake = self
        if get_ident() != intake.thread:
            intake.wrong_thread("track_event")
        attributes = user._attributes
        rendered = user.rendered_attributes(intake.factory)
        data = None
        if rendered is not None:
            data = intake.fast(event_key, user.user_id, None, event_tags, rendered)
        if data is None:
            conversion = intake.conversion(event_key, user.user_id, attributes, event_tags, user)
            if type(conversion) is not bytes:
                return conversion  # type: ignore[return-value]
            data = conversion
        reason = await intake.queue.put(intake.context, data)
        return intake.submitted(reason, event_key, user.user_id, attributes, event_tags)

    def impression_refused(self, error: InvalidInputError) -> None:
        """Count and log an impression that could not be built (its user id or
        attributes are not sendable); the decision itself stands."""
        self.refusals.refuse(
            Reason.INVALID_INPUT,
            f"impression not sent: {error.argument} {error.problem}",
            "impression",
        )

    def submitted(
        self,
        reason: Reason | None,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> TrackResult:
        """The result of a conversion the queue took (``None``) or refused (``reason``)."""
        if reason is not None:
            self.refusals.refuse_event(reason)
            message = f"event {event_key!r} refused: {reason.value}"
            if self._strict:
                raise TrackError(reason, message)
            return TrackResult(accepted=False, reason=reason, message=message)
        if self._notifications.has_listeners(_TRACK):
            self._notifications.send(
                _TRACK, TrackNotification(event_key, user_id, attributes, event_tags)
            )
        return ACCEPTED

    def refused(self, reason: Reason, message: str, *, key: str = "") -> TrackResult:
        """Count and log a refused call; raise when strict, else return the refusal."""
        self.refusals.refuse(reason, message, key)
        if self._strict:
            raise TrackError(reason, message)
        return TrackResult(accepted=False, reason=reason, message=message)

    def _invalid(self, argument: str, problem: str) -> TrackResult:
        return self.refused(
            Reason.INVALID_INPUT, f"track() refused: {argument} {problem}", key=argument
        )

    async def put_impressions(self, impressions: list[bytes]) -> None:
        """Queue impressions (refusals are counted and logged, never raised)."""
        if get_ident() != self.thread:
            self.wrong_thread("decide")
        if self._state != RUNNING:
            for _ in impressions:
                self.refusals.refuse(Reason.CLOSED, "Impression not sent: the client is closed.")
            return
        queue, context = self.queue, self.context
        for data in impressions:
            reason = await queue.put(context, data)
            if reason is not None:
                self.refusals.refuse_event(reason)
