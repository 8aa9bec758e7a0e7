"""The Events API stand-in: in-process through httpx.ASGITransport, and over loopback."""

from __future__ import annotations

import copy
import gzip
import json
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pydantic
import pytest

from optitrack.testing import (
    MAX_BODY_SIZE,
    ASGIReceive,
    ASGISend,
    Delay,
    EventsAPI,
    Fault,
    Hang,
    Reset,
    Respond,
    SimulatedReset,
    When,
    serve,
    serve_in_thread,
)

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
CONVERSION_BODY = (FIXTURES / "payload_conversion.json").read_bytes()
IMPRESSION_BODY = (FIXTURES / "payload_impression.json").read_bytes()
CONVERSION = json.loads(CONVERSION_BODY)
IMPRESSION = json.loads(IMPRESSION_BODY)
JSON = {"content-type": "application/json"}
GUARD = 5  # seconds: only a guard against a hung test, never a wait


def conversion(uuid: str, *, visitor_id: str = "user_1", **tags: Any) -> dict[str, Any]:
    """The conversion fixture as one visitor, with its own uuid and tags."""
    visitor = copy.deepcopy(CONVERSION["visitors"][0])
    visitor["visitor_id"] = visitor_id
    event = visitor["snapshots"][0]["events"][0]
    event["uuid"] = uuid
    if tags:
        event["tags"] = tags
    return visitor  # type: ignore[no-any-return]


def batch_of(*visitors: dict[str, Any]) -> bytes:
    batch = copy.deepcopy(CONVERSION)
    batch["visitors"] = list(visitors)
    return json.dumps(batch).encode()


def in_process(api: EventsAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://events.test")


@asynccontextmanager
async def client(api: EventsAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(api) as http:
        yield http


async def post(http: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await http.post("/v1/events", content=body, headers={**JSON, **headers})


# Accepting and recording ----------------------------------------------------------------


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


# Refusing -------------------------------------------------------------------------------


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


async def test_413_past_the_size_limit_before_or_after_decoding() -> None:
    api = EventsAPI(max_body_size=len(CONVERSION_BODY))
    async with client(api) as http:
        at_limit = await post(http, CONVERSION_BODY)
        too_large = await post(http, CONVERSION_BODY + b" ")
        bomb = gzip.compress(CONVERSION_BODY + b" " * 1000)
        too_large_decoded = await post(http, bomb, **{"content-encoding": "gzip"})

    assert at_limit.status_code == 204
    assert too_large.status_code == 413
    assert too_large.json()["error"] == "payload_too_large"
    assert len(bomb) < len(CONVERSION_BODY)
    assert too_large_decoded.status_code == 413
    assert api.requests[1].body == b""  # an oversized body is not kept


async def test_413_at_the_real_limit() -> None:
    api = EventsAPI()
    assert api.max_body_size == MAX_BODY_SIZE == 3_500_000
    async with client(api) as http:
        response = await post(http, b" " * (MAX_BODY_SIZE + 1))

    assert response.status_code == 413


async def test_gzip_bodies() -> None:
    api = EventsAPI()
    compressed = gzip.compress(CONVERSION_BODY)
    async with client(api) as http:
        accepted = await post(http, compressed, **{"content-encoding": "gzip"})
        garbled = await post(http, compressed[:-10], **{"content-encoding": "gzip"})
        not_gzip = await post(http, CONVERSION_BODY, **{"content-encoding": "gzip"})

    assert accepted.status_code == 204
    first = api.requests[0]
    assert (first.body, first.content) == (compressed, CONVERSION_BODY)
    assert api.event_count == 1
    assert garbled.status_code == 400
    assert garbled.json()["error"] == "invalid_encoding"
    assert not_gzip.status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"content-type": "text/plain"}, id="content-type"),
        pytest.param({**JSON, "content-encoding": "br"}, id="content-encoding"),
    ],
)
async def test_415_on_unsupported_media(headers: dict[str, str]) -> None:
    api = EventsAPI()
    async with client(api) as http:
        response = await http.post("/v1/events", content=CONVERSION_BODY, headers=headers)

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


async def test_content_type_parameters_are_fine() -> None:
    api = EventsAPI()
    async with client(api) as http:
        response = await post(
            http, CONVERSION_BODY, **{"content-type": "application/json; charset=utf-8"}
        )

    assert response.status_code == 204


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


# Results --------------------------------------------------------------------------------


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


async def test_results_page_escapes_keys() -> None:
    api = EventsAPI()
    body = CONVERSION_BODY.replace(b'"key": "purchase"', b'"key": "<script>"')
    async with client(api) as http:
        await post(http, body)
        page = await http.get("/")

    assert "&lt;script&gt;" in page.text
    assert "<script>" not in page.text


# Faults ---------------------------------------------------------------------------------


async def test_scripted_faults_are_used_once_each_in_order() -> None:
    api = EventsAPI(
        faults=[
            Respond(503),
            Respond(429, retry_after="1"),
            Respond(400, body="bad"),
            Respond(500, body=b'{"e": 1}', headers=(("Content-Type", "application/json"),)),
        ]
    )
    assert api.pending_faults == 4
    async with client(api) as http:
        responses = [await post(http, CONVERSION_BODY) for _ in range(5)]

    assert [r.status_code for r in responses] == [503, 429, 400, 500, 204]
    assert responses[0].json()["error"] == "injected_fault"
    assert responses[1].headers["retry-after"] == "1"
    assert "retry-after" not in responses[0].headers
    assert responses[2].text == "bad"
    assert responses[2].headers["content-type"] == "text/plain; charset=utf-8"
    assert responses[3].json() == {"e": 1}
    assert api.pending_faults == 0
    assert [r.fault for r in api.requests][:2] == [Respond(503), Respond(429, retry_after="1")]
    assert (api.request_count, api.batch_count, api.event_count) == (5, 1, 1)
    assert all(r.content == CONVERSION_BODY for r in api.requests)


async def test_a_2xx_fault_still_validates_and_counts() -> None:
    api = EventsAPI(faults=[Respond(200, body="ok"), Respond(202)])
    api.fail_when(lambda body: b"user_2" in body, Respond(201))
    async with client(api) as http:
        ok = await post(http, CONVERSION_BODY)
        invalid = await post(http, b"{}")
        ruled = await post(http, batch_of(conversion("x", visitor_id="user_2")))

    assert (ok.status_code, ok.text) == (200, "ok")
    assert invalid.status_code == 400
    assert (ruled.status_code, ruled.content) == (201, b"")
    assert api.batch_count == 2
    assert [r.fault for r in api.requests] == [Respond(200, body="ok"), Respond(202), Respond(201)]


async def test_inject_appends_to_the_script() -> None:
    api = EventsAPI(faults=[Respond(500)])
    api.inject(Respond(502), Respond(503))
    assert api.pending_faults == 3
    async with client(api) as http:
        statuses = [(await post(http, CONVERSION_BODY)).status_code for _ in range(4)]

    assert statuses == [500, 502, 503, 204]
    assert repr(api) == "<EventsAPI requests=4 batches=1 events=1>"


async def test_fail_all_until_healed() -> None:
    api = EventsAPI(faults=[Respond(500)])
    api.fail_all(Respond(503, retry_after=2))
    async with client(api) as http:
        failed = [await post(http, CONVERSION_BODY) for _ in range(3)]
        api.heal()
        healed = await post(http, CONVERSION_BODY)

    assert [r.status_code for r in failed] == [500, 503, 503]
    assert failed[1].headers["retry-after"] == "2"
    assert healed.status_code == 204
    assert api.event_count == 1


async def test_fail_when_rejects_only_poisoned_batches() -> None:
    api = EventsAPI()
    api.fail_when(lambda body: b"poison" in body, Respond(400, body="poisoned"))
    poisoned = batch_of(conversion("a"), conversion("b", marker="poison"))
    clean = batch_of(conversion("a"))
    async with client(api) as http:
        rejected = await post(http, poisoned)
        accepted = await post(http, clean)
        compressed = await post(http, gzip.compress(poisoned), **{"content-encoding": "gzip"})

    assert (rejected.status_code, rejected.text) == (400, "poisoned")
    assert accepted.status_code == 204
    assert compressed.status_code == 400  # the predicate sees the decoded body
    assert api.event_count == 1
    assert api.conversions == {"purchase": 1}


async def test_rules_from_the_constructor() -> None:
    api = EventsAPI(rules=[When(lambda body: b"user_2" in body, Respond(503))])
    async with client(api) as http:
        other = await post(http, batch_of(conversion("x", visitor_id="user_2")))
        ours = await post(http, CONVERSION_BODY)

    assert (other.status_code, ours.status_code) == (503, 204)


async def test_delay_then_answer() -> None:
    api = EventsAPI(faults=[Delay(0.05), Delay(0.01, then=Respond(503))])
    async with client(api) as http:
        start = anyio.current_time()
        delayed = await post(http, CONVERSION_BODY)
        elapsed = anyio.current_time() - start
        then_failed = await post(http, CONVERSION_BODY)

    assert delayed.status_code == 204
    assert elapsed >= 0.05
    assert then_failed.status_code == 503
    assert api.requests[0].fault == Delay(0.05)
    assert api.event_count == 1


async def test_hang_in_process_waits_until_cancelled() -> None:
    api = EventsAPI(faults=[Hang()])
    async with client(api) as http:
        with anyio.move_on_after(0.05) as scope:
            await post(http, CONVERSION_BODY)
        after = await post(http, CONVERSION_BODY)

    assert scope.cancelled_caught
    assert after.status_code == 204
    [hung, _] = api.requests
    assert (hung.status, hung.fault, hung.accepted) == (None, Hang(), False)


async def test_reset_in_process_is_a_transport_error() -> None:
    api = EventsAPI(faults=[Reset()])
    async with client(api) as http:
        with pytest.raises(httpx.TransportError) as caught:
            await post(http, CONVERSION_BODY)
        after = await post(http, CONVERSION_BODY)

    assert isinstance(caught.value, SimulatedReset)
    assert isinstance(caught.value, httpx.ReadError)
    assert after.status_code == 204
    assert api.requests[0].status is None


async def test_an_unknown_fault_is_an_error() -> None:
    api = EventsAPI(faults=[Fault()])
    async with client(api) as http:
        with pytest.raises(TypeError, match="unknown fault"):
            await post(http, CONVERSION_BODY)


def test_fault_types_are_frozen_and_checked() -> None:
    fault = Respond(503)
    with pytest.raises(AttributeError):
        fault.status = 500  # type: ignore[misc]
    assert Respond(429, retry_after="1") == Respond(429, retry_after="1")
    assert hash(Delay(1.0)) == hash(Delay(1.0))
    menu = [Respond(503), Delay(0.1, then=Hang()), Hang(), Reset()]  # infers list[Fault]
    assert menu[2] != menu[3]
    assert EventsAPI(faults=menu).pending_faults == 4
    with pytest.raises(ValueError, match="status"):
        Respond(99)
    with pytest.raises(ValueError, match="seconds"):
        Delay(-1)
    with pytest.raises(ValueError, match="parse=False"):
        EventsAPI(parse=False)
    with pytest.raises(ValueError, match="max_body_size"):
        EventsAPI(max_body_size=0)


# Waiting --------------------------------------------------------------------------------


async def test_wait_for_events_wakes_when_they_arrive() -> None:
    api = EventsAPI()
    async with client(api) as http, anyio.create_task_group() as tg:

        async def send_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await post(http, batch_of(conversion("a"), conversion("b")))
            await post(http, batch_of(conversion("c")))

        tg.start_soon(send_later)
        with anyio.fail_after(GUARD):
            await api.wait_for_events(3)

    assert api.event_count == 3
    assert api.batch_count == 2


async def test_waiting_helpers_return_at_once_when_satisfied() -> None:
    api = EventsAPI(faults=[Respond(503)])
    async with client(api) as http:
        await post(http, CONVERSION_BODY)
        await post(http, CONVERSION_BODY)

    with anyio.fail_after(GUARD):
        await api.wait_for_requests(2)
        await api.wait_for_batches(1)
        await api.wait_for_events(1)
        await api.wait_until(lambda: api.revenue == 4200)


async def test_wait_until_raises_what_the_predicate_raises() -> None:
    api = EventsAPI()
    calls = 0

    def predicate() -> bool:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise LookupError("boom")
        return False

    async with client(api) as http, anyio.create_task_group() as tg:

        async def send_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await post(http, CONVERSION_BODY)

        tg.start_soon(send_later)
        with anyio.fail_after(GUARD), pytest.raises(LookupError, match="boom"):
            await api.wait_until(predicate)


# Benchmark modes ------------------------------------------------------------------------


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


async def test_record_false_keeps_counters_only() -> None:
    api = EventsAPI(record=False)
    async with client(api) as http:
        await post(http, CONVERSION_BODY)
        await post(http, CONVERSION_BODY)

    assert api.requests == []
    assert (api.event_count, api.revenue, api.conversions) == (2, 8400, {"purchase": 2})
    assert api.duplicate_uuids() == {"91f5a888-f973-4c12-8fae-8ea19d28d6ea": 2}


async def test_lifespan_protocol() -> None:
    api = EventsAPI()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await api({"type": "lifespan"}, receive, send)

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# Over loopback sockets ------------------------------------------------------------------


async def test_serve_accepts_and_keeps_connections_alive() -> None:
    api = EventsAPI()
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            assert server.url == f"http://127.0.0.1:{server.port}/v1/events"
            assert server.base_url == f"http://127.0.0.1:{server.port}"
            responses = [
                await http.post(server.url, content=body, headers=JSON)
                for body in (IMPRESSION_BODY, CONVERSION_BODY, CONVERSION_BODY)
            ]
            stats = await http.get(server.base_url + "/v1/stats")

    assert [r.status_code for r in responses] == [204, 204, 204]
    assert stats.json()["events"] == 3
    assert server.connections == 1
    clients = {r.client for r in api.requests}
    assert len(clients) == 1
    assert next(iter(clients)) is not None


async def test_serve_hang_lets_the_client_timeout_fire() -> None:
    api = EventsAPI(faults=[Hang()])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON, timeout=0.1)
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert after.status_code == 204
    assert api.requests[0].fault == Hang()


async def test_serve_stops_cleanly_while_a_request_hangs() -> None:
    api = EventsAPI()
    api.fail_all(Hang())
    outcome: list[BaseException] = []
    with anyio.fail_after(GUARD):
        # The task group outlives the server: leaving serve() must end the hung requests.
        async with (
            httpx.AsyncClient() as http,
            anyio.create_task_group() as tg,
            serve(api) as server,
        ):

            async def hang() -> None:
                try:
                    await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
                except httpx.TransportError as exc:
                    outcome.append(exc)

            tg.start_soon(hang)
            tg.start_soon(hang)
            await api.wait_for_requests(2)

    # The server closed the held connections: the client saw them go.
    assert len(outcome) == 2
    assert all(isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) for exc in outcome)


async def test_serve_reset_is_a_transport_error() -> None:
    api = EventsAPI(faults=[Reset()])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            with pytest.raises(httpx.TransportError) as caught:
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert not isinstance(caught.value, SimulatedReset)  # a real reset, from the socket
    assert after.status_code == 204
    assert server.connections == 2


async def test_serve_retry_after_gzip_and_413() -> None:
    api = EventsAPI(faults=[Respond(429, retry_after="3")])
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient() as http:
            throttled = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)
            zipped = await http.post(
                server.url,
                content=gzip.compress(CONVERSION_BODY),
                headers={**JSON, "content-encoding": "gzip"},
            )
            too_large = await http.post(
                server.url, content=b" " * (MAX_BODY_SIZE + 1), headers=JSON
            )
            after = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "3")
    assert zipped.status_code == 204
    assert too_large.status_code == 413  # the body was drained: a 413, not a reset
    assert after.status_code == 204
    assert server.connections == 1


async def test_serve_answers_pipelined_requests_in_order() -> None:
    api = EventsAPI()
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(CONVERSION_BODY)
    ) + CONVERSION_BODY
    closing = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(request + request + closing)
                received = b""
                while True:
                    try:
                        received += await stream.receive()
                    except anyio.EndOfStream:
                        break

    assert received.count(b"HTTP/1.1 204 ") == 2
    assert received.rstrip().endswith(b'"no such path: /nope"}')
    assert api.event_count == 2


async def test_serve_answers_500_when_the_app_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        raise RuntimeError("bug")

    with anyio.fail_after(GUARD):
        async with serve(broken) as server, httpx.AsyncClient() as http:
            response = await http.get(server.base_url)

    assert response.status_code == 500
    assert "the ASGI app failed" in caplog.text


async def raw_exchange(server: Any, *chunks: bytes) -> bytes:
    """Send raw bytes on a fresh connection, then read until the server closes it."""
    stream = await anyio.connect_tcp(server.host, server.port)
    async with stream:
        for chunk in chunks:
            await stream.send(chunk)
        received = b""
        while True:
            try:
                received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return received


async def test_serve_answers_400_to_malformed_http() -> None:
    with anyio.fail_after(GUARD):
        async with serve(EventsAPI()) as server:
            received = await raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n")

    assert received.startswith(b"HTTP/1.1 400 ")


async def test_serve_survives_a_client_leaving_mid_body() -> None:
    api = EventsAPI()
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(
                    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n" + CONVERSION_BODY[:10]
                )
            async with httpx.AsyncClient() as http:
                response = await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

    assert response.status_code == 204
    assert api.request_count == 1


async def test_serve_sends_100_continue() -> None:
    api = EventsAPI()
    head = (
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(CONVERSION_BODY)
    )
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(head)
                interim = await stream.receive()
                await stream.send(CONVERSION_BODY)
                final = await stream.receive()

    assert interim.startswith(b"HTTP/1.1 100 ")
    assert final.startswith(b"HTTP/1.1 204 ")
    assert api.event_count == 1


async def test_serve_runs_any_asgi_app() -> None:
    async def app(scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["path"] == "/silent":
            return  # never answers: the server answers 500
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    with anyio.fail_after(GUARD):
        async with serve(app) as server, httpx.AsyncClient() as http:
            streamed = await http.get(server.base_url + "/stream")
            silent = await http.get(server.base_url + "/silent")

    assert (streamed.status_code, streamed.text) == (200, "one two")
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert silent.status_code == 500
    assert repr(server) == f"<Server http://127.0.0.1:{server.port}>"


async def test_serve_lets_the_callers_exception_out_as_itself() -> None:
    cause = OSError("cause")
    with pytest.raises(KeyError, match="mine") as caught:
        async with serve(EventsAPI()):
            raise KeyError("mine") from cause

    assert caught.value.__cause__ is cause


def raise_while_handling() -> None:
    try:
        raise OSError("first")
    except OSError:
        raise KeyError("second")  # noqa: B904 - the implicit chaining is the point


async def test_serve_keeps_the_callers_implicit_chaining() -> None:
    with pytest.raises(KeyError) as caught:
        async with serve(EventsAPI()):
            raise_while_handling()

    assert isinstance(caught.value.__context__, OSError)
    assert not caught.value.__suppress_context__


async def test_serve_stops_when_the_caller_is_cancelled() -> None:
    with anyio.fail_after(GUARD), anyio.CancelScope() as scope:
        async with serve(EventsAPI()) as server, httpx.AsyncClient() as http:
            await http.post(server.url, content=CONVERSION_BODY, headers=JSON)  # a live connection
            scope.cancel()
            await anyio.sleep_forever()

    assert scope.cancelled_caught


async def test_serve_binds_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with serve(EventsAPI(), host="0.0.0.0"):
            pass
    with pytest.raises(ValueError, match="loopback"):
        async with serve(EventsAPI(), host="example.com"):
            pass
    async with serve(EventsAPI(), host="localhost") as server:
        assert server.host == "127.0.0.1"


# In a thread ----------------------------------------------------------------------------


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "optitrack-testing-server"]


@pytest.fixture
def no_leftover_thread() -> Iterator[None]:
    yield
    assert server_threads() == []


@pytest.mark.usefixtures("no_leftover_thread")
def test_serve_in_thread_for_sync_code() -> None:
    api = EventsAPI(faults=[Respond(503)])
    with serve_in_thread(api) as server, httpx.Client() as http:
        assert len(server_threads()) == 1
        statuses = [
            http.post(server.url, content=CONVERSION_BODY, headers=JSON).status_code
            for _ in range(2)
        ]

    assert statuses == [503, 204]
    assert api.event_count == 1


@pytest.mark.usefixtures("no_leftover_thread")
async def test_waiting_across_threads() -> None:
    api = EventsAPI()
    with serve_in_thread(api) as server, anyio.fail_after(GUARD):
        async with httpx.AsyncClient() as http, anyio.create_task_group() as tg:

            async def send_later() -> None:
                await anyio.wait_all_tasks_blocked()
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

            tg.start_soon(send_later)
            await api.wait_for_events(1)

    assert api.event_count == 1
