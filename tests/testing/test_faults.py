"""optitrack.testing._faults: the faults, scripted, persistent and by rule."""

from __future__ import annotations

import gzip

import anyio
import anyio.abc
import httpx
import pytest

from optitrack.testing import Delay, EventsAPI, Fault, Hang, Reset, Respond, SimulatedReset, When
from tests.testing.conftest import CONVERSION_BODY, batch_of, client, conversion, post

pytestmark = pytest.mark.anyio


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
