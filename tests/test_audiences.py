"""Audience conditions: every match type, three-valued trees, and optimizely-sdk's answers."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from optimizely.helpers import condition as optimizely_condition
from optimizely.helpers import condition_tree_evaluator
from optimizely.logger import NoOpLogger, adapt_logger

from optitrack._decisions.audiences import (
    compile_audience,
    compile_audience_conditions,
    decode_conditions,
)
from optitrack._decisions.conditions import (
    MATCH_TYPES,
    compare_semver,
    compile_condition,
    evaluate_condition,
    is_finite_number,
)
from optitrack._decisions.datafile import Audience, TypedAudience

# ---------------------------------------------------------------------------- random input
# Shared with test_decisions.py, which builds random datafiles from these.

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


def _leaf(match: str | None, value: Any, name: str = "a") -> dict[str, Any]:
    condition: dict[str, Any] = {"name": name, "type": "custom_attribute", "value": value}
    if match is not None:
        condition["match"] = match
    return condition


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


T, F, U = True, False, None


def _const(value: bool | None) -> str:
    return {True: "t", False: "f", None: "u"}[value]


_CONSTANTS = {"t": (lambda attrs, segments: True), "f": (lambda attrs, segments: False)}


def _evaluate(tree: Any) -> bool | None:
    evaluator = compile_audience_conditions(tree, _CONSTANTS)  # "u" is an unknown audience
    assert evaluator is not None
    return evaluator({}, None)


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (["and", "t", "t"], T),
        (["and", "t", "f"], F),
        (["and", "u", "f"], F),
        (["and", "t", "u"], U),
        (["and"], T),
        (["or", "f", "f"], F),
        (["or", "u", "t"], T),
        (["or", "f", "u"], U),
        (["or"], F),
        (["not", "t"], F),
        (["not", "f"], T),
        (["not", "u"], U),
        (["not", "f", "f"], T),  # only the first operand counts
        (["not"], U),
        (["t", "f"], T),  # an implicit OR
        (["f", "u"], U),
        ("t", T),
        ("u", U),
        (["and", ["or", "f", "t"], ["not", "f"]], T),
        (["and", "t", []], U),  # optimizely-sdk raises on an empty list
        (["or", 5, None, True], U),  # leaves that are not audience ids
    ],
)
def test_tree_logic(tree: Any, expected: bool | None) -> None:
    assert _evaluate(tree) is expected


@pytest.mark.parametrize("tree", [None, [], ()])
def test_no_audience_conditions_means_everyone(tree: Any) -> None:
    assert compile_audience_conditions(tree, {}) is None


def test_legacy_and_typed_audiences() -> None:
    conditions = ["and", ["or", _leaf("exact", "pro", "plan")], _leaf("ge", 18, "age")]
    legacy = compile_audience(Audience(id="1", name="n", conditions=json.dumps(conditions)))
    typed = compile_audience(TypedAudience(id="1", name="n", conditions=conditions))
    cases: list[tuple[dict[str, Any], bool | None]] = [
        ({"plan": "pro", "age": 20}, True),
        ({"plan": "pro", "age": 10}, False),
        ({"plan": "pro"}, None),
        ({"plan": "free"}, False),
    ]
    for attributes, expected in cases:
        assert legacy(attributes, None) is expected
        assert typed(attributes, None) is expected


def test_undecodable_legacy_audience_is_unknown() -> None:
    assert compile_audience(Audience(id="1", name="n", conditions="[not json"))({}, None) is None


def test_decoding_replaces_objects_with_indexes() -> None:
    # As optimizely-sdk decodes: an object nested in a value becomes an index too, so this
    # condition compares the attribute with 0.
    text = '["and", {"name": "a", "type": "custom_attribute", "value": {"k": 1}}]'
    structure, conditions = decode_conditions(text)
    assert structure == ["and", 1]
    assert conditions == [[None, None, None, None], ["a", 0, "custom_attribute", None]]
    audience = compile_audience(Audience(id="1", name="n", conditions=text))
    assert audience({"a": 0}, None) is True
    assert audience({"a": {"k": 1}}, None) is None


def test_a_single_condition_object_is_an_audience() -> None:
    audience = compile_audience(TypedAudience(id="1", conditions=_leaf("exact", "x")))
    assert audience({"a": "x"}, None) is True


# ---------------------------------------------------------------------------- differential


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


def test_audience_trees_evaluate_like_optimizely() -> None:
    rng = random.Random(4)
    for _ in range(1_500):
        tree = random_tree(rng, lambda: random_condition(rng), 4)
        text = json.dumps(tree)
        legacy = compile_audience(Audience(id="1", name="n", conditions=text))
        for _ in range(4):
            context = _user(rng)
            try:
                expected = _reference_audience(text, context)
            except ValueError:
                continue
            assert legacy(context.attributes, context.segments) is expected, (tree, context)


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


class _Truthy:
    """What a numpy comparison returns: truthy, but not ``True``."""

    def __bool__(self) -> bool:
        return True


class _OddInt(int):
    """An int whose comparisons return a truthy non-bool, like numpy's integers."""

    def __gt__(self, other: object) -> Any:
        return _Truthy()

    def __eq__(self, other: object) -> Any:
        return _Truthy()

    __hash__ = int.__hash__


@pytest.mark.parametrize(
    "tree",
    [
        ["or", _leaf("gt", 1)],
        ["and", _leaf("gt", 1)],
        ["and", ["or", ["or", _leaf("exact", 1)]]],
        _leaf("gt", 1),
        ["not", _leaf("gt", 1)],
        ["or", _leaf("gt", 1), _leaf("exists", None, "b")],
        ["and", _leaf("gt", 1), _leaf("exists", None, "b")],
    ],
)
def test_non_bool_comparison_results_flow_through_the_tree_as_in_optimizely(tree: Any) -> None:
    context = _UserContext({"a": _OddInt(5)}, None)
    text = json.dumps(tree)
    expected = _reference_audience(text, context)
    got = compile_audience(Audience(id="1", name="n", conditions=text))(context.attributes, None)
    assert type(got) is type(expected)
    assert bool(got) == bool(expected)
