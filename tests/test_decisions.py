"""The decision engine: decision order, edge cases, and differential tests against optimizely-sdk.

The differential tests run optimizely-sdk 5.7.0 (the ``compare`` extra; CI installs it, so
it is imported unconditionally) side by side with :class:`optitrack._decisions.DecisionEngine`
on the example datafile and on seeded random datafiles, and require the same variation,
``enabled``, rule and variables for decide, and the same variation for get_variation,
activate and is_feature_enabled. Optimizely never touches the network here: ODP is off,
events go to a processor that drops them, and decide runs with DISABLE_DECISION_EVENT.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from optimizely import optimizely as optimizely_sdk
from optimizely.decision.optimizely_decide_option import OptimizelyDecideOption
from optimizely.event.event_processor import BaseEventProcessor
from optimizely.helpers.sdk_settings import OptimizelySdkSettings
from optimizely.optimizely_user_context import OptimizelyUserContext
from optimizely.user_profile import UserProfileService

from optitrack._decisions import (
    DecisionEngine,
    ProjectConfig,
    RuleType,
    UserInput,
    UserProfile,
    VariationDecision,
    load_datafile,
)

from .test_audiences import (
    ATTRIBUTES,
    SEGMENTS,
    random_attribute_value,
    random_condition,
    random_tree,
)

# ---------------------------------------------------------------------------- the reference


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


_NO_EVENT = [OptimizelyDecideOption.DISABLE_DECISION_EVENT]
QUIRKY_EVERY = 4


def _same(value: Any) -> str:
    # NaN != NaN, so compare values through their JSON text.
    return json.dumps(value, sort_keys=True, default=repr)


class _Ours:
    """optitrack's side: the engine plus the same profile store, used the way the client does."""

    def __init__(self, config: ProjectConfig, store: dict[str, Any] | None) -> None:
        self.config = config
        self.engine = DecisionEngine(config)
        self.store = store

    def profile(self, user_id: str) -> UserProfile | None:
        if self.store is None:
            return None
        return UserProfile.from_lookup(user_id, copy.deepcopy(self.store.get(user_id)))

    def saved(self, profile: UserProfile | None) -> None:
        if self.store is not None and profile is not None and profile.changed:
            stored = profile.to_dict()
            self.store[stored["user_id"]] = copy.deepcopy(stored)

    def decide(
        self,
        flag_key: str,
        user: UserInput,
        forced: dict[tuple[str, str | None], str],
        *,
        ignore_profiles: bool = False,
    ) -> VariationDecision:
        # IGNORE_USER_PROFILE_SERVICE: the client neither loads nor saves a profile.
        profile = None if ignore_profiles else self.profile(user.user_id)
        decision = self.engine.decide_flag(
            self.config.flags_by_key[flag_key], user, forced, profile, include_reasons=False
        )
        self.saved(profile)
        return decision

    def get_variation(self, experiment_key: str, user: UserInput, *, activate: bool) -> str | None:
        experiment = self.engine.experiment_by_key(experiment_key)
        assert experiment is not None
        profile = self.profile(user.user_id) or UserProfile(user.user_id)
        call = self.engine.activate if activate else self.engine.get_variation
        decision = call(experiment, user, profile, include_reasons=False)
        self.saved(profile)
        return decision.variation_key


class _ReferenceRaised(Exception):
    """optimizely-sdk raised where optitrack decides (a crash is not a decision to match)."""


def _reference_call(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise _ReferenceRaised from exc


def _compare(
    datafile: dict[str, Any],
    users: list[tuple[UserInput, dict[tuple[str, str | None], str]]],
    *,
    store: dict[str, Any] | None = None,
    forced_variations: Sequence[tuple[str, str, str | None]] = (),
    experiments_too: bool = True,
) -> int:
    """Decide everything for every user on both sides; assert they agree.

    Returns:
        How many decisions were compared. Where optimizely-sdk raises (a few semantic
        versions make it call ``int("beta")``), optitrack must still decide; that user is
        then left out, as is everything after it when a profile store is shared.
    """
    reference_store = copy.deepcopy(store) if store is not None else None
    client = _reference(
        datafile, _MemoryProfiles(reference_store) if reference_store is not None else None
    )
    ours = _Ours(load_datafile(datafile), copy.deepcopy(store) if store is not None else None)
    checks = 0
    try:
        for experiment_key, user_id, variation_key in forced_variations:
            expected = client.set_forced_variation(experiment_key, user_id, variation_key)
            got = ours.engine.set_forced_variation(experiment_key, user_id, variation_key)
            assert got == expected, (experiment_key, user_id, variation_key)
            assert ours.engine.get_forced_variation(
                experiment_key, user_id
            ) == client.get_forced_variation(experiment_key, user_id)
        flag_keys = [flag["key"] for flag in datafile.get("featureFlags", [])]
        # The client refuses an empty experiment key before deciding anything.
        experiment_keys = (
            [k for k in ours.engine.config.experiments_by_key if k] if experiments_too else []
        )
        for user, forced in users:
            try:
                checks += _compare_user(client, ours, user, forced, flag_keys, experiment_keys)
            except _ReferenceRaised:
                for flag_key in flag_keys:
                    ours.decide(flag_key, user, forced)
                for experiment_key in experiment_keys:
                    ours.get_variation(experiment_key, user, activate=True)
                if store is not None:
                    return checks
        if store is not None:
            assert ours.store == reference_store
    finally:
        client.close()
    return checks


def _compare_user(
    client: Any,
    ours: _Ours,
    user: UserInput,
    forced: dict[tuple[str, str | None], str],
    flag_keys: list[str],
    experiment_keys: list[str],
) -> int:
    checks = 0
    attributes = dict(user.attributes)
    context = client.create_user_context(user.user_id, attributes)
    if user.qualified_segments is not None:
        context.set_qualified_segments(sorted(user.qualified_segments))
    for (flag_key, rule_key), variation_key in forced.items():
        context.set_forced_decision(
            OptimizelyUserContext.OptimizelyDecisionContext(flag_key, rule_key),
            OptimizelyUserContext.OptimizelyForcedDecision(variation_key),
        )
    for flag_key in flag_keys:
        ignore_profiles = len(user.user_id) % 3 == 0
        options = list(_NO_EVENT)
        if ignore_profiles:
            options.append(OptimizelyDecideOption.IGNORE_USER_PROFILE_SERVICE)
        expected = _reference_call(context.decide, flag_key, options)
        got = ours.decide(flag_key, user, forced, ignore_profiles=ignore_profiles)
        where = (user, forced, flag_key)
        assert got.variation_key == expected.variation_key, where
        assert got.enabled == expected.enabled, where
        assert got.rule_key == expected.rule_key, where
        variables = ours.engine.all_variables(ours.config.flags_by_key[flag_key], got.variation)
        assert _same(variables) == _same(expected.variables), where
        checks += 1
        if not forced and user.qualified_segments is None:
            enabled = _reference_call(client.is_feature_enabled, flag_key, user.user_id, attributes)
            assert ours.decide(flag_key, user, {}).enabled == enabled, where
            checks += 1
    if user.qualified_segments is not None:
        return checks  # the experiment APIs take no segments
    for experiment_key in experiment_keys:
        expected_key = _reference_call(
            client.get_variation, experiment_key, user.user_id, attributes
        )
        got_key = ours.get_variation(experiment_key, user, activate=False)
        assert got_key == expected_key, (user, experiment_key)
        expected_key = _reference_call(client.activate, experiment_key, user.user_id, attributes)
        got_key = ours.get_variation(experiment_key, user, activate=True)
        assert got_key == expected_key, (user, experiment_key, "activate")
        checks += 2
    return checks


# ---------------------------------------------------------------------------- random datafiles

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


@pytest.mark.parametrize("seed", range(60))
def test_random_datafiles_decide_like_optimizely(seed: int) -> None:
    datafile, users, store, forced_variations = _random_case(seed)
    checks = _compare(datafile, users, store=store, forced_variations=forced_variations)
    assert checks > 0


def test_example_datafile_decides_like_optimizely(datafile: dict[str, Any]) -> None:
    rng = random.Random(0)
    users: list[tuple[UserInput, dict[tuple[str, str | None], str]]] = []
    for index in range(300):
        attributes: dict[str, Any] = {
            "plan": rng.choice(("pro", "free", 3, None)),
            "age": rng.choice((17, 18, 34, 18.5, "34", math.nan)),
            "app_version": rng.choice(("2.1.0", "1.9.9", "2.0.0-beta", "2", "x")),
        }
        forced: dict[tuple[str, str | None], str] = {}
        if index % 10 == 0:
            forced[("new_checkout", rng.choice((None, "checkout_test", "pro_delivery")))] = (
                rng.choice(("control", "treatment", "on", "off", "nope"))
            )
        user_id = "qa_user_1" if index % 25 == 0 else f"user_{index}"
        users.append((UserInput(user_id, attributes), forced))
    forced_variations = [("checkout_test", "user_3", "treatment"), ("pro_delivery", "user_4", "on")]
    assert _compare(datafile, users, forced_variations=forced_variations) > 1000
    assert _compare(datafile, users[:50], store={}) > 100


# ---------------------------------------------------------------------------- decision order


def _experiment(
    experiment_id: str,
    *,
    key: str | None = None,
    variations: tuple[str, ...] = ("a", "b"),
    allocation: list[tuple[str, int]] | None = None,
    audiences: list[str] | None = None,
    conditions: Any = None,
    status: str = "Running",
    whitelist: dict[str, str] | None = None,
    enabled: tuple[bool, ...] = (),
    layer_id: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """An experiment whose variation ids are ``<id>_<key>``; even split unless told."""
    ids = [f"{experiment_id}_{v}" for v in variations]
    if allocation is None:
        step = 10_000 // len(variations)
        allocation = [(i, step * (n + 1)) for n, i in enumerate(ids)]
        allocation[-1] = (ids[-1], 10_000)
    else:
        allocation = [(f"{experiment_id}_{v}" if v else "", end) for v, end in allocation]
    experiment: dict[str, Any] = {
        "id": experiment_id,
        "key": key or f"exp_{experiment_id}",
        "layerId": layer_id or f"layer_{experiment_id}",
        "status": status,
        "variations": [
            {
                "id": i,
                "key": v,
                "featureEnabled": enabled[n] if n < len(enabled) else True,
                "variables": [],
            }
            for n, (i, v) in enumerate(zip(ids, variations, strict=True))
        ],
        "trafficAllocation": [{"entityId": i, "endOfRange": end} for i, end in allocation],
        "audienceIds": audiences or [],
        "forcedVariations": whitelist or {},
        **extra,
    }
    if conditions is not None:
        experiment["audienceConditions"] = conditions
    return experiment


_PRO = {
    "id": "100",
    "name": "pro",
    "conditions": json.dumps(
        ["and", {"name": "plan", "type": "custom_attribute", "match": "exact", "value": "pro"}]
    ),
}


def _config(**sections: Any) -> ProjectConfig:
    datafile: dict[str, Any] = {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": "3",
        "attributes": [{"id": "9", "key": "plan"}],
        "audiences": [_PRO],
        "events": [],
        "experiments": [],
        "groups": [],
        **sections,
    }
    return load_datafile(datafile)


def _user(user_id: str = "u", **attributes: Any) -> UserInput:
    return UserInput(user_id, attributes)


def test_experiment_order_running_forced_whitelist_profile_audience_bucket() -> None:
    experiment = _experiment("1", audiences=["100"], whitelist={"vip": "b", "typo": "zz"})
    engine = DecisionEngine(_config(experiments=[experiment]))
    entity = engine.experiment_by_key("exp_1")
    assert entity is not None
    stored = UserProfile("vip", {"1": {"variation_id": "1_a"}})

    # The whitelist beats a stored variation and the audience.
    decision = engine.get_variation(entity, _user("vip"), stored)
    assert decision.variation_key == "b"
    assert decision.rule_type is RuleType.EXPERIMENT
    assert 'User "vip" is forced in variation "b".' in decision.reasons
    assert not stored.changed

    # A forced variation beats the whitelist.
    assert engine.set_forced_variation("exp_1", "vip", "a")
    assert engine.get_variation(entity, _user("vip"), None).variation_key == "a"
    assert engine.get_forced_variation("exp_1", "vip") == "a"
    assert engine.set_forced_variation("exp_1", "vip", None)
    assert engine.get_forced_variation("exp_1", "vip") is None

    # A stored variation beats the audience; an unknown whitelisted key falls through.
    stored = UserProfile.from_lookup("typo", {"user_id": "typo", "experiment_bucket_map": {}})
    stored.experiment_bucket_map["1"] = {"variation_id": "1_b"}
    assert engine.get_variation(entity, _user("typo"), stored).variation_key == "b"

    # Not in the audience: nothing, and nothing stored.
    profile = UserProfile("u")
    decision = engine.get_variation(entity, _user("u", plan="free"), profile)
    assert decision == VariationDecision(None, None, None, decision.reasons)
    assert decision.reasons[-1] == 'User "u" does not meet conditions to be in experiment "exp_1".'
    assert not profile.changed

    # In the audience: bucketed, and the bucketing is stored.
    decision = engine.get_variation(entity, _user("u", plan="pro"), profile)
    assert decision.variation is not None
    assert profile.changed
    assert profile.to_dict() == {
        "user_id": "u",
        "experiment_bucket_map": {"1": {"variation_id": decision.variation.id}},
    }

    # Not running: nothing, even for the whitelisted user.
    paused = DecisionEngine(_config(experiments=[{**experiment, "status": "Paused"}]))
    entity = paused.experiment_by_key("exp_1")
    assert entity is not None
    decision = paused.get_variation(entity, _user("vip"), None)
    assert decision.variation is None
    assert decision.reasons == ('Experiment "exp_1" is not running.',)


def test_hole_and_short_allocation_are_not_bucketed() -> None:
    engine = DecisionEngine(
        _config(experiments=[_experiment("1", allocation=[("", 5000), ("a", 6000)])])
    )
    entity = engine.experiment_by_key("exp_1")
    assert entity is not None
    outcomes = {
        engine.get_variation(entity, _user(f"user{i}"), None).variation_key for i in range(300)
    }
    assert outcomes == {None, "a"}


def test_group_random_is_exclusive_and_overlapping_is_not() -> None:
    def group(policy: str) -> dict[str, Any]:
        return {
            "id": "g",
            "policy": policy,
            "trafficAllocation": [
                {"entityId": "1", "endOfRange": 4000},
                {"entityId": "", "endOfRange": 5000},
                {"entityId": "2", "endOfRange": 10_000},
            ],
            "experiments": [_experiment("1"), _experiment("2")],
        }

    for policy, exclusive in (("random", True), ("overlapping", False)):
        engine = DecisionEngine(_config(groups=[group(policy)]))
        one, two = engine.experiment_by_key("exp_1"), engine.experiment_by_key("exp_2")
        assert one is not None
        assert two is not None
        counts = {0: 0, 1: 0, 2: 0}
        for index in range(400):
            user = _user(f"user{index}")
            got = sum(
                engine.get_variation(e, user, None, include_reasons=False).variation is not None
                for e in (one, two)
            )
            counts[got] += 1
        if exclusive:
            assert counts[2] == 0
            assert counts[0] > 0  # the group's hole
            assert counts[1] > 0
        else:
            assert counts == {0: 0, 1: 0, 2: 400}


def _flag_config(
    *,
    experiments: list[dict[str, Any]] | None = None,
    rules: list[dict[str, Any]] | None = None,
    variables: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> ProjectConfig:
    experiments = experiments or []
    rollout_rules = rules if rules is not None else [_experiment("99", key="everyone_else")]
    return _config(
        experiments=experiments,
        featureFlags=[
            {
                "id": "f",
                "key": "flag",
                "experimentIds": [e["id"] for e in experiments],
                "rolloutId": "r" if rollout_rules else "",
                "variables": variables or [],
            }
        ],
        rollouts=[{"id": "r", "experiments": rollout_rules}] if rollout_rules else [],
        **sections,
    )


def _decide(
    engine: DecisionEngine,
    user: UserInput,
    forced: dict[tuple[str, str | None], str] | None = None,
) -> VariationDecision:
    return engine.decide_flag(engine.config.flags_by_key["flag"], user, forced or {}, None)


def test_rollout_skips_to_everyone_else_when_bucketing_misses() -> None:
    rules = [
        _experiment("11", key="pro_rule", audiences=["100"], allocation=[("a", 0)]),
        _experiment("12", key="second_rule"),  # would take everyone
        _experiment("13", key="everyone_else", variations=("off",), enabled=(False,)),
    ]
    engine = DecisionEngine(_flag_config(rules=rules))
    pro = _decide(engine, _user(plan="pro"))
    assert (pro.rule_key, pro.variation_key, pro.rule_type) == ("everyone_else", "off", "rollout")
    assert not pro.enabled
    assert 'User "u" not bucketed into a targeting rule 1. Checking "Everyone Else" rule now.' in (
        pro.reasons
    )
    free = _decide(engine, _user(plan="free"))
    assert free.rule_key == "second_rule"

    # Everyone Else missing too: no variation, reported as a rollout decision.
    engine = DecisionEngine(_flag_config(rules=[{**rules[2], "trafficAllocation": []}]))
    nothing = _decide(engine, _user())
    assert (nothing.experiment, nothing.variation, nothing.rule_type) == (None, None, "rollout")


def test_rollout_rules_need_not_be_running() -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", status="Paused")]))
    assert _decide(engine, _user()).variation is not None


def test_forced_decisions() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", key="test", variations=("a", "b"))],
            rules=[_experiment("13", key="everyone_else", variations=("off",))],
        )
    )
    flag_level = _decide(engine, _user(), {("flag", None): "off"})
    assert flag_level.experiment is None
    assert (flag_level.variation_key, flag_level.rule_type) == ("off", "feature-test")
    assert flag_level.reasons == (
        "Variation (off) is mapped to flag (flag) and user (u) in the forced decision map.",
    )
    # A rule-level forced decision may name any variation of the flag.
    rule_level = _decide(engine, _user(), {("flag", "test"): "off"})
    assert (rule_level.rule_key, rule_level.variation_key) == ("test", "off")
    # An unknown variation is a reason, then the flag decides as usual.
    invalid = _decide(engine, _user(), {("flag", None): "zz"})
    assert invalid.rule_key == "test"
    assert invalid.reasons[0] == (
        "Invalid variation is mapped to flag (flag) and user (u) in the forced decision map."
    )
    # A rollout rule's forced decision counts once the experiment rules decided nothing.
    forced: dict[tuple[str, str | None], str] = {("flag", "everyone_else"): "b"}
    assert _decide(engine, _user(), forced).rule_key == "test"
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", key="test", status="Paused")],
            rules=[_experiment("13", key="everyone_else", variations=("off",))],
        )
    )
    rollout_level = _decide(engine, _user(), forced)
    assert (rollout_level.rule_key, rollout_level.variation_key) == ("everyone_else", "b")
    assert rollout_level.rule_type is RuleType.ROLLOUT


def _holdout(holdout_id: str, *, end: int = 10_000, **extra: Any) -> dict[str, Any]:
    return {
        "id": holdout_id,
        "key": f"holdout_{holdout_id}",
        "status": "Running",
        "variations": [{"id": f"{holdout_id}_off", "key": "off", "featureEnabled": False}],
        "trafficAllocation": [{"entityId": f"{holdout_id}_off", "endOfRange": end}],
        "audienceIds": [],
        **extra,
    }


def test_global_holdout_takes_the_user_before_any_rule() -> None:
    engine = DecisionEngine(_flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h")]))
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.variation_key, decision.rule_type) == (
        "holdout_h",
        "off",
        "holdout",
    )
    assert decision.holdout is None
    assert not decision.enabled
    # Not running: ignored.
    engine = DecisionEngine(
        _flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h", status="Draft")])
    )
    assert _decide(engine, _user()).rule_key == "exp_1"


def test_holdout_excluding_targeted_deliveries_lets_td_rules_and_rollouts_decide() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1"), _experiment("2", type="td")],
            holdouts=[_holdout("h", excludeTargetedDeliveries=True)],
        )
    )
    decision = _decide(engine, _user())
    assert decision.rule_key == "exp_2"  # exp_1 is skipped: not a targeted delivery
    assert decision.holdout is not None
    assert (decision.holdout.rule_key, decision.holdout.rule_type) == ("holdout_h", "holdout")

    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1")],
            holdouts=[_holdout("h", excludeTargetedDeliveries=True)],
        )
    )
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.rule_type) == ("everyone_else", "rollout")
    assert decision.holdout is not None


def test_local_holdouts_apply_to_their_rules_only() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1")],
            localHoldouts=[_holdout("h", includedRules=["99"]), _holdout("x")],
        )
    )
    assert _decide(engine, _user()).rule_key == "exp_1"
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", allocation=[("a", 0)])],
            localHoldouts=[_holdout("h", includedRules=["99"])],
        )
    )
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.rule_type) == ("holdout_h", "holdout")


def test_feature_rollout_experiments_get_everyone_else() -> None:
    experiment = _experiment("1", key="fr_test", allocation=[("a", 5000)], type="fr")
    engine = DecisionEngine(
        _flag_config(
            experiments=[experiment],
            rules=[_experiment("13", key="everyone_else", variations=("off",), enabled=(False,))],
        )
    )
    keys = {
        (d.rule_key, d.variation_key) for d in (_decide(engine, _user(f"u{i}")) for i in range(200))
    }
    assert keys == {("fr_test", "a"), ("fr_test", "off")}
    # Only type "fr" does it (optimizely-sdk 5.7.0 compares with "fr", not "feature_rollout").
    engine = DecisionEngine(_flag_config(experiments=[{**experiment, "type": "feature_rollout"}]))
    keys = {
        (d.rule_key, d.variation_key) for d in (_decide(engine, _user(f"u{i}")) for i in range(200))
    }
    assert ("fr_test", "off") not in keys


def test_non_string_bucketing_id_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", key="everyone_else")]))
    with caplog.at_level(logging.WARNING, logger="optitrack"):
        decision = _decide(engine, _user("u", **{"$opt_bucketing_id": 42}))
    assert decision.variation_key == _decide(engine, _user("u")).variation_key
    assert "Bucketing ID attribute is not a string. Defaulted to user_id." in decision.reasons
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_string_bucketing_id_replaces_the_user_id() -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", key="everyone_else")]))
    for index in range(50):
        by_bucketing_id = _decide(engine, _user("x", **{"$opt_bucketing_id": f"b{index}"}))
        assert by_bucketing_id.variation_key == _decide(engine, _user(f"b{index}")).variation_key


def test_reasons_can_be_skipped() -> None:
    engine = DecisionEngine(_flag_config())
    flag = engine.config.flags_by_key["flag"]
    assert engine.decide_flag(flag, _user(), {}, None, include_reasons=False).reasons == ()
    assert engine.decide_flag(flag, _user(), {}, None).reasons


# ---------------------------------------------------------------------------- variables

_VARIABLES = [
    {"id": "v1", "key": "count", "type": "integer", "defaultValue": "1"},
    {"id": "v2", "key": "ratio", "type": "double", "defaultValue": "0.5"},
    {"id": "v3", "key": "on", "type": "boolean", "defaultValue": "false"},
    {"id": "v4", "key": "name", "type": "string", "defaultValue": "default"},
    {"id": "v5", "key": "blob", "type": "json", "defaultValue": '{"a": 1}'},
    {"id": "v6", "key": "sub", "type": "string", "subType": "json", "defaultValue": "[1]"},
    {"id": "v7", "key": "broken", "type": "integer", "defaultValue": "1.5"},
]


def _variables_engine(enabled: bool) -> DecisionEngine:
    rule = _experiment("13", key="everyone_else", variations=("on",), enabled=(enabled,))
    rule["variations"][0]["variables"] = [
        {"id": "v1", "value": "7"},
        {"id": "v3", "value": "true"},
        {"id": "v5", "value": '{"b": [true, null]}'},
    ]
    return DecisionEngine(_flag_config(rules=[rule], variables=_VARIABLES))


def test_variables_of_an_enabled_variation_override_defaults() -> None:
    engine = _variables_engine(enabled=True)
    flag = engine.config.flags_by_key["flag"]
    decision = _decide(engine, _user())
    assert engine.all_variables(flag, decision.variation) == {
        "count": 7,
        "ratio": 0.5,
        "on": True,
        "name": "default",
        "blob": {"b": [True, None]},
        "sub": [1],
        "broken": None,
    }
    assert engine.variable_value(flag, "count", decision.variation) == 7
    assert engine.variable_value(flag, "missing", decision.variation) is None
    assert engine.variable_type(flag, "sub") == "json"
    assert engine.variable_type(flag, "name") == "string"
    assert engine.variable_type(flag, "missing") is None


def test_variables_of_a_disabled_variation_are_the_defaults() -> None:
    engine = _variables_engine(enabled=False)
    flag = engine.config.flags_by_key["flag"]
    variation = _decide(engine, _user()).variation
    assert engine.all_variables(flag, variation) == engine.all_variables(flag, None)
    assert engine.variable_value(flag, "count", variation) == 1
    assert engine.variable_value(flag, "on", None) is False


# ---------------------------------------------------------------------------- the rest


def test_user_profile_from_lookup() -> None:
    assert UserProfile.from_lookup("u", None).to_dict() == {
        "user_id": "u",
        "experiment_bucket_map": {},
    }
    assert UserProfile.from_lookup("u", {"user_id": "u"}).experiment_bucket_map == {}
    assert UserProfile.from_lookup("u", ["not", "a", "profile"]).user_id == "u"
    stored = {"user_id": "other", "experiment_bucket_map": {"1": {"variation_id": "x"}}}
    profile = UserProfile.from_lookup("u", stored)
    assert profile.user_id == "other"  # as optimizely-sdk, the stored record's id
    assert profile.variation_id("1") == "x"
    assert profile.variation_id("2") is None
    profile.save_variation("2", "y")
    assert profile.changed
    assert stored["experiment_bucket_map"] == {"1": {"variation_id": "x"}}  # not mutated
    assert "changed=True" in repr(profile)


def test_set_forced_variation_validates_and_survives_a_new_datafile() -> None:
    config = _config(experiments=[_experiment("1")])
    engine = DecisionEngine(config)
    assert not engine.set_forced_variation("nope", "u", "a")
    assert not engine.set_forced_variation("exp_1", "u", "zz")
    assert not engine.set_forced_variation("exp_1", "u", "")
    assert not engine.set_forced_variation("", "u", "a")
    assert engine.set_forced_variation("exp_1", "u", None)  # nothing to clear is fine
    assert engine.set_forced_variation("exp_1", "u", "b")
    engine.update_config(_config(experiments=[_experiment("1")], revision="4"))
    assert engine.get_forced_variation("exp_1", "u") == "b"
    assert engine.get_forced_variation("nope", "u") is None


def test_a_flag_from_elsewhere_is_decided_with_this_datafile() -> None:
    engine = DecisionEngine(_flag_config(experiments=[_experiment("1")]))
    stranger = load_datafile(
        {
            **_flag_config(experiments=[_experiment("1")]).datafile.model_dump(by_alias=True),
        }
    ).flags_by_key["flag"]
    assert engine.decide_flag(stranger, _user(), {}, None).rule_key == "exp_1"


def test_decision_properties() -> None:
    nothing = VariationDecision(None, None, None)
    assert (nothing.enabled, nothing.variation_key, nothing.rule_key) == (False, None, None)
    assert RuleType("feature-test") is RuleType.FEATURE_TEST
    assert f"{RuleType.HOLDOUT}" == "holdout"


def test_group_reasons() -> None:
    group = {
        "id": "g",
        "policy": "random",
        "trafficAllocation": [
            {"entityId": "1", "endOfRange": 3000},
            {"entityId": "", "endOfRange": 6000},
            {"entityId": "2", "endOfRange": 10_000},
        ],
        "experiments": [_experiment("1"), _experiment("2")],
    }
    engine = DecisionEngine(_config(groups=[group]))
    experiment = engine.experiment_by_key("exp_1")
    assert experiment is not None
    seen: set[str] = set()
    for index in range(100):
        reasons = engine.get_variation(experiment, _user(f"u{index}"), None).reasons
        seen.update(r.split('" ', 1)[1] for r in reasons if "group" in r or "no experiment" in r)
    assert seen == {
        "is in experiment exp_1 of group g.",
        'is not in experiment "exp_1" of group g.',
        "is in no experiment.",
    }


def test_reasons_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    engine = DecisionEngine(_flag_config())
    flag = engine.config.flags_by_key["flag"]
    with caplog.at_level(logging.DEBUG, logger="optitrack"):
        decision = engine.decide_flag(flag, _user(), {}, None, include_reasons=False)
    assert decision.reasons == ()
    assert 'User "u" bucketed into a targeting rule Everyone Else.' in caplog.messages


def test_flag_whose_rollout_is_missing() -> None:
    config = _flag_config(rules=[])
    datafile = config.datafile.model_dump(by_alias=True)
    datafile["featureFlags"][0]["rolloutId"] = "gone"
    engine = DecisionEngine(load_datafile(datafile))
    decision = _decide(engine, _user())
    assert (decision.variation, decision.rule_type) == (None, "rollout")
    assert decision.reasons == ("There is no rollout of feature flag.",)


def test_holdout_audiences() -> None:
    engine = DecisionEngine(
        _flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h", audienceIds=["100"])])
    )
    assert _decide(engine, _user(plan="pro")).rule_key == "holdout_h"
    free = _decide(engine, _user(plan="free"))
    assert free.rule_key == "exp_1"
    assert "User 'u' does not meet the conditions for holdout 'holdout_h'." in free.reasons
