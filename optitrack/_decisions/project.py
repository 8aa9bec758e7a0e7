"""The project config: one read-only index of a datafile, with Optimizely's precedence.

Every look-up that tracking and deciding need is one dict access here, and every index is
built the way optimizely-sdk 5.7.0's ``ProjectConfig`` builds its own, quirks included, so
that what a user reads from :class:`ProjectConfig` is what the decision engine decides
with:

* ``experiments_by_id`` holds the experiments, then the rollout rules, then the grouped
  experiments, each later one replacing an earlier one with the same id;
  ``experiments_by_key`` holds the last of those with each key.
* An experiment of ``type`` ``"fr"`` (feature rollout) gets its flag's "Everyone Else"
  variation added to its variations and, with ``endOfRange`` 10000, to its traffic
  allocation (:attr:`ProjectConfig.appended_allocation`).
* A holdout's variations replace those of an experiment with the same key or id.
* Feature variable values are looked up by variation id across the whole datafile.

Owns: indexing a validated :class:`.Datafile`, and :func:`load_datafile`. Must not touch:
validation (:mod:`.datafile`), compiling or deciding (:mod:`.rules`, :mod:`.engine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from .._logging import logger
from .datafile import (
    Attribute,
    Audience,
    Datafile,
    DatafileSource,
    Event,
    Experiment,
    FeatureFlag,
    Group,
    Holdout,
    Rollout,
    TypedAudience,
    Variation,
    parse_datafile,
)

__all__ = ["ProjectConfig", "empty_config", "load_datafile"]

RESERVED_ATTRIBUTE_PREFIX: Final = "$opt_"
US_EVENT_ENDPOINT: Final = "https://logx.optimizely.com/v1/events"
EU_EVENT_ENDPOINT: Final = "https://eu.logx.optimizely.com/v1/events"
_TYPE_FEATURE_ROLLOUT: Final = "fr"
_EVERYONE_ELSE_END_OF_RANGE: Final = 10_000


def load_datafile(source: DatafileSource) -> ProjectConfig:
    """Load and validate a project datafile.

    Args:
        source: The datafile as JSON text or bytes, a path to a JSON file (a
            ``pathlib.Path``, or a string that is not JSON text), or a mapping (already
            parsed JSON).

    Returns:
        The indexed, read-only project config.

    Raises:
        DatafileError: The datafile is not JSON, misses a required key, has a value of the
            wrong type, an unsupported ``version`` or an ``endOfRange`` out of ``0..10000``,
            or nests deeper than 100 levels (an audience's ``conditions`` string too). The
            message names every problem and where it is.
    """
    datafile, text = parse_datafile(source)
    return ProjectConfig(datafile, text)


def empty_config() -> ProjectConfig:
    """A project with nothing in it: what a client holds before it has a datafile."""
    empty: dict[str, Any] = {"version": "4", "accountId": "", "projectId": "", "revision": ""}
    for section in ("attributes", "audiences", "events", "experiments", "groups"):
        empty[section] = []
    return load_datafile(empty)


def _frozen(index: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({key: MappingProxyType(dict(inner)) for key, inner in index.items()})


class ProjectConfig:
    """The read-only, indexed view of a datafile, as Optimizely's SDKs index it.

    Built by :func:`load_datafile`. Every mapping is read-only; where several entities
    share a key or an id, the one Optimizely's SDK finds is the one here (see the module
    documentation of the precedence).

    Attributes:
        datafile: The validated datafile this config was built from.
        datafile_text: Its JSON text.
        revision: The datafile's revision.
        sdk_key: The datafile's ``sdkKey``, or ``None``.
        environment_key: The datafile's ``environmentKey``, or ``None``.
        region: ``"EU"`` or ``"US"``.
        default_event_endpoint: The Events API of that region.
        events_by_key: Conversion events by key.
        attributes_by_key: Custom attributes by key.
        audiences_by_id: Audiences by id (typed audiences replace legacy ones).
        rollouts_by_id: Rollouts by id.
        flags_by_key: Feature flags by key.
        flags_by_experiment_id: The flags whose experiment rules include an experiment.
        experiments_by_id: Experiments, rollout rules and grouped experiments by id.
        experiments_by_key: The same, by key.
        group_by_experiment_id: The group of each grouped experiment.
        variations_by_key: Experiment key, then variation key, to variation.
        variations_by_id: Experiment key, then variation id, to variation.
        variations_by_experiment_id: Experiment (or holdout) id, then variation id, to
            variation.
        flag_variations_by_key: Flag key, then variation key, to the first variation of
            the flag's rules with that key (what forced decisions name).
        flag_variations_by_id: Flag key, then variation id, to variation (what
            impressions name).
        variable_values: Variation id, then variable id, to the variation's raw value.
        appended_allocation: Rule id to the traffic ranges added to the rule's own
            (a feature rollout's "Everyone Else").
        local_holdouts: The local holdouts that name their rules (others are ignored).
        holdout_ids: The ids of every holdout, global or local.
    """

    def __init__(self, datafile: Datafile, text: str | None = None) -> None:
        self.datafile = datafile
        self._text = text
        self.account_id = datafile.account_id
        self.project_id = datafile.project_id
        self.revision = datafile.revision
        self.sdk_key = datafile.sdk_key
        self.environment_key = datafile.environment_key
        self.anonymize_ip = datafile.anonymize_ip
        self.bot_filtering = datafile.bot_filtering
        self.send_flag_decisions = datafile.send_flag_decisions
        self.region = "EU" if str(datafile.region or "").upper() == "EU" else "US"
        self.default_event_endpoint = (
            EU_EVENT_ENDPOINT if self.region == "EU" else US_EVENT_ENDPOINT
        )

        self.events_by_key: Mapping[str, Event] = _by(datafile.events, "key")
        self.attributes_by_key: Mapping[str, Attribute] = _by(datafile.attributes, "key")
        audiences: dict[str, Audience | TypedAudience] = {a.id: a for a in datafile.audiences}
        audiences.update((a.id, a) for a in datafile.typed_audiences)
        self.audiences_by_id: Mapping[str, Audience | TypedAudience] = MappingProxyType(audiences)
        rollouts: dict[str, Rollout] = {r.id: r for r in datafile.rollouts}
        self.rollouts_by_id: Mapping[str, Rollout] = MappingProxyType(rollouts)
        self.flags_by_key: Mapping[str, FeatureFlag] = _by(datafile.feature_flags, "key")
        flags_of: dict[str, list[FeatureFlag]] = {}
        for flag in datafile.feature_flags:
            for experiment_id in flag.experiment_ids:
                flags_of.setdefault(experiment_id, []).append(flag)
        self.flags_by_experiment_id: Mapping[str, tuple[FeatureFlag, ...]] = MappingProxyType(
            {k: tuple(v) for k, v in flags_of.items()}
        )

        experiments, group_of = _experiment_id_map(datafile, rollouts)
        self.experiments_by_id: Mapping[str, Experiment] = MappingProxyType(experiments)
        self.experiments_by_key: Mapping[str, Experiment] = _by(experiments.values(), "key")
        self.group_by_experiment_id: Mapping[str, Group] = MappingProxyType(group_of)

        index = _VariationIndex(experiments.values())
        appended = index.add_flags(self.flags_by_key.values(), experiments, rollouts)
        self.local_holdouts = _local_holdouts(datafile)
        holdouts = (*datafile.holdouts, *self.local_holdouts)
        self.holdout_ids = frozenset(h.id for h in holdouts)
        index.add_holdouts(holdouts)

        self.variations_by_key: Mapping[str, Mapping[str, Variation]] = _frozen(index.by_key)
        self.variations_by_id: Mapping[str, Mapping[str, Variation]] = _frozen(index.by_id)
        self.variations_by_experiment_id: Mapping[str, Mapping[str, Variation]] = _frozen(
            index.of_experiment
        )
        self.variable_values: Mapping[str, Mapping[str, Any]] = _frozen(index.usages)
        self.appended_allocation: Mapping[str, tuple[tuple[int, str], ...]] = MappingProxyType(
            {k: tuple(v) for k, v in appended.items()}
        )
        self.flag_variations_by_key: Mapping[str, Mapping[str, Variation]] = _frozen(
            index.flag_by_key
        )
        self.flag_variations_by_id: Mapping[str, Mapping[str, Variation]] = _frozen(
            index.flag_by_id
        )
        self._warn_dangling_references()

    def _warn_dangling_references(self) -> None:
        for experiment in self.experiments_by_id.values():
            for audience_id in experiment.audience_ids:
                if audience_id not in self.audiences_by_id:
                    logger.warning(
                        "Experiment %r refers to audience %r, which is not in the datafile; "
                        "it evaluates to unknown.",
                        experiment.key,
                        audience_id,
                    )
        for flag in self.flags_by_key.values():
            for experiment_id in flag.experiment_ids:
                if experiment_id not in self.experiments_by_id:
                    logger.warning(
                        "Flag %r refers to experiment %r, which is not in the datafile.",
                        flag.key,
                        experiment_id,
                    )
            if flag.rollout_id and flag.rollout_id not in self.rollouts_by_id:
                logger.warning(
                    "Flag %r refers to rollout %r, which is not in the datafile.",
                    flag.key,
                    flag.rollout_id,
                )

    @property
    def datafile_text(self) -> str:
        """The datafile as JSON text: as it was read (rebuilt from the model when it was
        given parsed: the keys optitrack knows, in camelCase)."""
        if self._text is None:
            self._text = self.datafile.model_dump_json(by_alias=True, exclude_none=True)
        return self._text

    def attribute_entity_id(self, key: str) -> str | None:
        """The ``entity_id`` an attribute is sent with, or ``None`` when it is not sent.

        Args:
            key: The attribute key the caller passed.

        Returns:
            The datafile attribute's id; the key itself for a ``$opt_`` key that is not in
            the datafile; ``None`` for any other key.
        """
        attribute = self.attributes_by_key.get(key)
        if attribute is not None:
            return attribute.id or None
        if key.startswith(RESERVED_ATTRIBUTE_PREFIX):
            return key
        return None

    def __repr__(self) -> str:
        return (
            f"ProjectConfig(account_id={self.account_id!r}, project_id={self.project_id!r}, "
            f"revision={self.revision!r})"
        )


def _by(items: Any, attr: str) -> Mapping[str, Any]:
    # Later entries win over earlier ones with the same key, as in Optimizely's SDK.
    return MappingProxyType({getattr(item, attr): item for item in items})


def _experiment_id_map(
    datafile: Datafile, rollouts: Mapping[str, Rollout]
) -> tuple[dict[str, Experiment], dict[str, Group]]:
    """Optimizely's experiment_id_map: experiments, then rollout rules, then grouped ones."""
    experiments: dict[str, Experiment] = {e.id: e for e in datafile.experiments}
    for rollout in rollouts.values():
        experiments.update((rule.id, rule) for rule in rollout.experiments)
    group_of: dict[str, Group] = {}
    for group in {g.id: g for g in datafile.groups}.values():
        for experiment in {e.id: e for e in group.experiments}.values():
            experiments[experiment.id] = experiment
            group_of[experiment.id] = group
    return experiments, group_of


def _local_holdouts(datafile: Datafile) -> tuple[Holdout, ...]:
    for holdout in datafile.holdouts:
        if holdout.included_rules is not None:
            logger.warning(
                "Global holdout %r has includedRules, which are ignored: global holdouts "
                "apply to every flag.",
                holdout.key,
            )
    kept: list[Holdout] = []
    for holdout in datafile.local_holdouts:
        if holdout.included_rules is None:
            logger.error(
                "Local holdout %r has no includedRules and is left out of decisions.",
                holdout.id,
            )
        else:
            kept.append(holdout)
    return tuple(kept)


class _VariationIndex:
    """The variation indexes, built in Optimizely's order (each step may replace)."""

    def __init__(self, experiments: Any) -> None:
        self.by_key: dict[str, dict[str, Variation]] = {}  # by experiment key
        self.by_id: dict[str, dict[str, Variation]] = {}  # by experiment key
        self.of_experiment: dict[str, dict[str, Variation]] = {}  # by experiment id
        self.usages: dict[str, dict[str, Any]] = {}  # by variation id
        self.flag_by_key: dict[str, dict[str, Variation]] = {}  # by flag key
        self.flag_by_id: dict[str, dict[str, Variation]] = {}  # by flag key
        for experiment in experiments:
            keyed = {v.key: v for v in experiment.variations}
            self.by_key[experiment.key] = keyed
            self.by_id[experiment.key] = {v.id: v for v in keyed.values()}
            self.of_experiment[experiment.id] = {v.id: v for v in keyed.values()}
            for variation in keyed.values():
                self.usages[variation.id] = {u.id: u.value for u in variation.variables}

    def add_flags(
        self,
        flags: Any,
        experiments: Mapping[str, Experiment],
        rollouts: Mapping[str, Rollout],
    ) -> dict[str, list[tuple[int, str]]]:
        """Index each flag's variations, after giving its ``fr`` rules "Everyone Else".

        Returns:
            The traffic ranges appended to ``fr`` rules, by rule id.
        """
        appended: dict[str, list[tuple[int, str]]] = {}
        for flag in flags:
            rule_ids = [i for i in flag.experiment_ids if i in experiments]
            rollout = rollouts.get(flag.rollout_id) if flag.rollout_id else None
            if rollout is not None and rollout.experiments and rollout.experiments[-1].variations:
                everyone_else = rollout.experiments[-1].variations[0]
                for rule_id in rule_ids:
                    rule = experiments[rule_id]
                    if rule.type == _TYPE_FEATURE_ROLLOUT:
                        appended.setdefault(rule.id, []).append(
                            (_EVERYONE_ELSE_END_OF_RANGE, everyone_else.id)
                        )
                        self._add_everyone_else(rule, everyone_else)
            if rollout is not None:
                rule_ids += [rule.id for rule in rollout.experiments]
            # Forced decisions may name any variation of any of the flag's rules, and
            # impressions carry the flag's first variation with the decided id.
            seen: set[str] = set()
            keyed: dict[str, Variation] = {}
            ided: dict[str, Variation] = {}
            for rule_id in rule_ids:
                for variation in self.of_experiment[rule_id].values():
                    if variation.id not in seen:
                        seen.add(variation.id)
                        keyed.setdefault(variation.key, variation)
                        ided[variation.id] = variation
            self.flag_by_key[flag.key] = keyed
            self.flag_by_id[flag.key] = ided
        return appended

    def _add_everyone_else(self, rule: Experiment, everyone_else: Variation) -> None:
        self.by_key[rule.key][everyone_else.key] = everyone_else
        self.by_id[rule.key][everyone_else.id] = everyone_else
        self.of_experiment[rule.id][everyone_else.id] = everyone_else
        self.usages[everyone_else.id] = {u.id: u.value for u in everyone_else.variables}

    def add_holdouts(self, holdouts: tuple[Holdout, ...]) -> None:
        for holdout in holdouts:
            self.by_key[holdout.key] = {v.key: v for v in holdout.variations}
            self.by_id[holdout.key] = {v.id: v for v in holdout.variations}
            self.of_experiment[holdout.id] = {v.id: v for v in holdout.variations}
