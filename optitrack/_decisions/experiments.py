"""Deciding an experiment for a user: Activate's and get_variation's decision.

The order, as in optimizely-sdk 5.7.0: the experiment must be ``Running``; then a forced
variation set at run time; then the datafile's ``forcedVariations`` (whitelist); then a
variation stored in the user profile; then the audiences; then bucketing (group stage for
a ``random`` group, then variation stage), and the new variation is stored in the user
profile. Holdouts are bucketed the same way (audiences, then traffic).

:class:`ExperimentDecisions` is sync and pure: no I/O. The user profile is looked up by
the caller before deciding and saved afterwards when :attr:`.UserProfile.changed` is set.

Owns: experiment and holdout decisions, and the cache of decisions without reasons.
Must not touch: flags (:mod:`.engine`), compiling (:mod:`.rules`), indexing
(:mod:`.project`), any I/O.
"""

from __future__ import annotations

import logging
from typing import Final

from .._logging import logger
from .bucketing import find_bucket, resolve_bucketing_id
from .datafile import Experiment, Holdout, Variation
from .forced import ForcedVariations
from .project import ProjectConfig
from .records import RuleType, UserInput, UserProfile, VariationDecision
from .rules import CompiledProject, Rule

__all__ = ["ExperimentDecisions", "debug_enabled", "warn_bucketing_id"]

_BAD_BUCKETING_ID: Final = "Bucketing ID attribute is not a string. Defaulted to user_id."


class ExperimentDecisions:
    """Decides experiments (and holdouts) for users, exactly as optimizely-sdk 5.7.0 does.

    Build one per datafile (building costs one pass over it) and keep it: forced
    variations set with :meth:`set_forced_variation` live in the engine and survive
    :meth:`update_config`. Every method is sync and does no I/O.

    Args:
        config: The project config to decide with.
    """

    def __init__(self, config: ProjectConfig) -> None:
        self._forced = ForcedVariations()
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
        self._config = config
        self._compiled = CompiledProject(config)
        self._decisions: dict[tuple[int, int, RuleType | None], VariationDecision] = {}

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
        return self._config.experiments_by_key.get(experiment_key)

    def variation_by_key(self, experiment_key: str, variation_key: str) -> Variation | None:
        """A variation by experiment key and variation key, as Optimizely's SDK finds it.

        Args:
            experiment_key: The experiment key.
            variation_key: The variation key.

        Returns:
            The variation, or ``None``.
        """
        keyed = self._config.variations_by_key.get(experiment_key)
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
        return self._forced.set(self._config, experiment_key, user_id, variation_key)

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation key a user is forced into for an experiment, or ``None``.

        Args:
            experiment_key: The experiment key.
            user_id: The user id.

        Returns:
            The forced variation's key, or ``None``.
        """
        return self._forced.get(self._config, experiment_key, user_id)

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
        reasons: list[str] | None = [] if include_reasons or debug_enabled() else None
        rule = self._compiled.rule(experiment)
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
        rule: Rule,
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
        if user_id in self._forced.by_user:
            variation = self._forced.variation(self._config, rule.key, user_id, reasons)
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
            warn_bucketing_id(reasons)
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

    def _stored_variation(self, rule: Rule, profile: UserProfile) -> Variation | None:
        variation_id = profile.variation_id(rule.id)
        if not variation_id:
            return None
        by_id = self._config.variations_by_id.get(rule.key)
        try:
            variation = by_id.get(variation_id) if by_id else None
        except TypeError:  # an unhashable stored id
            return None
        if variation is None:
            logger.error("Variation ID %r is not in datafile.", variation_id)
        return variation

    def _qualifies(
        self, rule: Rule, label: str, user: UserInput, reasons: list[str] | None
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
        self, rule: Rule, bucketing_id: str, user_id: str, reasons: list[str] | None
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
        holdout: Rule,
        user: UserInput,
        bucketing_id: str,
        bad_id: bool,
        reasons: list[str] | None,
    ) -> Variation | None:
        user_id = user.user_id
        if bad_id:
            warn_bucketing_id(reasons)
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


def debug_enabled() -> bool:
    """Whether the ``optitrack`` logger logs reasons at DEBUG (they are collected then)."""
    return logger.isEnabledFor(logging.DEBUG)


def _finish(reasons: list[str] | None, include: bool) -> tuple[str, ...]:
    if not reasons:
        return ()
    if logger.isEnabledFor(logging.DEBUG):
        for reason in reasons:
            logger.debug("%s", reason)
    return tuple(reasons) if include else ()


def warn_bucketing_id(reasons: list[str] | None) -> None:
    """Log (and note in ``reasons``) a ``$opt_bucketing_id`` that is not a string."""
    logger.warning(_BAD_BUCKETING_ID)
    if reasons is not None:
        reasons.append(_BAD_BUCKETING_ID)
