"""The decision engine: which variation a user gets, identical to optimizely-sdk 5.7.0.

:class:`DecisionEngine` is sync and pure: no I/O, no awaiting. The one piece of I/O in a
decision, the user profile service, stays at the edges: the caller looks the profile up
before deciding (:meth:`UserProfile.from_lookup`), passes it in, and saves it afterwards
when :attr:`UserProfile.changed` is set.

Decision order, as in Optimizely's SDK:

* An experiment (Activate, get_variation, and each experiment rule of a flag): the
  experiment must be ``Running``; then a forced variation set at run time
  (:meth:`DecisionEngine.set_forced_variation`); then the datafile's
  ``forcedVariations`` (whitelist); then a variation stored in the user profile; then the
  audiences; then bucketing (group stage for a ``random`` group, then variation stage),
  and the new variation is stored in the user profile.
* A flag (decide, is_feature_enabled, feature variables): a flag-level forced decision;
  then the global holdouts (``holdouts``; a holdout with ``excludeTargetedDeliveries``
  lets rules of type ``td`` and the rollout still decide, and is reported on the side as
  :attr:`VariationDecision.holdout`); then each experiment rule in ``experimentIds``
  order (a rule-level forced decision, the rule's local holdouts from ``localHoldouts``,
  then the experiment order above); then each rollout rule (forced decision, local
  holdouts, audience, bucketing with the rule id; when the audience matches but bucketing
  misses, straight to the last rule, "Everyone Else"); then no variation.

To be identical to that SDK on every datafile it accepts, the engine builds its indexes
the way the SDK's ``ProjectConfig`` does, quirks included: look-ups by experiment key use
the last experiment with that key (rollout rules and grouped experiments included), a
holdout's variations replace those of an experiment with the same key or id, an experiment
of ``type`` ``"fr"`` (feature rollout) gets its flag's "Everyone Else" variation appended
to its variations and, with ``endOfRange`` 10000, to its traffic allocation, rollout rules
do not need to be ``Running``, and feature variables are looked up by variation id across
the whole datafile. Where the SDK raises instead of deciding (a flag naming an experiment
or rollout that does not exist, an unhashable value where it looks something up), the
engine skips the reference or treats the value as unknown.

Not implemented: CMAB (contextual multi-armed bandit) experiments, which need a network
call per decision; an experiment with a ``cmab`` section is bucketed as a plain
experiment here. Reasons are collected like Optimizely's decide reasons, without the
duplicates that SDK accumulates when an experiment rule is evaluated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ._audiences import Evaluator, compile_audience, compile_audience_conditions
from ._bucketing import Allocation, compile_allocation, find_bucket, resolve_bucketing_id
from ._datafile import (
    Experiment,
    FeatureFlag,
    Group,
    Holdout,
    ProjectConfig,
    Rollout,
    Variable,
    Variation,
)

__all__ = [
    "DecisionEngine",
    "RuleType",
    "UserInput",
    "UserProfile",
    "VariationDecision",
]

logger = logging.getLogger("optitrack")

_GROUP_POLICY_RANDOM: Final = "random"
_TYPE_FEATURE_ROLLOUT: Final = "fr"
_TYPE_TARGETED_DELIVERY: Final = "td"
_EVERYONE_ELSE_END_OF_RANGE: Final = 10_000
_RUNNING: Final = "Running"
_BAD_BUCKETING_ID: Final = "Bucketing ID attribute is not a string. Defaulted to user_id."


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


class _Rule:
    # An experiment, rollout rule or holdout, compiled for the hot path.
    __slots__ = (
        "allocation",
        "audience",
        "audience_text",
        "bucketable",
        "dict_variations",
        "entity",
        "exclude_targeted_deliveries",
        "group_allocation",
        "group_id",
        "id",
        "key",
        "label",
        "running",
        "type",
        "variations",
        "whitelist",
    )

    def __init__(
        self,
        entity: Experiment | Holdout,
        *,
        audience: Evaluator | None,
        audience_text: str,
        allocation: Allocation,
        variations: Mapping[str, Variation],
        whitelist: Mapping[str, Variation],
        group: Group | None,
        dict_variations: bool,
    ) -> None:
        self.entity = entity
        self.id = entity.id
        self.key = entity.key
        self.label = f'experiment "{entity.key}"'  # as reasons name it
        self.type = entity.type if isinstance(entity, Experiment) else None
        self.running = entity.status == _RUNNING
        self.bucketable = bool(entity.key and entity.key.strip())
        self.audience = audience
        self.audience_text = audience_text
        self.allocation = allocation
        self.variations = variations
        self.whitelist = whitelist
        self.dict_variations = dict_variations
        self.exclude_targeted_deliveries = isinstance(entity, Holdout) and bool(
            entity.exclude_targeted_deliveries
        )
        if group is not None and group.policy == _GROUP_POLICY_RANDOM:
            self.group_id: str | None = group.id
            self.group_allocation: Allocation = compile_allocation(group.traffic_allocation)
        else:
            self.group_id = None
            self.group_allocation = ()


class _Flag:
    # A feature flag, compiled: its rules resolved and its forced-decision variations.
    __slots__ = (
        "experiments",
        "flag",
        "key",
        "rollout_note",
        "rollout_rules",
        "variables",
        "variations_by_key",
    )

    def __init__(
        self,
        flag: FeatureFlag,
        *,
        experiments: tuple[_Rule, ...],
        rollout_rules: tuple[tuple[Experiment, _Rule, str], ...],
        rollout_note: str | None,
        variations_by_key: Mapping[str, Variation],
        variables: Mapping[str, tuple[Variable, str]],
    ) -> None:
        self.flag = flag
        self.key = flag.key
        self.experiments = experiments
        self.rollout_rules = rollout_rules
        self.rollout_note = rollout_note
        self.variations_by_key = variations_by_key
        self.variables = variables


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _variable_type(variable: Variable) -> str:
    # Datafiles declare JSON variables as strings with subType json.
    if variable.type == "string" and variable.sub_type == "json":
        return "json"
    return variable.type


def _cast(value: Any, kind: str) -> Any:
    try:
        if kind == "boolean":
            return value == "true"
        if kind == "integer":
            return int(value)
        if kind == "double":
            return float(value)
        if kind == "json":
            return json.loads(value)
    except Exception:  # anything a bad value raises, as optimizely-sdk's bare except
        logger.error("Unable to cast value %r to %s. Returning None.", value, kind)
        return None
    return value


class DecisionEngine:
    """Decides experiments and flags for users, exactly as optimizely-sdk 5.7.0 does.

    Build one per datafile (building costs one pass over it) and keep it: forced
    variations set with :meth:`set_forced_variation` live in the engine and survive
    :meth:`update_config`. Every method is sync and does no I/O.

    Args:
        config: The project config to decide with.
    """

    def __init__(self, config: ProjectConfig) -> None:
        # user id -> experiment id -> variation id, as in Optimizely's decision service.
        self._forced_variations: dict[str, dict[str, str]] = {}
        self.update_config(config)

    @property
    def config(self) -> ProjectConfig:
        """The project config decisions are made with."""
        return self._config

    def update_config(self, config: ProjectConfig) -> None:
        """Decide with a new datafile from now on, keeping forced variations.

        Args:
            config: The new project config.
        """
        datafile = config.datafile
        # Optimizely's experiment_id_map: experiments, then rollout rules, then grouped
        # experiments, each later one replacing an earlier one with the same id.
        experiments: dict[str, Experiment] = {e.id: e for e in datafile.experiments}
        rollouts: dict[str, Rollout] = {r.id: r for r in datafile.rollouts}
        for each_rollout in rollouts.values():
            experiments.update((rule.id, rule) for rule in each_rollout.experiments)
        groups: dict[str, Group] = {g.id: g for g in datafile.groups}
        group_of: dict[str, Group] = {}
        for group in groups.values():
            for experiment in {e.id: e for e in group.experiments}.values():
                experiments[experiment.id] = experiment
                group_of[experiment.id] = group

        by_key: dict[str, Experiment] = {}
        variation_by_key: dict[str, dict[str, Variation]] = {}  # by experiment key
        variation_by_id: dict[str, dict[str, Variation]] = {}  # by experiment key
        variations_of: dict[str, dict[str, Variation]] = {}  # by experiment id
        usages: dict[str, dict[str, str]] = {}  # by variation id
        for experiment in experiments.values():
            by_key[experiment.key] = experiment
            keyed = {v.key: v for v in experiment.variations}
            variation_by_key[experiment.key] = keyed
            variation_by_id[experiment.key] = {v.id: v for v in keyed.values()}
            variations_of[experiment.id] = {v.id: v for v in keyed.values()}
            for variation in keyed.values():
                usages[variation.id] = {u.id: u.value for u in variation.variables}

        flags: dict[str, FeatureFlag] = {f.key: f for f in datafile.feature_flags}
        extra_allocation: dict[str, list[tuple[int, str]]] = {}
        flag_parts: list[tuple[FeatureFlag, list[str], Rollout | None, str | None]] = []
        flag_variations: dict[str, dict[str, Variation]] = {}
        flag_variations_by_id: dict[str, dict[str, Variation]] = {}
        for flag in flags.values():
            rule_ids = [i for i in flag.experiment_ids if i in experiments]
            rollout = rollouts.get(flag.rollout_id) if flag.rollout_id else None
            everyone_else = (
                rollout.experiments[-1].variations[0]
                if rollout is not None
                and rollout.experiments
                and rollout.experiments[-1].variations
                else None
            )
            if everyone_else is not None:
                for rule_id in rule_ids:
                    rule = experiments[rule_id]
                    if rule.type != _TYPE_FEATURE_ROLLOUT:
                        continue
                    extra_allocation.setdefault(rule.id, []).append(
                        (_EVERYONE_ELSE_END_OF_RANGE, everyone_else.id)
                    )
                    variation_by_key[rule.key][everyone_else.key] = everyone_else
                    variation_by_id[rule.key][everyone_else.id] = everyone_else
                    variations_of[rule.id][everyone_else.id] = everyone_else
                    usages[everyone_else.id] = {u.id: u.value for u in everyone_else.variables}
            note = None
            if flag.rollout_id and rollout is None:
                note = f"There is no rollout of feature {flag.key}."
            elif rollout is not None and not rollout.experiments:
                note = f"Rollout {rollout.id} has no experiments."
            # Forced decisions may name any variation of any of the flag's rules, and
            # impressions carry the flag's first variation with the decided id.
            seen: set[str] = set()
            by_variation_key: dict[str, Variation] = {}
            by_variation_id: dict[str, Variation] = {}
            all_rule_ids = rule_ids + (
                [rule.id for rule in rollout.experiments] if rollout is not None else []
            )
            for rule_id in all_rule_ids:
                for variation in variations_of[rule_id].values():
                    if variation.id not in seen:
                        seen.add(variation.id)
                        by_variation_key.setdefault(variation.key, variation)
                        by_variation_id[variation.id] = variation
            flag_variations[flag.key] = by_variation_key
            flag_variations_by_id[flag.key] = by_variation_id
            flag_parts.append((flag, rule_ids, rollout, note))

        for holdout in datafile.holdouts:
            if holdout.included_rules is not None:
                logger.warning(
                    "Global holdout %r has includedRules, which are ignored: global holdouts "
                    "apply to every flag.",
                    holdout.key,
                )
        local_holdouts: list[Holdout] = []
        for holdout in datafile.local_holdouts:
            if holdout.included_rules is None:
                logger.error(
                    "Local holdout %r has no includedRules and is left out of decisions.",
                    holdout.id,
                )
            else:
                local_holdouts.append(holdout)
        holdout_ids: set[str] = set()
        for holdout in (*datafile.holdouts, *local_holdouts):
            holdout_ids.add(holdout.id)
            variation_by_key[holdout.key] = {v.key: v for v in holdout.variations}
            variation_by_id[holdout.key] = {v.id: v for v in holdout.variations}
            variations_of[holdout.id] = {v.id: v for v in holdout.variations}

        self._config = config
        self._decisions: dict[tuple[int, int, RuleType | None], VariationDecision] = {}
        self._experiments_by_key = by_key
        self._variation_by_key = variation_by_key
        self._variation_by_id = variation_by_id
        self._variations_of = variations_of
        self._flag_variations_by_id = flag_variations_by_id
        self._usages = usages
        self._extra_allocation = extra_allocation
        self._holdout_ids = holdout_ids
        self._audiences: dict[str, Evaluator] = {
            audience_id: compile_audience(audience)
            for audience_id, audience in config.audiences_by_id.items()
        }
        self._rules: dict[str, _Rule] = {
            experiment_id: self._compile(experiment, group_of.get(experiment_id))
            for experiment_id, experiment in experiments.items()
        }
        self._global_holdouts = tuple(
            self._compile(h, None) for h in datafile.holdouts if h.status == _RUNNING
        )
        rule_holdouts: dict[str, list[_Rule]] = {}
        for holdout in local_holdouts:
            if holdout.status != _RUNNING:
                continue
            compiled = self._compile(holdout, None)
            for rule_id in holdout.included_rules or ():
                rule_holdouts.setdefault(rule_id, []).append(compiled)
        self._rule_holdouts = {k: tuple(v) for k, v in rule_holdouts.items()}
        self._flags: dict[str, _Flag] = {}
        for flag, rule_ids, flag_rollout, note in flag_parts:
            self._flags[flag.key] = self._compile_flag(
                flag, rule_ids, flag_rollout, note, flag_variations[flag.key]
            )

    # ------------------------------------------------------------------ compiling

    def _compile(self, entity: Experiment | Holdout, group: Group | None) -> _Rule:
        conditions = (
            entity.audience_conditions
            if entity.audience_conditions is not None
            else list(entity.audience_ids)
        )
        whitelist: dict[str, Variation] = {}
        if isinstance(entity, Experiment) and entity.forced_variations:
            keyed = self._variation_by_key.get(entity.key)
            for user_id, variation_key in entity.forced_variations.items():
                try:
                    variation = keyed.get(variation_key) if keyed else None
                except TypeError:  # an unhashable variation key
                    variation = None
                if variation is not None:
                    whitelist[user_id] = variation
        return _Rule(
            entity,
            audience=compile_audience_conditions(conditions, self._audiences),
            audience_text=_json_text(conditions),
            allocation=compile_allocation(entity.traffic_allocation)
            + tuple(self._extra_allocation.get(entity.id, ())),
            variations=self._variations_of.get(entity.id, {}),
            whitelist=whitelist,
            group=group,
            dict_variations=isinstance(entity, Experiment) and entity.id in self._holdout_ids,
        )

    def _compile_flag(
        self,
        flag: FeatureFlag,
        rule_ids: list[str],
        rollout: Rollout | None,
        note: str | None,
        variations_by_key: Mapping[str, Variation],
    ) -> _Flag:
        rollout_rules: tuple[tuple[Experiment, _Rule, str], ...] = ()
        if rollout is not None:
            unique = list({rule.id: rule for rule in rollout.experiments}.values())
            # Reasons name the rules by position, the last one "Everyone Else".
            last = len(unique) - 1
            rollout_rules = tuple(
                (rule, self._rules[rule.id], "Everyone Else" if n == last else str(n + 1))
                for n, rule in enumerate(unique)
            )
        variables = {v.key: (v, _variable_type(v)) for v in flag.variables}
        return _Flag(
            flag,
            experiments=tuple(self._rules[i] for i in rule_ids),
            rollout_rules=rollout_rules,
            rollout_note=note,
            variations_by_key=variations_by_key,
            variables=variables,
        )

    def _flag(self, flag: FeatureFlag) -> _Flag:
        compiled = self._flags.get(flag.key)
        if compiled is not None and compiled.flag is flag:
            return compiled
        # A flag that is not this datafile's: decide it with this datafile's rules.
        rule_ids = [i for i in flag.experiment_ids if i in self._rules]
        rollout: Rollout | None = (
            self._config.rollouts_by_id.get(flag.rollout_id) if flag.rollout_id else None
        )
        if rollout is not None and any(r.id not in self._rules for r in rollout.experiments):
            rollout = None
        return self._compile_flag(flag, rule_ids, rollout, None, {})

    def _rule(self, experiment: Experiment) -> _Rule:
        compiled = self._rules.get(experiment.id)
        if compiled is not None and compiled.entity is experiment:
            return compiled
        return self._compile(experiment, None)

    def _result(
        self,
        experiment: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: RuleType | None,
        reasons: list[str] | None,
        include_reasons: bool,
        holdout: VariationDecision | None = None,
    ) -> VariationDecision:
        if reasons:
            finished = _finish(reasons, include_reasons)
            if finished:
                return VariationDecision(experiment, variation, rule_type, finished, holdout)
        if holdout is not None:
            return VariationDecision(experiment, variation, rule_type, (), holdout)
        # Without reasons a decision is one of a few per rule: build each once (the objects
        # are frozen, and the cache holds them, so their ids stay unique).
        key = (id(experiment), id(variation), rule_type)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decisions[key] = VariationDecision(experiment, variation, rule_type)
        return decision

    def impression_variation(
        self,
        flag_key: str,
        rule: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: str,
    ) -> Variation | None:
        """The variation an impression names for a decision, as Optimizely's SDK finds it.

        Optimizely's SDK looks the decided variation up again by id when it builds an
        impression: among the flag's variations (its rules' in order, the first with
        that id) when there is a flag key and the rule is not a holdout, else among the
        variations of the rule's id. In a datafile with repeated keys or ids that can be
        another variation than the decided one, or none (the impression then has no
        variation); in any other datafile it is the decided one.

        Args:
            flag_key: The flag key; ``""`` for Activate.
            rule: The experiment, rule or holdout that decided, or ``None``.
            variation: The decided variation, or ``None``.
            rule_type: The rule type the impression carries.

        Returns:
            The variation to send, or ``None``.
        """
        if variation is None or not variation.id:
            return None
        if flag_key and rule_type != RuleType.HOLDOUT:
            return self._flag_variations_by_id.get(flag_key, {}).get(variation.id)
        if rule is not None and rule.id:
            return self._variations_of.get(rule.id, {}).get(variation.id)
        return None

    # ------------------------------------------------------------------ look-ups

    def experiment_by_key(self, experiment_key: str) -> Experiment | None:
        """The experiment Optimizely's SDK finds for a key.

        Rollout rules and grouped experiments count, and when several share a key the last
        one (grouped experiments last) wins, as in that SDK.

        Args:
            experiment_key: The experiment key.

        Returns:
            The experiment, or ``None``.
        """
        return self._experiments_by_key.get(experiment_key)

    def variation_by_key(self, experiment_key: str, variation_key: str) -> Variation | None:
        """A variation by experiment key and variation key, as Optimizely's SDK finds it.

        Args:
            experiment_key: The experiment key.
            variation_key: The variation key.

        Returns:
            The variation, or ``None``.
        """
        keyed = self._variation_by_key.get(experiment_key)
        return keyed.get(variation_key) if keyed else None

    # ------------------------------------------------------------------ forced variations

    def set_forced_variation(
        self, experiment_key: str, user_id: str, variation_key: str | None
    ) -> bool:
        """Force a user into a variation of an experiment (or clear it with ``None``).

        Args:
            experiment_key: The experiment key (see :meth:`experiment_by_key`).
            user_id: The user id.
            variation_key: The variation key, or ``None`` to remove the forced variation.

        Returns:
            Whether it was set (or cleared): ``False`` for an unknown experiment or
            variation, or an empty or non-``str`` key.
        """
        if not isinstance(experiment_key, str) or not experiment_key:
            logger.error('Provided "experiment_key" is in an invalid format.')
            return False
        if not isinstance(user_id, str):
            logger.error('Provided "user_id" is in an invalid format.')
            return False
        experiment = self._experiments_by_key.get(experiment_key)
        if experiment is None:
            logger.error('Experiment key "%s" is not in datafile.', experiment_key)
            return False
        if variation_key is None:
            forced = self._forced_variations.get(user_id)
            if forced is not None:
                forced.pop(experiment.id, None)
            return True
        if not isinstance(variation_key, str) or not variation_key:
            logger.debug("Variation key is invalid.")
            return False
        variation = self.variation_by_key(experiment_key, variation_key)
        if variation is None:
            logger.error('Variation key "%s" is not in datafile.', variation_key)
            return False
        self._forced_variations.setdefault(user_id, {})[experiment.id] = variation.id
        logger.debug(
            'Set variation "%s" for experiment "%s" and user "%s" in the forced variation map.',
            variation.id,
            experiment.id,
            user_id,
        )
        return True

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation key a user is forced into for an experiment.

        Args:
            experiment_key: The experiment key.
            user_id: The user id.

        Returns:
            The forced variation's key, or ``None``.
        """
        if not isinstance(experiment_key, str) or not isinstance(user_id, str):
            return None
        variation = self._forced_variation(experiment_key, user_id, None)
        return variation.key if variation is not None else None

    def _forced_variation(
        self, experiment_key: str, user_id: str, reasons: list[str] | None
    ) -> Variation | None:
        forced = self._forced_variations.get(user_id)
        if not forced:
            return None
        experiment = self._experiments_by_key.get(experiment_key)
        if experiment is None:
            return None
        variation_id = forced.get(experiment.id)
        if variation_id is None:
            return None
        by_id = self._variation_by_id.get(experiment_key)
        variation = by_id.get(variation_id) if by_id else None
        if variation is None:
            logger.error('Variation ID "%s" is not in datafile.', variation_id)
            return None
        if reasons is not None:
            reasons.append(
                f'Variation "{variation.key}" is mapped to experiment "{experiment_key}" and '
                f'user "{user_id}" in the forced variation map'
            )
        return variation

    # ------------------------------------------------------------------ experiments

    def get_variation(
        self,
        experiment: Experiment,
        user: UserInput,
        profile: UserProfile | None,
        *,
        include_reasons: bool = True,
    ) -> VariationDecision:
        """Decide an experiment for a user (get_variation's and Activate's decision).

        Args:
            experiment: The experiment (see :meth:`experiment_by_key`).
            user: The user.
            profile: The user's profile, read for a stored variation and updated with a new
                one; ``None`` to decide without a user profile service.
            include_reasons: Whether to collect reasons (skipping them is faster).

        Returns:
            The decision, with rule type :attr:`RuleType.EXPERIMENT` when the user got a
            variation.
        """
        reasons: list[str] | None = [] if include_reasons or _debug() else None
        rule = self._rule(experiment)
        bucketing_id, bad_id = resolve_bucketing_id(user.user_id, user.attributes or {})
        variation = self._experiment_variation(rule, user, bucketing_id, bad_id, profile, reasons)
        if variation is None:
            return self._result(None, None, None, reasons, include_reasons)
        return self._result(experiment, variation, RuleType.EXPERIMENT, reasons, include_reasons)

    def activate(
        self,
        experiment: Experiment,
        user: UserInput,
        profile: UserProfile | None,
        *,
        include_reasons: bool = True,
    ) -> VariationDecision:
        """Decide an experiment for Activate, which then sends an impression.

        As :meth:`get_variation`, then the variation is looked up again by experiment key
        and variation key, as Optimizely's ``activate`` does: a variation that look-up
        cannot find, or whose key is empty, is not activated.

        Args:
            experiment: The experiment (see :meth:`experiment_by_key`).
            user: The user.
            profile: As for :meth:`get_variation`.
            include_reasons: Whether to collect reasons.

        Returns:
            The decision to activate; ``variation`` is ``None`` when nothing is activated.
        """
        decision = self.get_variation(experiment, user, profile, include_reasons=include_reasons)
        if decision.variation is None:
            return decision
        # Optimizely's activate drops a variation whose key is empty.
        variation = self.variation_by_key(experiment.key, decision.variation.key)
        if variation is None or not decision.variation.key:
            return VariationDecision(None, None, None, decision.reasons)
        return VariationDecision(experiment, variation, RuleType.EXPERIMENT, decision.reasons)

    def _experiment_variation(
        self,
        rule: _Rule,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        profile: UserProfile | None,
        reasons: list[str] | None,
    ) -> Variation | None:
        user_id = user.user_id
        if not rule.running:
            if reasons is not None:
                reasons.append(f'Experiment "{rule.key}" is not running.')
            return None
        if user_id in self._forced_variations:
            variation = self._forced_variation(rule.key, user_id, reasons)
            if variation is not None:
                return variation
        if rule.whitelist:
            variation = rule.whitelist.get(user_id)
            if variation is not None:
                if reasons is not None:
                    reasons.append(f'User "{user_id}" is forced in variation "{variation.key}".')
                return variation
        if profile is not None:
            variation = self._stored_variation(rule, profile)
            if variation is not None:
                if reasons is not None:
                    reasons.append(
                        f'Returning previously activated variation ID "{variation.key}" of '
                        f'experiment "{rule.key}" for user "{user_id}" from user profile.'
                    )
                return variation
        if not self._qualifies(rule, rule.label, user, reasons):
            if reasons is not None:
                reasons.append(
                    f'User "{user_id}" does not meet conditions to be in experiment "{rule.key}".'
                )
            return None
        if bad_id:
            _warn_bucketing_id(reasons)
        variation = self._bucket(rule, bucketing_id, user_id, reasons)
        # A holdout sharing the experiment's id replaced its variations with the holdout's,
        # which Optimizely's SDK does not accept as a bucketed variation.
        if variation is not None and not rule.dict_variations:
            if reasons is not None:
                reasons.append(
                    f'User "{user_id}" is in variation "{variation.key}" of experiment {rule.key}.'
                )
            if profile is not None:
                profile.save_variation(rule.id, variation.id)
            return variation
        if reasons is not None:
            reasons.append(f'User "{user_id}" is in no variation.')
        return None

    def _stored_variation(self, rule: _Rule, profile: UserProfile) -> Variation | None:
        variation_id = profile.variation_id(rule.id)
        if not variation_id:
            return None
        by_id = self._variation_by_id.get(rule.key)
        try:
            variation = by_id.get(variation_id) if by_id else None
        except TypeError:  # an unhashable stored id
            return None
        if variation is None:
            logger.error('Variation ID "%s" is not in datafile.', variation_id)
        return variation

    def _qualifies(
        self, rule: _Rule, label: str, user: UserInput, reasons: list[str] | None
    ) -> bool:
        audience = rule.audience
        if audience is None:
            if reasons is not None:
                reasons.append(f"Evaluating audiences for {label}: {rule.audience_text}.")
                reasons.append(f"Audiences for {label} collectively evaluated to TRUE.")
            return True
        result = audience(user.attributes or {}, user.qualified_segments) or False
        if reasons is not None:
            reasons.append(f"Evaluating audiences for {label}: {rule.audience_text}.")
            reasons.append(
                f"Audiences for {label} collectively evaluated to {str(result).upper()}."
            )
        return bool(result)

    def _bucket(
        self, rule: _Rule, bucketing_id: str, user_id: str, reasons: list[str] | None
    ) -> Variation | None:
        if not rule.bucketable:
            return None
        group_id = rule.group_id
        if group_id is not None:
            chosen = find_bucket(bucketing_id, group_id, rule.group_allocation)
            if chosen is None:
                if reasons is not None:
                    reasons.append(f'User "{user_id}" is in no experiment.')
                return None
            if chosen != rule.id:
                if reasons is not None:
                    reasons.append(
                        f'User "{user_id}" is not in experiment "{rule.key}" of group {group_id}.'
                    )
                return None
            if reasons is not None:
                reasons.append(f'User "{user_id}" is in experiment {rule.key} of group {group_id}.')
        variation_id = find_bucket(bucketing_id, rule.id, rule.allocation)
        if variation_id is None:
            if reasons is not None:
                reasons.append("Bucketed into an empty traffic range. Returning nil.")
            return None
        variation = rule.variations.get(variation_id)
        if variation is None:
            logger.error(
                'Variation with id "%s" not defined in the datafile for experiment "%s".',
                variation_id,
                rule.id,
            )
        return variation

    def _holdout_variation(
        self,
        holdout: _Rule,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        reasons: list[str] | None,
    ) -> Variation | None:
        user_id = user.user_id
        if bad_id:
            _warn_bucketing_id(reasons)
        if not self._qualifies(holdout, holdout.label, user, reasons):
            if reasons is not None:
                reasons.append(
                    f"User '{user_id}' does not meet the conditions for holdout '{holdout.key}'."
                )
            return None
        variation = self._bucket(holdout, bucketing_id, user_id, reasons)
        if reasons is not None:
            if variation is not None:
                reasons.append(
                    f"The user '{user_id}' is bucketed into variation '{variation.key}' "
                    f"of holdout '{holdout.key}'."
                )
            else:
                reasons.append(
                    f"User '{user_id}' is not bucketed into any variation for holdout "
                    f"'{holdout.key}'."
                )
        return variation

    # ------------------------------------------------------------------ flags

    def decide_flag(
        self,
        flag: FeatureFlag,
        user: UserInput,
        forced_decisions: Mapping[tuple[str, str | None], str],
        profile: UserProfile | None,
        *,
        include_reasons: bool = True,
    ) -> VariationDecision:
        """Decide a flag for a user (decide's, is_feature_enabled's and variables' decision).

        Args:
            flag: The flag (from this engine's config).
            user: The user.
            forced_decisions: The user's forced decisions: ``(flag_key, rule_key)`` to a
                variation key; ``rule_key`` ``None`` forces the whole flag.
            profile: The user's profile (see :meth:`get_variation`); ``None`` without a
                user profile service or with ``IGNORE_USER_PROFILE_SERVICE``.
            include_reasons: Whether to collect reasons (skipping them is faster).

        Returns:
            The decision. See :class:`VariationDecision` for the rule type of a flag that
            nothing decided and for the holdout reported on the side.
        """
        reasons: list[str] | None = [] if include_reasons or _debug() else None
        plan = self._flag(flag)
        user_id = user.user_id
        bucketing_id, bad_id = resolve_bucketing_id(user_id, user.attributes or {})

        if forced_decisions:
            variation = self._forced_decision(plan, None, forced_decisions, user_id, reasons)
            if variation is not None:
                return self._result(
                    None, variation, RuleType.FEATURE_TEST, reasons, include_reasons
                )

        holdout: VariationDecision | None = None
        for rule in self._global_holdouts:
            variation = self._holdout_variation(rule, user, bucketing_id, bad_id, reasons)
            if variation is None:
                continue
            if reasons is not None:
                reasons.append(
                    f"The user '{user_id}' is bucketed into holdout '{rule.key}' "
                    f"for feature flag '{plan.key}'."
                )
            if not rule.exclude_targeted_deliveries:
                return self._result(
                    rule.entity, variation, RuleType.HOLDOUT, reasons, include_reasons
                )
            if reasons is not None:
                reasons.append(
                    f"Holdout '{rule.key}' excludes targeted deliveries. "
                    "Targeted delivery rules will be evaluated."
                )
            holdout = VariationDecision(rule.entity, variation, RuleType.HOLDOUT)
            break

        for rule in plan.experiments:
            if holdout is not None and rule.type != _TYPE_TARGETED_DELIVERY:
                continue
            variation = None
            if forced_decisions:
                variation = self._forced_decision(
                    plan, rule.key, forced_decisions, user_id, reasons
                )
            if variation is None:
                held = self._local_holdout(
                    rule, "experiment rule", user, bucketing_id, bad_id, reasons, include_reasons
                )
                if held is not None:
                    return held
                variation = self._experiment_variation(
                    rule, user, bucketing_id, bad_id, profile, reasons
                )
            if variation is not None:
                return self._result(
                    rule.entity,
                    variation,
                    RuleType.FEATURE_TEST,
                    reasons,
                    include_reasons,
                    holdout,
                )

        if holdout is not None and reasons is not None:
            reasons.append(
                f'Holdout "{holdout.rule_key}" has excludeTargetedDeliveries enabled, '
                "continuing to rollout evaluation."
            )
        return self._rollout(
            plan, user, bucketing_id, bad_id, forced_decisions, reasons, include_reasons, holdout
        )

    def _local_holdout(
        self,
        rule: _Rule,
        kind: str,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        reasons: list[str] | None,
        include_reasons: bool,
    ) -> VariationDecision | None:
        """The decision of the first of a rule's local holdouts the user is bucketed in."""
        holdouts = self._rule_holdouts.get(rule.id)
        if not holdouts:
            return None
        for holdout in holdouts:
            variation = self._holdout_variation(holdout, user, bucketing_id, bad_id, reasons)
            if variation is not None:
                if reasons is not None:
                    reasons.append(
                        f"The user '{user.user_id}' is bucketed into local holdout "
                        f"'{holdout.key}' for {kind} '{rule.key}'."
                    )
                return self._result(
                    holdout.entity, variation, RuleType.HOLDOUT, reasons, include_reasons
                )
        return None

    def _rollout(
        self,
        plan: _Flag,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        forced_decisions: Mapping[tuple[str, str | None], str],
        reasons: list[str] | None,
        include_reasons: bool,
        holdout: VariationDecision | None,
    ) -> VariationDecision:
        rules = plan.rollout_rules
        if not rules:
            if plan.rollout_note is not None and reasons is not None:
                reasons.append(plan.rollout_note)
            return self._result(None, None, RuleType.ROLLOUT, reasons, include_reasons, holdout)
        user_id = user.user_id
        last = len(rules) - 1
        index = 0
        while index <= last:
            entity, rule, label = rules[index]
            if forced_decisions:
                variation = self._forced_decision(
                    plan, entity.key, forced_decisions, user_id, reasons
                )
                if variation is not None:
                    return self._result(
                        entity,
                        variation,
                        RuleType.ROLLOUT,
                        reasons,
                        include_reasons,
                        holdout,
                    )
            held = self._local_holdout(
                rule, "delivery rule", user, bucketing_id, bad_id, reasons, include_reasons
            )
            if held is not None:
                return held
            if bad_id:
                _warn_bucketing_id(reasons)
            everyone_else = index == last
            skip_to_everyone_else = False
            if self._qualifies(rule, f"rule {label}" if reasons is not None else "", user, reasons):
                if reasons is not None:
                    reasons.append(
                        f'User "{user_id}" meets audience conditions for targeting rule {label}.'
                    )
                variation = self._bucket(rule, bucketing_id, user_id, reasons)
                if variation is not None:
                    if reasons is not None:
                        reasons.append(f'User "{user_id}" bucketed into a targeting rule {label}.')
                    return self._result(
                        entity,
                        variation,
                        RuleType.ROLLOUT,
                        reasons,
                        include_reasons,
                        holdout,
                    )
                if not everyone_else:
                    if reasons is not None:
                        reasons.append(
                            f'User "{user_id}" not bucketed into a targeting rule {label}. '
                            'Checking "Everyone Else" rule now.'
                        )
                    skip_to_everyone_else = True
            elif reasons is not None:
                reasons.append(
                    f'User "{user_id}" does not meet audience conditions for targeting rule '
                    f"{label}."
                )
            index = last if skip_to_everyone_else else index + 1
        return self._result(None, None, RuleType.ROLLOUT, reasons, include_reasons, holdout)

    def _forced_decision(
        self,
        plan: _Flag,
        rule_key: str | None,
        forced_decisions: Mapping[tuple[str, str | None], str],
        user_id: str,
        reasons: list[str] | None,
    ) -> Variation | None:
        context = (plan.key, rule_key)
        if context not in forced_decisions:
            return None
        variation_key = forced_decisions[context]
        try:
            variation = plan.variations_by_key.get(variation_key) if plan.key else None
        except TypeError:  # an unhashable variation key
            variation = None
        if variation is not None:
            if rule_key:
                message = (
                    f"Variation ({variation_key}) is mapped to flag ({plan.key}), rule "
                    f"({rule_key}) and user ({user_id}) in the forced decision map."
                )
            else:
                message = (
                    f"Variation ({variation_key}) is mapped to flag ({plan.key}) and user "
                    f"({user_id}) in the forced decision map."
                )
        elif rule_key:
            message = (
                f"Invalid variation is mapped to flag ({plan.key}), rule ({rule_key}) and "
                f"user ({user_id}) in the forced decision map."
            )
        else:
            message = (
                f"Invalid variation is mapped to flag ({plan.key}) and user ({user_id}) in "
                "the forced decision map."
            )
        logger.info(message)
        if reasons is not None:
            reasons.append(message)
        return variation

    # ------------------------------------------------------------------ variables

    def variable_type(self, flag: FeatureFlag, variable_key: str) -> str | None:
        """A feature variable's type, as the typed getters check it.

        Args:
            flag: The flag.
            variable_key: The variable key.

        Returns:
            ``"string"``, ``"integer"``, ``"double"``, ``"boolean"`` or ``"json"`` (a
            ``string`` with ``subType`` ``json`` is ``json``), the datafile's type for any
            other, or ``None`` when the flag has no such variable.
        """
        entry = self._flag(flag).variables.get(variable_key)
        return entry[1] if entry is not None else None

    def variable_value(
        self, flag: FeatureFlag, variable_key: str, variation: Variation | None
    ) -> Any:
        """A feature variable's value for a decided variation, typed.

        The variation's value is used when the variation's ``featureEnabled`` is true and
        it sets the variable; otherwise the variable's default. ``boolean`` is ``value ==
        "true"``, ``integer`` is ``int(value)``, ``double`` is ``float(value)``, ``json``
        is ``json.loads(value)``, anything else stays a string.

        Args:
            flag: The flag.
            variable_key: The variable key.
            variation: The decided variation, or ``None``.

        Returns:
            The typed value; ``None`` when the flag has no such variable or the value does
            not convert to the variable's type (both logged as errors).
        """
        entry = self._flag(flag).variables.get(variable_key)
        if entry is None:
            logger.error('Variable with key "%s" not found in the datafile.', variable_key)
            return None
        variable, kind = entry
        return _cast(self._raw_value(variable, variation), kind)

    def all_variables(self, flag: FeatureFlag, variation: Variation | None) -> dict[str, Any]:
        """Every feature variable of a flag for a decided variation, typed.

        Args:
            flag: The flag.
            variation: The decided variation, or ``None``.

        Returns:
            Variable key to typed value (see :meth:`variable_value`), in datafile order.
        """
        return {
            key: _cast(self._raw_value(variable, variation), kind)
            for key, (variable, kind) in self._flag(flag).variables.items()
        }

    def _raw_value(self, variable: Variable, variation: Variation | None) -> Any:
        if variation is None or not variation.feature_enabled:
            return variable.default_value
        # Optimizely looks values up by variation id across the whole datafile.
        usages = self._usages.get(variation.id)
        if usages is None:
            logger.error('Variation with ID "%s" is not in the datafile.', variation.id)
            return None
        return usages.get(variable.id, variable.default_value)


def _debug() -> bool:
    return logger.isEnabledFor(logging.DEBUG)


def _finish(reasons: list[str] | None, include: bool) -> tuple[str, ...]:
    if not reasons:
        return ()
    if logger.isEnabledFor(logging.DEBUG):
        for reason in reasons:
            logger.debug("%s", reason)
    return tuple(reasons) if include else ()


def _warn_bucketing_id(reasons: list[str] | None) -> None:
    logger.warning(_BAD_BUCKETING_ID)
    if reasons is not None:
        reasons.append(_BAD_BUCKETING_ID)
