"""The track fast path: the same bytes as the general path, and what neither may send.

``EventFactory.fast_conversion`` takes the common call in one flattened function and
declines anything else; ``EventFactory.conversion`` is the general way. On generated
inputs, whatever the fast path accepts, the general path turns into the very same bytes
(but for the timestamp and uuid), and the Events API's model accepts them. Then: strings
that are not valid Unicode, and tags nested too deep, are refused at the call.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from optitrack import Reason, load_datafile
from optitrack._events import MAX_TAG_DEPTH, EventFactory, InvalidInputError, InvalidTagsError
from optitrack._wire import EventBatch
from optitrack.testing import EventsAPI
from tests.conftest import EVENTS_URL, asgi_client, check_ledger, load_fixture

_VOLATILE = re.compile(rb'"timestamp":\d+,"uuid":"[0-9a-f-]{36}"')
_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Strings of every kind: ASCII, control characters and DEL, non-ASCII, astral, surrogates.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(
    st.characters(exclude_categories=()) | surrogates | st.characters(max_codepoint=0x7F),
    max_size=8,
) | st.sampled_from(
    ["", "pro", "a\x7fb", "line\nbreak", "é", "😀", "\ud800", "\ud83d\ude00", "\\", '"']
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-5, 1e-4, 0.0001234, 1e16, 9.99e15, -0.0, 0.0, 2.5, 1e300]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
)
attribute_keys = st.sampled_from(["plan", "age", "app_version", "unknown", "$opt_user_agent"])
attributes = st.none() | st.dictionaries(attribute_keys | texts, scalars, max_size=5)
tag_keys = st.sampled_from(["revenue", "value", "category"]) | texts
tags = st.none() | st.dictionaries(tag_keys, json_values, max_size=4)
event_keys = st.sampled_from(["purchase", "signup", "unknown"])


def _factory() -> EventFactory:
    return EventFactory(load_datafile(load_fixture("datafile_example.json")), EVENTS_URL)


def _general(factory: EventFactory, *args: Any) -> bytes | Exception | None:
    try:
        return factory.conversion(*args)
    except (InvalidInputError, InvalidTagsError) as exc:
        return exc


def _wire_ok(factory: EventFactory, data: bytes) -> None:
    body = factory.context.prefix + data + factory.context.suffix
    EventBatch.model_validate_json(body)


@_SETTINGS
@given(event_key=event_keys, user_id=texts, attributes=attributes, tags=tags)
@example(event_key="purchase", user_id="u", attributes=None, tags={"k": "\ud800"})
@example(event_key="purchase", user_id="u", attributes=None, tags={"\udc00": 1})
@example(event_key="purchase", user_id="u", attributes={"plan": "\ud800"}, tags=None)
@example(event_key="purchase", user_id="\ud83d\ude00", attributes=None, tags=None)
@example(event_key="purchase", user_id="u", attributes=None, tags={"value": 10**400})
@example(event_key="purchase", user_id="u", attributes=None, tags={"n": 10**5000})
@example(event_key="purchase", user_id="u", attributes=None, tags={"v": 1e-5, "w": 1e16})
@example(event_key="purchase", user_id="u", attributes={"age": 2**53 + 1}, tags={"revenue": True})
def test_the_fast_path_sends_the_bytes_of_the_general_path(
    event_key: str, user_id: str, attributes: dict[str, Any] | None, tags: dict[str, Any] | None
) -> None:
    factory = _factory()
    general = _general(factory, event_key, user_id, attributes, tags)  # learns the attributes
    fast = factory.fast_conversion(event_key, user_id, attributes, tags)
    if fast is None:
        return  # declined: the general path decides, as above
    assert isinstance(general, bytes), (
        f"fast path accepted what the general path refuses: {general!r}"
    )
    assert _VOLATILE.sub(b"", fast) == _VOLATILE.sub(b"", general)
    _wire_ok(factory, fast)


_SHARED = _factory()


@_SETTINGS
@given(attributes=attributes)
@example(attributes={"plan": "1"})
@example(attributes={"plan": 1})
@example(attributes={"plan": True})
@example(attributes={"plan": 1.0})
@example(attributes={"plan": "1", "age": 1})
@example(attributes={"plan": "1", "age": True})
def test_what_the_fast_path_keeps_never_answers_for_other_values(
    attributes: dict[str, Any] | None,
) -> None:
    # One factory for every example: the renderings it kept from earlier calls must not
    # change the bytes of later ones ("1", 1, True and 1.0 are equal keys, or hash alike).
    for _ in range(2):  # the second time, from what the first one kept
        general = _general(_SHARED, "purchase", "u", attributes, None)
        fast = _SHARED.fast_conversion("purchase", "u", attributes, None)
        if fast is not None:
            assert isinstance(general, bytes)
            assert _VOLATILE.sub(b"", fast) == _VOLATILE.sub(b"", general)


def test_the_fast_path_takes_the_common_calls() -> None:
    # Not a timing test: that the common shapes do go the fast way at all.
    factory = _factory()
    factory.conversion("purchase", "u", {"plan": "pro", "age": 30}, None)
    common = [
        ("purchase", "user-1", None, None),
        ("purchase", "user-1", {}, {}),
        ("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200}),
        ("purchase", "user-1", {"plan": "pro", "age": 30}, {"revenue": 1, "value": 2.5}),
        ("signup", "", None, {"source": "ad", "ok": True, "n": 3, "x": 0.5}),
        ("signup", "u", None, {"tiny": 1e-5, "huge": 1e300, "neg": -0.0, "n": 10**30}),
        ("signup", "u", None, {"del": "\x7f", "quote": '"\\'}),  # escaped as the general way
    ]
    for call in common:
        fast = factory.fast_conversion(*call)
        assert fast is not None, call
        general = factory.conversion(*call)
        assert general is not None
        assert _VOLATILE.sub(b"", fast) == _VOLATILE.sub(b"", general)


def test_an_events_own_timestamp_is_kept_the_same_either_way() -> None:
    # An import (optitrack send) gives each event its own time: both paths write it as is.
    factory = _factory()
    call = ("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})
    factory.conversion(*call)
    fast = factory.fast_conversion(*call, None, 1_764_000_000_123)
    general = factory.conversion(*call, timestamp=1_764_000_000_123)
    assert fast is not None
    assert general is not None
    assert b'"timestamp":1764000000123,' in fast
    uuid = re.compile(rb'"uuid":"[0-9a-f-]{36}"')
    assert uuid.sub(b"", fast) == uuid.sub(b"", general)


def test_the_fast_path_declines_what_needs_the_general_way() -> None:
    factory = _factory()
    factory.conversion("purchase", "u", {"plan": "pro"}, None)
    declined: list[tuple[Any, ...]] = [
        ("unknown", "u", None, None),  # unknown event: refused the general way
        ("purchase", 42, None, None),  # not a str
        ("purchase", "é", None, None),  # non-ASCII user id: checked for surrogates
        ("purchase", "u", {"never_seen": 1}, None),  # not yet rendered: logged if unknown
        ("purchase", "u", [], None),  # not a mapping: refused
        ("purchase", "u", {"plan": 1.5}, None),  # floats: range and -0.0 rules
        ("purchase", "u", None, {"value": "3.5"}),  # a numeric string value
        ("purchase", "u", None, {"v": math.nan}),  # refused the general way
        ("purchase", "u", None, {"v": None}),  # None is cleaned for some keys
        ("purchase", "u", None, {"v": {"nested": 1}}),
        ("purchase", "u", None, {"v": "é"}),  # non-ASCII is escaped the general way
        ("purchase", "u", None, {1: 2}),  # a key that is not a str
    ]
    for call in declined:
        assert factory.fast_conversion(*call) is None, call


# -- what cannot be sent ---------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.anyio
async def test_strings_that_are_not_unicode_are_refused_at_the_call(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        bad: list[tuple[tuple[Any, ...], Reason]] = [
            (("purchase", "\ud800"), Reason.INVALID_INPUT),  # a lone surrogate
            (("purchase", "\ud83d\ude00"), Reason.INVALID_INPUT),  # a pair, as two code points
            (("purchase", "u", {"plan": "x\udfff"}), Reason.INVALID_INPUT),
            (("purchase", "u", None, {"k": "\ud800"}), Reason.INVALID_TAGS),
            (("purchase", "u", None, {"\udc00": 1}), Reason.INVALID_TAGS),
            (("purchase", "u", None, {"k": [{"deep": "\ud800"}]}), Reason.INVALID_TAGS),
        ]
        for args, reason in bad:
            result = await client.track(*args)
            assert not result.accepted, args
            assert result.reason is reason, args
            assert "surrogate" in (result.message or "")
        # The real characters those stand for are sent as they are.
        good = await client.track("purchase", "😀", {"plan": "é"}, {"k": "😀"})
        assert good.accepted
        assert (await client.flush()).complete
        stats = client.statistics()
    check_ledger(stats)
    assert stats.accepted == 1
    assert stats.refused[Reason.INVALID_INPUT] == 3
    assert stats.refused[Reason.INVALID_TAGS] == 3
    [visitor] = api.visitors
    assert visitor.visitor_id == "😀"
    assert visitor.snapshots[0].events[0].tags == {"k": "😀"}
    assert visitor.attributes[0].value == "é"


@pytest.mark.anyio
async def test_tags_nested_deeper_than_the_events_api_takes_are_refused(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        deepest = await client.track("purchase", "u", None, _nested(MAX_TAG_DEPTH))
        too_deep = await client.track("purchase", "u", None, _nested(MAX_TAG_DEPTH + 1))
        in_a_list = await client.track("purchase", "u", None, {"l": [_nested(MAX_TAG_DEPTH)]})
        assert (await client.flush()).complete
        stats = client.statistics()
    assert deepest.accepted
    assert not too_deep.accepted
    assert too_deep.reason is Reason.INVALID_TAGS
    assert f"deeper than {MAX_TAG_DEPTH}" in (too_deep.message or "")
    assert not in_a_list.accepted
    assert in_a_list.reason is Reason.INVALID_TAGS
    assert stats.delivered == 1  # the deepest allowed arrives: the stand-in takes it
    check_ledger(stats)


@pytest.mark.anyio
async def test_a_user_that_is_not_unicode_gets_decisions_but_no_impression(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("\ud800", {"plan": "pro"})
        decision = await user.decide("new_checkout")
        odd = client.create_user_context("u", {"plan": "\ud800"})
        await odd.decide("new_checkout")
        tracked = await user.track_event("purchase")
        assert (await client.flush()).complete
        stats = client.statistics()
    assert decision.flag_key == "new_checkout"
    assert not tracked.accepted
    assert tracked.reason is Reason.INVALID_INPUT
    assert stats.accepted == 0
    assert stats.refused[Reason.INVALID_INPUT] == 3  # two impressions, one conversion
    assert api.statistics().events == 0
