"""ProjectConfig: one index of the datafile, the one Optimizely's SDK builds.

What a user reads from ``client.config`` must be what the engine decides with, and both
must be what optimizely-sdk 5.7.0 finds: its ``ProjectConfig`` is the reference here, on
the example datafile and on generated ones with repeated keys and ids.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from optimizely import optimizely as optimizely_sdk
from optimizely.logger import NoOpLogger

import optitrack
from optitrack import load_datafile

from ._random_datafiles import _random_case


def _id(variation: Any) -> str:
    # optimizely-sdk keeps some variations (holdouts', everyone else's) as dicts.
    return str(variation["id"] if isinstance(variation, dict) else variation.id)


def _reference_config(datafile: dict[str, Any]) -> Any:
    client = optimizely_sdk.Optimizely(json.dumps(datafile), logger=NoOpLogger())
    config = client.config_manager.get_config()
    client.close()
    assert config is not None, "optimizely-sdk rejected the datafile"
    return config


def _check_against_reference(datafile: dict[str, Any]) -> None:
    ours = load_datafile(copy.deepcopy(datafile))
    ref = _reference_config(datafile)
    assert set(ours.events_by_key) == set(ref.event_key_map)
    assert set(ours.attributes_by_key) == set(ref.attribute_key_map)
    assert set(ours.rollouts_by_id) == set(ref.rollout_id_map)
    assert set(ours.flags_by_key) == set(ref.feature_key_map)
    assert {k: e.id for k, e in ours.experiments_by_id.items()} == {
        k: e.id for k, e in ref.experiment_id_map.items()
    }
    assert {k: e.id for k, e in ours.experiments_by_key.items()} == {
        k: e.id for k, e in ref.experiment_key_map.items()
    }
    for ours_index, ref_index in (
        (ours.variations_by_key, ref.variation_key_map),
        (ours.variations_by_id, ref.variation_id_map),
        (ours.variations_by_experiment_id, ref.variation_id_map_by_experiment_id),
    ):
        assert {k: {vk: v.id for vk, v in inner.items()} for k, inner in ours_index.items()} == {
            k: {vk: _id(v) for vk, v in inner.items()} for k, inner in ref_index.items()
        }
    assert {
        k: [v.id for v in inner.values()] for k, inner in ours.flag_variations_by_id.items()
    } == {k: [_id(v) for v in variations] for k, variations in ref.flag_variations_map.items()}
    assert {k: dict(inner) for k, inner in ours.variable_values.items()} == {
        k: {i: usage.value for i, usage in inner.items()}
        for k, inner in ref.variation_variable_usage_map.items()
    }
    assert set(ours.flags_by_experiment_id) == set(ref.experiment_feature_map)


def test_the_example_datafile_is_indexed_as_optimizely_indexes_it(
    datafile: dict[str, Any],
) -> None:
    _check_against_reference(datafile)
    config = load_datafile(datafile)
    assert config.experiments_by_key["checkout_test"].id == "40101"
    assert config.experiments_by_id["40202"].key == "default-rollout-70101"  # a rollout rule
    assert config.variations_by_key["checkout_test"]["treatment"].id == "60102"
    assert config.flags_by_key["new_checkout"].rollout_id == "80101"
    assert config.audiences_by_id["20502"].name == "adults_on_v2"
    assert config.sdk_key is None or isinstance(config.sdk_key, str)
    assert config.anonymize_ip is True
    assert config.bot_filtering is False


@pytest.mark.parametrize("seed", range(40))
def test_generated_datafiles_are_indexed_as_optimizely_indexes_them(seed: int) -> None:
    datafile, _, _, _ = _random_case(seed)
    _check_against_reference(datafile)


def test_what_the_config_names_is_what_get_variation_decides_with(
    datafile: dict[str, Any],
) -> None:
    # Two experiments share a key: Optimizely's SDK (and so the config, and decisions)
    # use the later one; the earlier one is unreachable by key.
    shadow = copy.deepcopy(datafile["experiments"][0])
    shadow["id"] = "49999"
    shadow["trafficAllocation"] = [{"entityId": shadow["variations"][0]["id"], "endOfRange": 10000}]
    shadow["audienceIds"] = []
    shadow["audienceConditions"] = []
    datafile["experiments"].append(shadow)
    client = optitrack.Client(datafile)
    experiment = client.config.experiments_by_key[shadow["key"]]
    assert experiment.id == "49999"
    for user in range(50):
        assert client.get_variation(shadow["key"], f"user-{user}") == shadow["variations"][0]["key"]
    reference = _reference_config(datafile)
    assert reference.experiment_key_map[shadow["key"]].id == "49999"


def test_indexes_are_read_only(datafile: dict[str, Any]) -> None:
    config = load_datafile(datafile)
    with pytest.raises(TypeError):
        config.events_by_key["x"] = config.events_by_key["purchase"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        ("EU", "https://eu.logx.optimizely.com/v1/events"),
        ("eu", "https://eu.logx.optimizely.com/v1/events"),
        ("US", "https://logx.optimizely.com/v1/events"),
        ("mars", "https://logx.optimizely.com/v1/events"),
        (None, "https://logx.optimizely.com/v1/events"),
    ],
)
def test_region_picks_the_endpoint(
    datafile: dict[str, Any], region: str | None, endpoint: str
) -> None:
    if region is not None:
        datafile["region"] = region
    assert load_datafile(datafile).default_event_endpoint == endpoint


def test_attribute_entity_ids(datafile: dict[str, Any]) -> None:
    config = load_datafile(datafile)
    assert config.attribute_entity_id("plan") == "10401"
    assert config.attribute_entity_id("$opt_user_agent") == "$opt_user_agent"
    assert config.attribute_entity_id("unknown") is None
