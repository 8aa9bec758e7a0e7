"""Compiling a project's rules for the decision hot path, once per datafile.

:class:`CompiledProject` turns a :class:`.ProjectConfig` into :class:`Rule` objects
(an experiment, rollout rule or holdout with its audience tree compiled, its traffic
allocation as sorted ranges and its variations at hand) and :class:`FlagPlan` objects (a
flag's experiment rules and rollout rules, resolved), so that deciding is look-ups and
MurmurHash3, never parsing.

Owns: compiling. Must not touch: the decision order (:mod:`.engine`), the datafile's
indexes (:mod:`.project`, which it reads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from .audiences import compile_audience, compile_audience_conditions
from .bucketing import Allocation, compile_allocation
from .conditions import Evaluator
from .datafile import Experiment, FeatureFlag, Group, Holdout, Rollout, Variable, Variation
from .project import ProjectConfig
from .variables import variable_type

__all__ = ["CompiledProject", "FlagPlan", "Rule"]

_GROUP_POLICY_RANDOM: Final = "random"
_RUNNING: Final = "Running"


class Rule:
    """An experiment, rollout rule or holdout, compiled for the hot path."""

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


class FlagPlan:
    """A feature flag, compiled: its rules resolved, its variations and variables."""

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
        experiments: tuple[Rule, ...],
        rollout_rules: tuple[tuple[Experiment, Rule, str], ...],
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


class CompiledProject:
    """A project config's rules, flags and holdouts, compiled.

    Args:
        config: The project config.

    Attributes:
        config: The project config it was compiled from.
        global_holdouts: The running global holdouts, in datafile order.
    """

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self._audiences: dict[str, Evaluator] = {
            audience_id: compile_audience(audience)
            for audience_id, audience in config.audiences_by_id.items()
        }
        groups = config.group_by_experiment_id
        self._rules: dict[str, Rule] = {
            experiment_id: self._compile(experiment, groups.get(experiment_id))
            for experiment_id, experiment in config.experiments_by_id.items()
        }
        datafile = config.datafile
        self.global_holdouts = tuple(
            self._compile(h, None) for h in datafile.holdouts if h.status == _RUNNING
        )
        rule_holdouts: dict[str, list[Rule]] = {}
        for holdout in config.local_holdouts:
            if holdout.status != _RUNNING:
                continue
            compiled = self._compile(holdout, None)
            for rule_id in holdout.included_rules or ():
                rule_holdouts.setdefault(rule_id, []).append(compiled)
        #: Rule id to its running local holdouts, in datafile order.
        self.rule_holdouts: Mapping[str, tuple[Rule, ...]] = {
            k: tuple(v) for k, v in rule_holdouts.items()
        }
        #: Whether any holdout runs, global or local (the lean decide path has none).
        self.has_holdouts = bool(self.global_holdouts or self.rule_holdouts)
        self._flags: dict[str, FlagPlan] = {}
        for flag in config.flags_by_key.values():
            rule_ids = [i for i in flag.experiment_ids if i in self._rules]
            rollout = config.rollouts_by_id.get(flag.rollout_id) if flag.rollout_id else None
            note = None
            if flag.rollout_id and rollout is None:
                note = f"There is no rollout of feature {flag.key}."
            elif rollout is not None and not rollout.experiments:
                note = f"Rollout {rollout.id} has no experiments."
            self._flags[flag.key] = self._compile_flag(
                flag, rule_ids, rollout, note, config.flag_variations_by_key[flag.key]
            )

    def flag(self, flag: FeatureFlag) -> FlagPlan:
        """A flag's plan; a flag that is not this datafile's is decided with its rules."""
        compiled = self._flags.get(flag.key)
        if compiled is not None and compiled.flag is flag:
            return compiled
        rule_ids = [i for i in flag.experiment_ids if i in self._rules]
        rollout: Rollout | None = (
            self.config.rollouts_by_id.get(flag.rollout_id) if flag.rollout_id else None
        )
        if rollout is not None and any(r.id not in self._rules for r in rollout.experiments):
            rollout = None
        return self._compile_flag(flag, rule_ids, rollout, None, {})

    def rule(self, experiment: Experiment) -> Rule:
        """An experiment's compiled rule (compiled now if it is not this datafile's)."""
        compiled = self._rules.get(experiment.id)
        if compiled is not None and compiled.entity is experiment:
            return compiled
        return self._compile(experiment, None)

    def _compile(self, entity: Experiment | Holdout, group: Group | None) -> Rule:
        config = self.config
        conditions = (
            entity.audience_conditions
            if entity.audience_conditions is not None
            else list(entity.audience_ids)
        )
        whitelist: dict[str, Variation] = {}
        if isinstance(entity, Experiment) and entity.forced_variations:
            keyed = config.variations_by_key.get(entity.key)
            for user_id, variation_key in entity.forced_variations.items():
                try:
                    variation = keyed.get(variation_key) if keyed else None
                except TypeError:  # an unhashable variation key
                    variation = None
                if variation is not None:
                    whitelist[user_id] = variation
        return Rule(
            entity,
            audience=compile_audience_conditions(conditions, self._audiences),
            audience_text=_json_text(conditions),
            allocation=compile_allocation(entity.traffic_allocation)
            + config.appended_allocation.get(entity.id, ()),
            variations=config.variations_by_experiment_id.get(entity.id, {}),
            whitelist=whitelist,
            group=group,
            dict_variations=isinstance(entity, Experiment) and entity.id in config.holdout_ids,
        )

    def _compile_flag(
        self,
        flag: FeatureFlag,
        rule_ids: list[str],
        rollout: Rollout | None,
        note: str | None,
        variations_by_key: Mapping[str, Variation],
    ) -> FlagPlan:
        rollout_rules: tuple[tuple[Experiment, Rule, str], ...] = ()
        if rollout is not None:
            unique = list({rule.id: rule for rule in rollout.experiments}.values())
            # Reasons name the rules by position, the last one "Everyone Else".
            last = len(unique) - 1
            rollout_rules = tuple(
                (rule, self._rules[rule.id], "Everyone Else" if n == last else str(n + 1))
                for n, rule in enumerate(unique)
            )
        return FlagPlan(
            flag,
            experiments=tuple(self._rules[i] for i in rule_ids),
            rollout_rules=rollout_rules,
            rollout_note=note,
            variations_by_key=variations_by_key,
            variables={v.key: (v, variable_type(v)) for v in flag.variables},
        )
