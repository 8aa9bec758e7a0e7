"""A user of the sync client: :class:`UserContext`'s calls, without ``await``.

Owns: :class:`SyncUserContext`, a thin shell around a :class:`UserContext` (which holds
the user's state) that decides in the caller's thread and hands the impressions to its
:class:`~optitrack.SyncClient`. Must not touch: deciding or queueing itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ._decider import Decider
from ._intake import Intake
from ._results import TrackResult
from ._user import DecideOption, Decision, DecisionContext, ForcedDecision, UserContext

__all__ = ["SyncBackend", "SyncUserContext"]


class SyncBackend(Protocol):
    """What a sync user context needs of its :class:`~optitrack.SyncClient`."""

    _decider: Decider

    @property
    def _intake(self) -> Intake:
        """The running client's intake."""
        ...

    def _ensure_running(self) -> None:
        """Start the client if it is not running."""
        ...

    def _track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
        user: UserContext | None,
    ) -> TrackResult:
        """Track, for a user context (which renders its attributes once) or none."""
        ...

    def _queue_impressions(self, impressions: Iterable[bytes]) -> None:
        """Hand impressions to the loop."""
        ...


class SyncUserContext:
    """One user, for :class:`SyncClient`: :class:`UserContext` with sync calls.

    Made by :meth:`SyncClient.create_user_context`.
    """

    __slots__ = ("_client", "_user")

    def __init__(self, client: SyncBackend, user: UserContext) -> None:
        self._client = client
        self._user = user

    @property
    def user_id(self) -> str:
        """The user's id."""
        return self._user.user_id

    @property
    def attributes(self) -> dict[str, Any]:
        """A copy of the user's attributes."""
        return self._user.attributes

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (see :meth:`UserContext.set_attribute`).

        Args:
            key: The attribute key.
            value: Its value.
        """
        self._user.set_attribute(key, value)

    def track_event(
        self, event_key: str, event_tags: Mapping[str, Any] | None = None
    ) -> TrackResult:
        """Record a conversion for this user (see :meth:`SyncClient.track`).

        Args:
            event_key: The key of an event of the datafile.
            event_tags: Event tags.

        Returns:
            Whether the event was accepted and, when not, why.
        """
        client, user = self._client, self._user
        client._ensure_running()
        return client._track(event_key, user.user_id, user._attributes, event_tags, user)

    def decide(self, key: str, options: Iterable[DecideOption | str] | None = None) -> Decision:
        """Decide one flag, and send the impression it calls for (see :meth:`UserContext.decide`).

        Args:
            key: The flag's key.
            options: Decide options, added to the client's defaults.

        Returns:
            The decision.
        """
        client = self._client
        client._ensure_running()
        decision, impressions = client._decider.decide_nowait(self._user, key, options)
        if impressions:
            client._queue_impressions(impressions)
        return _owned(decision, self)

    def decide_for_keys(
        self, keys: Sequence[str], options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide several flags (see :meth:`UserContext.decide_for_keys`).

        Args:
            keys: The flags' keys.
            options: Decide options.

        Returns:
            Flag key to decision, in the order of ``keys``.
        """
        return self._many(list(keys), options)

    def decide_all(
        self, options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide every flag of the datafile (see :meth:`UserContext.decide_all`).

        Args:
            options: Decide options.

        Returns:
            Flag key to decision, in datafile order.
        """
        return self._many(None, options)

    def _many(self, keys: list[str] | None, options: Any) -> dict[str, Decision]:
        client = self._client
        client._ensure_running()
        decisions, impressions = client._decider.decide_many_nowait(self._user, keys, options)
        if impressions:
            client._queue_impressions(impressions)
        return {key: _owned(decision, self) for key, decision in decisions.items()}

    def set_forced_decision(self, context: DecisionContext, decision: ForcedDecision) -> bool:
        """Force a variation (see :meth:`UserContext.set_forced_decision`).

        Args:
            context: The flag (and rule).
            decision: The variation to force.

        Returns:
            Always ``True``.
        """
        return self._user.set_forced_decision(context, decision)

    def get_forced_decision(self, context: DecisionContext) -> ForcedDecision | None:
        """The forced decision of a context, or ``None``.

        Args:
            context: The flag (and rule).

        Returns:
            The forced decision, or ``None``.
        """
        return self._user.get_forced_decision(context)

    def remove_forced_decision(self, context: DecisionContext) -> bool:
        """Remove the forced decision of a context.

        Args:
            context: The flag (and rule).

        Returns:
            Whether there was one.
        """
        return self._user.remove_forced_decision(context)

    def remove_all_forced_decisions(self) -> bool:
        """Remove every forced decision of this user.

        Returns:
            Always ``True``.
        """
        return self._user.remove_all_forced_decisions()

    def __repr__(self) -> str:
        return f"SyncUserContext(user_id={self.user_id!r}, attributes={self.attributes!r})"


def _owned(decision: Decision, user: SyncUserContext) -> Decision:
    # A decision names the user context it was made for: the sync one.
    decision.user_context = user  # type: ignore[assignment]
    return decision
