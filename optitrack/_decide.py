"""The public shapes of decisions: options, results, forced decisions, user profiles."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._client import UserContext

__all__ = [
    "DecideOption",
    "Decision",
    "DecisionContext",
    "ForcedDecision",
    "InMemoryUserProfileService",
    "UserProfileService",
]


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
            ``EXCLUDE_VARIABLES``).
        rule_key: The experiment or rollout rule that decided, or ``None``.
        flag_key: The flag's key.
        user_context: The user the decision is for.
        reasons: Why, when ``INCLUDE_REASONS`` was given; errors are always reported.
    """

    variation_key: str | None
    enabled: bool
    variables: Mapping[str, Any]
    rule_key: str | None
    flag_key: str
    user_context: UserContext | None
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


@runtime_checkable
class UserProfileService(Protocol):
    """Stores which variation each user got, so that bucketing stays sticky.

    Profiles have Optimizely's shape:
    ``{"user_id": "u", "experiment_bucket_map": {"<experiment id>": {"variation_id": "<id>"}}}``.
    Both methods are awaited; an exception from either is logged and the decision goes on
    without the profile. The sync calls (``get_variation`` and the feature variable
    getters) cannot await: they use a service only if it also has the sync twins
    ``lookup_nowait(user_id)`` and ``save_nowait(profile)``, and decide without it
    otherwise.
    """

    async def lookup(self, user_id: str) -> Mapping[str, Any] | None:
        """Return the user's stored profile, or ``None``.

        Args:
            user_id: The user's id.
        """

    async def save(self, profile: Mapping[str, Any]) -> None:
        """Store a profile.

        Args:
            profile: The profile, as described above.
        """


@dataclass
class InMemoryUserProfileService:
    """A :class:`UserProfileService` in a dict, bounded, oldest profiles evicted first.

    Args:
        max_profiles: How many profiles to keep at most.
    """

    max_profiles: int = 100_000
    _profiles: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, repr=False)

    async def lookup(self, user_id: str) -> Mapping[str, Any] | None:
        """Return the user's stored profile, or ``None``.

        Args:
            user_id: The user's id.

        Returns:
            A read-only view of the profile.
        """
        return self.lookup_nowait(user_id)

    async def save(self, profile: Mapping[str, Any]) -> None:
        """Store a profile (a copy of it).

        Args:
            profile: The profile.
        """
        self.save_nowait(profile)

    def lookup_nowait(self, user_id: str) -> Mapping[str, Any] | None:
        """:meth:`lookup`, for the sync decision calls.

        Args:
            user_id: The user's id.

        Returns:
            A read-only view of the profile, or ``None``.
        """
        profile = self._profiles.get(user_id)
        if profile is None:
            return None
        self._profiles.move_to_end(user_id)
        return MappingProxyType(profile)

    def save_nowait(self, profile: Mapping[str, Any]) -> None:
        """:meth:`save`, for the sync decision calls.

        Args:
            profile: The profile.
        """
        user_id = profile["user_id"]
        self._profiles[user_id] = {
            "user_id": user_id,
            "experiment_bucket_map": {
                k: dict(v) for k, v in dict(profile.get("experiment_bucket_map", {})).items()
            },
        }
        self._profiles.move_to_end(user_id)
        while len(self._profiles) > self.max_profiles:
            self._profiles.popitem(last=False)

    def __len__(self) -> int:
        return len(self._profiles)
