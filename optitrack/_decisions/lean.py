"""The common flag decision, compiled per flag: look-ups and one MurmurHash3 per rule tried.

The common case is a datafile without holdouts, and a user without forced decisions,
forced variations or a profile, with no reasons to collect. For it, a flag's rules
reduce to a :class:`LeanPlan`: the running experiment rules, then the rollout rules, each
with its audience, its whitelist and its traffic allocation, whose ranges lead straight
to what that decision means to the caller (a leaf). The engine's leaves are its
:class:`.VariationDecision` objects; the decider's carry everything a ``Decision`` and
its impression need. Deciding is then walking the plan (:func:`decide_lean`): no object
is built.

A flag the plan cannot express (an experiment whose variations a holdout replaced) gets no
plan, and is decided
the general way, which logs what it must.

Owns: compiling a flag into a plan, and walking it, in the engine's decision order. Must
not touch: the uncommon cases (:mod:`.engine`, :mod:`.experiments`), which decide every
call this module declines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from logging import DEBUG
from typing import Any, Final, Generic, TypeVar

import mmh3

from .._logging import logger
from .bucketing import (
    _MAX_HASH_VALUE,
    BUCKETING_ID_ATTRIBUTE,
    HASH_SEED,
    MAX_TRAFFIC_VALUE,
    bucket_value,
    find_bucket,
)
from .conditions import Evaluator
from .datafile import Experiment, Variation
from .records import RuleType, VariationDecision
from .rules import FlagPlan, Rule

__all__ = ["LeanPlan", "compile_lean", "decide_lean"]

Leaf = TypeVar("Leaf")
#: What a decision means to whoever compiles the plan.
Result = Callable[[Experiment | None, Variation | None, RuleType], VariationDecision]

_FEATURE_TEST: Final = RuleType.FEATURE_TEST
_ROLLOUT: Final = RuleType.ROLLOUT
_debug_on = logger.isEnabledFor
_hash = mmh3.hash


class _Missing:
    """A range whose variation is not the rule's: no variation, and an error logged."""

    __slots__ = ("rule_id", "variation_id")

    def __init__(self, variation_id: str, rule_id: str) -> None:
        self.variation_id = variation_id
        self.rule_id = rule_id

    def log(self) -> None:
        # As the general way logs it, at every decision that lands there.
        logger.error(
            'Variation with id "%s" not defined in the datafile for experiment "%s".',
            self.variation_id,
            self.rule_id,
        )


# (end of range, the leaf of its variation, or None for a hole), in datafile order.
_Ranges = tuple[tuple[int, Any], ...]


class LeanPlan(Generic[Leaf]):
    """A flag's rules for the common case, each range leading to a leaf.

    Attributes:
        experiments: ``(rule id, audience, whitelist, group id, group allocation,
            ranges)`` per running experiment rule, in order; the whitelist maps user ids
            to leaves (``None`` when empty); ranges are ``None`` when the rule cannot
            bucket (an empty key).
        rollouts: ``(rule id, audience, ranges)`` per rollout rule, in order.
        nothing: The leaf of no rule deciding.
    """

    __slots__ = ("experiments", "nothing", "rollouts")

    def __init__(
        self,
        experiments: tuple[
            tuple[
                str,
                Evaluator | None,
                Mapping[str, Leaf] | None,
                str | None,
                tuple[tuple[int, str], ...],
                _Ranges | None,
            ],
            ...,
        ],
        rollouts: tuple[tuple[str, Evaluator | None, _Ranges | None], ...],
        nothing: Leaf,
    ) -> None:
        self.experiments = experiments
        self.rollouts = rollouts
        self.nothing = nothing


def compile_lean(
    plan: FlagPlan, result: Result, leaf: Callable[[VariationDecision], Leaf]
) -> LeanPlan[Leaf] | None:
    """A flag's lean plan, or ``None`` when the general way must decide it.

    Args:
        plan: The flag, compiled (from a datafile without holdouts).
        result: The engine's decision for a rule, a variation and a rule type (the
            same object the general way returns).
        leaf: What a decision becomes in the plan.
    """
    experiments = []
    for rule in plan.experiments:
        if not rule.running:
            continue
        if rule.dict_variations:
            return None  # a holdout shares the experiment's id: the general way knows
        entity = rule.entity
        assert isinstance(entity, Experiment)
        whitelist = {
            user_id: leaf(result(entity, variation, _FEATURE_TEST))
            for user_id, variation in rule.whitelist.items()
        }
        ranges = _ranges(rule, entity, _FEATURE_TEST, result, leaf)
        experiments.append(
            (
                rule.id,
                rule.audience,
                whitelist or None,
                rule.group_id,
                rule.group_allocation,
                ranges,
            )
        )
    rollouts = []
    for entity, rule, _ in plan.rollout_rules:
        ranges = _ranges(rule, entity, _ROLLOUT, result, leaf)
        rollouts.append((rule.id, rule.audience, ranges))
    return LeanPlan(tuple(experiments), tuple(rollouts), leaf(result(None, None, _ROLLOUT)))


def _ranges(
    rule: Rule,
    entity: Experiment,
    rule_type: RuleType,
    result: Result,
    leaf: Callable[[VariationDecision], Any],
) -> _Ranges | None:
    if not rule.bucketable:
        return None
    ranges: list[tuple[int, Any]] = []
    for end_of_range, entity_id in rule.allocation:
        if not entity_id:
            ranges.append((end_of_range, None))  # a hole
            continue
        variation = rule.variations.get(entity_id)
        if variation is None:
            ranges.append((end_of_range, _Missing(entity_id, rule.id)))
            continue
        ranges.append((end_of_range, leaf(result(entity, variation, rule_type))))
    return tuple(ranges)


def decide_lean(
    plan: LeanPlan[Leaf],
    forced_users: Set[str] | Mapping[str, Any],
    user_id: str,
    attributes: Mapping[str, Any],
    segments: frozenset[str] | None,
) -> Leaf | None:
    """Decide a flag with its plan, or ``None`` when this user is not the common case.

    The same steps in the same order as the engine's general way, without what cannot
    happen in the common case.

    Args:
        plan: The flag's plan.
        forced_users: The users with forced variations (the engine's).
        user_id: The user's id.
        attributes: The user's attributes.
        segments: The user's qualified segments.
    """
    if user_id in forced_users or _debug_on(DEBUG):
        return None  # forced variations to look up, or reasons to log
    bucketing_id = attributes.get(BUCKETING_ID_ATTRIBUTE, user_id) if attributes else user_id
    if type(bucketing_id) is not str:
        return None  # warned about and reasoned on, the general way
    for rule_id, audience, whitelist, group_id, group_allocation, ranges in plan.experiments:
        if whitelist is not None:
            forced = whitelist.get(user_id)
            if forced is not None:
                return forced
        if audience is not None and not audience(attributes, segments):
            continue
        if ranges is None:
            continue
        if (
            group_id is not None
            and find_bucket(bucketing_id, group_id, group_allocation) != rule_id
        ):
            continue  # the group put the user in another experiment, or in none
        leaf = _landing(ranges, bucketing_id + rule_id)
        if leaf is not None:
            return leaf  # type: ignore[no-any-return]
    rollouts = plan.rollouts
    last = len(rollouts) - 1
    index = 0
    while index <= last:
        rule_id, audience, ranges = rollouts[index]
        if audience is None or audience(attributes, segments):
            if ranges is not None:
                leaf = _landing(ranges, bucketing_id + rule_id)
                if leaf is not None:
                    return leaf  # type: ignore[no-any-return]
            # The audience matched but bucketing missed: straight to "Everyone Else".
            index = last if index != last else index + 1
        else:
            index += 1
    return plan.nothing


def _landing(ranges: _Ranges, key: str) -> Any:
    """The leaf of the range a bucketing key (bucketing id + rule id) lands in, or
    ``None``: a hole, past the last range, or a variation that is not the rule's
    (logged, as the general way logs it)."""
    bucket = (
        int(_hash(key, HASH_SEED, False) / _MAX_HASH_VALUE * MAX_TRAFFIC_VALUE)
        if key.isascii()
        else bucket_value(key)
    )
    for end_of_range, leaf in ranges:
        if bucket < end_of_range:
            if type(leaf) is _Missing:
                leaf.log()
                return None
            return leaf
    return None
