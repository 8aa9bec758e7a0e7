"""Notification listeners, in the spirit of Optimizely's notification center.

Listeners are plain callables, called synchronously where the thing happens (so they
must be quick). A listener that raises is logged, with its traceback, and never stops a
track call, a decision or delivery.

Owns: the notification center and the notifications' shapes. Must not touch: what
sends them (the intake, the decider, the sender).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._logging import logger

__all__ = [
    "ConfigUpdateNotification",
    "DecisionNotification",
    "LogEventNotification",
    "NotificationCenter",
    "NotificationType",
    "TrackNotification",
]


class NotificationType(StrEnum):
    """What a listener listens to."""

    #: An Events API request's outcome: one per attempt (:class:`LogEventNotification`).
    LOG_EVENT = "log_event"
    #: A conversion accepted by track (:class:`TrackNotification`).
    TRACK = "track"
    #: A decision made by activate, get_variation, is_feature_enabled, decide...
    #: (:class:`DecisionNotification`).
    DECISION = "decision"
    #: A new datafile is in use, fetched or given to ``update_datafile``
    #: (:class:`ConfigUpdateNotification`).
    CONFIG_UPDATE = "config_update"


@dataclass(frozen=True, slots=True)
class ConfigUpdateNotification:
    """A new datafile is in use.

    Attributes:
        revision: The datafile's revision.
        sdk_key: The datafile's ``sdkKey`` (``None`` when it has none).
        source: Where it came from: ``"fetch"`` (polled), ``"cache"`` (the cold-start
            cache) or ``"update_datafile"``.
    """

    revision: str
    sdk_key: str | None
    source: str


@dataclass(frozen=True, slots=True)
class TrackNotification:
    """A conversion that track accepted.

    Attributes:
        event_key: The event key.
        user_id: The user id.
        attributes: The attributes the caller passed.
        event_tags: The tags the caller passed.
    """

    event_key: str
    user_id: str
    attributes: Mapping[str, Any] | None
    event_tags: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class DecisionNotification:
    """A decision.

    Attributes:
        type: ``ab-test``, ``feature``, ``flag``, ``feature-variable`` or
            ``all-feature-variables``, as Optimizely names them.
        user_id: The user id.
        attributes: The user's attributes.
        decision_info: What was decided (keys as in Optimizely's notification).
    """

    type: str
    user_id: str
    attributes: Mapping[str, Any] | None
    decision_info: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LogEventNotification:
    """One Events API request (one attempt at sending one batch) and its outcome.

    Attributes:
        url: The endpoint.
        headers: The request headers.
        body: The request body as sent (compressed when gzip is on).
        event_count: Events in the batch.
        attempt: The attempt number, from 1.
        outcome: ``delivered``, ``retry``, ``split`` or ``dropped``.
        status: The HTTP status, or ``None`` when no answer came.
        error: What went wrong when no answer came (``ConnectError``, ``timeout``...).
        duration: How long the attempt took, in seconds on the event loop's clock: from
            just before the request to its answer (read in full) or its failure, without
            any backoff or ``Retry-After`` pause before it. ``None`` when not measured.
    """

    url: str
    headers: Mapping[str, str]
    body: bytes
    event_count: int
    attempt: int
    outcome: str
    status: int | None
    error: str | None = None
    duration: float | None = None


Listener = Callable[[Any], object]


class NotificationCenter:
    """Registers listeners and calls them, shielding the caller from their failures."""

    def __init__(self) -> None:
        self._listeners: dict[NotificationType, dict[int, Listener]] = {
            kind: {} for kind in NotificationType
        }
        self._next_id = 1

    def add_listener(self, kind: NotificationType | str, listener: Listener) -> int:
        """Register a listener.

        Args:
            kind: What to listen to.
            listener: A callable taking the notification object.

        Returns:
            An id for :meth:`remove_listener`.

        Raises:
            ValueError: ``kind`` is not a notification type.
        """
        listener_id = self._next_id
        self._next_id += 1
        self._listeners[NotificationType(kind)][listener_id] = listener
        return listener_id

    def remove_listener(self, listener_id: int) -> bool:
        """Unregister a listener.

        Args:
            listener_id: What :meth:`add_listener` returned.

        Returns:
            Whether a listener was removed.
        """
        for listeners in self._listeners.values():
            if listeners.pop(listener_id, None) is not None:
                return True
        return False

    def clear(self, kind: NotificationType | str | None = None) -> None:
        """Remove every listener, or every listener of one kind."""
        kinds = list(NotificationType) if kind is None else [NotificationType(kind)]
        for k in kinds:
            self._listeners[k].clear()

    def listeners_of(self, kind: NotificationType) -> Mapping[int, Listener]:
        """The listeners of ``kind``: a live view, empty while nothing listens (for hot
        paths, where one truth test replaces a call of :meth:`has_listeners`)."""
        return self._listeners[kind]

    def has_listeners(self, kind: NotificationType) -> bool:
        """Whether anything listens to ``kind`` (to skip building notifications)."""
        return bool(self._listeners[kind])

    def send(self, kind: NotificationType, notification: object) -> None:
        """Call every listener of ``kind``; log, never raise, what a listener raises."""
        for listener in list(self._listeners[kind].values()):
            try:
                listener(notification)
            except Exception as exc:
                # The exception's text may carry what the listener was given (user ids,
                # tags): only its type at ERROR, the traceback at DEBUG.
                logger.error(
                    "A %s notification listener raised %s; ignored.",
                    kind.value,
                    type(exc).__name__,
                )
                logger.debug("The %s notification listener's exception:", kind.value, exc_info=True)
