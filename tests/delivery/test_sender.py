"""The sender (optitrack/_delivery/sender.py): retries, Retry-After, the circuit breaker,
400/413 bisection, answers mapped to outcomes, gzip, LOG_EVENT notifications.

HTTP goes to the Events API stand-in: in-process through httpx.ASGITransport, or over
real loopback sockets (``serve``) where timeouts, resets and hangs matter.
"""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import NotificationType, Reason, RetryPolicy
from optitrack._delivery import Part, Sender
from optitrack._notifications import NotificationCenter
from optitrack.testing import Delay, EventsAPI, Hang, Reset, Respond, serve
from tests.conftest import EVENTS_URL, asgi_client, check_ledger
from tests.delivery.conftest import FAST, Gate, context, visitor

pytestmark = pytest.mark.anyio


async def test_5xx_is_retried_byte_identical_with_the_same_idempotency_key(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI(faults=[Respond(503), Respond(500)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        for n in range(3):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
        stats = client.statistics()
    first, second, third = api.requests
    assert [r.status for r in api.requests] == [503, 500, 204]
    assert first.body == second.body == third.body
    keys = {r.headers["idempotency-key"] for r in api.requests}
    assert len(keys) == 1
    assert [r.headers["x-optitrack-attempt"] for r in api.requests] == ["1", "2", "3"]
    assert stats.requests == 3
    assert stats.retries == 2
    assert stats.batches == 1
    assert stats.delivered == 3
    assert stats.dropped == {}


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_retryable_statuses_are_retried(datafile: dict[str, Any], status: int) -> None:
    api = EventsAPI(faults=[Respond(status)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "u")
    assert [r.status for r in api.requests] == [status, 204]


@pytest.mark.parametrize("status", [404, 401, 403, 422, 501, 505])
async def test_other_errors_drop_the_batch_with_the_status(
    datafile: dict[str, Any], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI(faults=[Respond(status, body="go away")])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "u1")
        await client.track("purchase", "u2")
        result = await client.flush()
        stats = client.statistics()
    assert result == optitrack.FlushResult(complete=True, delivered=0, dropped=2, pending=0)
    assert stats.dropped == {f"http_{status}": 2}
    assert len(api.requests) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"answered {status}" in m for m in warnings)
    # The answer's body may echo events: never at WARNING, only at DEBUG.
    assert not any("go away" in m for m in warnings)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("go away" in m for m in debug)
    check_ledger(stats)


async def test_a_poison_event_is_isolated_and_the_rest_delivered(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_when(lambda body: b"poison" in body, Respond(400))
    async with asgi_client(api, datafile, batch_size=500, flush_interval=60) as client:
        for n in range(500):
            tags = {"marker": "poison"} if n == 321 else {"revenue": 1}
            await client.track("purchase", f"u{n}", None, tags)
        result = await client.flush()
        stats = client.statistics()
    # The bisection may end before flush() is called (the in-process transport never
    # waits): the ledger, not the flush's own count, says what became of each event.
    assert result.complete
    assert stats.delivered == 499
    assert stats.dropped == {"http_400": 1}
    assert stats.batches == 1
    delivered = [v.visitor_id for v in api.visitors]
    assert len(delivered) == 499
    assert "u321" not in delivered
    assert delivered == [f"u{n}" for n in range(500) if n != 321]  # order kept
    assert api.duplicate_uuids() == {}
    # Bisection: about 2 * log2(500) requests, not 500.
    assert len(api.requests) < 40


async def test_413_splits_too(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_when(lambda body: body.count(b"visitor_id") > 4, Respond(413))
    async with asgi_client(api, datafile, batch_size=16, flush_interval=60) as client:
        for n in range(16):
            await client.track("purchase", f"u{n}")
    assert api.event_count == 16
    assert all(len(b.visitors) <= 4 for b in api.batches)


async def test_an_endpoint_that_refuses_everything_costs_few_requests(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(400))
    async with asgi_client(api, datafile, batch_size=1000, flush_interval=60) as client:
        for n in range(1000):
            await client.track("purchase", f"u{n}")
        result = await client.flush()
    # The bisection may end before flush() is called (the in-process transport never
    # waits): the ledger says what became of the events.
    assert result.complete
    assert client.statistics().dropped == {"http_400": 1000}
    assert len(api.requests) <= 65  # 32 splits (3 log2 n + 2), 2 requests each, and 1


async def test_retry_after_is_honoured(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(429, retry_after="0.3")])
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=FAST) as client,
    ):
        await client.track("purchase", "u")
        assert (await client.flush()).complete
    first, second = api.requests
    assert second.time - first.time >= 0.29


async def test_retry_after_is_clamped(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503, retry_after="3600")])
    policy = RetryPolicy(wait_initial=0.001, wait_max=0.01, retry_after_max=0.05)
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        with anyio.fail_after(10):  # a guard: the clamp makes this return in about 0.05 s
            assert (await client.flush()).complete


async def test_retry_after_pauses_every_batch(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503, retry_after="0.5")])
    answered = anyio.Event()

    def on_log_event(notification: optitrack.LogEventNotification) -> None:
        if notification.outcome == "retry":
            answered.set()

    async with asgi_client(api, datafile, retry=FAST, batch_size=1, max_in_flight=2) as client:
        client.notification_center.add_listener(NotificationType.LOG_EVENT, on_log_event)
        await client.track("purchase", "a")
        with anyio.fail_after(5):
            await answered.wait()  # the 503 and its Retry-After are in
        await client.track("purchase", "b")
        await anyio.wait_all_tasks_blocked()
        # b left the queue and a request slot is free, yet it waits out the pause.
        assert client.statistics().queued == 0
        assert len(api.requests) == 1
        await client.flush()
    later = api.requests[1:]
    assert len(later) == 2


async def test_retries_are_bounded_by_attempts(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.001)
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        result = await client.flush()
        stats = client.statistics()
    assert result.dropped == 1
    assert stats.dropped == {"retries_exhausted": 1}
    assert len(api.requests) == 3


async def test_retries_are_bounded_by_the_time_budget(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        attempts=1000, timeout=0.2, wait_initial=0.02, wait_max=0.02, wait_jitter=0.0
    )
    async with asgi_client(api, datafile, retry=policy) as client:
        await client.track("purchase", "u")
        with anyio.fail_after(10):
            result = await client.flush()
    assert result.dropped == 1
    assert 2 <= len(api.requests) <= 11  # 0.2 s of 0.02 s waits


async def test_connection_reset_is_retried(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Reset(), Reset()])
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=FAST) as client,
    ):
        for n in range(20):
            await client.track("purchase", f"u{n}")
        assert (await client.flush()).complete
        stats = client.statistics()
    assert api.event_count == 20
    assert stats.retries == 2
    assert api.duplicate_uuids() == {}


async def test_a_slow_answer_times_out_and_is_retried(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Hang()])
    policy = RetryPolicy(attempt_timeout=0.2, wait_initial=0.001, wait_max=0.01)
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, retry=policy) as client,
    ):
        await client.track("purchase", "u")
        assert (await client.flush()).complete
    assert api.event_count == 1
    assert len(api.requests) == 2


async def test_a_closed_http_client_fails_attempts_not_the_worker(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=EventsAPI()))
    await http.aclose()  # a user mistake: requests now raise RuntimeError
    policy = RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.001)
    async with optitrack.Client(
        datafile, event_endpoint=EVENTS_URL, http_client=http, retry=policy
    ) as client:
        await client.track("purchase", "u")
        result = await client.flush()
    stats = client.statistics()
    assert result.dropped == 1
    assert stats.dropped == {"retries_exhausted": 1}
    assert stats.pending == 0
    assert "counted as a failed attempt" in caplog.text


async def test_outage_then_recovery_loses_nothing_and_duplicates_nothing(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        attempts=10_000, timeout=60, wait_initial=0.005, wait_max=0.02, probe_interval=0.01
    )
    async with (
        serve(api) as server,
        optitrack.Client(
            datafile, event_endpoint=server.url, retry=policy, batch_size=100, flush_interval=0.01
        ) as client,
    ):
        for n in range(1000):
            await client.track("purchase", f"u{n}", None, {"revenue": 1})
        with anyio.fail_after(10):
            await api.wait_for_requests(30)
        check_ledger(client.statistics())
        assert client.statistics().delivered == 0
        api.heal()
        with anyio.fail_after(20):
            assert (await client.flush()).complete
        stats = client.statistics()
    assert api.event_count == 1000
    assert api.revenue == 1000
    assert api.duplicate_uuids() == {}
    assert stats.delivered == 1000
    assert stats.dropped == {}
    check_ledger(stats)


async def test_an_outage_does_not_use_up_attempts(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        attempts=3,
        breaker_threshold=2,
        wait_initial=0.001,
        wait_max=0.005,
        probe_interval=0.005,
        timeout=60,
    )
    async with asgi_client(api, datafile, retry=policy, batch_size=10) as client:
        for n in range(30):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(10):
            await api.wait_for_requests(40)  # far more failures than attempts=3
        assert client.statistics().dropped == {}
        api.heal()
        with anyio.fail_after(10):
            assert (await client.flush()).complete
        stats = client.statistics()
    assert stats.delivered == 30
    assert stats.dropped == {}
    assert api.event_count == 30


async def test_the_circuit_breaker_probes_one_request_at_a_time(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Delay(0.01, then=Respond(503)))
    gate = Gate(api)
    gate.open.set()
    policy = RetryPolicy(
        attempts=10_000,
        wait_initial=0.001,
        wait_max=0.005,
        timeout=60,
        breaker_threshold=3,
        probe_interval=0.001,
    )
    async with asgi_client(
        gate,
        datafile,
        retry=policy,
        batch_size=10,
        max_in_flight=4,
        flush_interval=0.001,
    ) as client:
        for n in range(200):
            await client.track("purchase", f"u{n}")
        with anyio.fail_after(10):
            await api.wait_for_requests(8)  # the breaker is open by now
        in_flight_batches = gate.max_active
        gate.max_active = 0
        with anyio.fail_after(10):
            await api.wait_for_requests(60)
        # Even the batches that were in flight when it opened probe one at a time.
        assert gate.max_active == 1 < in_flight_batches
        assert client.statistics().delivered == 0
        api.heal()
        with anyio.fail_after(20):
            assert (await client.flush()).complete
    assert api.event_count == 200
    assert api.duplicate_uuids() == {}


async def test_backoff_still_waits_after_an_outage_ended(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(
        breaker_threshold=2,
        wait_initial=30,
        wait_max=30,
        wait_jitter=0.0,
        probe_interval=0.01,
    )
    retrying = anyio.Event()

    def on_log_event(notification: optitrack.LogEventNotification) -> None:
        if notification.outcome == "retry":
            retrying.set()

    async with asgi_client(api, datafile, retry=policy, batch_size=1) as client:
        # Two batches fail: the breaker opens; one probes, the other backs off for 30 s.
        await client.track("purchase", "before-1")
        await client.track("purchase", "before-2")
        with anyio.fail_after(10):
            await api.wait_for_requests(4)  # the breaker opened
        api.heal()
        with anyio.fail_after(10):
            assert (await client.flush()).complete  # and closed again
        api.inject(Respond(503))
        client.notification_center.add_listener(NotificationType.LOG_EVENT, on_log_event)
        await client.track("purchase", "after")
        with anyio.fail_after(10):
            await retrying.wait()
        await anyio.wait_all_tasks_blocked()
        assert api.requests[-1].status == 503  # a real backoff, not an instant retry
    # Leaving ends the backoff: one last attempt.
    failed, retried = api.requests[-2:]
    assert failed.status == 503
    assert retried.status == 204


async def test_gzip(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile, gzip=True, batch_size=500) as client:
        for n in range(600):  # a large body is compressed off the event loop
            await client.track("purchase", f"u{n}", None, {"pad": "y" * 100})
    assert api.event_count == 600
    for request in api.requests:
        assert request.headers["content-encoding"] == "gzip"
        assert json.loads(gzip.decompress(request.body))["visitors"]
        assert len(request.body) < len(request.content)


async def test_log_event_notifications_describe_each_request(datafile: dict[str, Any]) -> None:
    api = EventsAPI(faults=[Respond(503)])
    seen: list[optitrack.LogEventNotification] = []
    async with asgi_client(api, datafile, retry=FAST) as client:
        client.notification_center.add_listener(NotificationType.LOG_EVENT, seen.append)
        await client.track("purchase", "u")
    assert [(n.outcome, n.status, n.attempt) for n in seen] == [
        ("retry", 503, 1),
        ("delivered", 204, 2),
    ]
    assert seen[0].url == client.event_endpoint
    assert seen[0].event_count == 1
    assert seen[0].body == api.requests[0].body
    assert all(n.duration is not None and n.duration >= 0 for n in seen)


async def test_a_raising_listener_never_stops_delivery(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    api = EventsAPI()
    outcomes: list[str] = []

    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    async with asgi_client(api, datafile) as client:
        client.notification_center.add_listener(NotificationType.LOG_EVENT, broken)
        client.notification_center.add_listener(NotificationType.TRACK, broken)
        client.notification_center.add_listener(
            NotificationType.LOG_EVENT,
            lambda n: outcomes.append(n.outcome),
        )
        assert await client.track("purchase", "u")
    assert api.event_count == 1
    assert outcomes == ["delivered"]
    assert "listener raised" in caplog.text


async def test_no_payload_is_logged_at_info_or_above(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI(faults=[Respond(503), Respond(400)])
    async with asgi_client(api, datafile, retry=FAST) as client:
        await client.track("purchase", "secret-user", {"plan": "pro"}, {"revenue": 1})
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert "secret-user" not in record.getMessage()


# -- the sender alone: one part, one outcome ---------------------------------------------


async def test_send_returns_halves_a_drop_reason_or_none() -> None:
    api = EventsAPI(faults=[Respond(503), Respond(400), Respond(404)])
    sender = Sender(FAST, NotificationCenter())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        sender.attach(http, anyio.current_time)
        part = Part(context(EVENTS_URL), [visitor("a"), visitor("b")], first_seq=5)
        halves = await sender.send(part)  # 503, then 400 on two events
        assert isinstance(halves, tuple)
        first, second = halves
        assert (first.items, first.first_seq) == ([visitor("a")], 5)
        assert (second.items, second.first_seq) == ([visitor("b")], 6)
        assert await sender.send(first) == "http_404"
        assert await sender.send(second) is None
    assert [r.status for r in api.requests] == [503, 400, 404, 204]
    assert (sender.requests, sender.retries) == (4, 1)
    assert sender.bytes_sent == sum(len(r.body) for r in api.requests)


async def test_send_gives_up_and_reports_the_breaker() -> None:
    api = EventsAPI()
    api.fail_all(Respond(503))
    policy = RetryPolicy(attempts=2, breaker_threshold=2, wait_initial=0.001, wait_max=0.001)
    breaker: list[bool] = []
    sender = Sender(policy, NotificationCenter(), on_breaker=breaker.append)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http:
        sender.attach(http, anyio.current_time)
        ctx = context(EVENTS_URL)
        with anyio.fail_after(10):
            assert await sender.send(Part(ctx, [visitor("a")], 0)) is Reason.RETRIES_EXHAUSTED
        assert breaker == [True]  # the second failure in a row opened it
        api.heal()
        assert await sender.send(Part(ctx, [visitor("b")], 1)) is None
    assert breaker == [True, False]
    assert [r.status for r in api.requests] == [503, 503, 204]
