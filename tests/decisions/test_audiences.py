"""Audiences: three-valued condition trees, decoding, legacy and typed audiences, and
optimizely-sdk's answers."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from optitrack._decisions.audiences import (
    compile_audience,
    compile_audience_conditions,
    decode_conditions,
)
from optitrack._decisions.datafile import Audience, TypedAudience

from ._builders import _leaf
from ._random_datafiles import (
    _reference_audience,
    _user,
    _UserContext,
    random_condition,
    random_tree,
)

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
