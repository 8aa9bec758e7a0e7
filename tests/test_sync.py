"""SyncClient: the async pipeline on a background thread, for sync code.

Each test runs with the background loop on asyncio and on Trio (``backend``), against
the Events API stand-in served on 127.0.0.1 from its own thread. Background work is
waited for with ``flush`` and the stand-in's own waits, never with sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import optitrack
from optitrack import ClientStateError, Reason, TrackError
from optitrack.testing import EventsAPI, Hang, Server, serve_in_thread
from tests.conftest import check_ledger


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The background loop's backend."""
    return str(request.param)


@pytest.fixture
def stand_in() -> Iterator[tuple[EventsAPI, Server]]:
    """The Events API stand-in on 127.0.0.1, served from a thread."""
    api = EventsAPI()
    with serve_in_thread(api) as server:
        yield api, server


def test_many_threads_track_and_decide(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    api, server = stand_in
    with optitrack.SyncClient(datafile, event_endpoint=server.url, backend=backend) as client:

        def work(worker: int) -> None:
            for n in range(500):
                user_id = f"w{worker}-{n}"
                assert client.track("purchase", user_id, {"plan": "pro"}, {"revenue": 1})
                user = client.create_user_context(user_id, {"plan": "pro"})
                decision = user.decide("new_checkout")
                assert decision.user_context is user  # type: ignore[comparison-overlap]
                assert user.track_event("purchase")

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result = client.flush(30)
        assert result.complete
        stats = client.statistics()
    check_ledger(stats)
    assert stats.accepted == stats.delivered == 4 * 500 * 3
    assert api.event_count == 4 * 500 * 3
    assert api.duplicate_uuids() == {}
    assert sum(api.conversions.values()) == 4 * 500 * 2


def test_flush_waits_for_what_the_pump_is_moving(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    # A small batch_size: the pump yields every few items while it moves what it took
    # from the hand-off. flush() must count those too, not only what was queued already.
    api, server = stand_in
    with optitrack.SyncClient(
        datafile, event_endpoint=server.url, backend=backend, batch_size=10, flush_interval=60
    ) as client:
        for n in range(2000):
            assert client.track("purchase", f"u{n}")
        assert client.flush(30).complete
        stats = client.statistics()
        assert stats.pending == 0, stats
        assert stats.delivered == api.event_count == 2000


def test_the_decision_calls(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    api, server = stand_in
    with optitrack.SyncClient(datafile, event_endpoint=server.url, backend=backend) as client:
        variation = client.activate("checkout_test", "u1", {"plan": "pro", "age": 34})
        assert variation in ("control", "treatment")
        assert client.get_variation("checkout_test", "u1", {"plan": "pro", "age": 34}) == (
            variation
        )
        assert isinstance(client.is_feature_enabled("new_checkout", "u1", {"plan": "pro"}), bool)
        assert isinstance(client.get_enabled_features("u1", {"plan": "pro"}), list)
        user = client.create_user_context("u2", {"plan": "pro"})
        decisions = user.decide_for_keys(["nope", "new_checkout"])
        assert list(decisions) == ["nope", "new_checkout"]  # the caller's order
        assert set(user.decide_all()) == {"new_checkout"}
        client.flush(30)
        impressions = sum(api.impressions.values())
    assert impressions >= 2  # activate's, and the decides' experiment rule


def test_a_full_hand_off_refuses_and_the_ledger_balances(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    api, server = stand_in
    api.fail_all(Hang())  # nothing leaves: the queue and the hand-off fill up
    client = optitrack.SyncClient(
        datafile,
        event_endpoint=server.url,
        backend=backend,
        max_queue_size=10,
        batch_size=5,
        close_timeout=0.5,
    )
    with client:
        results = [client.track("purchase", f"u{n}") for n in range(100)]
        refused = [r for r in results if not r]
        assert refused
        assert {r.reason for r in refused} == {Reason.QUEUE_FULL}
        stats = client.statistics()
        check_ledger(stats)
        assert stats.accepted == 100 - len(refused)
        assert stats.refused == {"queue_full": len(refused)}
    check_ledger(client.statistics())
    assert client.statistics().dropped_total == client.statistics().accepted


def test_close_keeps_its_deadline_while_the_queue_has_no_room(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    # Nothing leaves, the delivery queue is full, and the pump is waiting for room with
    # items it took from the hand-off: close() ends them at its deadline, counted.
    api, server = stand_in
    api.fail_all(Hang())
    client = optitrack.SyncClient(
        datafile, event_endpoint=server.url, backend=backend, max_queue_size=10, batch_size=5
    )
    client.start()
    deadline = time.monotonic() + 5
    n = 0
    while not (client._client.statistics().queued == 10 and client._handoff.pending):
        assert time.monotonic() < deadline, client.statistics()
        client.track("purchase", f"u{n}")  # refused (queue_full) while the hand-off is full
        n += 1
        time.sleep(0.005)
    started = time.monotonic()
    client.close(0.3)
    assert time.monotonic() - started < 2  # not close_timeout + 5 s
    stats = client.statistics()
    check_ledger(stats)
    assert stats.pending == 0
    assert stats.dropped_total == stats.accepted > 0


def test_block_waits_for_room_then_refuses(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    api, server = stand_in
    api.fail_all(Hang())
    with optitrack.SyncClient(
        datafile,
        event_endpoint=server.url,
        backend=backend,
        max_queue_size=4,
        batch_size=2,
        overflow="block",
        overflow_timeout=0.05,
        close_timeout=0.2,
    ) as client:
        results = [client.track("purchase", f"u{n}") for n in range(40)]
    assert any(r.reason is Reason.QUEUE_FULL for r in results if not r)
    check_ledger(client.statistics())


def test_close_sends_everything_and_refuses_after(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server]
) -> None:
    api, server = stand_in
    client = optitrack.SyncClient(
        datafile, event_endpoint=server.url, backend=backend, flush_interval=60
    )
    for n in range(300):
        assert client.track("purchase", f"u{n}")  # starts the client on first use
    client.close()
    assert api.event_count == 300
    after = client.track("purchase", "late")
    assert after.reason is Reason.CLOSED
    with pytest.raises(ClientStateError):
        client.create_user_context("u").decide("new_checkout")
    strict = optitrack.SyncClient(datafile, event_endpoint=server.url, strict=True)
    with strict, pytest.raises(TrackError):
        strict.track("nope", "u")


def _script(body: str, url: str, datafile: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "datafile.json"
    path.write_text(json.dumps(datafile))
    return textwrap.dedent(f"""
        import os, sys
        import optitrack
        URL = {url!r}
        DATAFILE = {str(path)!r}
    """) + textwrap.dedent(body)


def test_a_script_that_forgets_close_still_sends_at_exit(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server], tmp_path: Path
) -> None:
    api, server = stand_in
    code = _script(
        f"""
        client = optitrack.SyncClient(DATAFILE, event_endpoint=URL, backend={backend!r},
                                      flush_interval=60)
        for n in range(500):
            assert client.track("purchase", f"u{{n}}")
        # no close(): interpreter exit drains, within close_timeout
        """,
        server.url,
        datafile,
        tmp_path,
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert api.event_count == 500
    assert api.duplicate_uuids() == {}


def test_a_client_made_before_fork_works_in_every_child(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server], tmp_path: Path
) -> None:
    # As under gunicorn --preload: the parent makes (and uses) the client, then forks.
    api, server = stand_in
    code = _script(
        f"""
        client = optitrack.SyncClient(DATAFILE, event_endpoint=URL, backend={backend!r},
                                      flush_interval=60)
        for n in range(100):
            client.track("purchase", f"parent-before-{{n}}")  # queued when forking
        children = []
        for child in range(3):
            pid = os.fork()
            if pid == 0:
                for n in range(200):
                    assert client.track("purchase", f"child{{child}}-{{n}}")
                client.close()
                os._exit(0)
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        client.close()
        """,
        server.url,
        datafile,
        tmp_path,
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=90, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert api.duplicate_uuids() == {}
    visitors = [v.visitor_id for v in api.visitors]
    assert len(visitors) == len(set(visitors)) == 100 + 3 * 200


def test_a_client_the_parent_never_used_works_in_every_child(
    datafile: dict[str, Any], backend: str, stand_in: tuple[EventsAPI, Server], tmp_path: Path
) -> None:
    # As a gunicorn --preload master: it makes the client at import and only forks. The
    # fork gives up every delivery queue in the child, a never-started one too, so the
    # child must not send through the inherited one (it dropped everything as shutdown).
    api, server = stand_in
    code = _script(
        f"""
        client = optitrack.SyncClient(DATAFILE, event_endpoint=URL, backend={backend!r},
                                      flush_interval=60)
        children = []
        for child in range(2):
            pid = os.fork()
            if pid == 0:
                for n in range(100):
                    assert client.track("purchase", f"child{{child}}-{{n}}")
                client.close()
                stats = client.statistics()
                assert stats.delivered == 100 and not stats.dropped, stats
                os._exit(0)
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        """,
        server.url,
        datafile,
        tmp_path,
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert api.event_count == 2 * 100
    assert api.duplicate_uuids() == {}


async def _track_from_another_thread(client: optitrack.Client) -> None:
    def call() -> None:
        client.track_nowait("purchase", "u1")

    with pytest.raises(ClientStateError, match="SyncClient"):
        await anyio.to_thread.run_sync(call)


@pytest.mark.anyio
async def test_the_async_client_refuses_other_threads(datafile: dict[str, Any]) -> None:
    async with optitrack.Client(datafile, event_endpoint="http://127.0.0.1:9/v1/events") as c:
        await _track_from_another_thread(c)
        assert c.statistics().accepted == 0


def test_an_async_client_made_before_fork_works_when_entered_in_the_child(
    datafile: dict[str, Any], stand_in: tuple[EventsAPI, Server], tmp_path: Path
) -> None:
    api, server = stand_in
    code = _script(
        """
        import anyio
        client = optitrack.Client(DATAFILE, event_endpoint=URL)  # made, not entered

        async def main() -> None:
            async with client:
                for n in range(50):
                    assert await client.track("purchase", f"child-{n}")

        pid = os.fork()
        if pid == 0:
            anyio.run(main)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """,
        server.url,
        datafile,
        tmp_path,
    )
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert api.event_count == 50
