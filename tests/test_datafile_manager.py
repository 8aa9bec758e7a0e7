"""Client(sdk_key=...): the datafile fetched, kept current, cached, and its failures.

Every test runs against the package's datafile server (``optitrack.testing.DatafileAPI``)
and Events API stand-in on 127.0.0.1, on asyncio and Trio. Progress is driven by
notifications and the servers' own waits; ``fail_after`` only guards.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import optitrack
from optitrack import DatafileError, NotificationType, Reason, TrackError
from optitrack.testing import DatafileAPI, EventsAPI, Hang, Respond, serve

pytestmark = pytest.mark.anyio

KEY = "sdk-key-1"


def revision(datafile: dict[str, Any], number: int) -> dict[str, Any]:
    """The datafile at another revision, with this test's SDK key."""
    changed = copy.deepcopy(datafile)
    changed["revision"] = str(number)
    changed["sdkKey"] = KEY
    return changed


@asynccontextmanager
async def servers(
    datafiles: dict[str, Any], **options: Any
) -> AsyncIterator[tuple[DatafileAPI, EventsAPI, dict[str, Any]]]:
    """A datafile server and an Events API on loopback, and the client options for both."""
    cdn = DatafileAPI(datafiles, **options)
    events = EventsAPI()
    async with serve(cdn) as cdn_server, serve(events) as events_server:
        yield (
            cdn,
            events,
            {
                "sdk_key": KEY,
                "datafile_url_template": cdn_server.base_url + "/datafiles/{sdk_key}.json",
                "event_endpoint": events_server.url,
                "update_interval": 0.05,
                "datafile_timeout": 5.0,
            },
        )


class Updates:
    """CONFIG_UPDATE notifications, and a way to wait for the n-th."""

    def __init__(self, client: optitrack.Client) -> None:
        self.seen: list[optitrack.ConfigUpdateNotification] = []
        self._changed: anyio.Event | None = None
        client.notification_center.add_listener(NotificationType.CONFIG_UPDATE, self._on)

    def _on(self, notification: optitrack.ConfigUpdateNotification) -> None:
        self.seen.append(notification)
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, n: int) -> None:
        with anyio.fail_after(10):
            while len(self.seen) < n:
                self._changed = anyio.Event()
                await self._changed.wait()


async def test_the_datafile_is_fetched_at_start_and_used(datafile: dict[str, Any]) -> None:
    async with servers({KEY: revision(datafile, 7)}) as (cdn, events, options):
        async with optitrack.Client(**options) as client:
            assert client.is_ready
            assert client.config.revision == "7"
            assert await client.track("purchase", "u1")
            decision = await client.create_user_context("u1", {"plan": "pro"}).decide(
                "new_checkout"
            )
            assert decision.flag_key == "new_checkout"
            await client.flush()
        assert {batch.revision for batch in events.batches} == {"7"}
        first = cdn.requests[0]
        assert first.headers.get("if-none-match") is None


async def test_a_new_revision_is_polled_and_queued_events_keep_theirs(
    datafile: dict[str, Any],
) -> None:
    async with servers({KEY: revision(datafile, 1)}) as (cdn, events, options):
        async with optitrack.Client(**options, flush_interval=60) as client:
            updates = Updates(client)
            assert await client.track("purchase", "before")
            cdn.set_datafile(KEY, revision(datafile, 2))
            await updates.wait_for(1)
            assert updates.seen[0].revision == "2"
            assert updates.seen[0].source == "fetch"
            assert client.config.revision == "2"
            assert await client.track("purchase", "after")
            await client.flush()
        by_revision = {
            batch.revision: [v.visitor_id for v in batch.visitors] for batch in events.batches
        }
        assert by_revision == {"1": ["before"], "2": ["after"]}


async def test_fetches_are_conditional_and_304_changes_nothing(datafile: dict[str, Any]) -> None:
    async with servers({KEY: revision(datafile, 1)}) as (cdn, _, options):
        async with optitrack.Client(**options) as client:
            updates = Updates(client)
            config = client.config
            await cdn.wait_for_requests(4)
            assert client.config is config
            assert updates.seen == []
        etag = cdn.requests[0].etag
        assert etag
        later = cdn.requests[1:4]
        assert all(r.headers.get("if-none-match") == etag for r in later)
        assert all(r.headers.get("if-modified-since") for r in later)
        assert all(r.status == 304 for r in later)


async def test_an_access_token_is_sent_and_never_logged(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="optitrack")
    async with servers({KEY: revision(datafile, 3)}, token="s3cret") as (cdn, _, options):
        options["datafile_url_template"] = options["datafile_url_template"].replace(
            "/datafiles/", "/datafiles/auth/"
        )
        async with optitrack.Client(**options, datafile_access_token="s3cret") as client:
            assert client.is_ready
        assert cdn.requests[0].headers.get("authorization") == "Bearer s3cret"
        async with optitrack.Client(
            **{**options, "datafile_timeout": 1.0}, datafile_access_token="wrong"
        ) as client:
            assert not client.is_ready
    assert "s3cret" not in caplog.text
    assert "wrong" not in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("403" in e and "datafile_access_token" in e for e in errors), errors


def test_the_default_urls_are_optimizelys() -> None:
    plain = optitrack.Client(sdk_key="abc")
    assert plain._manager is not None
    assert plain._manager.options.url == "https://cdn.optimizely.com/datafiles/abc.json"
    auth = optitrack.Client(sdk_key="abc", datafile_access_token="tok-123")
    assert auth._manager is not None
    assert auth._manager.options.url == "https://config.optimizely.com/datafiles/auth/abc.json"
    assert "tok-123" not in repr(auth._manager.options)


async def test_without_any_datafile_the_client_starts_and_refuses(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optitrack")
    async with servers({KEY: revision(datafile, 5)}) as (cdn, events, options):
        cdn.fail_all(Respond(503))
        options["datafile_timeout"] = 0.3
        async with optitrack.Client(**options) as client:
            assert not client.is_ready
            result = await client.track("purchase", "u1")
            assert not result
            assert result.reason is Reason.NO_DATAFILE
            user = client.create_user_context("u1")
            decision = await user.decide("new_checkout")
            assert not decision.enabled
            assert "no_datafile" in decision.reasons[0]
            assert await user.decide_all() == {}
            assert await client.activate("checkout_test", "u1") is None
            assert await client.is_feature_enabled("new_checkout", "u1") is False
            assert client.get_variation("checkout_test", "u1") is None
            assert client.get_all_feature_variables("new_checkout", "u1") is None
            with pytest.raises(optitrack.ClientStateError):
                _ = client.config
            assert client.statistics().refused["no_datafile"] == 6
            assert not await client.wait_ready(0)
            cdn.heal()
            assert await client.wait_ready(10)
            assert client.config.revision == "5"
            assert await client.track("purchase", "u1")
            await client.flush()
        assert events.event_count == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("Fetching the datafile" in w for w in warnings) == 1  # one per streak
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("works again" in i for i in infos)


async def test_without_a_datafile_strict_raises(datafile: dict[str, Any]) -> None:
    async with servers({}) as (_, _, options):
        options["datafile_timeout"] = 0.3
        async with optitrack.Client(**options, strict=True) as client:
            with pytest.raises(TrackError):
                await client.track("purchase", "u1")
            with pytest.raises(optitrack.DecisionError):
                await client.create_user_context("u1").decide("new_checkout")


async def test_an_initial_datafile_is_used_until_a_fetch_succeeds(
    datafile: dict[str, Any],
) -> None:
    async with servers({KEY: revision(datafile, 9)}) as (cdn, _, options):
        cdn.fail_all(Hang())
        options["datafile_timeout"] = 0.2
        async with optitrack.Client(revision(datafile, 8), **options) as client:
            assert client.is_ready  # at once: the initial datafile
            assert client.config.revision == "8"
            updates = Updates(client)
            cdn.heal()
            await updates.wait_for(1)
            assert client.config.revision == "9"


async def test_the_cache_serves_a_cold_start(datafile: dict[str, Any], tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "datafile.json"
    async with servers({KEY: revision(datafile, 4)}) as (cdn, _, options):
        async with optitrack.Client(**options, datafile_cache=cache) as client:
            assert client.config.revision == "4"
        assert json.loads(cache.read_text())["revision"] == "4"
        assert [p.name for p in cache.parent.iterdir()] == ["datafile.json"]  # no temporary

        cdn.fail_all(Respond(500))
        options["datafile_timeout"] = 0.3
        client = optitrack.Client(**options, datafile_cache=cache)
        updates = Updates(client)
        async with client:
            assert client.is_ready
            assert client.config.revision == "4"
            assert [(u.revision, u.source) for u in updates.seen] == [("4", "cache")]


async def test_a_bad_datafile_is_logged_once_and_the_good_one_stays(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        servers({KEY: revision(datafile, 1)}) as (cdn, _, options),
        optitrack.Client(**options) as client,
    ):
        cdn.set_datafile(KEY, "{not json")
        await cdn.wait_for_requests(len(cdn.requests) + 3)
        cdn.set_datafile(KEY, {**revision(datafile, 2), "sdkKey": "another-key"})
        await cdn.wait_for_requests(len(cdn.requests) + 3)
        cdn.set_datafile(KEY, {**revision(datafile, 3), "events": "nope"})
        await cdn.wait_for_requests(len(cdn.requests) + 3)
        assert client.config.revision == "1"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3, errors  # one per bad datafile, not one per poll
    assert "not valid JSON" in errors[0]
    assert "another-key" in errors[1]
    assert "events" in errors[2]


async def test_an_unknown_sdk_key_says_what_to_check_and_polling_goes_on(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with servers({}) as (cdn, _, options):
        options["datafile_timeout"] = 5.0
        async with optitrack.Client(**options) as client:
            assert not client.is_ready  # a 404 ends the wait at once
            await cdn.wait_for_requests(3)
            cdn.set_datafile(KEY, revision(datafile, 6))
            assert await client.wait_ready(10)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "404" in errors[0]
    assert "sdk_key" in errors[0]


async def test_a_hanging_server_times_out(datafile: dict[str, Any]) -> None:
    async with servers({KEY: revision(datafile, 1)}) as (cdn, _, options):
        cdn.fail_all(Hang())
        options["datafile_timeout"] = 0.2
        with anyio.fail_after(5):
            async with optitrack.Client(**options) as client:
                assert not client.is_ready


async def test_update_datafile_notifies(datafile: dict[str, Any]) -> None:
    async with servers({KEY: revision(datafile, 1)}) as (_, _, options):
        options["update_interval"] = 3600
        async with optitrack.Client(**options) as client:
            updates = Updates(client)
            client.update_datafile(revision(datafile, 2))
            assert [(u.revision, u.source) for u in updates.seen] == [("2", "update_datafile")]


async def test_a_forked_child_does_not_poll(datafile: dict[str, Any]) -> None:
    from optitrack import _datafile_manager

    async with (
        servers({KEY: revision(datafile, 1)}) as (cdn, _, options),
        optitrack.Client(**options) as client,
    ):
        manager = client._manager
        assert manager is not None
        await cdn.wait_for_requests(2)
        # What os.fork runs in the child: the inherited client stops polling.
        _datafile_manager._after_fork_in_child()
        stopped = manager.stopped
        assert stopped is not None
        with anyio.fail_after(5):
            await stopped.wait()


def test_neither_datafile_nor_sdk_key_is_an_error() -> None:
    with pytest.raises(TypeError, match="sdk_key"):
        optitrack.Client()


@pytest.mark.parametrize(
    "option",
    [
        {"update_interval": 0},
        {"datafile_timeout": -1},
        {"datafile_url_template": "ftp://x/{sdk_key}"},
        {"datafile_url_template": "https://x/{key}.json"},
        {"sdk_key": ""},
    ],
)
def test_bad_options_are_refused_up_front(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by option
        optitrack.Client(**{"sdk_key": "k", **option})


def test_a_url_as_a_datafile_says_what_to_use() -> None:
    with pytest.raises(DatafileError, match="sdk_key="):
        optitrack.load_datafile("https://cdn.optimizely.com/datafiles/abc.json")


def test_a_file_of_invalid_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{nope")
    with pytest.raises(DatafileError, match=r"broken\.json"):
        optitrack.load_datafile(path)
