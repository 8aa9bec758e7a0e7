"""Deeply nested datafiles: refused with a DatafileError that says where, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest

import optitrack
from optitrack import DatafileError, load_datafile

LIMIT = 100


def nested(levels: int) -> list[Any]:
    """A list nested ``levels`` levels deep (``nested(1) == []``), built without recursion."""
    outer: list[Any] = []
    inner = outer
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return outer


def _problem(source: Any) -> str:
    with pytest.raises(DatafileError) as caught:
        load_datafile(source)
    (problem,) = caught.value.problems
    return problem


def test_deep_json_text_is_refused() -> None:
    text = '{"a":' * 100_000 + "1" + "}" * 100_000
    assert _problem(text) == f"(json): nested deeper than {LIMIT} levels"
    assert _problem(text.encode()) == f"(json): nested deeper than {LIMIT} levels"


@pytest.mark.parametrize("levels", [LIMIT + 1, 5_000])
def test_a_deep_audience_conditions_string_names_the_audience(
    datafile: dict[str, Any], levels: int
) -> None:
    audience = datafile["audiences"][0]
    # Past the limit by one, and far past it (deeper than Python's JSON parser can go).
    audience["conditions"] = (
        json.dumps(["or", nested(levels - 1)])
        if levels == LIMIT + 1
        else "[" * levels + "]" * levels
    )
    expected = f"audience {audience['id']!r} conditions: nested deeper than {LIMIT} levels"
    assert _problem(datafile) == expected
    assert _problem(json.dumps(datafile)) == expected


def test_deep_mappings_given_directly_are_refused(datafile: dict[str, Any]) -> None:
    datafile["experiments"][0]["audienceConditions"] = nested(5_000)
    assert _problem(datafile) == (
        f"experiments[0].audienceConditions...: nested deeper than {LIMIT} levels"
    )
    del datafile["experiments"][0]["audienceConditions"]
    datafile["typedAudiences"] = [{"id": "9", "conditions": nested(5_000)}]
    assert _problem(datafile).startswith("typedAudiences[0].conditions...: nested deeper")


def test_a_cycle_in_a_mapping_is_refused(datafile: dict[str, Any]) -> None:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    loop["twice"] = loop  # shared, not only cyclic: checked once per container
    datafile["extra"] = loop
    assert (
        _problem(datafile)
        == f"extra.again.again.again.again.again...: nested deeper than {LIMIT} levels"
    )


def test_nesting_up_to_the_limit_loads(datafile: dict[str, Any]) -> None:
    # The datafile, the experiments list and an experiment are three levels.
    datafile["experiments"][0]["audienceConditions"] = ["or", nested(LIMIT - 4)]
    datafile["audiences"][0]["conditions"] = json.dumps(["or", nested(LIMIT - 1)])
    config = load_datafile(json.dumps(datafile))
    assert config.revision == "42"
    optitrack.Client(config)  # compiles the audiences too
