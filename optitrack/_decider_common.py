"""The decider's common ``decide``: one known flag, default options, nothing forced.

Most decisions are that call: a flag of the datafile, the client's default options, a user
with no forced decision, no user profile service, no decision listener, a running client.
For it, each flag is compiled once per datafile into a lean plan (see
:mod:`optitrack._decisions.lean`) whose leaves are :class:`Outcome` objects: everything a
:class:`~optitrack.Decision` and its impression need, worked out when the plan is made
(the variation and rule keys, the variables when they can be shared, the impression's
text but for its visitor, timestamp and uuid). A decision is then a walk of the plan, a
``Decision``, and, when one is due, an impression queued without waiting. Any other call
returns ``None`` here and is decided the general way (:mod:`optitrack._decider`), with the
same answer and the same bytes.

Owns: that path and its plans. Must not touch: the decision order (the plan is the
engine's), how impressions are written (the event factory's fragments and visitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final

from ._decisions import FeatureFlag, RuleType, Variation, VariationDecision
from ._decisions.lean import LeanPlan, decide_lean
from ._events import EventFactory, InvalidInputError
from ._options import Choices, DecideOptions
from ._user import Decision, UserContext, Variables

if TYPE_CHECKING:
    from ._decisions import DecisionEngine, ProjectConfig
    from ._intake import Intake
    from ._profiles import ProfileStore

__all__ = ["CommonDecisions", "Outcome"]

_FEATURE_TEST: Final = RuleType.FEATURE_TEST
_ROLLOUT: Final = RuleType.ROLLOUT
_NO_PLAN: Final = object()  # a flag not looked at yet


class Outcome:
    """One of a flag's possible decisions, as the common ``decide`` returns it.

    Attributes:
        variation_key: The variation's key, or ``None``.
        enabled: Whether the flag is on.
        rule_key: The rule that decided, or ``None``.
        variables: The variables, shared by every decision with this outcome; ``None``
            when they cannot be shared (JSON values a caller may change): made per call.
        fragment: The impression's text but for its visitor, timestamp and uuid; ``None``
            when this decision sends none.
        flag: The flag.
        variation: The variation, or ``None``.
    """

    __slots__ = (
        "enabled",
        "flag",
        "fragment",
        "rule_key",
        "variables",
        "variation",
        "variation_key",
    )

    def __init__(
        self,
        decision: VariationDecision,
        flag: FeatureFlag,
        variables: Variables | None,
        fragment: str | None,
    ) -> None:
        self.variation_key = decision.variation_key
        self.enabled = decision.enabled
        self.rule_key = decision.rule_key
        self.variables = variables
        self.fragment = fragment
        self.flag = flag
        self.variation = decision.variation


class CommonDecisions:
    """The common ``decide`` (a part of the decider, whose state it reads)."""

    engine: DecisionEngine
    _config: ProjectConfig
    _intake: Intake
    _profiles: ProfileStore
    _decision_listeners: Mapping[int, Any]
    _variables: dict[tuple[int, int], Variables]
    options: DecideOptions
    _common_plans: dict[str, Any]
    _plans_factory: EventFactory | None
    _choices: Choices | None

    def _variables_of(self, flag: FeatureFlag, variation: Variation | None) -> Variables:
        raise NotImplementedError  # the decider's

    def _forget_plans(self) -> None:
        """Make plans anew from now on (a new datafile)."""
        self._common_plans = {}
        self._plans_factory = None
        self._choices = None

    def decide_common(self, user: UserContext, key: str) -> Decision | None:
        """Decide the common call, queueing its impression; ``None`` when it is not one.

        Nothing is done before the answer is known to be the common one, so the caller
        can take the general way from the start. The caller lets the worker have a turn
        when :meth:`turn_due` says so.
        """
        intake = self._intake
        if intake.factory is not self._plans_factory or self.options.defaults is not self._choices:
            # A new datafile or endpoint, or new default options: plans anew.
            self._forget_plans()
            self._plans_factory = intake.factory
            self._choices = self.options.defaults
        if type(key) is not str:
            return None  # refused the general way
        plans = self._common_plans
        plan = plans.get(key, _NO_PLAN)
        if plan is _NO_PLAN:
            plan = self._plan(key)
            if len(plans) < 10_000:  # bounded: keys may come from users
                plans[key] = plan
        if (
            plan is None
            or user._forced
            or self._decision_listeners
            or not intake.running
            or get_ident() != intake.thread
        ):
            return None
        user_id = user.user_id
        outcome = decide_lean(
            plan, self.engine.forced_users, user_id, user._attributes, user._segments
        )
        if outcome is None:
            return None
        variables = outcome.variables
        if variables is None:
            variables = self._variables_of(outcome.flag, outcome.variation)
        fragment = outcome.fragment
        if fragment is not None:
            factory = intake.factory
            try:
                attributes_json = user.wire_attributes(factory)
                data = factory.visitor_impression(user_id, attributes_json, fragment)
            except InvalidInputError as exc:
                intake.impression_refused(exc)
            else:
                reason = intake.queue.put_nowait(intake.context, data)
                if reason is not None:
                    intake.refusals.refuse_event(reason)
        return Decision(
            outcome.variation_key, outcome.enabled, variables, outcome.rule_key, key, user, ()
        )

    def _plan(self, key: str) -> LeanPlan[Outcome] | None:
        """A flag's plan for the common call, or ``None`` when every call takes the
        general way (an unknown flag, options or a service the plan cannot honour)."""
        flag = self._config.flags_by_key.get(key)
        choices = self.options.defaults
        if (
            flag is None
            or choices.with_reasons
            or (choices.use_profiles and self._profiles.service is not None)
            or self._intake.queue.blocks
        ):
            return None
        factory = self._intake.factory

        def outcome(decision: VariationDecision) -> Outcome:
            variation = decision.variation
            variables: Variables | None = Variables()
            if flag.variables and choices.with_variables:
                variables = self._variables_of(flag, variation)
                if self._variables.get((id(flag), id(variation))) is not variables:
                    variables = None  # not kept by the decider (JSON values): per call
            fragment = None
            rule_type = decision.rule_type
            if choices.send_impressions and (
                rule_type is _FEATURE_TEST or self._config.send_flag_decisions
            ):
                fragment = factory.impression_fragment(
                    flag.key,
                    decision.experiment,
                    variation,
                    rule_type or _ROLLOUT,
                    decision.enabled,
                )
            return Outcome(decision, flag, variables, fragment)

        return self.engine.lean_plan(flag, outcome)
