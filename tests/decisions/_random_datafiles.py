"""Random decision inputs, and optimizely-sdk 5.7.0 as the reference; shared, not tests.

Seeded generators of audience conditions, condition trees, attribute values and whole
datafiles (``_Builder``, and ``_random_case`` with its users, profiles and forced
variations), used by the differential tests of ``tests/decisions/`` and by
``tests/test_decider.py``; and the optimizely-sdk side those tests compare with: a
stand-in user context for its condition evaluator, and a client that sends nothing.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

from optimizely import optimizely as optimizely_sdk
from optimizely.event.event_processor import BaseEventProcessor
from optimizely.helpers import condition as optimizely_condition
from optimizely.helpers import condition_tree_evaluator
from optimizely.helpers.sdk_settings import OptimizelySdkSettings
from optimizely.logger import NoOpLogger, adapt_logger
from optimizely.user_profile import UserProfileService

from optitrack._decisions import UserInput
from optitrack._decisions.conditions import MATCH_TYPES

# ---------------------------------------------------------------------------- random conditions


ATTRIBUTES = ("plan", "age", "score", "version", "beta", "country")
STRINGS = ("pro", "free", "enterprise", "pr", "", "PRO", "free trial", "2.0.0")
NUMBERS: tuple[Any, ...] = (
    0,
    1,
    17,
    18,
    18.0,
    18.5,
    42,
    -3,
    0.1,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    1e300,
)
VERSIONS = (
    "1.0.0",
    "2.0",
    "2.0.0",
    "2.1.5",
    "2",
    "2.0.0-beta",
    "2.0.0-beta.1",
    "2.0.0-alpha",
    "2.0.0+build.7",
    "2.0.0-rc.1+build",
    "1.2.3.4",
    "1..2",
    " 1.0",
    "a.b",
    "",
    "10.0.1",
    "2.0.0-",
    "2.1-beta",
    "3.0.0-beta+exp.sha",
    "2.0.0+b-1",
    "02.0.0",
)
SEGMENTS = ("seg_a", "seg_b", "seg_c")
MATCHES = (None, *MATCH_TYPES, "regex")  # None: no match key; "regex": an unknown one
NAME_FOR_MATCH: dict[str | None, str] = {
    "gt": "age",
    "ge": "score",
    "lt": "age",
    "le": "score",
    "substring": "plan",
    "semver_eq": "version",
    "semver_gt": "version",
    "semver_ge": "version",
    "semver_lt": "version",
    "semver_le": "version",
}


def random_condition(rng: random.Random) -> dict[str, Any]:
    match = rng.choice(MATCHES)
    pool: tuple[Any, ...]
    if match in ("gt", "ge", "lt", "le"):
        pool = (*NUMBERS, "18", True)
    elif match is not None and match.startswith("semver"):
        pool = (*VERSIONS, 2)
    elif match == "substring":
        pool = (*STRINGS, 1)
    elif match == "qualified":
        pool = (*SEGMENTS, 3)
    else:
        pool = (*STRINGS, *NUMBERS, True, False, None, [1], {"k": 1})
    name = rng.choice(ATTRIBUTES)
    if rng.random() < 0.8:  # mostly an attribute of the type the match expects
        name = NAME_FOR_MATCH.get(match, name)
    condition: dict[str, Any] = {
        "name": name,
        "type": rng.choices(("custom_attribute", "third_party_dimension", "browser"), (14, 2, 1))[
            0
        ],
        "value": rng.choice(pool),
    }
    if match is not None:
        condition["match"] = match
    return condition


def random_tree(rng: random.Random, leaf: Callable[[], Any], depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.35:
        return leaf()
    operator = rng.choice(("and", "or", "not", None))
    if operator is None:
        # An implicit OR. optimizely-sdk raises on an empty one, and on one whose only item
        # is a list (OptimizelyConfig cannot describe it), so neither is generated.
        items = [random_tree(rng, leaf, depth - 1) for _ in range(rng.randint(1, 3))]
        return ["or", *items] if len(items) == 1 and isinstance(items[0], list) else items
    return [operator, *(random_tree(rng, leaf, depth - 1) for _ in range(rng.randint(0, 3)))]


def random_attribute_value(rng: random.Random, name: str) -> Any:
    typed: tuple[Any, ...] = {
        "plan": STRINGS,
        "country": STRINGS,
        "age": NUMBERS,
        "score": NUMBERS,
        "version": VERSIONS,
        "beta": (True, False),
    }[name]
    odd = (None, True, "18", 18, 2.5, math.nan, math.inf, -math.inf, [1], "pro")
    return rng.choice(typed) if rng.random() < 0.8 else rng.choice(odd)


# ---------------------------------------------------------------------------- reference conditions


class _UserContext:
    """The two methods optimizely-sdk's condition evaluator calls on a user context."""

    def __init__(self, attributes: dict[str, Any], segments: frozenset[str] | None) -> None:
        self.attributes = attributes
        self.segments = segments

    def get_user_attributes(self) -> dict[str, Any]:
        return self.attributes

    def is_qualified_for(self, segment: str) -> bool:
        return self.segments is not None and segment in self.segments


_LOGGER = adapt_logger(NoOpLogger())


def _reference_audience(text: str, context: _UserContext) -> Any:
    structure, conditions = optimizely_condition.loads(text)
    evaluator = optimizely_condition.CustomAttributeConditionEvaluator(conditions, context, _LOGGER)
    return condition_tree_evaluator.evaluate(structure, evaluator.evaluate)


def _user(rng: random.Random) -> _UserContext:
    attributes = {
        name: random_attribute_value(rng, name) for name in ATTRIBUTES if rng.random() < 0.8
    }
    segments = frozenset({"seg_a"}) if rng.random() < 0.5 else None
    return _UserContext(attributes, segments)


# ---------------------------------------------------------------------------- reference client


class _DropEvents(BaseEventProcessor):  # type: ignore[misc]
    """An event processor that drops every event: nothing leaves the process."""

    def process(self, user_event: Any) -> None:
        return None


class _MemoryProfiles(UserProfileService):  # type: ignore[misc]
    """Optimizely's side of a user profile service: a dict, deep-copied both ways."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store

    def lookup(self, user_id: str) -> Any:
        return copy.deepcopy(self.store.get(user_id))

    def save(self, user_profile: dict[str, Any]) -> None:
        self.store[user_profile["user_id"]] = copy.deepcopy(user_profile)


def _reference(datafile: dict[str, Any], profiles: _MemoryProfiles | None = None) -> Any:
    client = optimizely_sdk.Optimizely(
        datafile=json.dumps(datafile),
        event_processor=_DropEvents(),
        user_profile_service=profiles,
        settings=OptimizelySdkSettings(odp_disabled=True),
    )
    assert client.is_valid
    assert client.config_manager.get_config() is not None, "optimizely-sdk rejected it"
    return client


# ---------------------------------------------------------------------------- random datafiles


QUIRKY_EVERY = 4


_VARIABLE_VALUES = {
    "string": ("hello", "", "42", "true"),
    "integer": ("1", "-7", "0", "1.5", "abc", " 3", "99999999999999999999"),
    "double": ("1.5", "2", "-0.25", "nan", "1e400", "x"),
    "boolean": ("true", "false", "True", "1", ""),
    "json": ('{"a": 1}', "[1, 2]", '"s"', "{bad", "null", '{"nested": {"b": [true]}}'),
}


def _allocation(rng: random.Random, entity_ids: list[str]) -> list[dict[str, Any]]:
    ends = sorted(rng.randint(0, 10_000) for _ in range(rng.randint(0, 4)))
    if ends and rng.random() < 0.7:
        ends[-1] = 10_000
    if rng.random() < 0.2:
        ends = [10_000]
    choices = [*entity_ids, "", "9999999"]
    weights = [10] * len(entity_ids) + [3, 1]
    return [{"entityId": rng.choices(choices, weights)[0], "endOfRange": end} for end in ends]


class _Builder:
    """Builds one random datafile: flags with experiments (some grouped) and rollouts."""

    def __init__(self, rng: random.Random, *, quirky: bool) -> None:
        self.rng = rng
        self.quirky = quirky
        self.next_id = rng.randrange(1000, 9000) * 1000
        self.audience_ids: list[str] = []
        self.experiment_keys: list[str] = []
        self.user_ids = [f"user_{i}" for i in range(6)]
        self.variation_ids: list[str] = []
        self.experiment_ids: list[str] = []

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def key(self, prefix: str) -> str:
        rng = self.rng
        if self.quirky and self.experiment_keys and rng.random() < 0.08:
            return rng.choice(self.experiment_keys)  # a key used twice
        if self.quirky and rng.random() < 0.03:
            return rng.choice(("", "  "))
        key = f"{prefix}_{self.next_id + 1}"
        self.experiment_keys.append(key)
        return key

    def audiences(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rng = self.rng
        legacy: list[dict[str, Any]] = []
        typed: list[dict[str, Any]] = []
        for _ in range(rng.randint(0, 6)):
            audience_id = self.new_id()
            if self.audience_ids and rng.random() < 0.1:
                audience_id = rng.choice(self.audience_ids)  # typed overrides legacy
            self.audience_ids.append(audience_id)
            conditions = random_tree(rng, lambda: random_condition(rng), 3)
            if rng.random() < 0.5:
                legacy.append(
                    {"id": audience_id, "name": "a", "conditions": json.dumps(conditions)}
                )
            else:
                typed.append({"id": audience_id, "name": "t", "conditions": conditions})
        return legacy, typed

    def targeting(self) -> dict[str, Any]:
        rng = self.rng
        pool = [*self.audience_ids, "424242"]
        fields: dict[str, Any] = {
            "audienceIds": rng.sample(pool, rng.randint(0, min(2, len(pool))))
        }
        roll = rng.random()
        if roll < 0.45:
            fields["audienceConditions"] = random_tree(rng, lambda: rng.choice(pool), 2)
        elif roll < 0.55:
            fields["audienceConditions"] = []
        return fields

    def variations(self, variables: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        for index in range(count):
            variation: dict[str, Any] = {"id": self.new_id(), "key": f"var_{index}"}
            if self.quirky and self.variation_ids and rng.random() < 0.05:
                variation["id"] = rng.choice(self.variation_ids)  # shared with another rule
            if self.quirky and out and rng.random() < 0.05:
                variation["key"] = out[-1]["key"]  # twice in one experiment
            if self.quirky and rng.random() < 0.03:
                variation["key"] = ""
            self.variation_ids.append(variation["id"])
            if rng.random() < 0.9:
                variation["featureEnabled"] = rng.random() < 0.6
            usages = [
                {"id": v["id"], "value": rng.choice(_VARIABLE_VALUES[_kind(v)])}
                for v in variables
                if rng.random() < 0.6
            ]
            variation["variables"] = usages
            out.append(variation)
        return out

    def experiment(
        self, variables: list[dict[str, Any]], layer_id: str, *, rule: bool = False
    ) -> dict[str, Any]:
        rng = self.rng
        experiment_id = self.new_id()
        self.experiment_ids.append(experiment_id)
        variations = self.variations(variables, rng.randint(1, 3))
        ids = [v["id"] for v in variations]
        experiment: dict[str, Any] = {
            "id": experiment_id,
            "key": self.key("rule" if rule else "exp"),
            "layerId": layer_id,
            "status": rng.choices(("Running", "Paused", "Not started"), (8, 1, 1))[0],
            "variations": variations,
            "trafficAllocation": _allocation(
                rng,
                # Now and then a variation of another rule, which Optimizely cannot find.
                [*ids, rng.choice(self.variation_ids)] if self.quirky else ids,
            ),
            "forcedVariations": {},
            **self.targeting(),
        }
        if not rule:
            experiment["type"] = rng.choice((None, "ab", "fr", "td", "feature_rollout"))
            if experiment["type"] is None:
                del experiment["type"]
            if rng.random() < 0.3:
                experiment["forcedVariations"] = {
                    rng.choice(self.user_ids): rng.choice([*(v["key"] for v in variations), "nope"])
                    for _ in range(rng.randint(1, 2))
                }
        return experiment

    def build(self) -> dict[str, Any]:
        rng = self.rng
        legacy, typed = self.audiences()
        experiments: list[dict[str, Any]] = []
        groups: list[dict[str, Any]] = []
        rollouts: list[dict[str, Any]] = []
        flags: list[dict[str, Any]] = []
        rule_ids: list[str] = []
        for flag_index in range(rng.randint(1, 4)):
            variables = []
            for variable_index in range(rng.randint(0, 3)):
                kind = rng.choice(("string", "integer", "double", "boolean", "json", "subjson"))
                variable: dict[str, Any] = {
                    "id": self.new_id(),
                    "key": f"var{variable_index}",
                    "type": "string" if kind == "subjson" else kind,
                }
                if kind == "subjson":
                    variable["subType"] = "json"
                variable["defaultValue"] = rng.choice(_VARIABLE_VALUES[_kind(variable)])
                variables.append(variable)
            flag_experiments = []
            for _ in range(rng.randint(0, 3)):
                experiment = self.experiment(variables, self.new_id())
                flag_experiments.append(experiment)
                rule_ids.append(experiment["id"])
                if groups and rng.random() < 0.3:
                    groups[-1]["experiments"].append(experiment)
                elif rng.random() < 0.2:
                    groups.append(
                        {
                            "id": self.new_id(),
                            "policy": "",
                            "trafficAllocation": [],
                            "experiments": [experiment],
                        }
                    )
                else:
                    experiments.append(experiment)
            rollout_id = ""
            if rng.random() < 0.85:
                rollout_id = self.new_id()
                rules = [
                    self.experiment(variables, rollout_id, rule=True)
                    for _ in range(rng.randint(0, 3))
                ]
                everyone_else = self.experiment(variables, rollout_id, rule=True)
                if rng.random() < 0.7:
                    everyone_else["audienceIds"] = []
                    everyone_else.pop("audienceConditions", None)
                    everyone_else["variations"] = everyone_else["variations"][:1]
                    everyone_else["trafficAllocation"] = [
                        {"entityId": everyone_else["variations"][0]["id"], "endOfRange": 10_000}
                    ]
                    everyone_else["status"] = "Running"
                if rng.random() < 0.9:
                    rules.append(everyone_else)
                rule_ids.extend(rule["id"] for rule in rules)
                rollouts.append({"id": rollout_id, "experiments": rules})
            flags.append(
                {
                    "id": self.new_id(),
                    "key": f"flag_{flag_index}",
                    "experimentIds": [e["id"] for e in flag_experiments],
                    "rolloutId": rollout_id,
                    "variables": variables,
                }
            )
        for _ in range(rng.randint(0, 2)):  # experiments outside of any flag
            experiments.append(self.experiment([], self.new_id()))
        for group in groups:
            group["policy"] = rng.choice(("random", "random", "overlapping"))
            group["trafficAllocation"] = _allocation(rng, [e["id"] for e in group["experiments"]])
        holdouts = [self.holdout(None) for _ in range(rng.choices((0, 1, 2), (5, 3, 1))[0])]
        local_holdouts = [
            self.holdout(rule_ids) for _ in range(rng.choices((0, 1, 2), (5, 3, 1))[0])
        ]
        datafile: dict[str, Any] = {
            "version": "4",
            "accountId": "12001",
            "projectId": "111001",
            "revision": str(rng.randrange(1, 1000)),
            "anonymizeIP": True,
            "sendFlagDecisions": rng.random() < 0.5,
            "attributes": [{"id": self.new_id(), "key": name} for name in ATTRIBUTES],
            "audiences": legacy,
            "typedAudiences": typed,
            "events": [],
            "experiments": experiments,
            "groups": groups,
            "featureFlags": flags,
            "rollouts": rollouts,
        }
        if holdouts:
            datafile["holdouts"] = holdouts
        if local_holdouts:
            datafile["localHoldouts"] = local_holdouts
        return datafile

    def holdout(self, rule_ids: list[str] | None) -> dict[str, Any]:
        rng = self.rng
        variations = self.variations([], rng.randint(1, 2))
        holdout: dict[str, Any] = {
            "id": self.new_id(),
            "key": f"holdout_{self.next_id}",
            "status": rng.choices(("Running", "Draft"), (4, 1))[0],
            "variations": variations,
            "trafficAllocation": _allocation(rng, [v["id"] for v in variations]),
            **self.targeting(),
        }
        if self.quirky and self.experiment_ids and rng.random() < 0.3:
            holdout["id"] = rng.choice(self.experiment_ids)  # replaces its variations
        if self.quirky and self.experiment_keys and rng.random() < 0.3:
            holdout["key"] = rng.choice(self.experiment_keys)
        if rng.random() < 0.5:
            holdout["excludeTargetedDeliveries"] = rng.random() < 0.6
        if rule_ids is not None:
            holdout["includedRules"] = rng.sample(
                [*rule_ids, "31337"], rng.randint(1, min(3, len(rule_ids) + 1))
            )
        return holdout


def _kind(variable: dict[str, Any]) -> str:
    return "json" if variable.get("subType") == "json" else str(variable["type"])


def _users(
    rng: random.Random, datafile: dict[str, Any], count: int, user_ids: list[str]
) -> Iterator[tuple[UserInput, dict[tuple[str, str | None], str]]]:
    flags = datafile["featureFlags"]
    rules_of: dict[str, list[str]] = {}
    keys_of: dict[str, list[str]] = {}
    experiments = {
        e["id"]: e
        for e in [
            *datafile["experiments"],
            *(e for r in datafile["rollouts"] for e in r["experiments"]),
            *(e for g in datafile["groups"] for e in g["experiments"]),
        ]
    }
    rollouts = {r["id"]: r for r in datafile["rollouts"]}
    for flag in flags:
        rules = [experiments[i] for i in flag["experimentIds"]]
        if flag["rolloutId"]:
            rules += rollouts[flag["rolloutId"]]["experiments"]
        rules_of[flag["key"]] = [rule["key"] for rule in rules]
        keys_of[flag["key"]] = [v["key"] for rule in rules for v in rule["variations"]]
    for index in range(count):
        user_id = rng.choice(user_ids) if rng.random() < 0.3 else f"visitor-{rng.randrange(10**9)}"
        if index % 17 == 0:
            user_id = rng.choice(("", "ü-ser", "用户"))
        attributes = {
            name: random_attribute_value(rng, name) for name in ATTRIBUTES if rng.random() < 0.75
        }
        roll = rng.random()
        if roll < 0.1:
            attributes["$opt_bucketing_id"] = f"bucket-{rng.randrange(100)}"
        elif roll < 0.13:
            attributes["$opt_bucketing_id"] = rng.choice((7, None, 1.5))
        segments = None
        if rng.random() < 0.3:
            segments = frozenset(s for s in SEGMENTS if rng.random() < 0.5)
        forced: dict[tuple[str, str | None], str] = {}
        if flags and rng.random() < 0.25:
            for _ in range(rng.randint(1, 2)):
                flag = rng.choice(flags)["key"]
                rule = rng.choice([None, *rules_of[flag], "no_such_rule"])
                forced[(flag, rule)] = rng.choice([*keys_of[flag], "no_such_variation"])
        yield UserInput(user_id, attributes, segments), forced


def _random_case(
    seed: int,
) -> tuple[
    dict[str, Any],
    list[tuple[UserInput, dict[tuple[str, str | None], str]]],
    dict[str, Any] | None,
    list[tuple[str, str, str | None]],
]:
    rng = random.Random(seed)
    builder = _Builder(rng, quirky=seed % QUIRKY_EVERY == QUIRKY_EVERY - 1)
    datafile = builder.build()
    users = list(_users(rng, datafile, 40, builder.user_ids))
    store: dict[str, Any] | None = None
    forced_variations: list[tuple[str, str, str | None]] = []
    all_experiments = [
        *datafile["experiments"],
        *(e for g in datafile["groups"] for e in g["experiments"]),
        *(e for r in datafile["rollouts"] for e in r["experiments"]),
    ]
    if all_experiments and rng.random() < 0.5:
        store = {}
        for user_id in builder.user_ids:
            bucket_map = {}
            for experiment in rng.sample(all_experiments, min(2, len(all_experiments))):
                variation_id = rng.choice([*(v["id"] for v in experiment["variations"]), "404"])
                bucket_map[experiment["id"]] = {"variation_id": variation_id}
            store[user_id] = {"user_id": user_id, "experiment_bucket_map": bucket_map}
    if all_experiments and rng.random() < 0.5:
        for _ in range(rng.randint(1, 4)):
            experiment = rng.choice(all_experiments)
            variation_key = rng.choice(
                [*(v["key"] for v in experiment["variations"]), "nope", None]
            )
            forced_variations.append(
                (experiment["key"], rng.choice(builder.user_ids), variation_key)
            )
    return datafile, users, store, forced_variations
