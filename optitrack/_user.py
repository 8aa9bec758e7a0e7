"""A user, and the public shapes of decisions: options, results, forced decisions.

Owns: :class:`UserContext` (a user's id, attributes, forced decisions and segments) and
the shapes ``decide`` takes and returns. A context holds state and forwards: tracking
goes to the client's ``track``, deciding to the decider; it must not decide, serialize or
queue anything itself.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn, Protocol

from anyio.lowlevel import checkpoint

from ._results import TrackResult

__all__ = [
    "DecideOption",
    "Decides",
    "Decision",
    "DecisionContext",
    "ForcedDecision",
    "RendersAttributes",
    "Tracks",
    "UserContext",
    "Variables",
]


class Variables(dict[str, Any]):
    """A decision's variables: a ``dict`` that cannot be changed.

    A ``dict``, so that ``json.dumps(decision.variables)`` and code written for
    optimizely-sdk's decisions work as they are; read-only, because a decision is a
    snapshot.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a decision's variables are read-only; copy them with dict(...)")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __repr__(self) -> str:
        return f"Variables({dict.__repr__(self)})"


class DecideOption(StrEnum):
    """Options of ``decide``, ``decide_for_keys`` and ``decide_all`` (Optimizely's names)."""

    #: Send no impression for this decision.
    DISABLE_DECISION_EVENT = "DISABLE_DECISION_EVENT"
    #: ``decide_for_keys`` and ``decide_all`` return only the flags that are enabled.
    ENABLED_FLAGS_ONLY = "ENABLED_FLAGS_ONLY"
    #: Neither read nor write the user profile service.
    IGNORE_USER_PROFILE_SERVICE = "IGNORE_USER_PROFILE_SERVICE"
    #: Fill :attr:`Decision.reasons` (they are empty otherwise, except for errors).
    INCLUDE_REASONS = "INCLUDE_REASONS"
    #: Leave :attr:`Decision.variables` empty.
    EXCLUDE_VARIABLES = "EXCLUDE_VARIABLES"


@dataclass(slots=True)
class Decision:
    """A flag decision for a user (Optimizely's ``OptimizelyDecision``).

    A snapshot: changing it changes nothing else. (Not frozen: a frozen dataclass costs a
    tenth of a decision's time to build.)

    Attributes:
        variation_key: The variation's key, or ``None`` when the user got none.
        enabled: Whether the flag is on for the user.
        variables: The flag's variables for the user, typed (empty with
            ``EXCLUDE_VARIABLES``): a read-only ``dict`` (:class:`Variables`).
        rule_key: The experiment or rollout rule that decided, or ``None``.
        flag_key: The flag's key.
        user_context: The user the decision is for (a :class:`SyncUserContext` for a
            :class:`SyncClient`'s decisions).
        reasons: Why, when ``INCLUDE_REASONS`` was given; errors are always reported.
    """

    variation_key: str | None
    enabled: bool
    variables: Mapping[str, Any]
    rule_key: str | None
    flag_key: str
    user_context: "UserContext | None"
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What a forced decision applies to: a whole flag, or one of its rules.

    Attributes:
        flag_key: The flag's key.
        rule_key: The rule's (experiment's or rollout rule's) key; ``None`` for the flag.
    """

    flag_key: str
    rule_key: str | None = None


@dataclass(frozen=True, slots=True)
class ForcedDecision:
    """A variation to force for a :class:`DecisionContext`.

    Attributes:
        variation_key: The variation's key.
    """

    variation_key: str


class Tracks(Protocol):
    """What a user context needs of its client: tracking for a user (see ``Client.track``)."""

    async def _track_user(
        self, user: "UserContext", event_key: str, event_tags: Mapping[str, Any] | None
    ) -> TrackResult:
        """Record a conversion for a user, with the attributes it rendered."""
        ...


class RendersAttributes(Protocol):
    """Renders attributes as the Events API gets them (the event format's job)."""

    def attributes_json(self, attributes: Mapping[str, Any] | None) -> str:
        """The visitor's ``attributes`` array as JSON."""
        ...


class Decides(Protocol):
    """What a user context needs of the decider: deciding flags for it."""

    def decide_common(self, user: "UserContext", key: str) -> "Decision | None":
        """Decide the common call without waiting (its impression queued), or ``None``
        for :meth:`decide` to take it."""
        ...

    def turn_due(self) -> bool:
        """Whether a caller should now let the client's worker have a turn."""
        ...

    async def decide(
        self, user: "UserContext", key: str, options: Iterable[DecideOption | str] | None
    ) -> Decision:
        """Decide one flag."""
        ...

    async def decide_many(
        self,
        user: "UserContext",
        keys: Sequence[str] | None,
        options: Iterable[DecideOption | str] | None,
    ) -> dict[str, Decision]:
        """Decide several flags (``None``: every flag of the datafile)."""
        ...


class UserContext:
    """One user: their id and attributes, to track events and make decisions for.

    Made by :meth:`Client.create_user_context`.

    Attributes:
        user_id: The user's id.
    """

    # A context is made per request: slots make it cheaper to build and to read.
    __slots__ = (
        "__weakref__",
        "_attributes",
        "_decider",
        "_forced",
        "_segments",
        "_wire_attributes",
        "client",
        "user_id",
    )

    def __init__(
        self,
        client: Tracks,
        decider: Decides,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.user_id = user_id
        self._decider = decider
        # What the decider reads: the attributes (its own copy), the forced decisions,
        # the qualified segments, and the attributes as the wire carries them, rendered
        # once per set of attributes and event format (``(renderer, json)``).
        self._attributes: dict[str, Any] = dict(attributes or {})
        self._forced: dict[tuple[str, str | None], str] = {}
        self._segments: frozenset[str] | None = None
        self._wire_attributes: tuple[object, str] | None = None

    def wire_attributes(self, renderer: RendersAttributes) -> str:
        """The attributes as the Events API gets them, rendered once per renderer.

        The client's event format renders them (attribute ids come from the datafile);
        the text is kept until an attribute changes or the datafile does.

        Args:
            renderer: What renders them.

        Returns:
            The ``attributes`` array as JSON text.

        Raises:
            InvalidInputError: An attribute's value is not valid Unicode (from ``_events``).
        """
        cached = self._wire_attributes
        if cached is not None and cached[0] is renderer:
            return cached[1]
        text = renderer.attributes_json(self._attributes)
        self._wire_attributes = (renderer, text)
        return text

    def rendered_attributes(self, renderer: RendersAttributes) -> str | None:
        """The attributes :meth:`wire_attributes` rendered for ``renderer``, or ``None``."""
        cached = self._wire_attributes
        return cached[1] if cached is not None and cached[0] is renderer else None

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
        self._wire_attributes = None

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
        return await self.client._track_user(self, event_key, event_tags)

    async def decide(
        self, key: str, options: Iterable[DecideOption | str] | None = None
    ) -> Decision:
        """Decide one flag for this user, and send the impression the decision calls for.

        An impression is sent when an experiment rule (or a holdout) decided; for a
        rollout rule, or when no rule did, only when the datafile's ``sendFlagDecisions``
        is true; never with ``DISABLE_DECISION_EVENT``.

        Args:
            key: The flag's key.
            options: Decide options, added to the client's defaults.

        Returns:
            The decision. For an unknown flag: not enabled, no variation, and a reason.

        Raises:
            DecisionError: An unknown flag and the client is strict.
            ClientStateError: The client was never entered.
        """
        decider = self._decider
        if not options:
            decision = decider.decide_common(self, key)
            if decision is not None:
                if decider.turn_due():  # now and then, a tight loop lets delivery run
                    await checkpoint()
                return decision
        return await decider.decide(self, key, options)

    async def decide_for_keys(
        self, keys: Sequence[str], options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide several flags for this user (see :meth:`decide`).

        Args:
            keys: The flags' keys.
            options: Decide options, added to the client's defaults.

        Returns:
            Flag key to decision, in the order of ``keys`` (optimizely-sdk puts unknown
            keys first); with ``ENABLED_FLAGS_ONLY``, the enabled ones only.
        """
        return await self._decider.decide_many(self, list(keys), options)

    async def decide_all(
        self, options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide every flag of the datafile for this user (see :meth:`decide`).

        Args:
            options: Decide options, added to the client's defaults.

        Returns:
            Flag key to decision, in datafile order.
        """
        return await self._decider.decide_many(self, None, options)

    def set_forced_decision(self, context: DecisionContext, decision: ForcedDecision) -> bool:
        """Force a variation for a flag, or for one rule of a flag, for this user.

        Args:
            context: The flag (and rule) it applies to.
            decision: The variation to force.

        Returns:
            Always ``True``; a variation the flag does not have is ignored at decide time,
            with a reason.
        """
        self._forced[(context.flag_key, context.rule_key)] = decision.variation_key
        return True

    def get_forced_decision(self, context: DecisionContext) -> ForcedDecision | None:
        """The forced decision set for a context, or ``None``.

        Args:
            context: The flag (and rule).

        Returns:
            The forced decision, or ``None``.
        """
        variation_key = self._forced.get((context.flag_key, context.rule_key))
        return ForcedDecision(variation_key) if variation_key is not None else None

    def remove_forced_decision(self, context: DecisionContext) -> bool:
        """Remove the forced decision of a context.

        Args:
            context: The flag (and rule).

        Returns:
            Whether there was one.
        """
        return self._forced.pop((context.flag_key, context.rule_key), None) is not None

    def remove_all_forced_decisions(self) -> bool:
        """Remove every forced decision of this user.

        Returns:
            Always ``True``.
        """
        self._forced.clear()
        return True

    @property
    def qualified_segments(self) -> frozenset[str] | None:
        """The user's qualified segments, for audiences with ``qualified`` conditions."""
        return self._segments

    @qualified_segments.setter
    def qualified_segments(self, segments: Iterable[str] | None) -> None:
        self._segments = None if segments is None else frozenset(segments)

    def is_qualified_for(self, segment: str) -> bool:
        """Whether the user is in a segment.

        Args:
            segment: The segment's name.

        Returns:
            Whether it is among :attr:`qualified_segments`.
        """
        return self._segments is not None and segment in self._segments

    def __repr__(self) -> str:
        return f"UserContext(user_id={self.user_id!r}, attributes={self._attributes!r})"
