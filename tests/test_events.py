"""Serializing conversions: the wire format, attributes, tags, revenue and value."""

from __future__ import annotations

import json
import math
import uuid
from collections import OrderedDict
from decimal import Decimal
from enum import IntEnum
from types import MappingProxyType
from typing import Any

import pytest

from optitrack import load_datafile
from optitrack._delivery import BatchContext
from optitrack._events import EventFactory, InvalidTagsError, batch_context, encode_tags
from tests.conftest import comparable, load_fixture

FIXTURE_ATTRIBUTES = {
    "plan": "pro",
    "age": 34,
    "app_version": "2.1.0",
    "unknown_attr": "x",
    "bad": [1, 2],
    "ratio": float("nan"),
    "$opt_user_agent": "Mozilla/5.0 (test)",
}
FIXTURE_TAGS = {
    "revenue": 4200,
    "value": "12.5",
    "category": "shoes",
    "nested": {"a": [1, 2, {"b": None}]},
    "flag": True,
}


@pytest.fixture
def factory(datafile: dict[str, Any]) -> EventFactory:
    config = load_datafile(datafile)
    return EventFactory(config, config.default_event_endpoint)


def visitor(factory: EventFactory, *args: Any) -> dict[str, Any]:
    data = factory.conversion(*args)
    assert data is not None
    return json.loads(data)  # type: ignore[no-any-return]


def test_conversion_equals_the_optimizely_fixture(
    factory: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    data = factory.conversion("purchase", "user_1", FIXTURE_ATTRIBUTES, FIXTURE_TAGS)
    assert data is not None
    body = json.loads(factory.context.body([data]))
    assert comparable(body) == comparable(load_fixture("payload_conversion.json"))
    assert body["client_name"] == "optitrack"
    # unknown_attr is logged; bad and ratio are dropped silently.
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["Attribute 'unknown_attr' is not in datafile."]


def test_body_is_compact_ascii_json(factory: EventFactory) -> None:
    data = factory.conversion("purchase", "üser", {"plan": "prö"}, {"note": "café ☕"})
    assert data is not None
    data.decode("ascii")
    assert b": " not in data
    assert b", " not in data
    event = json.loads(data)
    assert event["visitor_id"] == "üser"
    assert event["snapshots"][0]["events"][0]["tags"] == {"note": "café ☕"}


def test_unknown_event_key_builds_nothing(factory: EventFactory) -> None:
    assert factory.conversion("nope", "u", None, None) is None


def test_no_tags_no_tags_key(factory: EventFactory) -> None:
    event = visitor(factory, "signup", "u", None, None)["snapshots"][0]["events"][0]
    assert set(event) == {"entity_id", "key", "timestamp", "uuid"}
    assert event["entity_id"] == "30102"
    assert event["key"] == "signup"
    empty = visitor(factory, "signup", "u", None, {})["snapshots"][0]["events"][0]
    assert empty["tags"] == {}


def test_conversion_has_no_decisions(factory: EventFactory) -> None:
    snapshot = visitor(factory, "purchase", "u", None, None)["snapshots"]
    assert snapshot == [{"events": snapshot[0]["events"]}]


def test_timestamp_and_uuid(factory: EventFactory) -> None:
    import time

    before = int(time.time() * 1000)
    event = visitor(factory, "purchase", "u", None, None)["snapshots"][0]["events"][0]
    after = int(time.time() * 1000)
    assert before <= event["timestamp"] <= after
    assert uuid.UUID(event["uuid"]).version == 4


@pytest.mark.parametrize(
    ("tags", "revenue"),
    [
        ({"revenue": 4200}, 4200),
        ({"revenue": 0}, 0),
        ({"revenue": -5}, -5),
        ({"revenue": 2**70}, 2**70),
        ({"revenue": 10.5}, None),
        ({"revenue": 10.0}, None),
        ({"revenue": "42"}, None),
        ({"revenue": True}, None),
        ({"revenue": None}, None),
        ({}, None),
    ],
)
def test_revenue(factory: EventFactory, tags: dict[str, Any], revenue: int | None) -> None:
    event = visitor(factory, "purchase", "u", None, tags)["snapshots"][0]["events"][0]
    assert event.get("revenue") == revenue
    assert ("revenue" in event) == (revenue is not None)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (3.5, 3.5),
        (0, 0.0),
        (7, 7.0),
        ("12.5", 12.5),
        ("1e3", 1000.0),
        (" 2 ", 2.0),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("-Infinity", None),
        (True, None),
        ([1], None),
        (None, None),
        (10**400, None),
    ],
)
def test_value(factory: EventFactory, raw: Any, value: float | None) -> None:
    event = visitor(factory, "purchase", "u", None, {"value": raw})["snapshots"][0]["events"][0]
    assert event.get("value") == value
    assert ("value" in event) == (value is not None)
    if value is not None:
        assert isinstance(event["value"], float)


def test_tags_are_forwarded_as_given(factory: EventFactory) -> None:
    tags = {"revenue": 10.5, "value": "abc", "deep": {"x": [1, {"y": False}]}, "n": 2**64}
    event = visitor(factory, "purchase", "u", None, tags)["snapshots"][0]["events"][0]
    assert event["tags"] == tags


def test_none_under_reserved_keys_is_removed_at_any_depth() -> None:
    tags = {
        "revenue": None,
        "value": None,
        "keep": None,
        "nested": {"tags": None, "decisions": None, "other": None, "l": [{"value": None}]},
    }
    assert json.loads(encode_tags(tags)) == {
        "keep": None,
        "nested": {"other": None, "l": [{}]},
    }


@pytest.mark.parametrize(
    "tags",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {"deep": {"list": [1, -math.inf]}},
        {"when": __import__("datetime").datetime(2026, 1, 1)},
        {"set": {1, 2}},
        {"obj": object()},
        {"bytes": b"x"},
    ],
)
def test_tags_that_are_not_json_are_refused(factory: EventFactory, tags: dict[str, Any]) -> None:
    with pytest.raises(InvalidTagsError, match="not valid JSON"):
        factory.conversion("purchase", "u", None, tags)


def test_cyclic_tags_are_refused(factory: EventFactory) -> None:
    tags: dict[str, Any] = {}
    tags["self"] = tags
    with pytest.raises(InvalidTagsError):
        factory.conversion("purchase", "u", None, tags)


def test_any_mapping_is_accepted(factory: EventFactory) -> None:
    tags = MappingProxyType({"inner": OrderedDict(a=1), "t": (1, 2), "d": Decimal("1.5")})
    event = visitor(factory, "purchase", "u", OrderedDict(plan="pro"), tags)
    assert event["snapshots"][0]["events"][0]["tags"] == {"inner": {"a": 1}, "t": [1, 2], "d": 1.5}
    assert event["attributes"][0]["value"] == "pro"


class Level(IntEnum):
    GOLD = 3


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("pro", "pro"),
        (True, True),
        (False, False),
        (34, 34),
        (0.5, 0.5),
        (2**53, 2**53),
        (-(2**53), -(2**53)),
        (Level.GOLD, 3),
        (2**53 + 1, None),
        (float(2**54), None),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        ([1], None),
        ({"a": 1}, None),
    ],
)
def test_attribute_values(factory: EventFactory, value: Any, sent: Any) -> None:
    attributes = visitor(factory, "purchase", "u", {"age": value}, None)["attributes"]
    age = [a for a in attributes if a["key"] == "age"]
    if sent is None:
        assert age == []
    else:
        assert age == [{"entity_id": "10402", "key": "age", "type": "custom", "value": sent}]
        assert type(age[0]["value"]) is type(sent)


def test_attribute_keys(factory: EventFactory, caplog: pytest.LogCaptureFixture) -> None:
    attributes = visitor(
        factory,
        "purchase",
        "u",
        {"$opt_bucketing_id": "b", 1: "int key", "nope": "x", "plan": "pro"},
        None,
    )["attributes"]
    assert [a["key"] for a in attributes] == ["$opt_bucketing_id", "plan", "$opt_bot_filtering"]
    assert attributes[0]["entity_id"] == "$opt_bucketing_id"
    assert attributes[-1] == {
        "entity_id": "$opt_bot_filtering",
        "key": "$opt_bot_filtering",
        "type": "custom",
        "value": False,
    }
    assert "Attribute 'nope' is not in datafile." in caplog.text


@pytest.mark.parametrize(("bot_filtering", "expected"), [(True, [True]), (None, [])])
def test_bot_filtering_attribute(
    datafile: dict[str, Any], bot_filtering: bool | None, expected: list[bool]
) -> None:
    if bot_filtering is None:
        del datafile["botFiltering"]
    else:
        datafile["botFiltering"] = bot_filtering
    config = load_datafile(datafile)
    data = EventFactory(config, "http://x").conversion("purchase", "u", None, None)
    assert data is not None
    values = [a["value"] for a in json.loads(data)["attributes"]]
    assert values == expected


def test_batch_context_prefix(factory: EventFactory) -> None:
    body = json.loads(factory.context.body([]))
    assert body == {
        "account_id": "12001",
        "project_id": "111001",
        "revision": "42",
        "client_name": "optitrack",
        "client_version": body["client_version"],
        "anonymize_ip": True,
        "enrich_decisions": True,
        "visitors": [],
    }
    items = [b'{"a":1}', b'{"b":2}']
    assert len(factory.context.body(items)) == factory.context.body_size(14, 2)


def test_recurring_attribute_sets_keep_their_types(factory: EventFactory) -> None:
    values = [1, True, 1.0, 1, True, -0.0, 0.0, "1", 1]
    sent = [json.loads(factory.attributes_json({"age": value}))[0]["value"] for value in values]
    assert [(type(v), v) for v in sent] == [(type(v), v) for v in values]
    assert json.loads(factory.attributes_json({"age": -0.0}))[0]["value"] == 0.0
    assert factory.attributes_json({"age": -0.0}) != factory.attributes_json({"age": 0.0})


def test_attribute_sets_with_a_float_subclass_are_rendered_afresh(factory: EventFactory) -> None:
    class Celsius(float):
        pass

    negative = factory.attributes_json({"age": Celsius(-0.0)})
    positive = factory.attributes_json({"age": Celsius(0.0)})
    assert negative != positive
    assert positive == factory.attributes_json({"age": 0.0})


def test_batch_contexts_are_equal_exactly_when_their_fields_are() -> None:
    def context(
        account: str = "12001",
        project: str = "111001",
        revision: str = "42",
        anonymize_ip: bool = True,
        endpoint: str = "https://logx.optimizely.com/v1/events",
    ) -> BatchContext:
        return batch_context(
            account_id=account,
            project_id=project,
            revision=revision,
            anonymize_ip=anonymize_ip,
            endpoint=endpoint,
        )

    assert context() == context()
    assert hash(context()) == hash(context())
    assert context().endpoint == "https://logx.optimizely.com/v1/events"
    others = [
        context(account="12002"),
        context(project="111002"),
        context(revision="43"),
        context(anonymize_ip=False),
        context(endpoint="https://eu.logx.optimizely.com/v1/events"),
    ]
    for other in others:
        assert other != context()
