"""Loading and validating datafiles."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import optitrack
from optitrack import DatafileError, load_datafile


def test_loads_from_text_bytes_mapping_and_path(datafile: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "datafile.json"
    path.write_text(json.dumps(datafile))
    sources = (json.dumps(datafile), json.dumps(datafile).encode(), datafile, path, str(path))
    for source in sources:
        config = load_datafile(source)
        assert config.revision == "42"
        assert config.events_by_key["purchase"].id == "30101"


def _problems(datafile: Any) -> list[str]:
    with pytest.raises(DatafileError) as caught:
        load_datafile(datafile)
    assert isinstance(caught.value, ValueError)
    return caught.value.problems


def test_end_of_range_out_of_bounds_names_the_place(datafile: dict[str, Any]) -> None:
    datafile["experiments"][0]["trafficAllocation"][1]["endOfRange"] = 10001
    (problem,) = _problems(datafile)
    assert problem.startswith("experiments[0].trafficAllocation[1].endOfRange: must be <= 10000")
    datafile["experiments"][0]["trafficAllocation"][1]["endOfRange"] = -1
    (problem,) = _problems(datafile)
    assert problem.startswith("experiments[0].trafficAllocation[1].endOfRange: must be >= 0")


def test_every_problem_is_listed(datafile: dict[str, Any]) -> None:
    datafile["version"] = "5"
    del datafile["events"][1]["id"]
    datafile["experiments"][0]["id"] = 40101
    datafile["rollouts"][0]["experiments"][0]["trafficAllocation"][0]["endOfRange"] = 5.0
    problems = _problems(datafile)
    assert "version: must be one of '2', '3' or '4' (got '5')" in problems
    assert "events[1].id: is required" in problems
    assert "experiments[0].id: must be a string (got 40101)" in problems
    assert any(
        p.startswith("rollouts[0].experiments[0].trafficAllocation[0].endOfRange: must be an")
        for p in problems
    )
    assert len(problems) == 4


@pytest.mark.parametrize(
    "key",
    ["projectId", "accountId", "groups", "experiments", "events", "audiences", "attributes",
     "version", "revision"],
)  # fmt: skip
def test_required_top_level_keys(datafile: dict[str, Any], key: str) -> None:
    del datafile[key]
    assert _problems(datafile) == [f"{key}: is required"]


@pytest.mark.parametrize(
    "key",
    ["id", "layerId", "key", "status", "variations", "trafficAllocation", "audienceIds",
     "forcedVariations"],
)  # fmt: skip
def test_required_experiment_keys(datafile: dict[str, Any], key: str) -> None:
    del datafile["experiments"][0][key]
    assert _problems(datafile) == [f"experiments[0].{key}: is required"]


def test_not_json_and_not_an_object() -> None:
    assert _problems("{")[0].startswith("(json): not valid JSON")
    assert _problems("[]") == ["(datafile): must be a JSON object (got list)"]
    with pytest.raises(TypeError, match="not int"):
        load_datafile(3)  # type: ignore[arg-type]


def test_missing_file_is_a_datafile_error(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path / "nope.json")
    assert "nope.json" in problem
    (problem,) = _problems(str(tmp_path / "nope.json"))
    assert "nope.json" in problem


def test_accepts_what_optimizely_accepts(datafile: dict[str, Any]) -> None:
    lenient = copy.deepcopy(datafile)
    experiment = lenient["experiments"][0]
    experiment["trafficAllocation"] = []  # empty allocation
    experiment["id"] = "not-numeric"
    del experiment["variations"][0]["featureEnabled"]
    experiment["audienceIds"] = ["does-not-exist"]
    lenient["attributes"].append({"id": "10499", "key": "$opt_custom"})
    lenient["somethingNew"] = {"unknown": True}
    lenient["typedAudiences"][0]["conditions"] = ["or", ["unknown_operator"]]
    config = load_datafile(lenient)
    assert config.experiments_by_id["not-numeric"].variations[0].feature_enabled is False
    assert config.attribute_entity_id("$opt_custom") == "10499"


@pytest.mark.parametrize("version", ["2", "3", "4"])
def test_supported_versions(datafile: dict[str, Any], version: str) -> None:
    datafile["version"] = version
    assert load_datafile(datafile).datafile.version == version


def test_version_must_be_a_string(datafile: dict[str, Any]) -> None:
    datafile["version"] = 4
    assert _problems(datafile)[0].startswith("version: must be one of")


def test_client_accepts_a_loaded_config(datafile: dict[str, Any]) -> None:
    config = load_datafile(datafile)
    assert optitrack.Client(config).config is config


def test_accepts_nulls_and_loose_types_optimizely_accepts(datafile: dict[str, Any]) -> None:
    variation = datafile["experiments"][0]["variations"][0]
    variation["featureEnabled"] = None
    variation["variables"] = None
    datafile["experiments"][0]["type"] = 7
    datafile["featureFlags"][0]["variables"] = [
        {"id": "1", "key": "n", "type": "integer", "defaultValue": 3}
    ]
    config = load_datafile(datafile)
    loaded = config.experiments_by_id["40101"].variations[0]
    assert loaded.feature_enabled is False
    assert loaded.variables == ()


@pytest.mark.parametrize(
    ("path", "value", "read"),
    [
        (("anonymizeIP",), None, lambda c: c.anonymize_ip is False),
        (("anonymizeIP",), 1, lambda c: c.anonymize_ip is True),
        (("sendFlagDecisions",), None, lambda c: c.send_flag_decisions is False),
        (("sendFlagDecisions",), "true", lambda c: c.send_flag_decisions is True),
        (("botFiltering",), 0, lambda c: c.bot_filtering is None),  # not a boolean: unsent
        (("botFiltering",), None, lambda c: c.bot_filtering is None),
        (("region",), 3, lambda c: c.region == "US"),
        (("region",), "eu", lambda c: c.region == "EU"),
        (
            ("experiments", 0, "variations", 1, "featureEnabled"),
            1,
            lambda c: c.variations_by_key["checkout_test"]["treatment"].feature_enabled is True,
        ),
        (("featureFlags", 0, "id"), 5, lambda c: c.flags_by_key["new_checkout"].id == "5"),
        (("featureFlags", 0, "id"), None, lambda c: c.flags_by_key["new_checkout"].id == ""),
    ],
)
def test_values_outside_optimizelys_schema_load_as_its_sdk_loads_them(
    datafile: dict[str, Any], path: tuple[Any, ...], value: Any, read: Any
) -> None:
    # Optimizely's JSON schema does not type these: its SDK takes any value, and reads
    # flags by their truth. Datafiles come from its servers: never reject one it takes.
    from optimizely import optimizely as optimizely_module
    from optimizely.logger import NoOpLogger

    *parents, last = path
    target = datafile
    for step in parents:
        target = target[step]
    target[last] = value
    reference = optimizely_module.Optimizely(json.dumps(datafile), logger=NoOpLogger())
    assert reference.config_manager.get_config() is not None
    reference.close()
    assert read(load_datafile(datafile))


def test_a_flag_id_that_is_not_a_scalar_is_a_datafile_error(datafile: dict[str, Any]) -> None:
    datafile["featureFlags"][0]["id"] = ["70101"]
    with pytest.raises(DatafileError, match=r"featureFlags\[0\]\.id: must be a string"):
        load_datafile(datafile)
