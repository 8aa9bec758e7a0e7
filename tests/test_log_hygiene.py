"""Logs at INFO and above never carry a user id, a tag or attribute value, a token, a
payload or a response body, and quote keys with ``repr`` (a newline forges no line).

Secrets are planted in every input a failure path can see; the logs are captured at DEBUG
and everything at INFO or above is scanned.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import anyio
import httpx
import pytest

import optitrack
from optitrack import NotificationType, RetryPolicy
from optitrack.testing import DatafileAPI, EventsAPI, Hang, Respond, When, serve, serve_in_thread

pytestmark = pytest.mark.anyio

USER = "SECRET-USER"
TAG = "SECRET-TAG"
ATTRIBUTE = "SECRET-ATTRIBUTE"
TOKEN = "SECRET-TOKEN"
PASSWORD = "SECRET-PASSWORD"
BODY = "SECRET-BODY"
DATAFILE_VALUE = "SECRET-DATAFILE-VALUE"
SECRETS = (USER, TAG, ATTRIBUTE, TOKEN, PASSWORD, BODY, DATAFILE_VALUE)
FORGED = "\nFORGED"  # in keys: a line of its own, unless quoted

FAST = RetryPolicy(attempts=2, wait_initial=0.001, wait_max=0.001, timeout=5)


def assert_clean(caplog: pytest.LogCaptureFixture, *expected: str) -> None:
    """Nothing secret at INFO or above, and the failure paths did log (``expected``)."""
    seen = []
    for record in caplog.records:
        if record.levelno < logging.INFO:
            continue
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        for secret in SECRETS:
            assert secret not in text, (secret, text)
        assert FORGED not in text, text
        seen.append(text)
    for fragment in expected:
        assert any(fragment in text for text in seen), (fragment, seen)


def track_arguments(n: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    user = f"{USER}-{n}"
    attributes = {"plan": ATTRIBUTE, f"unknown{FORGED}": ATTRIBUTE}
    tags = {"revenue": 100, "note": TAG}
    return user, attributes, tags


async def test_events_path_failures(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI()
    api.inject(Respond(503, body=BODY))
    api.fail_when(lambda body: b"poison" in body, Respond(400, body=BODY))

    def listener(notification: object) -> None:
        raise ValueError(f"{USER} {TAG}")

    async with serve(api) as server:
        endpoint = server.url.replace("http://", f"http://user:{PASSWORD}@") + f"?t={TOKEN}"
        async with optitrack.Client(
            datafile, event_endpoint=endpoint, retry=FAST, batch_size=2
        ) as client:
            client.notification_center.add_listener(NotificationType.TRACK, listener)
            for n in range(6):
                user, attributes, tags = track_arguments(n)
                await client.track("purchase", user, attributes, tags)
            await client.track("purchase", "poison", None, {"note": TAG})
            await client.track(f"purchase{FORGED}", USER, None, {"note": TAG})
            await client.track("purchase", USER, None, {"bad": object()})
            assert (await client.flush(timeout=10)).complete
    assert client.statistics().delivered == 6
    assert_clean(
        caplog,
        "optitrack client started",
        "listener raised ValueError",
        "400",
        "client closed",
    )


async def test_shutdown_with_the_endpoint_hanging(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI()
    api.fail_all(Hang())
    transport = httpx.ASGITransport(app=api)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        optitrack.Client(
            datafile,
            event_endpoint="http://events.test/v1/events",
            http_client=http,
            close_timeout=0.1,
        ) as client,
    ):
        for n in range(5):
            user, attributes, tags = track_arguments(n)
            await client.track("purchase", user, attributes, tags)
        await client.flush(timeout=0)
    assert client.statistics().dropped == {"shutdown": 5}
    assert_clean(caplog, "Shutdown deadline passed")


async def test_datafile_fetch_failures(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    bad = {**datafile, "sdkKey": "key", "version": DATAFILE_VALUE, "revision": DATAFILE_VALUE}
    cdn = DatafileAPI({"key": bad})
    async with serve(cdn) as server:
        cdn.inject(Respond(500, body=BODY), Respond(403, body=BODY))
        async with optitrack.Client(
            {**datafile, "revision": f"1{FORGED}"},
            sdk_key="key",
            datafile_url_template=server.base_url + "/datafiles/{sdk_key}.json",
            datafile_access_token=TOKEN,
            update_interval=0.01,
            event_endpoint="http://127.0.0.1:9/v1/events",
        ):
            with anyio.fail_after(10):
                await cdn.wait_for_requests(4)
    assert_clean(caplog, "failed (HTTP 500)", "answered 403", "Ignoring the datafile fetched")


def test_sync_client_failures(datafile: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    api = EventsAPI(rules=[When(lambda body: True, Respond(400, body=BODY))])
    with serve_in_thread(api) as server:
        client = optitrack.SyncClient(datafile, event_endpoint=server.url, retry=FAST)
        client.notification_center.add_listener(
            NotificationType.TRACK, lambda n: (_ for _ in ()).throw(ValueError(USER))
        )
        for n in range(3):
            user, attributes, tags = track_arguments(n)
            client.track("purchase", user, attributes, tags)
        client.track(f"nope{FORGED}", USER)
        client.close()
    assert client.statistics().dropped_total == 3
    assert_clean(caplog, "listener raised ValueError", "400", "nope")


class _FailingProfiles:
    """A user profile service whose every call fails, naming the user."""

    async def lookup(self, user_id: str) -> Any:
        raise RuntimeError(f"lookup failed for {user_id}")

    async def save(self, profile: Any) -> None:
        raise RuntimeError(f"save failed for {profile['user_id']}")


async def test_decision_path_failures(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    async with optitrack.Client(
        datafile,
        event_endpoint="http://127.0.0.1:9/v1/events",
        user_profile_service=_FailingProfiles(),
        close_timeout=0,
    ) as client:
        user = client.create_user_context(USER, {"plan": ATTRIBUTE})
        user.set_forced_decision(
            optitrack.DecisionContext("new_checkout"), optitrack.ForcedDecision("nope")
        )
        await user.decide("new_checkout")
        await user.decide(f"no_such_flag{FORGED}")
        assert client.get_feature_variable_string("new_checkout", f"v{FORGED}", USER) is None
        assert await client.activate("checkout_test", f"{USER}-qa", {"plan": ATTRIBUTE}) in (
            None,
            "control",
            "treatment",
        )
        client.set_forced_variation(f"no_such_experiment{FORGED}", USER, "control")
    assert_clean(
        caplog,
        "failed to look up a user's profile",
        "No feature flag was found for key",
        "Variable with key",
        "Experiment key",
    )
    # What INFO leaves out is still there at DEBUG, for whoever turns it on.
    assert any(USER in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
