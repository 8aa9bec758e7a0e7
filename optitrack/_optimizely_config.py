"""OptimizelyConfig: the project's shape, as optimizely-sdk 5.7.0's ``get_optimizely_config``.

The classes have that SDK's names and attributes, so code written against it reads ours
unchanged; they are frozen, their mappings read-only views and their lists tuples, and
``to_dict()`` turns any of them into plain dicts and lists. :func:`build_optimizely_config`
computes one from a :class:`.ProjectConfig`, the way that SDK's ``OptimizelyConfigService``
does, quirks included:

* ``audiences`` lists the typed audiences first, each with its ``conditions`` as JSON text
  (``json.dumps``, with its spaces), then the legacy ones whose id no typed audience has,
  leaving out ``$opt_dummy_audience``.
* An experiment's ``audiences`` describes its ``audienceConditions`` with audience names
  (``"us" OR "eu"``, ``NOT "us"``, ``"us" AND ("eu" OR "ca")``), an unknown id standing for
  itself; without ``audienceConditions`` it is ``""``, whatever ``audienceIds`` says. A
  bare string there is read as a list of its characters, as that SDK reads it.
* ``experiments_map`` holds the experiments, then the grouped ones (every group, repeats
  too): the last with a key wins, in the place of the first. Rollout rules are only in
  their flag's ``delivery_rules``, from the first rollout with the flag's ``rolloutId``.
* A variation's ``feature_enabled`` is ``None`` when the datafile has no ``featureEnabled``;
  the "Everyone Else" variation appended to a feature rollout (``"fr"``) rule is there too,
  with a boolean.
* An experiment's variations carry the variables of the last flag naming the experiment
  (declared by the last flag with that flag's key), with the variation's own values only
  when its ``featureEnabled`` is true: a disabled variation shows the defaults. Delivery
  rules' variations always show the defaults (of the last flag with the flag's id).
* A ``string`` variable with ``subType`` ``json`` has type ``json``, but only in the last
  flag with its key: the SDK retypes that one only.
* ``sdk_key`` and ``environment_key`` are ``""`` when the datafile has none. Holdouts are
  not part of it.

Where that SDK raises instead (a flag naming an experiment that is neither top-level nor
grouped, a condition leaf that is not a string), the closest sensible value is given: the
rule is left out, the leaf is written as JSON. A ``featureEnabled`` that is present but not
a boolean (``1``, ``"yes"``, ``null``) is given as its truth, where that SDK gives it as it
is: the datafile's model keeps only that.

Owns: the ``Optimizely*`` classes and :func:`build_optimizely_config`. Must not touch:
validating or indexing the datafile (:mod:`._decisions`), deciding, the client (which
calls :func:`build_optimizely_config`); and never imports optimizely-sdk.
"""

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Final

from ._decisions.datafile import Experiment, FeatureFlag, Variation
from ._decisions.project import ProjectConfig

__all__ = [
    "OptimizelyAttribute",
    "OptimizelyAudience",
    "OptimizelyConfig",
    "OptimizelyEvent",
    "OptimizelyExperiment",
    "OptimizelyFeature",
    "OptimizelyVariable",
    "OptimizelyVariation",
    "build_optimizely_config",
]

_OPERATORS: Final = ("and", "or", "not")
_DUMMY_AUDIENCE: Final = "$opt_dummy_audience"
_FEATURE_ROLLOUT: Final = "fr"


def _plain(value: Any) -> Any:
    if isinstance(value, _Plain):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _Plain:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This object as plain dicts and lists, by attribute name (for JSON, comparing)."""
        instance: Any = self
        return {f.name: _plain(getattr(self, f.name)) for f in fields(instance)}


@dataclass(frozen=True, slots=True)
class OptimizelyVariable(_Plain):
    """A feature variable: its ``type`` and, in a variation, its value (else its default).

    The value is the datafile's, uncast: text for every ``type`` in practice.
    """

    id: str
    key: str
    type: str
    value: Any


@dataclass(frozen=True, slots=True)
class OptimizelyVariation(_Plain):
    """A variation: ``feature_enabled`` as in the datafile (``None`` when it has none)."""

    id: str
    key: str
    feature_enabled: bool | None
    variables_map: Mapping[str, OptimizelyVariable]


@dataclass(frozen=True, slots=True)
class OptimizelyExperiment(_Plain):
    """An experiment or rule; ``audiences`` describes its audience conditions by name."""

    id: str
    key: str
    variations_map: Mapping[str, OptimizelyVariation]
    audiences: str = ""


@dataclass(frozen=True, slots=True)
class OptimizelyFeature(_Plain):
    """A flag: its experiment rules, its delivery (rollout) rules and declared variables.

    ``experiments_map`` (deprecated in that SDK) is ``experiment_rules`` by key.
    """

    id: str
    key: str
    experiments_map: Mapping[str, OptimizelyExperiment]
    variables_map: Mapping[str, OptimizelyVariable]
    delivery_rules: tuple[OptimizelyExperiment, ...] = ()
    experiment_rules: tuple[OptimizelyExperiment, ...] = ()


@dataclass(frozen=True, slots=True)
class OptimizelyAttribute(_Plain):
    """A custom attribute."""

    id: str
    key: str


@dataclass(frozen=True, slots=True)
class OptimizelyEvent(_Plain):
    """A conversion event and the experiments it is attached to."""

    id: str
    key: str
    experiment_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OptimizelyAudience(_Plain):
    """An audience; ``conditions`` is JSON text (typed audiences' too)."""

    id: str
    name: str
    conditions: str


@dataclass(frozen=True, slots=True)
class OptimizelyConfig(_Plain):
    """The project's experiments, flags, attributes, events and audiences, read-only.

    ``experiments_map`` is for legacy projects: experiment keys need not be unique across
    flags, and only the last experiment with a key is in it (use each feature's
    ``experiment_rules`` and ``delivery_rules``).
    """

    revision: str
    experiments_map: Mapping[str, OptimizelyExperiment]
    features_map: Mapping[str, OptimizelyFeature]
    datafile: str = field(repr=False)
    sdk_key: str = ""
    environment_key: str = ""
    attributes: tuple[OptimizelyAttribute, ...] = ()
    events: tuple[OptimizelyEvent, ...] = ()
    audiences: tuple[OptimizelyAudience, ...] = ()

    def get_datafile(self) -> str:
        """The datafile this config describes, as the JSON text it was given in."""
        return self.datafile


_built: "weakref.WeakKeyDictionary[ProjectConfig, OptimizelyConfig]" = weakref.WeakKeyDictionary()


def optimizely_config_of(config: ProjectConfig) -> OptimizelyConfig:
    """:func:`build_optimizely_config` of a config and its own text, built once per config."""
    built = _built.get(config)
    if built is None:
        built = _built[config] = build_optimizely_config(config, config.datafile_text)
    return built


def build_optimizely_config(config: ProjectConfig, datafile_text: str) -> OptimizelyConfig:
    """The :class:`OptimizelyConfig` of a project, as optimizely-sdk 5.7.0 builds it.

    Pure: reads ``config`` (its validated datafile and indexes) and nothing else.

    Args:
        config: The indexed project config.
        datafile_text: The datafile's JSON text, which ``get_datafile()`` returns.

    Returns:
        The config, frozen.
    """
    return _Builder(config).build(datafile_text)


# ---------------------------------------------------------------------------- audiences


def _describe(conditions: Any, names: Mapping[str, str]) -> str:
    """optimizely-sdk's ``stringify_conditions``: audience conditions, by name."""
    if not isinstance(conditions, list | str) or not conditions:
        return ""
    length = len(conditions)
    first = conditions[0]
    if length == 1 and first not in _OPERATORS:
        if isinstance(first, list):  # optimizely-sdk raises
            return _describe(first, names)
        return _quoted(first, names)
    if length == 2 and first in _OPERATORS:
        second = conditions[1]
        if type(second) is not list and second not in _OPERATORS:
            return ("NOT " if first == "not" else "") + _quoted(second, names)
    operand = "OR"
    out = ""
    for index, item in enumerate(conditions):
        if item in _OPERATORS:
            operand = item.upper()
        elif isinstance(item, list):
            inner = _describe(item, names)
            out += f"({inner}) " if index + 1 < length else f"{operand} ({inner})"
        else:
            name = _name(item, names)
            if name is None:  # a null id: optimizely-sdk finds no name and skips it
                continue
            if index + 1 < length - 1:
                out += f'"{name}" {operand} '
            elif index + 1 == length:
                out += f'{operand} "{name}"'
            else:
                out += f'"{name}" '
    return out


def _name(leaf: Any, names: Mapping[str, str]) -> str | None:
    if isinstance(leaf, str):
        return names.get(leaf, leaf)
    if leaf is None:
        return None
    return json.dumps(leaf)  # optimizely-sdk raises


def _quoted(leaf: Any, names: Mapping[str, str]) -> str:
    name = _name(leaf, names)
    return f'"{"null" if name is None else name}"'  # optimizely-sdk raises on a null id


# ---------------------------------------------------------------------------- the builder


def _feature_enabled(variation: Variation) -> bool | None:
    # The datafile's value: None when absent. (A non-boolean one is given by its truth.)
    if "feature_enabled" not in variation.model_fields_set:
        return None
    return True if variation.feature_enabled_is_true else variation.feature_enabled


_Variables = dict[str, OptimizelyVariable]


class _Builder:
    """One build: the look-ups optimizely-sdk's ``_create_lookup_maps`` makes, then the rest."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        datafile = config.datafile
        # The last flag naming each experiment.
        self.flag_of: dict[str, FeatureFlag] = {}
        # Declared variables (defaults) by key, of the last flag with each key / id; and
        # the declarations by variable id, of the last flag with each key.
        self.defaults_by_flag_key: dict[str, _Variables] = {}
        self.defaults_by_flag_id: dict[str, _Variables] = {}
        self.declared_ids_by_flag_key: dict[str, _Variables] = {}
        for flag in datafile.feature_flags:
            for experiment_id in flag.experiment_ids:
                self.flag_of[experiment_id] = flag
            # optimizely-sdk retypes the variables of the last flag with each key only.
            retyped = config.flags_by_key.get(flag.key) is flag
            by_key: _Variables = {}
            by_id: _Variables = {}
            for variable in flag.variables:
                kind = variable.type
                if retyped and kind == "string" and variable.sub_type == "json":
                    kind = "json"
                declared = OptimizelyVariable(
                    variable.id, variable.key, kind, variable.default_value
                )
                by_key[variable.key] = declared
                by_id[variable.id] = declared
            self.defaults_by_flag_key[flag.key] = by_key
            self.defaults_by_flag_id[flag.id] = by_key
            self.declared_ids_by_flag_key[flag.key] = by_id

        # What optimizely-sdk appends to feature rollout rules: each flag (the last with
        # its key) gives the first variation of its rollout's last rule to its "fr" rules.
        self.everyone_else: dict[str, list[Variation]] = {}
        for flag in config.flags_by_key.values():
            rollout = config.rollouts_by_id.get(flag.rollout_id) if flag.rollout_id else None
            if rollout is None or not rollout.experiments or not rollout.experiments[-1].variations:
                continue
            variation = rollout.experiments[-1].variations[0]
            for experiment_id in flag.experiment_ids:
                rule = config.experiments_by_id.get(experiment_id)
                if rule is not None and rule.type == _FEATURE_ROLLOUT:
                    self.everyone_else.setdefault(experiment_id, []).append(variation)

        self.audiences = self._audiences()
        self.names = {audience.id: audience.name for audience in self.audiences}

    def build(self, datafile_text: str) -> OptimizelyConfig:
        config = self.config
        datafile = config.datafile
        by_key: dict[str, OptimizelyExperiment] = {}
        by_id: dict[str, OptimizelyExperiment] = {}
        grouped = (experiment for group in datafile.groups for experiment in group.experiments)
        for experiment in (*datafile.experiments, *grouped):
            described = self._experiment(experiment, None)
            by_key[experiment.key] = described
            by_id[experiment.id] = described
        # Each key in the place of its first flag, with its last flag (as the SDK's dict).
        features = {flag.key: self._feature(flag, by_id) for flag in config.flags_by_key.values()}
        return OptimizelyConfig(
            revision=datafile.revision,
            experiments_map=MappingProxyType(by_key),
            features_map=MappingProxyType(features),
            datafile=datafile_text,
            sdk_key=datafile.sdk_key or "",
            environment_key=datafile.environment_key or "",
            attributes=tuple(OptimizelyAttribute(a.id, a.key) for a in datafile.attributes),
            events=tuple(
                OptimizelyEvent(e.id, e.key, tuple(e.experiment_ids)) for e in datafile.events
            ),
            audiences=self.audiences,
        )

    def _audiences(self) -> tuple[OptimizelyAudience, ...]:
        datafile = self.config.datafile
        out = [
            # optimizely-sdk turns typed audiences' conditions into JSON text on loading.
            OptimizelyAudience(audience.id, audience.name, json.dumps(audience.conditions))
            for audience in datafile.typed_audiences
        ]
        typed = {audience.id for audience in datafile.typed_audiences}
        out += [
            OptimizelyAudience(audience.id, audience.name, audience.conditions)
            for audience in datafile.audiences
            if audience.id not in typed and audience.id != _DUMMY_AUDIENCE
        ]
        return tuple(out)

    def _feature(
        self, flag: FeatureFlag, experiments_by_id: Mapping[str, OptimizelyExperiment]
    ) -> OptimizelyFeature:
        # optimizely-sdk raises on an id that is not an experiment's (a rollout rule's...).
        rules = tuple(experiments_by_id[i] for i in flag.experiment_ids if i in experiments_by_id)
        rollout = next((r for r in self.config.datafile.rollouts if r.id == flag.rollout_id), None)
        delivery = () if rollout is None else rollout.experiments
        return OptimizelyFeature(
            id=flag.id,
            key=flag.key,
            experiments_map=MappingProxyType({rule.key: rule for rule in rules}),
            variables_map=MappingProxyType(self.defaults_by_flag_key[flag.key]),
            delivery_rules=tuple(self._experiment(rule, flag.id) for rule in delivery),
            experiment_rules=rules,
        )

    def _experiment(self, experiment: Experiment, flag_id: str | None) -> OptimizelyExperiment:
        """An experiment (``flag_id`` ``None``) or one of a flag's delivery rules."""
        variations: dict[str, OptimizelyVariation] = {}
        for variation, enabled in self._variations(experiment):
            if flag_id:  # a delivery rule: the flag's defaults, whatever the variation says
                variables = dict(self.defaults_by_flag_id[flag_id])
            else:
                variables = self._variables(experiment.id, variation)
            variations[variation.key] = OptimizelyVariation(
                variation.id, variation.key, enabled, MappingProxyType(variables)
            )
        return OptimizelyExperiment(
            experiment.id,
            experiment.key,
            MappingProxyType(variations),
            _describe(experiment.audience_conditions, self.names),
        )

    def _variations(self, experiment: Experiment) -> list[tuple[Variation, bool | None]]:
        """The variations with their ``featureEnabled``; "Everyone Else" ones appended.

        optimizely-sdk appends them, on loading, to the one experiment (or rule) that wins
        its id: the one :attr:`.ProjectConfig.experiments_by_id` holds.
        """
        out = [(v, _feature_enabled(v)) for v in experiment.variations]
        if self.config.experiments_by_id.get(experiment.id) is experiment:
            out += [(v, v.feature_enabled) for v in self.everyone_else.get(experiment.id, ())]
        return out

    def _variables(self, experiment_id: str, variation: Variation) -> _Variables:
        flag = self.flag_of.get(experiment_id)
        if flag is None:
            return {}
        variables = dict(self.defaults_by_flag_key[flag.key])
        if variation.feature_enabled:
            declared = self.declared_ids_by_flag_key[flag.key]
            for usage in variation.variables:
                variable = declared.get(usage.id)
                if variable is not None:
                    variables[variable.key] = replace(variables[variable.key], value=usage.value)
        return variables
