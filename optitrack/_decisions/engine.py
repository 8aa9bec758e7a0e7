"""The decision engine: which variation a user gets, identical to optimizely-sdk 5.7.0.

:class:`DecisionEngine` is sync and pure: no I/O, no awaiting. The one piece of I/O in a
decision, the user profile service, stays at the edges: the caller looks the profile up
before deciding (:meth:`.UserProfile.from_lookup`), passes it in, and saves it afterwards
when :attr:`.UserProfile.changed` is set.

A flag (decide, is_feature_enabled, feature variables) is decided in this order, as in
Optimizely's SDK: a flag-level forced decision; then the global holdouts (``holdouts``; a
holdout with ``excludeTargetedDeliveries`` lets rules of type ``td`` and the rollout
still decide, and is reported on the side as :attr:`.VariationDecision.holdout`); then
each experiment rule in ``experimentIds`` order (a rule-level forced decision, the rule's
local holdouts from ``localHoldouts``, then the experiment order of
:mod:`.experiments`); then each rollout rule (forced decision, local holdouts, audience,
bucketing with the rule id; when the audience matches but bucketing misses, straight to
the last rule, "Everyone Else"); then no variation.

To be identical to that SDK on every datafile it accepts, the engine decides with the
indexes of :class:`.ProjectConfig`, which are built the way the SDK's own are, quirks
included (see :mod:`.project`); rollout rules do not need to be ``Running``. Where the SDK
raises instead of deciding (a flag naming an experiment or rollout that does not exist,
an unhashable value where it looks something up), the engine skips the reference or
treats the value as unknown.

Not implemented: CMAB (contextual multi-armed bandit) experiments, which need a network
call per decision; an experiment with a ``cmab`` section is bucketed as a plain
experiment here. Reasons are collected like Optimizely's decide reasons, without the
duplicates that SDK accumulates when an experiment rule is evaluated.

Owns: the flag decision order, and the variation an impression names. Must not touch:
experiments' own order (:mod:`.experiments`), compiling
(:mod:`.rules`), indexing (:mod:`.project`), any I/O, events or notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from .._logging import logger
from .bucketing import resolve_bucketing_id
from .datafile import Experiment, FeatureFlag, Holdout, Variation
from .experiments import ExperimentDecisions, debug_enabled, warn_bucketing_id
from .lean import LeanPlan, compile_lean, decide_lean
from .project import ProjectConfig
from .records import RuleType, UserInput, UserProfile, VariationDecision
from .rules import FlagPlan, Rule
from .variables import cast, raw_value

__all__ = ["DecisionEngine"]

_TYPE_TARGETED_DELIVERY: Final = "td"
_FEATURE_TEST: Final = RuleType.FEATURE_TEST
Leaf = TypeVar("Leaf")


def _same(decision: VariationDecision) -> VariationDecision:
    return decision


class DecisionEngine(ExperimentDecisions):
    """Decides experiments and flags for users, exactly as optimizely-sdk 5.7.0 does.

    Build one per datafile (building costs one pass over it) and keep it: forced
    variations set with :meth:`set_forced_variation` live in the engine and survive
    :meth:`update_config`. Every method is sync and does no I/O.

    Args:
        config: The project config to decide with.
    """

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
            return self._config.flag_variations_by_id.get(flag_key, {}).get(variation.id)
        if rule is not None and rule.id:
            return self._config.variations_by_experiment_id.get(rule.id, {}).get(variation.id)
        return None

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
        reasons: list[str] | None = [] if include_reasons or debug_enabled() else None
        plan = self._compiled.flag(flag)
        user_id = user.user_id
        bucketing_id, bad_id = resolve_bucketing_id(user_id, user.attributes or {})

        if forced_decisions:
            variation = self._forced_decision(plan, None, forced_decisions, user_id, reasons)
            if variation is not None:
                return self._result(
                    None, variation, RuleType.FEATURE_TEST, reasons, include_reasons
                )

        holdout: VariationDecision | None = None
        for rule in self._compiled.global_holdouts:
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

    def update_config(self, config: ProjectConfig) -> None:
        """Decide with a new datafile from now on, keeping forced variations.

        Args:
            config: The new project config.
        """
        super().update_config(config)
        self._lean_plans: dict[str, tuple[FeatureFlag, LeanPlan[VariationDecision] | None]] = {}

    @property
    def forced_users(self) -> Mapping[str, Any]:
        """The users with forced variations (:meth:`set_forced_variation`), read-only."""
        return self._forced.by_user

    def lean_plan(
        self, flag: FeatureFlag, leaf: Callable[[VariationDecision], Leaf]
    ) -> LeanPlan[Leaf] | None:
        """A flag compiled for the common case (see :mod:`.lean`), with the caller's leaves.

        Args:
            flag: The flag (from this engine's config).
            leaf: What each of the flag's possible decisions becomes in the plan.

        Returns:
            The plan, or ``None`` when the general way decides this flag: the datafile
            has holdouts, or the flag's rules are not the common kind.
        """
        compiled = self._compiled
        if compiled.has_holdouts:
            return None
        return compile_lean(compiled.flag(flag), self._plain_result, leaf)

    def _plain_result(
        self, experiment: Experiment | None, variation: Variation | None, rule_type: RuleType
    ) -> VariationDecision:
        return self._result(experiment, variation, rule_type, None, False)

    def decide_flag_lean(
        self,
        flag: FeatureFlag,
        user_id: str,
        attributes: Mapping[str, Any],
        segments: frozenset[str] | None,
    ) -> VariationDecision | None:
        """:meth:`decide_flag` for the common case, or ``None`` when it is not one.

        The common case: a datafile without holdouts, a user without forced decisions,
        forced variations or a profile, a bucketing id that is the user id or a str, and
        no reasons to collect (``decide_flag``'s ``include_reasons`` false, DEBUG logging
        off). The decision is the one :meth:`decide_flag` makes (the same object), found
        by walking the flag's lean plan; an uncommon case returns ``None`` for the caller
        to take the general way.

        Args:
            flag: The flag (from this engine's config).
            user_id: The user's id.
            attributes: The user's attributes.
            segments: The user's qualified segments.
        """
        known = self._lean_plans.get(flag.key)
        if known is None or known[0] is not flag:
            if len(self._lean_plans) >= 10_000:  # bounded: flags may come from elsewhere
                self._lean_plans.clear()
            known = self._lean_plans[flag.key] = (flag, self.lean_plan(flag, _same))
        plan = known[1]
        if plan is None:
            return None
        return decide_lean(plan, self._forced.by_user, user_id, attributes, segments)

    def _local_holdout(
        self,
        rule: Rule,
        kind: str,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        reasons: list[str] | None,
        include_reasons: bool,
    ) -> VariationDecision | None:
        """The decision of the first of a rule's local holdouts the user is bucketed in."""
        for holdout in self._compiled.rule_holdouts.get(rule.id, ()):
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
        plan: FlagPlan,
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
                warn_bucketing_id(reasons)
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
        plan: FlagPlan,
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
        logger.debug(message)  # it names the user: never at INFO
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
        entry = self._compiled.flag(flag).variables.get(variable_key)
        return entry[1] if entry is not None else None

    def variable_value(
        self, flag: FeatureFlag, variable_key: str, variation: Variation | None
    ) -> Any:
        """A feature variable's value for a decided variation, typed (see :mod:`.variables`).

        Args:
            flag: The flag.
            variable_key: The variable key.
            variation: The decided variation, or ``None``.

        Returns:
            The typed value; ``None`` when the flag has no such variable or the value does
            not convert to the variable's type (both logged as errors).
        """
        entry = self._compiled.flag(flag).variables.get(variable_key)
        if entry is None:
            logger.error("Variable with key %r not found in the datafile.", variable_key)
            return None
        variable, kind = entry
        return cast(raw_value(variable, variation, self._config.variable_values), kind)

    def all_variables(self, flag: FeatureFlag, variation: Variation | None) -> dict[str, Any]:
        """Every feature variable of a flag for a decided variation, typed.

        Args:
            flag: The flag.
            variation: The decided variation, or ``None``.

        Returns:
            Variable key to typed value (see :meth:`variable_value`), in datafile order.
        """
        values = self._config.variable_values
        return {
            key: cast(raw_value(variable, variation, values), kind)
            for key, (variable, kind) in self._compiled.flag(flag).variables.items()
        }
