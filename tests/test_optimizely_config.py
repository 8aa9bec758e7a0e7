"""OptimizelyConfig: what optimizely-sdk 5.7.0's ``get_optimizely_config()`` returns.

Differential: optimizely-sdk's config and optitrack's are turned into plain nested dicts by
one converter (which walks either object's public attributes) and must be equal, key order
included, on the example datafile, on generated ones and on hand-made ones with the quirks;
then the quirks themselves, with their values written out.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from optimizely import optimizely as optimizely_sdk
from optimizely.logger import NoOpLogger

import optitrack
from optitrack import load_datafile
from optitrack._optimizely_config import (
    OptimizelyAudience,
    OptimizelyConfig,
    OptimizelyVariable,
    build_optimizely_config,
)
from tests.conftest import load_fixture
from tests.decisions._random_datafiles import _random_case

SEEDS = range(60)
#: At most this many generated datafiles may be ones optimizely-sdk refuses.
MAX_REFUSED = 3


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    # ProjectConfig warns of the generated datafiles' dangling audience ids.
    caplog.set_level(logging.ERROR, logger="optitrack")


def plain(value: Any) -> Any:
    """Either SDK's config objects as plain dicts (by public attribute) and lists."""
    if type(value).__name__.startswith("Optimizely"):
        out = {
            name: plain(getattr(value, name))
            for name in dir(value)
            if not name.startswith("_") and not callable(getattr(value, name))
        }
        if hasattr(value, "get_datafile"):  # optimizely-sdk keeps it in ``_datafile``
            out["datafile"] = value.get_datafile()
        return dict(sorted(out.items()))
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def reference(datafile: dict[str, Any]) -> Any:
    """optimizely-sdk's OptimizelyConfig, or ``None`` when it refuses the datafile."""
    try:
        client = optimizely_sdk.Optimizely(json.dumps(datafile), logger=NoOpLogger())
    except Exception:  # its OptimizelyConfigService raises out of the constructor
        return None
    try:
        return client.get_optimizely_config()
    finally:
        client.close()


def ours(datafile: dict[str, Any]) -> OptimizelyConfig:
    text = json.dumps(datafile)
    return build_optimizely_config(load_datafile(text), text)


def assert_same(datafile: dict[str, Any]) -> OptimizelyConfig:
    expected = reference(copy.deepcopy(datafile))
    assert expected is not None, "optimizely-sdk refused the datafile"
    got = ours(datafile)
    want, have = plain(expected), plain(got)
    assert have == want
    # Same order too: features and experiments by their first key, variations, rules.
    assert json.dumps(have) == json.dumps(want)
    return got


@functools.cache
def _generated(seed: int) -> tuple[dict[str, Any], Any]:
    datafile = _random_case(seed)[0]
    return datafile, reference(copy.deepcopy(datafile))


# ---------------------------------------------------------------------------- differential


def test_the_example_datafile(datafile: dict[str, Any]) -> None:
    config = assert_same(datafile)
    assert config.get_datafile() == json.dumps(datafile)
    assert config.sdk_key == "OPTITRACK_TEST_SDK_KEY"
    assert config.environment_key == "production"
    feature = config.features_map["new_checkout"]
    assert [r.key for r in feature.delivery_rules] == ["pro_delivery", "default-rollout-70101"]
    assert feature.delivery_rules[0].audiences == '"pro_users"'
    assert feature.experiment_rules == (config.experiments_map["checkout_test"],)
    assert [a.id for a in config.audiences] == ["20502", "20501"]  # no $opt_dummy_audience


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_datafiles(seed: int) -> None:
    datafile, expected = _generated(seed)
    if expected is None:
        pytest.skip("optimizely-sdk refused this datafile")
    got = ours(datafile)
    assert plain(got) == plain(expected)
    assert json.dumps(plain(got)) == json.dumps(plain(expected))


def test_optimizely_refuses_few_generated_datafiles() -> None:
    refused = [seed for seed in SEEDS if _generated(seed)[1] is None]
    assert len(refused) <= MAX_REFUSED, refused


def test_to_dict_is_the_plain_form(datafile: dict[str, Any]) -> None:
    config = ours(datafile)
    assert config.to_dict() == plain(config)
    variable = OptimizelyVariable("1", "k", "json", "{}")
    assert variable.to_dict() == {"id": "1", "key": "k", "type": "json", "value": "{}"}


# ---------------------------------------------------------------------------- hand-made datafiles


def _variation(vid: str, key: str, enabled: Any = ..., **values: str) -> dict[str, Any]:
    variation: dict[str, Any] = {
        "id": vid,
        "key": key,
        "variables": [{"id": k, "value": v} for k, v in values.items()],
    }
    if enabled is not ...:
        variation["featureEnabled"] = enabled
    return variation


def _rule(eid: str, key: str, *variations: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": eid,
        "key": key,
        "layerId": "l" + eid,
        "status": "Running",
        "variations": list(variations),
        "trafficAllocation": [{"entityId": variations[0]["id"], "endOfRange": 10000}],
        "audienceIds": [],
        "forcedVariations": {},
        **fields,
    }


def _datafile(**fields: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": "3",
        "attributes": [],
        "audiences": [],
        "events": [],
        "experiments": [],
        "groups": [],
        **fields,
    }


AUDIENCES: dict[str, list[dict[str, Any]]] = {
    "audiences": [
        {"id": "1", "name": "us", "conditions": "[]"},
        {"id": "2", "name": "eu", "conditions": "[]"},
        {"id": "$opt_dummy_audience", "name": "dummy", "conditions": "[]"},
    ],
    "typedAudiences": [{"id": "2", "name": "europe", "conditions": ["or", {"name": "c"}]}],
}


@pytest.mark.parametrize(
    ("conditions", "described"),
    [
        (["or", "1", "2"], '"us" OR "europe"'),
        (["and", "1", "2", "1"], '"us" AND "europe" AND "us"'),
        (["1", "2"], '"us" OR "europe"'),  # no operator: OR
        (["not", "1"], 'NOT "us"'),
        (["or", "1"], '"us"'),
        (["1"], '"us"'),
        (["and", "1", ["or", "2", "9"]], '"us" AND ("europe" OR "9")'),  # 9: no such audience
        (["and", ["or", "1", "2"], "1"], '("us" OR "europe") AND "us"'),
        (["or", ["not", "1"], ["not", "2"]], '(NOT "us") OR (NOT "europe")'),
        (["not", ["or", "1", "2"]], 'NOT ("us" OR "europe")'),
        (["or", None, "1"], 'OR "us"'),  # a null id: skipped, its operator kept
        ("12", '"us" OR "europe"'),  # a bare string: its characters
        ("1", '"us"'),
        ([], ""),
        (None, ""),
    ],
)
def test_audience_strings(conditions: Any, described: str) -> None:
    experiment = _rule("100", "e", _variation("101", "v"), audienceConditions=conditions)
    config = assert_same(_datafile(experiments=[experiment], **AUDIENCES))
    assert config.experiments_map["e"].audiences == described


@pytest.mark.parametrize(
    ("conditions", "described"),
    [
        ([["or", "1", "2"]], '"us" OR "europe"'),  # a lone list: what it holds
        (["or", "1", 5], '"us" OR "5"'),  # a leaf that is not a string: as JSON
        (["not", None], 'NOT "null"'),
    ],
)
def test_audience_strings_where_optimizely_raises(conditions: Any, described: str) -> None:
    experiment = _rule("100", "e", _variation("101", "v"), audienceConditions=conditions)
    datafile = _datafile(experiments=[experiment], **AUDIENCES)
    assert reference(copy.deepcopy(datafile)) is None
    assert ours(datafile).experiments_map["e"].audiences == described


def test_audience_string_without_audience_conditions_ignores_audience_ids() -> None:
    experiment = _rule("100", "e", _variation("101", "v"), audienceIds=["1", "2"])
    config = assert_same(_datafile(experiments=[experiment], **AUDIENCES))
    assert config.experiments_map["e"].audiences == ""


def test_audiences_typed_first_as_json_text() -> None:
    typed = [
        *AUDIENCES["typedAudiences"],
        {"id": "7", "name": "", "conditions": ["and", {"name": "ü", "value": 1.5}]},
    ]
    config = assert_same(_datafile(audiences=AUDIENCES["audiences"], typedAudiences=typed))
    assert config.audiences == (
        OptimizelyAudience("2", "europe", '["or", {"name": "c"}]'),
        OptimizelyAudience("7", "", '["and", {"name": "\\u00fc", "value": 1.5}]'),
        OptimizelyAudience("1", "us", "[]"),
    )


def _flag_datafile(*, sub_type: str | None = "json") -> dict[str, Any]:
    """A flag with a string, a json (subType) variable, an experiment and a rollout."""
    json_variable: dict[str, Any] = {"id": "j", "key": "blob", "type": "string"}
    if sub_type is not None:
        json_variable["subType"] = sub_type
    variables = [
        {"id": "s", "key": "text", "type": "string", "defaultValue": "default"},
        {**json_variable, "defaultValue": '{"a": 1}'},
    ]
    experiment = _rule(
        "100",
        "exp",
        _variation("101", "on", True, s="on-text", j='{"on": true}'),
        _variation("102", "off", False, s="off-text"),
        _variation("103", "unset", s="unset-text"),
        type="fr",
    )
    rollout = {
        "id": "900",
        "experiments": [
            _rule("901", "targeted", _variation("902", "t", True, s="targeted-text")),
            _rule("903", "everyone", _variation("904", "e", True, s="everyone-text")),
        ],
    }
    flag = {
        "id": "800",
        "key": "flag",
        "experimentIds": ["100"],
        "rolloutId": "900",
        "variables": variables,
    }
    return _datafile(
        experiments=[experiment],
        featureFlags=[flag],
        # Delivery rules come from the first rollout with the id, Everyone Else from the last.
        rollouts=[rollout, {"id": "900", "experiments": rollout["experiments"][-1:]}],
    )


def _values(variations: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: {name: v.value for name, v in variation.variables_map.items()}
        for key, variation in variations.items()
    }


def test_variables_of_disabled_variations_are_the_defaults() -> None:
    config = assert_same(_flag_datafile())
    variations = config.experiments_map["exp"].variations_map
    assert _values(variations) == {
        "on": {"text": "on-text", "blob": '{"on": true}'},
        "off": {"text": "default", "blob": '{"a": 1}'},
        "unset": {"text": "default", "blob": '{"a": 1}'},
        # Everyone Else, appended to the "fr" experiment: enabled, its own values.
        "e": {"text": "everyone-text", "blob": '{"a": 1}'},
    }
    assert [v.feature_enabled for v in variations.values()] == [True, False, None, True]


def test_delivery_rules_show_the_defaults_in_order() -> None:
    config = assert_same(_flag_datafile())
    feature = config.features_map["flag"]
    assert [r.key for r in feature.delivery_rules] == ["targeted", "everyone"]
    for rule in feature.delivery_rules:
        for values in _values(rule.variations_map).values():
            assert values == {"text": "default", "blob": '{"a": 1}'}
    assert feature.experiment_rules == (config.experiments_map["exp"],)
    assert dict(feature.experiments_map) == {"exp": config.experiments_map["exp"]}


@pytest.mark.parametrize(
    ("sub_type", "kind"), [("json", "json"), (None, "string"), ("x", "string")]
)
def test_json_variables(sub_type: str | None, kind: str) -> None:
    config = assert_same(_flag_datafile(sub_type=sub_type))
    feature = config.features_map["flag"]
    assert feature.variables_map["blob"].type == kind
    assert config.experiments_map["exp"].variations_map["on"].variables_map["blob"].type == kind
    assert feature.delivery_rules[0].variations_map["t"].variables_map["blob"].type == kind


def test_duplicates() -> None:
    """Repeated keys and ids: the last wins, in the place of the first; json typing."""
    datafile = _flag_datafile()
    first = datafile["experiments"][0]
    again = {**_rule("110", "exp", _variation("111", "v", True)), "type": "ab"}
    other = _rule("120", "other", _variation("121", "w"))
    datafile["experiments"] = [first, other]
    datafile["groups"] = [
        {"id": "g", "policy": "random", "trafficAllocation": [], "experiments": [again]},
        {"id": "g", "policy": "random", "trafficAllocation": [], "experiments": [first]},
    ]
    flag = datafile["featureFlags"][0]
    datafile["featureFlags"] = [
        {**flag, "key": "m", "experimentIds": []},  # the id of the next one
        flag,
        {**flag, "id": "810", "experimentIds": ["120"], "variables": flag["variables"][:1]},
    ]
    config = assert_same(datafile)
    # Every group's experiments, though optimizely-sdk decides with the last group "g" only.
    assert list(config.experiments_map) == ["exp", "other"]
    assert config.experiments_map["exp"].id == "100"  # the last "exp": the second group's
    assert config.features_map["flag"].id == "810"
    # Flag "m" shares the id of the first "flag", whose json variable is not retyped.
    rule = config.features_map["m"].delivery_rules[0]
    assert rule.variations_map["t"].variables_map["blob"].type == "string"


def test_everyone_else_goes_to_the_experiment_that_wins_its_id() -> None:
    datafile = _flag_datafile()
    experiment = datafile["experiments"][0]
    # A rollout rule with the experiment's id: it wins the id, so it gets Everyone Else.
    datafile["rollouts"] = datafile["rollouts"][:1]
    datafile["rollouts"][0]["experiments"].insert(0, {**experiment, "key": "rule-copy"})
    # A holdout with that id too (it replaces the id's variations in the decision index).
    datafile["holdouts"] = [{**_rule("100", "h", _variation("191", "hv")), "status": "Running"}]
    config = assert_same(datafile)
    assert list(config.experiments_map["exp"].variations_map) == ["on", "off", "unset"]
    copied = config.features_map["flag"].delivery_rules[0]
    assert list(copied.variations_map) == ["on", "off", "unset", "e"]


def test_missing_keys() -> None:
    config = assert_same(_datafile())
    assert (config.sdk_key, config.environment_key) == ("", "")
    assert (config.attributes, config.events, config.audiences) == ((), (), ())
    assert dict(config.features_map) == {} == dict(config.experiments_map)


def test_where_optimizely_raises_the_rule_is_left_out() -> None:
    datafile = _flag_datafile()
    datafile["featureFlags"][0]["experimentIds"] = ["100", "901"]  # a rollout rule
    assert reference(copy.deepcopy(datafile)) is None
    feature = ours(datafile).features_map["flag"]
    assert [r.key for r in feature.experiment_rules] == ["exp"]


# ---------------------------------------------------------------------------- read-only


def _objects(config: OptimizelyConfig) -> Iterator[Any]:
    yield config
    yield from (*config.attributes, *config.events, *config.audiences)
    for experiment in (
        *config.experiments_map.values(),
        *(r for f in config.features_map.values() for r in f.delivery_rules),
    ):
        yield experiment
        for variation in experiment.variations_map.values():
            yield variation
            yield from variation.variables_map.values()
    yield from config.features_map.values()


def test_everything_is_read_only() -> None:
    config = ours(_flag_datafile())
    for obj in _objects(config):
        name = dataclasses.fields(obj)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            assert not isinstance(value, list | dict), (type(obj).__name__, f.name)
    with pytest.raises(TypeError):
        config.features_map["flag"].variables_map["text"] = None  # type: ignore[index]


def test_the_example_fixture_is_unchanged_by_a_build() -> None:
    datafile = load_fixture("datafile_example.json")
    before = copy.deepcopy(datafile)
    ours(datafile)
    assert datafile == before


def test_the_client_gives_it_built_once_per_datafile(datafile: dict[str, Any]) -> None:
    client = optitrack.Client(json.dumps(datafile))
    built = client.get_optimizely_config()
    assert built is not None
    assert client.get_optimizely_config() is built
    assert plain(built) == plain(reference(datafile))
    assert json.loads(built.get_datafile()) == datafile
    changed = {**datafile, "revision": "43"}
    client.update_datafile(changed)
    again = client.get_optimizely_config()
    assert again is not None
    assert again.revision == "43"


def test_no_datafile_gives_none() -> None:
    assert optitrack.Client(sdk_key="k").get_optimizely_config() is None
