"""The decider's half for Optimizely's calls from before ``decide``.

``activate``, ``get_variation``, ``is_feature_enabled`` and the feature variables, each
with a sync twin for :class:`~optitrack.SyncClient` that returns the impression to queue
instead of queueing it. The decision itself is the engine's, the impressions are built
with the event format of the intake, and the state they share (options, profiles,
notifications) is :class:`~optitrack._decider.Decider`'s, of which this is a part.

Owns: those calls' rules (when each sends an impression, what it notifies). Must not
touch: the decide path, the engine, the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

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
from ._events import InvalidInputError
from ._logging import logger
from ._notifications import DecisionNotification, NotificationCenter, NotificationType

if TYPE_CHECKING:
    from ._inputs import Inputs
    from ._intake import Intake
    from ._profiles import ProfileStore

__all__ = ["ClassicDecisions"]

_EXPERIMENT, _FEATURE_TEST = RuleType.EXPERIMENT, RuleType.FEATURE_TEST
_HOLDOUT, _ROLLOUT = RuleType.HOLDOUT, RuleType.ROLLOUT
_DECISION = NotificationType.DECISION


class ClassicDecisions:
    """activate, get_variation, is_feature_enabled and variables (a part of the decider)."""

    engine: DecisionEngine
    ready: bool
    _config: ProjectConfig
    _intake: Intake
    _inputs: Inputs
    _profiles: ProfileStore
    _notifications: NotificationCenter

    def _usable(self, method: str) -> bool:
        raise NotImplementedError  # the decider's

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

    async def activate(
        self, experiment_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> str | None:
        """``Client.activate``: decide an experiment, and send its impression."""
        experiment = self._activation_input(experiment_key, user_id, attributes)
        if experiment is None:
            return None
        profiles = self._profiles
        profile = await profiles.load(user_id) if profiles.service is not None else None
        key, impression = self._activation(experiment, user_id, attributes, profile)
        if profile is not None:
            await profiles.save(profile)
        if impression is not None:
            await self._intake.put_impressions([impression])
        return key

    def activate_nowait(
        self, experiment_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> tuple[str | None, bytes | None]:
        """:meth:`activate` for sync code: the variation key, and the impression to queue."""
        experiment = self._activation_input(experiment_key, user_id, attributes)
        if experiment is None:
            return None, None
        profile = self._profiles.load_nowait(user_id)
        activated = self._activation(experiment, user_id, attributes, profile)
        self._profiles.save_nowait(profile)
        return activated

    def _activation_input(
        self, experiment_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> Experiment | None:
        self._intake.require_started("activate")
        if not self._usable("activate"):
            return None
        return self._inputs.experiment(experiment_key, user_id, attributes)

    def _activation(
        self,
        experiment: Experiment,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        profile: UserProfile | None,
    ) -> tuple[str | None, bytes | None]:
        decision = self.engine.activate(
            experiment, UserInput(user_id, attributes or {}), profile, include_reasons=False
        )
        self._notify_variation(experiment, user_id, attributes, decision)
        if decision.variation is None:
            logger.info("Not activating: the user gets no variation.")
            return None, None
        factory = self._intake.factory
        data = None
        try:
            data = factory.impression(
                user_id,
                factory.attributes_json(attributes),
                "",
                experiment,
                decision.variation,
                _EXPERIMENT,
                True,
            )
        except InvalidInputError as exc:
            self._intake.impression_refused(exc)
        return decision.variation.key, data

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
        flag = self._enabled_input(feature_key, user_id, attributes)
        if flag is None:
            return False
        profiles = self._profiles
        profile = await profiles.load(user_id) if profiles.service is not None else None
        decision = self._decide_flag(flag, user_id, attributes, profile)
        if profile is not None:
            await profiles.save(profile)
        enabled, impression = self._enabled(flag, feature_key, user_id, attributes, decision)
        if impression is not None:
            await self._intake.put_impressions([impression])
        return enabled

    def is_feature_enabled_nowait(
        self, feature_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> tuple[bool, bytes | None]:
        """:meth:`is_feature_enabled` for sync code: the answer, and the impression to queue."""
        flag = self._enabled_input(feature_key, user_id, attributes)
        if flag is None:
            return False, None
        decision = self._decide_flag_nowait(flag, user_id, attributes)
        return self._enabled(flag, feature_key, user_id, attributes, decision)

    def _enabled_input(
        self, feature_key: Any, user_id: Any, attributes: Mapping[str, Any] | None
    ) -> FeatureFlag | None:
        self._intake.require_started("is_feature_enabled")
        if not self._usable("is_feature_enabled"):
            return None
        return self._inputs.flag(feature_key, user_id, attributes)

    def _enabled(
        self,
        flag: FeatureFlag,
        feature_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        decision: VariationDecision,
    ) -> tuple[bool, bytes | None]:
        source = decision.rule_type
        variation = decision.variation
        # Optimizely's SDK asks here for a featureEnabled that is true itself, not just
        # truthy (a holdout's variation excepted); datafiles hold booleans anyway.
        enabled = variation is not None and (
            variation.feature_enabled if source is _HOLDOUT else variation.feature_enabled_is_true
        )
        # Its rule for an impression: an experiment rule that decided, or (with
        # sendFlagDecisions) a rollout rule or nothing; never a holdout.
        data = None
        if ((source is _ROLLOUT or variation is None) and self._config.send_flag_decisions) or (
            source is _FEATURE_TEST and variation and decision.experiment
        ):
            factory = self._intake.factory
            try:
                data = factory.impression(
                    user_id,
                    factory.attributes_json(attributes),
                    flag.key,
                    decision.experiment,
                    variation,
                    source or _ROLLOUT,
                    enabled,
                )
            except InvalidInputError as exc:
                self._intake.impression_refused(exc)
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
        return enabled, data

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
            logger.error("Variable with key %r not found in the datafile.", variable_key)
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


def _source_info(decision: VariationDecision) -> dict[str, Any]:
    if decision.rule_type in (RuleType.FEATURE_TEST, RuleType.HOLDOUT):
        return {"experiment_key": decision.rule_key, "variation_key": decision.variation_key}
    return {}
