"""Small hand-built decision inputs shared by the tests of ``tests/decisions/``.

A condition leaf; experiments, datafiles and users for the decision-order tests of
experiments, flags and variables; and deciding the one flag those datafiles have.
"""

from __future__ import annotations

import json
from typing import Any

from optitrack._decisions import (
    DecisionEngine,
    ProjectConfig,
    UserInput,
    VariationDecision,
    load_datafile,
)


def _leaf(match: str | None, value: Any, name: str = "a") -> dict[str, Any]:
    condition: dict[str, Any] = {"name": name, "type": "custom_attribute", "value": value}
    if match is not None:
        condition["match"] = match
    return condition


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
