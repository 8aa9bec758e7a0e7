"""Feature variables: typed values, overridden by an enabled variation."""

from __future__ import annotations

from optitrack._decisions import DecisionEngine

from ._builders import _decide, _experiment, _flag_config, _user

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
