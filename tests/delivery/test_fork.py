"""fork while delivering: the parent's events go out once, and a child never waits on them.

Real forks of the test process, on asyncio and Trio, against the stand-in on 127.0.0.1 in
the parent's own loop (so that the parent's sockets and the child's inherited ones share
one epoll instance, as in a real server). A child checks what it inherited and leaves with
``os._exit``: its exit status is its report (0: all as expected).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

import optitrack
from optitrack import RetryPolicy
from optitrack.testing import DatafileAPI, Delay, EventsAPI, serve

from ..conftest import check_ledger

pytestmark = pytest.mark.anyio

#: The fork cycles of the long test (about 15 s per backend on 2 cores); another count
#: with ``OPTITRACK_FORK_CYCLES``.
FORK_CYCLES = int(os.environ.get("OPTITRACK_FORK_CYCLES", "1000"))

# A stall of the parent's sockets shows as a timed-out attempt, then a duplicate.
_RETRY = RetryPolicy(attempt_timeout=1.0, wait_initial=0.001, wait_max=0.01, timeout=30)

_OK, _WRONG, _RAISED = 0, 1, 2


def _inherited_state_is_right(client: optitrack.Client, pending: int) -> bool:
    """In a child: the ``pending`` events at the fork are the parent's (``forked``)."""
    stats = client.statistics()
    check_ledger(stats)
    return (
        stats.pending == 0
        and stats.dropped.get("forked", 0) == pending
        and client.track_nowait("purchase", "child").reason == "closed"
    )


def _fork_checking(client: optitrack.Client) -> int:
    """Fork; the child checks what it inherited. Returns the child's pid."""
    pending = client.statistics().pending
    return _in_child(lambda: _inherited_state_is_right(client, pending))


def _in_child(check: Callable[[], bool]) -> int:
    """Fork; in the child run ``check`` and leave at once. Returns the child's pid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            status = _OK if check() else _WRONG
        except BaseException:
            status = _RAISED
        os._exit(status)
    return pid


async def _exit_status(pid: int) -> int:
    _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
    return os.waitstatus_to_exitcode(status)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await checkpoint()


async def test_forking_with_requests_in_flight_sends_nothing_twice(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    api.fail_all(Delay(0.005))  # every request is in flight for a while
    tracked = 0
    with anyio.fail_after(60):
        async with (
            serve(api) as server,
            optitrack.Client(
                datafile,
                event_endpoint=server.url,
                batch_size=10,
                flush_interval=0.001,
                max_in_flight=4,
                retry=_RETRY,
            ) as client,
        ):
            for _ in range(30):
                for _ in range(20):
                    await client.track("purchase", f"user-{tracked}")
                    tracked += 1
                await _until(lambda: client.statistics().in_flight > 0)
                pid = _fork_checking(client)
                assert await _exit_status(pid) == _OK
            assert (await client.flush()).complete
            stats = client.statistics()
    check_ledger(stats)
    assert api.duplicate_uuids() == {}
    assert api.event_count == tracked
    assert stats.delivered == stats.accepted == tracked
    assert stats.retries == 0


async def test_many_fork_cycles_while_tracking(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    tracked = 0
    started = time.monotonic()
    with anyio.fail_after(30 + FORK_CYCLES * 0.2):
        async with (
            serve(api) as server,
            optitrack.Client(
                datafile,
                event_endpoint=server.url,
                batch_size=5,
                flush_interval=0.001,
                retry=_RETRY,
            ) as client,
        ):
            for _ in range(FORK_CYCLES):
                for _ in range(3):
                    await client.track("purchase", f"user-{tracked}")
                    tracked += 1
                pid = _fork_checking(client)
                assert await _exit_status(pid) == _OK
            assert (await client.flush()).complete
            stats = client.statistics()
    print(f"{FORK_CYCLES} fork cycles in {time.monotonic() - started:.1f} s")
    check_ledger(stats)
    assert stats.delivered == stats.accepted == tracked
    assert api.duplicate_uuids() == {}
    assert api.event_count == tracked


def _in_fresh_loop(backend: str, work: Callable[[], Any]) -> bool:
    """In a child: run ``work`` in a new event loop in a new thread; whether it returned."""
    # The inherited loop is still "running" in the forking thread: a new one needs its own.
    done: list[bool] = []

    async def main() -> None:
        with anyio.fail_after(5):
            await work()
        done.append(True)

    thread = threading.Thread(target=lambda: anyio.run(main, backend=backend))
    thread.start()
    thread.join(10)
    return done == [True]


async def test_a_child_closes_and_flushes_the_inherited_client_at_once(
    datafile: dict[str, Any], anyio_backend: str
) -> None:
    cdn = DatafileAPI({"key": {**datafile, "sdkKey": "key"}})
    api = EventsAPI()
    api.fail_all(Delay(0.005))
    with anyio.fail_after(30):
        async with (
            serve(cdn) as cdn_server,
            serve(api) as server,
            optitrack.Client(
                sdk_key="key",
                datafile_url_template=cdn_server.base_url + "/datafiles/{sdk_key}.json",
                update_interval=0.01,
                event_endpoint=server.url,
                flush_interval=60,
            ) as client,
        ):
            for n in range(50):
                await client.track("purchase", f"user-{n}")

            async def close_inherited() -> None:
                flushed = await client.flush(timeout=1)
                assert flushed.complete
                assert flushed.delivered == 0
                await client.aclose(timeout=1)
                stats = client.statistics()
                assert stats.dropped == {"forked": 50}
                assert stats.pending == 0

            pid = _in_child(lambda: _in_fresh_loop(anyio_backend, close_inherited))
            assert await _exit_status(pid) == _OK
            # The parent's polling and delivery go on, on the same connections.
            fetches = cdn.request_count
            await cdn.wait_for_requests(fetches + 3)
            assert (await client.flush()).complete
            stats = client.statistics()
    assert stats.delivered == stats.accepted == 50
    assert api.duplicate_uuids() == {}
