"""optitrack.testing._app: EventsAPI accepts, records and routes (in-process)."""

from __future__ import annotations

import pytest

from optitrack.testing import EventsAPI
from tests.testing.conftest import (
    CONVERSION,
    CONVERSION_BODY,
    IMPRESSION,
    IMPRESSION_BODY,
    client,
    post,
)

pytestmark = pytest.mark.anyio


# Accepting and recording --------------------------------------------------------------


async def test_accepts_both_fixtures_and_records_them() -> None:
    api = EventsAPI()
    async with client(api) as http:
        assert (await post(http, IMPRESSION_BODY)).status_code == 204
        response = await post(http, CONVERSION_BODY, **{"x-request": "2"})

    assert response.status_code == 204
    assert response.content == b""
    assert (api.request_count, api.batch_count, api.event_count) == (2, 2, 2)
    assert api.conversions == {"purchase": 1}
    assert api.impressions == {("checkout_test", "treatment"): 1}
    assert api.revenue == 4200
    assert api.duplicate_uuids() == {}
    [first, second] = api.requests
    assert (second.method, second.path, second.status, second.error) == (
        "POST",
        "/v1/events",
        204,
        None,
    )
    assert second.headers["X-Request"] == "2"
    assert second.body == second.content == CONVERSION_BODY
    assert second.json() == CONVERSION
    assert second.accepted
    assert second.fault is None
    assert first.time <= second.time
    assert second.batch is not None
    assert second.batch.model_dump(exclude_none=True) == CONVERSION
    assert [b.model_dump(exclude_none=True) for b in api.batches] == [IMPRESSION, CONVERSION]
    assert [v.visitor_id for v in api.visitors] == ["user_1", "user_1"]
    assert [e.key for e in api.events] == ["campaign_activated", "purchase"]


async def test_record_false_keeps_counters_only() -> None:
    api = EventsAPI(record=False)
    async with client(api) as http:
        await post(http, CONVERSION_BODY)
        await post(http, CONVERSION_BODY)

    assert api.requests == []
    assert (api.event_count, api.revenue, api.conversions) == (2, 8400, {"purchase": 2})
    assert api.duplicate_uuids() == {"91f5a888-f973-4c12-8fae-8ea19d28d6ea": 2}


# Other routes -------------------------------------------------------------------------


async def test_other_routes() -> None:
    api = EventsAPI()
    async with client(api) as http:
        missing = await http.get("/nope")
        get_events = await http.get("/v1/events")
        post_stats = await http.post("/v1/stats")

    assert missing.status_code == 404
    assert (get_events.status_code, get_events.headers["allow"]) == (405, "POST")
    assert (post_stats.status_code, post_stats.headers["allow"]) == (405, "GET")
    assert api.request_count == 0  # only POST /v1/events is recorded
