"""The wire models accept what optimizely-sdk sends, and nothing looser."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from optitrack._wire import EventBatch

FIXTURES = Path(__file__).parent / "fixtures"
CONVERSION = json.loads((FIXTURES / "payload_conversion.json").read_text())
IMPRESSION = json.loads((FIXTURES / "payload_impression.json").read_text())

Mutation = Callable[[dict[str, Any]], None]


def visitor(batch: dict[str, Any]) -> dict[str, Any]:
    return batch["visitors"][0]  # type: ignore[no-any-return]


def snapshot(batch: dict[str, Any]) -> dict[str, Any]:
    return visitor(batch)["snapshots"][0]  # type: ignore[no-any-return]


def event(batch: dict[str, Any]) -> dict[str, Any]:
    return snapshot(batch)["events"][0]  # type: ignore[no-any-return]


def attribute(batch: dict[str, Any]) -> dict[str, Any]:
    return visitor(batch)["attributes"][0]  # type: ignore[no-any-return]


def decision(batch: dict[str, Any]) -> dict[str, Any]:
    return snapshot(batch)["decisions"][0]  # type: ignore[no-any-return]


def strip(data: dict[str, Any], *keys: str) -> None:
    for key in keys:
        del data[key]


def mutated(base: dict[str, Any], mutation: Mutation) -> bytes:
    batch = copy.deepcopy(base)
    mutation(batch)
    return json.dumps(batch).encode()


@pytest.mark.parametrize("payload", [CONVERSION, IMPRESSION], ids=["conversion", "impression"])
def test_fixtures_validate_and_round_trip(payload: dict[str, Any]) -> None:
    batch = EventBatch.model_validate_json(json.dumps(payload))

    assert batch.model_dump(exclude_none=True) == payload


def test_conversion_fields_keep_their_types() -> None:
    batch = EventBatch.model_validate_json(json.dumps(CONVERSION))

    [attr_plan, attr_age, *_, attr_bot] = batch.visitors[0].attributes
    conversion = batch.visitors[0].snapshots[0].events[0]
    assert (attr_plan.value, attr_age.value, attr_bot.value) == ("pro", 34, False)
    assert type(attr_age.value) is int
    assert type(attr_bot.value) is bool
    assert (conversion.revenue, conversion.value) == (4200, 12.5)
    assert conversion.tags == CONVERSION["visitors"][0]["snapshots"][0]["events"][0]["tags"]
    assert batch.visitors[0].snapshots[0].decisions is None
    assert batch.region is None


def test_impression_decision() -> None:
    batch = EventBatch.model_validate_json(json.dumps(IMPRESSION))

    [found] = batch.visitors[0].snapshots[0].decisions or []
    assert (found.campaign_id, found.experiment_id, found.variation_id) == (
        "50101",
        "40101",
        "60102",
    )
    assert found.metadata.rule_type == "feature-test"
    assert found.metadata.enabled is True


ACCEPTED: dict[str, tuple[dict[str, Any], Mutation]] = {
    "region": (CONVERSION, lambda b: b.update(region="EU")),
    "null variation_id": (IMPRESSION, lambda b: decision(b).update(variation_id=None)),
    "float attribute": (CONVERSION, lambda b: attribute(b).update(value=1.5)),
    "attribute at 2**53": (CONVERSION, lambda b: attribute(b).update(value=2**53)),
    "integer value": (CONVERSION, lambda b: event(b).update(value=3)),
    "no tags, revenue or value": (
        CONVERSION,
        lambda b: strip(event(b), "tags", "revenue", "value"),
    ),
    "empty tags": (CONVERSION, lambda b: event(b).update(tags={})),
    "huge integer tag": (CONVERSION, lambda b: event(b)["tags"].update(big=2**64)),
    "no attributes": (CONVERSION, lambda b: visitor(b).update(attributes=[])),
    "two visitors": (CONVERSION, lambda b: b["visitors"].append(visitor(b))),
    "rollout decision": (
        IMPRESSION,
        lambda b: decision(b)["metadata"].update(rule_type="rollout", enabled=False),
    ),
}


@pytest.mark.parametrize(("base", "mutation"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepts(base: dict[str, Any], mutation: Mutation) -> None:
    EventBatch.model_validate_json(mutated(base, mutation))


REJECTED: dict[str, tuple[dict[str, Any], Mutation, str]] = {
    "unknown batch field": (CONVERSION, lambda b: b.update(extra=1), "extra"),
    "unknown visitor field": (CONVERSION, lambda b: visitor(b).update(x=1), "visitors.0.x"),
    "unknown event field": (
        CONVERSION,
        lambda b: event(b).update(x=1),
        "visitors.0.snapshots.0.events.0.x",
    ),
    "unknown metadata field": (
        IMPRESSION,
        lambda b: decision(b)["metadata"].update(x=1),
        "visitors.0.snapshots.0.decisions.0.metadata.x",
    ),
    "camelCase field": (
        CONVERSION,
        lambda b: b.update(accountId=b.pop("account_id")),
        "account_id",
    ),
    "missing field": (CONVERSION, lambda b: b.pop("revision"), "revision"),
    "number for a string": (CONVERSION, lambda b: b.update(account_id=12001), "account_id"),
    "string for a bool": (CONVERSION, lambda b: b.update(anonymize_ip="true"), "anonymize_ip"),
    "integer for a bool": (CONVERSION, lambda b: b.update(enrich_decisions=1), "enrich_decisions"),
    "string timestamp": (
        CONVERSION,
        lambda b: event(b).update(timestamp="1795920121812"),
        "visitors.0.snapshots.0.events.0.timestamp",
    ),
    "float timestamp": (
        CONVERSION,
        lambda b: event(b).update(timestamp=1.5),
        "visitors.0.snapshots.0.events.0.timestamp",
    ),
    "float revenue": (
        CONVERSION,
        lambda b: event(b).update(revenue=10.0),
        "visitors.0.snapshots.0.events.0.revenue",
    ),
    "bool revenue": (
        CONVERSION,
        lambda b: event(b).update(revenue=True),
        "visitors.0.snapshots.0.events.0.revenue",
    ),
    "string value": (
        CONVERSION,
        lambda b: event(b).update(value="12.5"),
        "visitors.0.snapshots.0.events.0.value",
    ),
    "list tags": (
        CONVERSION,
        lambda b: event(b).update(tags=[1]),
        "visitors.0.snapshots.0.events.0.tags",
    ),
    "NaN value": (
        CONVERSION,
        lambda b: event(b).update(value=float("nan")),
        "visitors.0.snapshots.0.events.0.value",
    ),
    "Infinity deep in tags": (
        CONVERSION,
        lambda b: event(b)["tags"]["nested"]["a"].append({"x": float("inf")}),
        "visitors.0.snapshots.0.events.0.tags",
    ),
    "null attribute value": (
        CONVERSION,
        lambda b: attribute(b).update(value=None),
        "visitors.0.attributes.0.value",
    ),
    "list attribute value": (
        CONVERSION,
        lambda b: attribute(b).update(value=[1]),
        "visitors.0.attributes.0.value",
    ),
    "attribute past 2**53": (
        CONVERSION,
        lambda b: attribute(b).update(value=2**53 + 1),
        "visitors.0.attributes.0.value",
    ),
    "attribute type": (
        CONVERSION,
        lambda b: attribute(b).update(type="standard"),
        "visitors.0.attributes.0.type",
    ),
    "unknown rule type": (
        IMPRESSION,
        lambda b: decision(b)["metadata"].update(rule_type="ab"),
        "visitors.0.snapshots.0.decisions.0.metadata.rule_type",
    ),
    "numeric variation_id": (
        IMPRESSION,
        lambda b: decision(b).update(variation_id=60102),
        "visitors.0.snapshots.0.decisions.0.variation_id",
    ),
    "no visitors": (CONVERSION, lambda b: b.update(visitors=[]), "visitors"),
    "no snapshot": (CONVERSION, lambda b: visitor(b).update(snapshots=[]), "visitors.0.snapshots"),
    "two snapshots": (
        CONVERSION,
        lambda b: visitor(b)["snapshots"].append(snapshot(b)),
        "visitors.0.snapshots",
    ),
    "two events": (
        CONVERSION,
        lambda b: snapshot(b)["events"].append(event(b)),
        "visitors.0.snapshots.0.events",
    ),
}


@pytest.mark.parametrize(
    ("base", "mutation", "where"), REJECTED.values(), ids=list(REJECTED.keys())
)
def test_rejects(base: dict[str, Any], mutation: Mutation, where: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        EventBatch.model_validate_json(mutated(base, mutation))

    locations = {".".join(str(part) for part in e["loc"]) for e in caught.value.errors()}
    assert any(loc == where or loc.startswith(where + ".") for loc in locations), locations


def test_rejects_json_that_is_not_json() -> None:
    with pytest.raises(pydantic.ValidationError, match="Invalid JSON"):
        EventBatch.model_validate_json(b'{"account_id": ')
