"""optitrack.testing._tallies: what is counted, attributed and refused as a batch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pydantic
import pytest

from optitrack.testing import EventsAPI, Respond
from tests.testing.conftest import (
    CONVERSION,
    CONVERSION_BODY,
    IMPRESSION_BODY,
    batch_of,
    client,
    conversion,
    post,
)

pytestmark = pytest.mark.anyio


# Counting -----------------------------------------------------------------------------


async def test_attributes_conversions_to_the_variation_seen_first() -> None:
    api = EventsAPI()
    late = conversion("u-late", visitor_id="user_2")
    async with client(api) as http:
        await post(http, batch_of(late))  # before any impression: not attributed
        await post(http, IMPRESSION_BODY)
        await post(http, batch_of(conversion("u-1"), conversion("u-2")))

    stats = api.statistics()
    assert (stats.events, stats.impressions, stats.conversions) == (4, 1, 3)
    assert stats.revenue == 3 * 4200
    assert stats.conversions_by_event == {"purchase": 3}
    [arm] = stats.variations
    assert (arm.experiment, arm.variation, arm.impressions, arm.visitors) == (
        "checkout_test",
        "treatment",
        1,
        1,
    )
    assert arm.conversions == {"purchase": 2}
    assert arm.revenue == 2 * 4200


async def test_duplicate_uuids_and_reset() -> None:
    api = EventsAPI()
    async with client(api) as http:
        for _ in range(3):
            await post(http, CONVERSION_BODY)
        await post(http, batch_of(conversion("fresh")))

    assert api.duplicate_uuids() == {"91f5a888-f973-4c12-8fae-8ea19d28d6ea": 3}
    assert api.statistics().duplicates == 2

    api.reset()

    assert (api.request_count, api.event_count, api.revenue) == (0, 0, 0)
    assert api.requests == []
    assert api.duplicate_uuids() == {}
    assert api.statistics().variations == ()


# Refusing what cannot be counted ------------------------------------------------------


def with_changes(base: dict[str, Any], change: Any) -> bytes:
    batch = copy.deepcopy(base)
    change(batch)
    return json.dumps(batch).encode()


def _event(b: dict[str, Any]) -> dict[str, Any]:
    return b["visitors"][0]["snapshots"][0]["events"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        pytest.param(
            with_changes(CONVERSION, lambda b: b.update(surprise=True)),
            "invalid_batch",
            "surprise",
            id="unknown field",
        ),
        pytest.param(
            with_changes(CONVERSION, lambda b: _event(b).update(timestamp="1795920121812")),
            "invalid_batch",
            "visitors.0.snapshots.0.events.0.timestamp",
            id="string timestamp",
        ),
        pytest.param(
            with_changes(CONVERSION, lambda b: b.update(account_id=12001)),
            "invalid_batch",
            "account_id",
            id="number for a string",
        ),
        pytest.param(b'{"account_id": "1",', "invalid_json", None, id="truncated JSON"),
        pytest.param(
            CONVERSION_BODY.replace(b'"flag": true', b'"flag": NaN'),
            "invalid_batch",
            "visitors.0.snapshots.0.events.0.tags",
            id="NaN token",
        ),
        pytest.param(b"\xff\xfe", "invalid_json", None, id="not UTF-8"),
    ],
)
async def test_rejects_invalid_bodies_with_the_reason(
    body: bytes, code: str, where: str | None
) -> None:
    api = EventsAPI()
    async with client(api) as http:
        response = await post(http, body)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    reason = response.json()
    assert reason["error"] == code
    if where is not None:
        assert where in [e["loc"] for e in reason["errors"]]
        assert where in reason["message"]
    [received] = api.requests
    assert (received.status, received.error) == (400, reason["message"])
    assert not received.accepted
    assert received.batch is None
    assert (api.request_count, api.batch_count, api.event_count) == (1, 0, 0)
    assert api.statistics().statuses == {400: 1}


async def test_many_errors_are_summed_up() -> None:
    api = EventsAPI()
    visitors = [{"visitor_id": n} for n in range(20)]
    async with client(api) as http:
        response = await post(http, json.dumps({**CONVERSION, "visitors": visitors}).encode())

    reason = response.json()
    assert len(reason["errors"]) == 60  # per visitor: a number id, no attributes or snapshots
    assert reason["message"].endswith("; and 50 more")


# Results ------------------------------------------------------------------------------


async def test_stats_json_and_results_page() -> None:
    api = EventsAPI(faults=[Respond(503)])
    async with client(api) as http:
        await post(http, IMPRESSION_BODY)
        await post(http, IMPRESSION_BODY.replace(b"f8c30ec5", b"00000000"))
        await post(http, CONVERSION_BODY)
        stats = await http.get("/v1/stats")
        page = await http.get("/")

    assert stats.status_code == 200
    assert stats.headers["content-type"] == "application/json"
    assert stats.json() == {
        "requests": 3,
        "statuses": {"204": 2, "503": 1},
        "batches": 2,
        "events": 2,
        "impressions": 1,
        "conversions": 1,
        "revenue": 4200,
        "duplicates": 0,
        "bytes_received": 2 * len(IMPRESSION_BODY) + len(CONVERSION_BODY),
        "conversions_by_event": {"purchase": 1},
        "variations": [
            {
                "experiment": "checkout_test",
                "variation": "treatment",
                "impressions": 1,
                "visitors": 1,
                "conversions": {"purchase": 1},
                "revenue": 4200,
            }
        ],
    }
    assert stats.json() == api.statistics().as_dict()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for expected in ("checkout_test", "treatment", "purchase", "4200", "<table>"):
        assert expected in page.text


# Benchmark modes ----------------------------------------------------------------------


async def test_validate_false_parses_and_counts() -> None:
    api = EventsAPI(validate=False)
    sloppy = with_changes(CONVERSION, lambda b: b.update(account_id=12001))
    async with client(api) as http:
        accepted = await post(http, sloppy)
        await post(http, IMPRESSION_BODY)
        not_json = await post(http, b"{")
        nan = await post(http, CONVERSION_BODY.replace(b'"flag": true', b'"flag": NaN'))
        wrong_shape = await post(http, b'{"visitors": [{}]}')

    assert accepted.status_code == 204  # not validated
    assert (not_json.status_code, nan.status_code, wrong_shape.status_code) == (400, 400, 400)
    assert not_json.json()["error"] == "invalid_json"
    assert wrong_shape.json()["error"] == "invalid_batch"
    assert (api.event_count, api.revenue) == (2, 4200)
    assert api.impressions == {("checkout_test", "treatment"): 1}
    with pytest.raises(pydantic.ValidationError):
        _ = api.requests[0].batch  # the model is only built on demand, and fails
    assert api.requests[1].batch is not None


async def test_parse_false_only_counts() -> None:
    api = EventsAPI(validate=False, parse=False, record=False)
    async with client(api) as http:
        await post(http, batch_of(conversion("a"), conversion("b")))
        await post(http, IMPRESSION_BODY)

    assert (api.batch_count, api.event_count) == (2, 3)
    assert api.conversions == {}
    assert api.requests == []
    assert api.batches == []
    assert api.duplicate_uuids() == {}


async def test_parse_false_still_finds_duplicate_uuids() -> None:
    api = EventsAPI(validate=False, parse=False, record=False)
    async with client(api) as http:
        await post(http, CONVERSION_BODY)
        await post(http, CONVERSION_BODY)
    assert api.event_count == 2
    assert api.duplicate_uuids() == {"91f5a888-f973-4c12-8fae-8ea19d28d6ea": 2}
