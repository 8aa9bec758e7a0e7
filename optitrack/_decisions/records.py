"""The values the decision engine takes and returns: who decides, and what was decided.

Owns: :class:`RuleType`, :class:`VariationDecision`, :class:`UserInput` and
:class:`UserProfile` (a user's sticky bucketing record). Must not touch: the datafile's
indexes, deciding, or any I/O (a user profile service is read and written by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from .datafile import Experiment, Holdout, Variation

__all__ = ["RuleType", "UserInput", "UserProfile", "VariationDecision"]


class RuleType(StrEnum):
    """Where a decision came from; the impression's ``metadata.rule_type``."""

    #: Activate (and get_variation) on an experiment.
    EXPERIMENT = "experiment"
    #: An experiment rule of a flag, or a flag-level forced decision.
    FEATURE_TEST = "feature-test"
    #: A rollout (targeted delivery) rule of a flag, or no rule at all.
    ROLLOUT = "rollout"
    #: A global or local holdout.
    HOLDOUT = "holdout"


@dataclass(frozen=True, slots=True)
class VariationDecision:
    """The result of deciding one experiment or one flag for one user.

    Attributes:
        experiment: The experiment, rule or holdout that decided; ``None`` when none did
            (and for a flag-level forced decision).
        variation: The variation, or ``None``.
        rule_type: Where the decision came from. For a flag that nothing decided it is
            :attr:`RuleType.ROLLOUT`, which is what Optimizely reports and puts in the
            impression sent when ``sendFlagDecisions`` is on; for an experiment that did
            not bucket it is ``None``.
        reasons: Human-readable reasons, in order (empty unless asked for).
        holdout: A global holdout with ``excludeTargetedDeliveries`` that the user was
            bucketed into while the flag went on to decide; Optimizely sends an impression
            for it too (rule type ``holdout``). ``None`` otherwise, and always ``None``
            when :attr:`rule_type` is already :attr:`RuleType.HOLDOUT`.
    """

    experiment: Experiment | Holdout | None
    variation: Variation | None
    rule_type: RuleType | None
    reasons: tuple[str, ...] = ()
    holdout: VariationDecision | None = None

    @property
    def enabled(self) -> bool:
        """Whether the flag is on: the variation's ``featureEnabled`` (``False`` for none)."""
        return self.variation is not None and self.variation.feature_enabled

    @property
    def variation_key(self) -> str | None:
        """The variation's key, or ``None``."""
        return self.variation.key if self.variation is not None else None

    @property
    def rule_key(self) -> str | None:
        """The deciding experiment's, rule's or holdout's key, or ``None``."""
        return self.experiment.key if self.experiment is not None else None


@dataclass(slots=True)
class UserInput:
    """Who is being decided for.

    Attributes:
        user_id: The user id.
        attributes: The user's attributes (``$opt_bucketing_id`` among them, if any).
        qualified_segments: The user's qualified segments for ``qualified`` conditions;
            ``None`` when they were never fetched.
    """

    user_id: str
    attributes: Mapping[str, Any]
    qualified_segments: frozenset[str] | None = None


class UserProfile:
    """A user's sticky bucketing record, in Optimizely's user profile service shape.

    ``{"user_id": ..., "experiment_bucket_map": {experiment_id: {"variation_id": ...}}}``.
    The engine reads it before bucketing an experiment and records every new bucketing
    in it; :attr:`changed` tells the caller to save it.

    Args:
        user_id: The user id the profile belongs to.
        experiment_bucket_map: The stored decisions (copied), or ``None`` for none.

    Attributes:
        user_id: The user id the profile belongs to.
        experiment_bucket_map: Experiment id to ``{"variation_id": variation_id}``.
        changed: Whether a decision recorded a new variation since it was loaded.
    """

    __slots__ = ("changed", "experiment_bucket_map", "user_id")

    USER_ID_KEY: Final = "user_id"
    EXPERIMENT_BUCKET_MAP_KEY: Final = "experiment_bucket_map"
    VARIATION_ID_KEY: Final = "variation_id"

    def __init__(
        self, user_id: str, experiment_bucket_map: Mapping[str, Any] | None = None
    ) -> None:
        self.user_id = user_id
        self.experiment_bucket_map: dict[str, Any] = dict(experiment_bucket_map or {})
        self.changed = False

    @classmethod
    def from_lookup(cls, user_id: str, stored: Any) -> UserProfile:
        """Build a profile from what a user profile service's ``lookup`` returned.

        Args:
            user_id: The user being decided for.
            stored: The looked-up value. A mapping with ``user_id`` and
                ``experiment_bucket_map`` is used as is (its ``user_id`` included, as
                Optimizely does); anything else (``None``, a malformed record) gives an
                empty profile.

        Returns:
            The profile.
        """
        if (
            isinstance(stored, Mapping)
            and cls.USER_ID_KEY in stored
            and cls.EXPERIMENT_BUCKET_MAP_KEY in stored
        ):
            bucket_map = stored[cls.EXPERIMENT_BUCKET_MAP_KEY]
            return cls(
                stored[cls.USER_ID_KEY], bucket_map if isinstance(bucket_map, Mapping) else None
            )
        return cls(user_id)

    def variation_id(self, experiment_id: str) -> Any:
        """The stored variation id for an experiment, or ``None``.

        Args:
            experiment_id: The experiment's id.

        Returns:
            What is stored under ``variation_id`` (normally a ``str``), or ``None``.
        """
        entry = self.experiment_bucket_map.get(experiment_id)
        if isinstance(entry, Mapping):
            return entry.get(self.VARIATION_ID_KEY)
        return None

    def save_variation(self, experiment_id: str, variation_id: str) -> None:
        """Record a variation for an experiment and mark the profile changed.

        Args:
            experiment_id: The experiment's id.
            variation_id: The variation's id.
        """
        self.experiment_bucket_map[experiment_id] = {self.VARIATION_ID_KEY: variation_id}
        self.changed = True

    def to_dict(self) -> dict[str, Any]:
        """The profile as a user profile service's ``save`` expects it.

        Returns:
            ``{"user_id": ..., "experiment_bucket_map": {...}}``.
        """
        return {
            self.USER_ID_KEY: self.user_id,
            self.EXPERIMENT_BUCKET_MAP_KEY: self.experiment_bucket_map,
        }

    def __repr__(self) -> str:
        return (
            f"UserProfile(user_id={self.user_id!r}, "
            f"experiment_bucket_map={self.experiment_bucket_map!r}, changed={self.changed!r})"
        )
