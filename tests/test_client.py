"""The client end to end: track, batches, flush, close, through the Events API stand-in."""

from __future__ import annotations

import logging
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import ClientStateError, Reason, TrackError
from optitrack.testing import EventsAPI, serve
from tests.conftest import (
    EVENTS_URL,
    asgi_client,
    check_ledger,
    comparable,
    load_fixture,
)
from tests.test_events import FIXTURE_ATTRIBUTES, FIXTURE_TAGS

pytestmark = pytest.mark.anyio


async def test_track_event_payload_equals_the_optimizely_fixture(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", FIXTURE_ATTRIBUTES)
        result = await user.track_event("purchase", FIXTURE_TAGS)
        assert result.accepted
        assert result
        assert (await client.flush()).complete
    (request,) = api.requests
    assert request.headers["content-type"] == "application/json"
    payload = request.json()
    assert comparable(payload) == comparable(load_fixture("payload_conversion.json"))
    assert payload["client_name"] == "optitrack"
    assert payload["client_version"] == optitrack.__version__


async def test_track_sends_to_the_endpoint_over_real_http(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with serve(api) as server:
        async with optitrack.Client(datafile, event_endpoint=server.url) as client:
            for n in range(10):
                assert await client.track("purchase", f"u{n}", {"plan": "pro"}, {"revenue": n})
        assert api.event_count == 10
        assert api.revenue == sum(range(10))
        assert api.duplicate_uuids() == {}


async def test_unknown_event_is_logged_and_not_sent(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        result = await client.track("nope", "u")
        assert not result
        assert result.reason is Reason.UNKNOWN_EVENT
        assert result.message == "Event 'nope' is not in datafile."
        await client.flush()
        stats = client.statistics()
    assert api.request_count == 0
    assert stats.accepted == 0
    assert stats.refused == {"unknown_event": 1}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.name for r in errors] == ["optitrack"]
    assert "Event 'nope' is not in datafile." in errors[0].getMessage()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("", "u"), Reason.INVALID_INPUT),
        ((None, "u"), Reason.INVALID_INPUT),
        ((3, "u"), Reason.INVALID_INPUT),
        (("purchase", None), Reason.INVALID_INPUT),
        (("purchase", 42), Reason.INVALID_INPUT),
        (("purchase", "u", ["plan"]), Reason.INVALID_INPUT),
        (("purchase", "u", None, [("revenue", 1)]), Reason.INVALID_INPUT),
        (("purchase", "u", None, {"x": float("nan")}), Reason.INVALID_TAGS),
        (("purchase", "u", None, {"when": object()}), Reason.INVALID_TAGS),
        (("nope", "u"), Reason.UNKNOWN_EVENT),
    ],
)
async def test_invalid_input_is_refused_with_a_reason(
    datafile: dict[str, Any], args: tuple[Any, ...], reason: Reason
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        result = await client.track(*args)
        assert result.accepted is False
        assert result.reason is reason
        assert result.message
        assert client.statistics().refused == {reason.value: 1}
    assert api.request_count == 0


async def test_a_bad_event_never_hurts_another(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=10) as client:
        for n in range(10):
            await client.track("purchase", f"ok{n}")
            await client.track("purchase", f"bad{n}", None, {"x": float("inf"), "y": {1, 2}})
    assert sorted(v.visitor_id for v in api.visitors) == sorted(f"ok{n}" for n in range(10))
    assert all(r.status == 204 for r in api.requests)


async def test_empty_user_id_and_any_mapping_are_accepted(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert await client.track("signup", "", OrderedDict(plan="pro"), OrderedDict(k="v"))
    (visitor,) = api.visitors
    assert visitor.visitor_id == ""


def test_a_user_context_takes_any_mapping_and_nothing_else(datafile: dict[str, Any]) -> None:
    client = optitrack.Client(datafile, event_endpoint=EVENTS_URL)
    user = client.create_user_context("u", MappingProxyType({"plan": "pro"}))
    assert user.attributes == {"plan": "pro"}
    assert client.create_user_context("u", OrderedDict(plan="pro")).attributes == {"plan": "pro"}
    with pytest.raises(TypeError, match="attributes must be a mapping, not list"):
        client.create_user_context("u", [("plan", "pro")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_id must be a str, not int"):
        client.create_user_context(7, {})  # type: ignore[arg-type]


async def test_strict_client_raises(datafile: dict[str, Any]) -> None:
    async with asgi_client(EventsAPI(), datafile, strict=True) as client:
        with pytest.raises(TrackError, match="not in datafile") as caught:
            await client.track("nope", "u")
        assert caught.value.reason == Reason.UNKNOWN_EVENT
        with pytest.raises(ValueError, match="NaN"):
            await client.track("purchase", "u", None, {"x": float("nan")})
        assert await client.track("purchase", "u")


async def test_batches_respect_batch_size(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=7, flush_interval=60) as client:
        for n in range(7 * 3 + 2):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(5):
            await api.wait_for_events(21)  # three full batches go without a flush
        assert [len(b.visitors) for b in api.batches] == [7, 7, 7]
    assert [len(b.visitors) for b in api.batches] == [7, 7, 7, 2]
    # Order is kept.
    assert [v.visitor_id for v in api.visitors] == [f"u{n}" for n in range(23)]


async def test_flush_interval_sends_a_partial_batch(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=100, flush_interval=0.05) as client:
        await client.track("purchase", "u1")
        with anyio.fail_after(5):
            await api.wait_for_events(1)
        assert client.statistics().delivered == 1


async def test_flush_waits_for_delivery_and_reports(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=100, flush_interval=60) as client:
        for n in range(5):
            await client.track("purchase", f"u{n}")
        assert api.event_count == 0
        result = await client.flush()
        assert result == optitrack.FlushResult(complete=True, delivered=5, dropped=0, pending=0)
        assert api.event_count == 5
        again = await client.flush()
        assert again == optitrack.FlushResult(complete=True, delivered=0, dropped=0, pending=0)


async def test_leaving_async_with_drains(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=100, flush_interval=60) as client:
        for n in range(250):
            await client.track("purchase", f"u{n}")
    assert api.event_count == 250
    stats = client.statistics()
    assert stats.delivered == 250
    assert stats.pending == 0
    check_ledger(stats)


async def test_aclose_drains_and_refuses_later_calls(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, flush_interval=60) as client:
        await client.track("purchase", "u")
        await client.aclose()
        assert api.event_count == 1
        result = await client.track("purchase", "u")
        assert result.reason is Reason.CLOSED
        assert client.statistics().refused == {"closed": 1}
    result = await client.track("purchase", "u")
    assert result.reason is Reason.CLOSED


async def test_a_client_must_be_entered(datafile: dict[str, Any]) -> None:
    client = optitrack.Client(datafile)
    with pytest.raises(ClientStateError, match="async with"):
        await client.track("purchase", "u")
    with pytest.raises(ClientStateError):
        await client.flush()


async def test_a_client_is_entered_once(datafile: dict[str, Any]) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        with pytest.raises(ClientStateError, match="entered once"):
            await client.__aenter__()


async def test_the_callers_exception_comes_out_as_itself(datafile: dict[str, Any]) -> None:
    api = EventsAPI()

    class Boom(Exception):
        pass

    async def use_the_client() -> None:
        async with asgi_client(api, datafile, flush_interval=60) as client:
            await client.track("purchase", "u")
            raise Boom

    with pytest.raises(Boom):
        await use_the_client()
    assert api.event_count == 1  # and the queue was still drained


async def test_the_default_endpoint_follows_the_region(datafile: dict[str, Any]) -> None:
    assert optitrack.Client(datafile).event_endpoint == "https://logx.optimizely.com/v1/events"
    datafile["region"] = "EU"
    assert optitrack.Client(datafile).event_endpoint == "https://eu.logx.optimizely.com/v1/events"
    custom = optitrack.Client(datafile, event_endpoint=EVENTS_URL)
    assert custom.event_endpoint == EVENTS_URL


async def test_the_callers_http_client_is_used_and_left_open(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        async with optitrack.Client(datafile, event_endpoint=EVENTS_URL, http_client=http) as c:
            await c.track("purchase", "u")
        assert not http.is_closed
        assert api.event_count == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, r"batch_size \(0\) must be an integer >= 1"),
        ({"batch_size": 500, "max_queue_size": 100}, r"batch_size \(500\) must be <= max_queue"),
        ({"max_batch_bytes": 4_000_000}, r"must be <= 3500000"),
        ({"flush_interval": -1}, r"flush_interval \(-1\) must be"),
        ({"max_event_bytes": 2_000_000}, r"max_event_bytes \(2000000\) must be <= max_batch"),
        ({"overflow": "sometimes"}, r"'sometimes' is not a valid Overflow"),
    ],
)
def test_options_are_validated_up_front(
    datafile: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        optitrack.Client(datafile, **options)


async def test_track_listeners_are_notified(datafile: dict[str, Any]) -> None:
    seen: list[optitrack.TrackNotification] = []
    async with asgi_client(EventsAPI(), datafile) as client:
        client.notification_center.add_listener(optitrack.NotificationType.TRACK, seen.append)
        await client.track("purchase", "u", {"plan": "pro"}, {"revenue": 1})
        await client.track("nope", "u")
    assert seen == [optitrack.TrackNotification("purchase", "u", {"plan": "pro"}, {"revenue": 1})]


async def test_track_nowait_from_sync_code(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:

        def sync_handler() -> optitrack.TrackResult:
            return client.track_nowait("purchase", "u")

        assert sync_handler()
    assert api.event_count == 1


async def test_many_concurrent_trackers(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, batch_size=50) as client:

        async def handler(n: int) -> None:
            for i in range(20):
                assert await client.track("purchase", f"user-{n}-{i}", None, {"revenue": 1})

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(handler, n)
    assert api.event_count == 1000
    assert api.revenue == 1000
    assert api.duplicate_uuids() == {}


async def test_str_subclasses_are_strings(datafile: dict[str, Any]) -> None:
    from enum import StrEnum

    class Events(StrEnum):
        PURCHASE = "purchase"

    class Keys(StrEnum):
        PLAN = "plan"

    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert await client.track(Events.PURCHASE, "u", {Keys.PLAN: "pro"})
    (event,) = api.events
    assert event.key == "purchase"
    assert [a.key for a in api.visitors[0].attributes] == ["plan", "$opt_bot_filtering"]


@pytest.mark.parametrize(
    "endpoint", ["http://[::1/v1/events", "localhost:8765/v1/events", "ftp://x/v1/events", ""]
)
def test_a_bad_endpoint_is_refused_up_front(datafile: dict[str, Any], endpoint: str) -> None:
    if not endpoint:
        datafile["region"] = "EU"  # "" means the default: fine
        assert optitrack.Client(datafile, event_endpoint=endpoint).event_endpoint.startswith(
            "https://eu."
        )
        return
    with pytest.raises(ValueError, match="event_endpoint"):
        optitrack.Client(datafile, event_endpoint=endpoint)


async def test_start_and_close_are_logged_once_without_user_data(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optitrack")
    async with asgi_client(EventsAPI(), datafile) as client:
        await client.track("purchase", "secret-user-42", {"plan": "pro"}, {"revenue": 777})
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    started = [m for m in infos if m.startswith("optitrack client started")]
    closed = [m for m in infos if m.startswith("optitrack client closed")]
    assert len(started) == 1
    assert "http://events.test/v1/events" in started[0]
    assert "batch_size 1000" in started[0]
    assert closed == [
        "optitrack client closed: accepted 1 = delivered 1 + dropped 0 + pending 0; "
        "refused 0; 1 request(s), 0 retry(ies)."
    ]
    assert not any("secret-user-42" in m or "777" in m for m in infos)
