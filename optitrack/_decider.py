"""The decider: every decision call, from the caller's input to the decision and its events.

One path for ``decide``, ``decide_for_keys``, ``decide_all``, and (through
:class:`~optitrack._decider_classic.ClassicDecisions`) ``activate``,
``get_variation``, ``is_feature_enabled`` and the feature variables: check the input,
read decide options, read the user profile, ask the engine, build the impressions the
decision calls for (each call keeps Optimizely's own rule for when it sends one), queue
them, save the profile, and tell the notification listeners.

Owns: that path. Must not touch: how a variation is
chosen (``_decisions``), how events are serialized (``_events``) or queued (the intake).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from threading import get_ident
from typing import Any

from ._decider_classic import ClassicDecisions
from ._decider_common import CommonDecisions
from ._decisions import (
    DecisionEngine,
    FeatureFlag,
    ProjectConfig,
    RuleType,
    UserInput,
    UserProfile,
    Variation,
    VariationDecision,
)
from ._events import InvalidInputError
from ._exceptions import DecisionError
from ._inputs import Inputs
from ._intake import Intake
from ._logging import logger
from ._notifications import NotificationCenter, NotificationType
from ._options import Choices, DecideOptions
from ._profiles import ProfileStore
from ._results import Reason
from ._user import DecideOption, Decision, UserContext, Variables

__all__ = ["Decider"]

_NO_VARIABLES = Variables()
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
# Enum members as module constants: the hot paths compare them, and a module global is
# several times cheaper to read than a class attribute of an enum.
_EXPERIMENT, _FEATURE_TEST = RuleType.EXPERIMENT, RuleType.FEATURE_TEST
_HOLDOUT, _ROLLOUT = RuleType.HOLDOUT, RuleType.ROLLOUT
_DECISION = NotificationType.DECISION


class Decider(ClassicDecisions, CommonDecisions):
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
        self._decision_listeners = notifications.listeners_of(_DECISION)
        self._profiles = profiles
        self._strict = strict
        self._inputs = Inputs(engine.config, strict)
        self.options = DecideOptions(default_options, self._inputs.invalid)
        # (flag, variation) by identity -> their variables, when every value is immutable:
        # read-only, so decisions can share them. Emptied with each new datafile.
        self._variables: dict[tuple[int, int], Variables] = {}
        self._forget_plans()
        #: Whether a caller of :meth:`decide_common` should let the worker have a turn.
        self.turn_due = intake.queue.offered

    @property
    def config(self) -> ProjectConfig:
        """The project config decisions are made with."""
        return self._config

    def update(self, config: ProjectConfig) -> None:
        """Decide with a new datafile from now on (forced variations are kept)."""
        self.engine.update_config(config)
        self._config = self._inputs.config = config
        self._variables = {}
        self._forget_plans()
        self.ready = True

    # -- decide ----------------------------------------------------------------------

    def _prepare(
        self, user: UserContext, key: str, options: Iterable[DecideOption | str] | None
    ) -> tuple[FeatureFlag, Choices] | Decision:
        """The flag and options of a ``decide``, or its answer when it cannot decide."""
        if not isinstance(key, str):
            self._inputs.invalid(f"Flag key must be a str, not {key!r:.60}.")
            reason = f'No flag was found for key "{key}".'
            return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))
        if not self._intake.running:
            self._intake.require_started("decide")
            if not self.ready:
                return self._no_datafile_decision(user, key)
        choices = self.options.read(options) if options else self.options.defaults
        flag = self._config.flags_by_key.get(key)
        if flag is None:
            reason = f'No flag was found for key "{key}".'
            logger.error("No feature flag was found for key %r.", key)
            if self._strict:
                raise DecisionError(reason)
            return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))
        return flag, choices

    async def decide(
        self, user: UserContext, key: str, options: Iterable[DecideOption | str] | None
    ) -> Decision:
        """Decide one flag for a user (:meth:`UserContext.decide`)."""
        intake = self._intake
        # The common call (a known flag, no options, a running client) skips _prepare.
        flag = None
        if not options and intake.running and type(key) is str:
            flag = self._config.flags_by_key.get(key)
        if flag is None:
            prepared = self._prepare(user, key, options)
            if type(prepared) is Decision:
                return prepared
            flag, choices = prepared  # type: ignore[misc]
        else:
            choices = self.options.defaults
        profile = None
        if self._profiles.service is not None and choices.use_profiles:
            profile = await self._profiles.load(user.user_id)
        impressions: list[bytes] = []
        result = self._decide_for(user, flag, profile, choices, impressions)
        if impressions:
            if len(impressions) == 1 and intake.running and get_ident() == intake.thread:
                # put_impressions for the common one, without its own coroutine.
                reason = await intake.queue.put(intake.context, impressions[0])
                if reason is not None:
                    intake.refusals.refuse_event(reason)
            else:
                await intake.put_impressions(impressions)
        if profile is not None and profile.changed:
            await self._profiles.save(profile)
        return result

    def decide_nowait(
        self, user: UserContext, key: str, options: Iterable[DecideOption | str] | None
    ) -> tuple[Decision, list[bytes]]:
        """:meth:`decide` for sync code: the decision, and the impressions to queue.

        Uses the user profile service only when it is a sync one.
        """
        prepared = self._prepare(user, key, options)
        if type(prepared) is Decision:
            return prepared, []
        flag, choices = prepared  # type: ignore[misc]
        profile = self._profiles.load_nowait(user.user_id) if choices.use_profiles else None
        impressions: list[bytes] = []
        result = self._decide_for(user, flag, profile, choices, impressions)
        self._profiles.save_nowait(profile)
        return result, impressions

    def _prepare_many(
        self, user: UserContext, keys: Sequence[str] | None, options: Any
    ) -> tuple[Sequence[str], Choices] | dict[str, Decision]:
        self._intake.require_started("decide")
        if not self.ready:
            keys = [] if keys is None else keys
            return {key: self._no_datafile_decision(user, key) for key in keys}
        choices = self.options.read(options) if options else self.options.defaults
        wanted = [f.key for f in self._config.datafile.feature_flags] if keys is None else keys
        return wanted, choices

    async def decide_many(
        self,
        user: UserContext,
        keys: Sequence[str] | None,
        options: Iterable[DecideOption | str] | None,
    ) -> dict[str, Decision]:
        """Decide flags for a user: ``keys``, or every flag of the datafile for ``None``."""
        prepared = self._prepare_many(user, keys, options)
        if isinstance(prepared, dict):
            return prepared
        wanted, choices = prepared
        profile = None
        if choices.use_profiles and self._profiles.service is not None:
            profile = await self._profiles.load(user.user_id)
        impressions: list[bytes] = []
        decisions = self._decide_all_of(user, wanted, choices, profile, impressions)
        if impressions:
            await self._intake.put_impressions(impressions)
        if profile is not None and profile.changed:
            await self._profiles.save(profile)
        return decisions

    def decide_many_nowait(
        self,
        user: UserContext,
        keys: Sequence[str] | None,
        options: Iterable[DecideOption | str] | None,
    ) -> tuple[dict[str, Decision], list[bytes]]:
        """:meth:`decide_many` for sync code: the decisions, and the impressions to queue."""
        prepared = self._prepare_many(user, keys, options)
        if isinstance(prepared, dict):
            return prepared, []
        wanted, choices = prepared
        profile = self._profiles.load_nowait(user.user_id) if choices.use_profiles else None
        impressions: list[bytes] = []
        decisions = self._decide_all_of(user, wanted, choices, profile, impressions)
        self._profiles.save_nowait(profile)
        return decisions, impressions

    def _decide_all_of(
        self,
        user: UserContext,
        wanted: Sequence[str],
        choices: Choices,
        profile: UserProfile | None,
        impressions: list[bytes],
    ) -> dict[str, Decision]:
        flags = self._config.flags_by_key
        decisions: dict[str, Decision] = {}
        for key in wanted:
            flag = flags.get(key) if isinstance(key, str) else None
            if flag is None:
                decisions[key] = Decision(None, False, _NO_VARIABLES, None, key, user)
                continue
            result = self._decide_for(user, flag, profile, choices, impressions)
            if result.enabled or not choices.enabled_only:
                decisions[key] = result
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
        decision = None
        if profile is None and not user._forced and not choices.with_reasons:
            decision = self.engine.decide_flag_lean(
                flag, user.user_id, user._attributes, user._segments
            )
        if decision is None:
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
                self._impression(user, flag.key, side, side.enabled, impressions)
                dispatched = True
            if (
                rule_type is _FEATURE_TEST
                or rule_type is _HOLDOUT
                or self._config.send_flag_decisions
            ):
                self._impression(user, flag.key, decision, enabled, impressions)
                dispatched = True
        variables: Mapping[str, Any] = _NO_VARIABLES
        if flag.variables and choices.with_variables:
            variables = self._variables_of(flag, variation)
        result = Decision(
            variation.key if variation is not None else None,
            enabled,
            variables,
            decision.rule_key,
            flag.key,
            user,
            decision.reasons if choices.with_reasons else (),
        )
        if self._decision_listeners:
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

    def _variables_of(self, flag: FeatureFlag, variation: Variation | None) -> Variables:
        key = (id(flag), id(variation))
        variables = self._variables.get(key)
        if variables is None:
            variables = Variables(self.engine.all_variables(flag, variation))
            # JSON variables are dicts and lists a caller may change: never shared.
            if len(self._variables) < 10_000 and all(
                type(value) in _IMMUTABLE for value in variables.values()
            ):
                self._variables[key] = variables
        return variables

    def _impression(
        self,
        user: UserContext,
        flag_key: str,
        decision: VariationDecision,
        enabled: bool,
        impressions: list[bytes],
    ) -> None:
        """Add a flag decision's impression to ``impressions``. Without a rule (a
        flag-level forced decision, or nothing decided), the campaign, experiment and rule
        are empty, as Optimizely's SDK sends them. A user id or attributes that cannot be
        sent make no impression (counted and logged)."""
        factory = self._intake.factory
        try:
            impressions.append(
                factory.impression(
                    user.user_id,
                    user.wire_attributes(factory),
                    flag_key,
                    decision.experiment,
                    decision.variation,
                    decision.rule_type or _ROLLOUT,
                    enabled,
                )
            )
        except InvalidInputError as exc:
            self._intake.impression_refused(exc)
