"""Audience conditions, the leaves: every match type, semantic versions, finite numbers,
and optimizely-sdk's answers."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from optimizely.helpers import condition as optimizely_condition

from optitrack._decisions.audiences import compile_audience
from optitrack._decisions.conditions import (
    compare_semver,
    compile_condition,
    evaluate_condition,
    is_finite_number,
)
from optitrack._decisions.datafile import TypedAudience

from ._builders import _leaf
from ._random_datafiles import (
    _LOGGER,
    VERSIONS,
    _reference_audience,
    _user,
    _UserContext,
    random_condition,
)

BIG = 2**53

# (match, condition value, attributes, expected): the spec's rules, one line each.
MATCH_CASES: list[tuple[str | None, Any, dict[str, Any], bool | None]] = [
    # exact: same type family, numbers with numbers, bool only with bool
    ("exact", "pro", {"a": "pro"}, True),
    ("exact", "pro", {"a": "PRO"}, False),
    ("exact", "pro", {"a": 1}, None),
    (None, "pro", {"a": "pro"}, True),  # missing match is exact
    ("exact", 18, {"a": 18.0}, True),
    ("exact", 18.5, {"a": 18}, False),
    ("exact", True, {"a": True}, True),
    ("exact", True, {"a": 1}, None),
    ("exact", 1, {"a": True}, None),
    ("exact", False, {"a": False}, True),
    ("exact", 1, {"a": math.nan}, None),
    ("exact", 1, {"a": BIG + 1}, None),
    ("exact", BIG, {"a": BIG}, True),
    ("exact", BIG + 1, {"a": BIG + 1}, None),  # the condition's number is out of range
    ("exact", math.inf, {"a": math.inf}, None),
    ("exact", [1], {"a": [1]}, None),
    ("exact", None, {"a": None}, None),
    ("exact", "x", {}, None),
    ("exact", "x", {"a": None}, None),
    # exists: present and not None, whatever the type
    ("exists", None, {"a": 0}, True),
    ("exists", None, {"a": False}, True),
    ("exists", None, {"a": ""}, True),
    ("exists", None, {"a": None}, False),
    ("exists", None, {}, False),
    ("exists", None, {"a": [1]}, True),
    # gt / ge / lt / le: finite numbers, bools are not numbers
    ("gt", 18, {"a": 19}, True),
    ("gt", 18, {"a": 18}, False),
    ("gt", 18, {"a": 18.0001}, True),
    ("ge", 18, {"a": 18.0}, True),
    ("ge", 18, {"a": 17.9}, False),
    ("lt", 18, {"a": 17}, True),
    ("lt", 18, {"a": 18}, False),
    ("le", 18, {"a": 18}, True),
    ("le", 18, {"a": 19}, False),
    ("gt", 18, {"a": "19"}, None),
    ("gt", 18, {"a": True}, None),
    ("gt", True, {"a": 2}, None),
    ("gt", "18", {"a": 19}, None),
    ("gt", 18, {"a": math.nan}, None),
    ("gt", 18, {"a": math.inf}, None),
    ("lt", 18, {"a": -math.inf}, None),
    ("gt", 18, {"a": BIG}, True),
    ("gt", 18, {"a": BIG + 1}, None),
    ("lt", 18, {"a": -BIG - 1}, None),
    ("gt", BIG + 1, {"a": 1}, None),
    ("gt", 1e300, {"a": 1}, None),
    ("le", -BIG, {"a": -BIG}, True),
    ("gt", 18, {}, None),
    # substring: str in str
    ("substring", "pro", {"a": "a pro plan"}, True),
    ("substring", "pro", {"a": "free"}, False),
    ("substring", "", {"a": "free"}, True),
    ("substring", "1", {"a": 12}, None),
    ("substring", 1, {"a": "12"}, None),
    # qualified: the value in the user's segments (no attribute needed)
    ("qualified", "seg", {}, False),
    ("qualified", 3, {}, None),
    # semver
    ("semver_eq", "2.0", {"a": "2.0.0"}, True),
    ("semver_eq", "2.0.0", {"a": "2.0"}, False),
    ("semver_eq", "2", {"a": "2.9.1"}, True),
    ("semver_gt", "2.0.0", {"a": "2.0.1"}, True),
    ("semver_gt", "2.0.0", {"a": "10.0.0"}, True),
    ("semver_lt", "2.0.0", {"a": "2.0.0-beta"}, True),
    ("semver_gt", "2.0.0-beta", {"a": "2.0.0"}, True),
    ("semver_lt", "2.0.0-beta", {"a": "2.0.0-alpha"}, True),
    ("semver_ge", "2.0.0+build.1", {"a": "2.0.0"}, True),
    ("semver_le", "2.0.0", {"a": "2.0.0"}, True),
    ("semver_eq", "2.0.0", {"a": "2.0.0 "}, None),  # whitespace
    ("semver_eq", "2.0.0", {"a": "1.2.3.4"}, None),  # more than two dots
    ("semver_eq", "2.0.0", {"a": "1..2"}, None),  # an empty part
    ("semver_eq", "2.0.0", {"a": "a.b.c"}, None),  # not numeric
    ("semver_eq", "2.0.0", {"a": ""}, None),
    ("semver_eq", "1.2.3.4", {"a": "1.2.3"}, None),  # an invalid target
    ("semver_eq", "2.0.0", {"a": 2}, None),
    ("semver_eq", 2, {"a": "2"}, None),
    ("semver_eq", "2.1-beta", {"a": "2.1.5"}, None),  # optimizely-sdk raises here
    # anything else is unknown
    ("regex", "p.*", {"a": "pro"}, None),
]


@pytest.mark.parametrize(("match", "value", "attributes", "expected"), MATCH_CASES)
def test_match_types(
    match: str | None, value: Any, attributes: dict[str, Any], expected: bool | None
) -> None:
    assert evaluate_condition(_leaf(match, value), attributes) is expected


def test_qualified_uses_segments() -> None:
    condition = {"name": "odp.audiences", "type": "third_party_dimension", "match": "qualified"}
    assert evaluate_condition({**condition, "value": "s"}, {}, frozenset({"s"})) is True
    assert evaluate_condition({**condition, "value": "s"}, {}, frozenset({"t"})) is False
    assert evaluate_condition({**condition, "value": "s"}, {}, None) is False
    # Optimizely does not need a hashable name for qualified.
    assert compile_condition([["x"], "s", "custom_attribute", "qualified"])({}, {"s"}) is True


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("custom_attribute", True), ("third_party_dimension", True), ("browser", None), (None, None)],
)
def test_condition_type(kind: str | None, expected: bool | None) -> None:
    assert evaluate_condition({"name": "a", "type": kind, "value": "x"}, {"a": "x"}) is expected


def test_unhashable_match_or_name_is_unknown() -> None:
    assert compile_condition(["a", "x", "custom_attribute", ["exact"]])({"a": "x"}, None) is None
    assert compile_condition([["a"], "x", "custom_attribute", "exact"])({"a": "x"}, None) is None


def test_finite_numbers() -> None:
    assert is_finite_number(BIG)
    assert is_finite_number(-BIG)
    assert is_finite_number(0.5)
    assert not is_finite_number(BIG + 1)
    assert not is_finite_number(float(BIG) * 2)
    assert not is_finite_number(math.nan)
    assert not is_finite_number(True)
    assert not is_finite_number("1")


# ---------------------------------------------------------------------------- differential


def test_conditions_evaluate_like_optimizely() -> None:
    rng = random.Random(3)
    compared = 0
    for _ in range(8_000):
        condition = random_condition(rng)
        context = _user(rng)
        text = json.dumps(condition)
        try:
            expected = _reference_audience(text, context)
        except ValueError:  # int("beta") in optimizely-sdk's semver
            continue
        got = compile_audience(TypedAudience(id="1", conditions=condition))(
            context.attributes, context.segments
        )
        assert got is expected, (condition, context.attributes)
        compared += 1
    assert compared > 7_800


def _versions(rng: random.Random, count: int) -> list[str]:
    parts = ["0", "1", "2", "10", "01", "", "a", "beta", "rc.1", "-", "+", ".", " "]
    out = list(VERSIONS)
    for _ in range(count):
        out.append("".join(rng.choice(parts) for _ in range(rng.randint(1, 6))))
    return out


def test_semver_compares_like_optimizely() -> None:
    evaluator = optimizely_condition.CustomAttributeConditionEvaluator(
        [], _UserContext({}, None), _LOGGER
    )
    versions = _versions(random.Random(5), 110)
    compared = 0
    for target in versions:
        for user in versions:
            try:
                expected = evaluator.compare_user_version_with_target_version(target, user)
            except ValueError:  # int() of a pre-release part; unknown here
                assert compare_semver(target, user) is None
                continue
            assert compare_semver(target, user) == expected, (target, user)
            compared += 1
    assert compared > 15_000
