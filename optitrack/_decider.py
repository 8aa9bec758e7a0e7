"""The decider: every decision call, from the caller's input to the decision and its events.

One path for ``decide``, ``decide_for_keys``, ``decide_all``, ``activate``,
``get_variation``, ``is_feature_enabled`` and the feature variables: check the input,
read decide options, read the user profile, ask the engine, build the impressions the
decision calls for (each call keeps Optimizely's own rule for when it sends one), queue
them, save the profile, and tell the notification listeners.

Owns: that path. Must not touch: how a variation is
chosen (``_decisions``), how events are serialized (``_events``) or queued (the intake).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ._decisions import (
    DecisionEngine,
    Experiment,
    FeatureFlag,
    ProjectConfig,
    RuleType,
    UserInput,
    UserProfile,
    VariationDecision,
)
from ._exceptions import DecisionError
from ._inputs import Inputs
from ._intake import RUNNING, Intake
from ._logging import logger
from ._notifications import DecisionNotification, NotificationCenter, NotificationType
from ._options import Choices, DecideOptions
from ._profiles import ProfileStore
from ._results import Reason
from ._user import DecideOption, Decision, UserContext

__all__ = ["Decider"]

_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})
# Enum members as module constants: the hot paths compare them, and a module global is
# several times cheaper to read than a class attribute of an enum.
_EXPERIMENT, _FEATURE_TEST = RuleType.EXPERIMENT, RuleType.FEATURE_TEST
_HOLDOUT, _ROLLOUT = RuleType.HOLDOUT, RuleType.ROLLOUT
_DECISION = NotificationType.DECISION


class Decider:
    """Makes every decision call for a client.

    Args:
        engine: The decision engine (it holds the project config).
        ready: Whether that config is a datafile's (else every call is refused with
            ``no_datafile`` until :meth:`update`).
        intake: Where impressions go.
        notifications: The client's notification center.
        profiles: The client's user profile service, wrapped.
        strict: Raise :class:`DecisionError` on invalid input instead of logging it.
        default_options: Options added to every ``decide``.
    """

    def __init__(
        self,
        engine: DecisionEngine,
        ready: bool,
        intake: Intake,
        notifications: NotificationCenter,
        profiles: ProfileStore,
        *,
        strict: bool,
        default_options: Iterable[DecideOption | str],
    ) -> None:
        self.engine = engine
        self.ready = ready
        self._config = engine.config
        self._intake = intake
        self._notifications = notifications
        self._profiles = profiles
        self._strict = strict
        self._inputs = Inputs(engine.config, strict)
        self.options = DecideOptions(default_options, self._inputs.invalid)

    @property
    def config(self) -> ProjectConfig:
        """The project config decisions are made with."""
        return self._config

    def update(self, config: ProjectConfig) -> None:
        """Decide with a new datafile from now on (forced variations are kept)."""
        self.engine.update_config(config)
        self._config = self._inputs.config = config
        self.ready = True

    # -- decide ----------------------------------------------------------------------

    async def decide(
        self, user: UserContext, key: str, options: Iterable[DecideOption | str] | None
    ) -> Decision:
        """Decide one flag for a user (:meth:`UserContext.decide`)."""
        if not isinstance(key, str):
            self._inputs.invalid(f"Flag key must be a str, not {key!r:.60}.")
            reason = f'No flag was found for key "{key}".'
            return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))
        if self._intake.state != RUNNING:
            self._intake.require_started("decide")
            if not self.ready:
                return self._no_datafile_decision(user, key)
        choices = self.options.read(options) if options else self.options.defaults
        flag = self._config.flags_by_key.get(key)
        if flag is None:
            reason = f'No flag was found for key "{key}".'
            logger.error("No feature flag was found for key '%s'.", key)
            if self._strict:
                raise DecisionError(reason)
            return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))
        profile = None
        if self._profiles.service is not None and choices.use_profiles:
            profile = await self._profiles.load(user.user_id)
        impressions: list[bytes] = []
        result = self._decide_for(user, flag, profile, choices, impressions)
        if impressions:
            await self._intake.put_impressions(impressions)
        if profile is not None and profile.changed:
            await self._profiles.save(profile)
        return result

    async def decide_many(
        self,
        user: UserContext,
        keys: Sequence[str] | None,
        options: Iterable[DecideOption | str] | None,
    ) -> dict[str, Decision]:
        """Decide flags for a user: ``keys``, or every flag of the datafile for ``None``."""
        self._intake.require_started("decide")
        if not self.ready:
            keys = [] if keys is None else keys
            return {key: self._no_datafile_decision(user, key) for key in keys}
        choices = self.options.read(options) if options else self.options.defaults
        flags = self._config.flags_by_key
        wanted = [f.key for f in self._config.datafile.feature_flags] if keys is None else keys
        profile = None
        if choices.use_profiles and self._profiles.service is not None:
            profile = await self._profiles.load(user.user_id)
        decisions: dict[str, Decision] = {}
        impressions: list[bytes] = []
        for key in wanted:
            flag = flags.get(key) if isinstance(key, str) else None
            if flag is None:
                decisions[key] = Decision(None, False, _NO_VARIABLES, None, key, user)
                continue
            result = self._decide_for(user, flag, profile, choices, impressions)
            if result.enabled or not choices.enabled_only:
                decisions[key] = result
        if impressions:
            await self._intake.put_impressions(impressions)
        if profile is not None and profile.changed:
            await self._profiles.save(profile)
        return decisions

    def _decide_for(
        self,
        user: UserContext,
        flag: FeatureFlag,
        profile: UserProfile | None,
        choices: Choices,
        impressions: list[bytes],
    ) -> Decision:
        """Decide a flag for a user; the impressions it calls for go on ``impressions``."""
        user_input = UserInput(user.user_id, user._attributes, user._segments)
        decision = self.engine.decide_flag(
            flag, user_input, user._forced, profile, include_reasons=choices.with_reasons
        )
        enabled = decision.enabled
        variation = decision.variation
        dispatched = False
        if choices.send_impressions:
            rule_type = decision.rule_type
            side = decision.holdout
            if side is not None and rule_type is not _HOLDOUT:
                impressions.append(self._impression(user, flag.key, side, side.enabled))
                dispatched = True
            if (
                rule_type is _FEATURE_TEST
                or rule_type is _HOLDOUT
                or self._config.send_flag_decisions
            ):
                impressions.append(self._impression(user, flag.key, decision, enabled))
                dispatched = True
        variables: Mapping[str, Any] = _NO_VARIABLES
        if flag.variables and choices.with_variables:
            variables = MappingProxyType(self.engine.all_variables(flag, variation))
        result = Decision(
            variation.key if variation is not None else None,
            enabled,
            variables,
            decision.rule_key,
            flag.key,
            user,
            decision.reasons if choices.with_reasons else (),
        )
        if self._notifications.has_listeners(_DECISION):
            self._notify(
                "flag",
                user.user_id,
                user._attributes,
                {
                    "flag_key": flag.key,
                    "enabled": enabled,
                    "variables": dict(variables),
                    "variation_key": result.variation_key,
                    "rule_key": result.rule_key,
                    "reasons": list(result.reasons),
                    "decision_event_dispatched": dispatched,
                    "experiment_id": decision.experiment.id if decision.experiment else None,
                    "variation_id": variation.id if variation else None,
                },
            )
        return result

    # -- the calls of Optimizely's earlier API ----------------------------------------

    async def activate(
        self, experiment_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> str | None:
        """``Client.activate``: decide an experiment, and send its impression."""
        self._intake.require_started("activate")
        if not self._usable("activate"):
            return None
        experiment = self._inputs.experiment(experiment_key, user_id, attributes)
        if experiment is None:
            return None
        profiles = self._profiles
        profile = await profiles.load(user_id) if profiles.service is not None else None
        decision = self.engine.activate(
            experiment, UserInput(user_id, attributes or {}), profile, include_reasons=False
        )
        if profile is not None:
            await profiles.save(profile)
        self._notify_variation(experiment, user_id, attributes, decision)
        if decision.variation is None:
            logger.info('Not activating user "%s".', user_id)
            return None
        factory = self._intake.factory
        data = factory.impression(
            user_id,
            factory.attributes_json(attributes),
            "",
            experiment,
            decision.variation,
            _EXPERIMENT,
            True,
        )
        await self._intake.put_impressions([data])
        return decision.variation.key

    def get_variation(
        self, experiment_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> str | None:
        """``Client.get_variation``: decide an experiment; send nothing."""
        if not self._usable("get_variation"):
            return None
        experiment = self._inputs.experiment(experiment_key, user_id, attributes)
        if experiment is None:
            return None
        profile = self._profiles.load_nowait(user_id)
        decision = self.engine.get_variation(
            experiment, UserInput(user_id, attributes or {}), profile, include_reasons=False
        )
        self._profiles.save_nowait(profile)
        self._notify_variation(experiment, user_id, attributes, decision)
        return decision.variation_key

    async def is_feature_enabled(
        self, feature_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> bool:
        """``Client.is_feature_enabled``: decide a flag; send its impression if it calls for one."""
        self._intake.require_started("is_feature_enabled")
        if not self._usable("is_feature_enabled"):
            return False
        flag = self._inputs.flag(feature_key, user_id, attributes)
        if flag is None:
            return False
        profiles = self._profiles
        profile = await profiles.load(user_id) if profiles.service is not None else None
        decision = self._decide_flag(flag, user_id, attributes, profile)
        if profile is not None:
            await profiles.save(profile)
        source = decision.rule_type
        variation = decision.variation
        # Optimizely's SDK asks here for a featureEnabled that is true itself, not just
        # truthy (a holdout's variation excepted); datafiles hold booleans anyway.
        enabled = variation is not None and (
            variation.feature_enabled if source is _HOLDOUT else variation.feature_enabled_is_true
        )
        # Its rule for an impression: an experiment rule that decided, or (with
        # sendFlagDecisions) a rollout rule or nothing; never a holdout.
        if ((source is _ROLLOUT or variation is None) and self._config.send_flag_decisions) or (
            source is _FEATURE_TEST and variation and decision.experiment
        ):
            factory = self._intake.factory
            data = factory.impression(
                user_id,
                factory.attributes_json(attributes),
                flag.key,
                decision.experiment,
                variation,
                source or _ROLLOUT,
                enabled,
            )
            await self._intake.put_impressions([data])
        if self._notifications.has_listeners(_DECISION):
            source_info = {}
            if source is _FEATURE_TEST and decision.experiment is not None:
                source_info = {
                    "experiment_key": decision.rule_key,
                    "variation_key": decision.variation_key,
                }
            self._notify(
                "feature",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": enabled,
                    "source": str(source),
                    "source_info": source_info,
                },
            )
        return enabled

    def variable(
        self,
        feature_key: Any,
        variable_key: Any,
        user_id: Any,
        attributes: Mapping[str, Any] | None,
        expected: str | None,
    ) -> Any:
        """A flag variable's typed value for a user (``expected``: the getter's type)."""
        if not self._usable("get_feature_variable"):
            return None
        if not isinstance(variable_key, str) or not variable_key:
            return self._inputs.invalid('Provided "variable_key" is in an invalid format.')
        flag = self._inputs.flag(feature_key, user_id, attributes)
        if flag is None:
            return None
        kind = self.engine.variable_type(flag, variable_key)
        if kind is None:
            logger.error('Variable with key "%s" not found in the datafile.', variable_key)
            return None
        if expected is not None and kind != expected:
            logger.warning(
                'Requested variable type "%s", but variable is of type "%s". '
                "Use correct API to retrieve value. Returning None.",
                expected,
                kind,
            )
            return None
        decision = self._decide_flag_nowait(flag, user_id, attributes)
        value = self.engine.variable_value(flag, variable_key, decision.variation)
        if self._notifications.has_listeners(_DECISION):
            self._notify(
                "feature-variable",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": decision.enabled,
                    "source": str(decision.rule_type),
                    "variable_key": variable_key,
                    "variable_value": value,
                    "variable_type": kind,
                    "source_info": _source_info(decision),
                },
            )
        return value

    def all_variables(
        self, feature_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Every variable of a flag for a user, typed; ``None`` for invalid input."""
        if not self._usable("get_all_feature_variables"):
            return None
        flag = self._inputs.flag(feature_key, user_id, attributes)
        if flag is None:
            return None
        decision = self._decide_flag_nowait(flag, user_id, attributes)
        values = self.engine.all_variables(flag, decision.variation)
        if self._notifications.has_listeners(_DECISION):
            self._notify(
                "all-feature-variables",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": decision.enabled,
                    "variable_values": values,
                    "source": str(decision.rule_type),
                    "source_info": _source_info(decision),
                },
            )
        return values

    # -- pieces ----------------------------------------------------------------------

    def _usable(self, method: str) -> bool:
        """Whether there is a datafile to decide with; refuses the call when not."""
        if self.ready:
            return True
        message = f"{method}() refused: no datafile yet (no_datafile)."
        # Counted and logged as track's refusals are (a flood of calls, one line).
        self._intake.refusals.refuse(Reason.NO_DATAFILE, message, method)
        if self._strict:
            raise DecisionError(message)
        return False

    def _no_datafile_decision(self, user: UserContext, key: str) -> Decision:
        self._usable("decide")
        reason = "No datafile yet (no_datafile): the flag cannot be decided."
        return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))

    def _decide_flag(
        self,
        flag: FeatureFlag,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        profile: UserProfile | None,
    ) -> VariationDecision:
        """A flag's decision for the calls that take a user id (no forced decisions)."""
        user = UserInput(user_id, attributes or {})
        return self.engine.decide_flag(flag, user, {}, profile, include_reasons=False)

    def _decide_flag_nowait(
        self, flag: FeatureFlag, user_id: str, attributes: Mapping[str, Any] | None
    ) -> VariationDecision:
        """:meth:`_decide_flag` for the sync calls, with the sync profile service."""
        profile = self._profiles.load_nowait(user_id)
        decision = self._decide_flag(flag, user_id, attributes, profile)
        self._profiles.save_nowait(profile)
        return decision

    def _impression(
        self, user: UserContext, flag_key: str, decision: VariationDecision, enabled: bool
    ) -> bytes:
        """A flag decision's impression. Without a rule (a flag-level forced decision, or
        nothing decided), the campaign, experiment and rule are empty, as Optimizely's SDK
        sends them."""
        factory = self._intake.factory
        return factory.impression(
            user.user_id,
            user.wire_attributes(factory),
            flag_key,
            decision.experiment,
            decision.variation,
            decision.rule_type or _ROLLOUT,
            enabled,
        )

    def _notify_variation(
        self,
        experiment: Experiment,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        decision: VariationDecision,
    ) -> None:
        if self._notifications.has_listeners(_DECISION):
            kind = (
                "feature-test"
                if experiment.id in self._config.flags_by_experiment_id
                else "ab-test"
            )
            self._notify(
                kind,
                user_id,
                attributes,
                {"experiment_key": experiment.key, "variation_key": decision.variation_key},
            )

    def _notify(
        self,
        kind: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        info: Mapping[str, Any],
    ) -> None:
        self._notifications.send(
            _DECISION,
            DecisionNotification(kind, user_id, MappingProxyType(dict(attributes or {})), info),
        )


def _source_info(decision: VariationDecision) -> dict[str, Any]:
    if decision.rule_type in (RuleType.FEATURE_TEST, RuleType.HOLDOUT):
        return {"experiment_key": decision.rule_key, "variation_key": decision.variation_key}
    return {}
