"""The durable spool through the client: outages spill to disk, shutdown keeps what it
could not send, a later client (or a later process, after kill -9) sends it, once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import optitrack
from optitrack import SpoolLockedError
from optitrack._delivery import Spool
from optitrack._delivery.spool_records import MAGIC, parse
from optitrack.testing import EventsAPI, Respond, serve, serve_in_thread
from tests.conftest import EVENTS_URL, SHARED_FIXTURES, asgi_client, check_ledger
from tests.delivery.conftest import FAST, Gate

pytestmark = pytest.mark.anyio

SCRIPTS = Path(__file__).parent / "scripts"


def spooled_uuids(spool: Path) -> list[str]:
    """The uuids of the events in a spool's segment files, in journal order."""
    uuids = []
    for segment in sorted(spool.glob("*.seg")):
        blob = segment.read_bytes()
        assert blob.startswith(MAGIC)
        for _, _ctx, data in parse(blob, len(MAGIC), {}):
            if data is not None:
                uuids.append(json.loads(data)["snapshots"][0]["events"][0]["uuid"])
    return uuids


def segment_files(spool: Path) -> dict[str, bytes]:
    """The spool's segment files, by name, with their bytes."""
    return {p.name: p.read_bytes() for p in spool.glob("*.seg")}


def delivered_uuids(api: EventsAPI) -> list[str]:
    return [event.uuid for event in api.events]


async def test_shutdown_with_the_endpoint_down_keeps_events_for_the_next_client(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    down = EventsAPI()
    down.fail_all(Respond(503))
    async with asgi_client(
        down, datafile, spool=tmp_path, close_timeout=0.2, retry=FAST, batch_size=10
    ) as client:
        for n in range(50):
            assert await client.track("purchase", f"user-{n}")
    stats = client.statistics()
    assert (stats.spooled, stats.dropped, stats.pending) == (50, {}, 0)
    check_ledger(stats)
    kept = spooled_uuids(tmp_path)
    assert len(set(kept)) == 50

    up = EventsAPI()
    async with asgi_client(up, datafile, spool=tmp_path) as later:
        assert later.statistics().recovered == 50
        with anyio.fail_after(10):
            assert await later.flush()
    stats = later.statistics()
    assert (stats.delivered, stats.spooled, stats.spool_bytes) == (50, 0, 0)
    check_ledger(stats)
    assert sorted(delivered_uuids(up)) == sorted(kept)
    assert up.duplicate_uuids() == {}
    assert segment_files(tmp_path) == {}


async def test_an_outage_spills_to_disk_and_everything_goes_out_after(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    api = EventsAPI()
    gate = Gate(api)  # the endpoint hangs until the gate opens
    # Reads back of 500 events: in a worker thread (small ones run on the loop).
    async with asgi_client(
        gate, datafile, spool=tmp_path, max_queue_size=1000, batch_size=500, max_in_flight=1
    ) as client:
        for n in range(5000):
            assert await client.track("purchase", f"user-{n}")
        stats = client.statistics()
        assert stats.queued <= 1000
        assert stats.spooled >= 5000 - 1500
        assert stats.refused == {}
        check_ledger(stats)
        gate.open.set()
        with anyio.fail_after(20):
            assert await client.flush()
        stats = client.statistics()
        assert (stats.delivered, stats.spooled, stats.pending) == (5000, 0, 0)
        check_ledger(stats)
    assert sorted(v.visitor_id for v in api.visitors) == sorted(f"user-{n}" for n in range(5000))
    assert api.duplicate_uuids() == {}
    assert segment_files(tmp_path) == {}


async def test_many_segments_are_kept_recovered_and_removed(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    options: dict[str, Any] = {
        "spool": tmp_path,
        "max_spool_bytes": 2 * 1024 * 1024,  # segments of 256 KiB: about 900 events
        "max_queue_size": 100,
        "batch_size": 50,
        "max_in_flight": 1,
    }
    gate = Gate(EventsAPI())  # never opens
    async with asgi_client(gate, datafile, close_timeout=0, **options) as client:
        for n in range(5000):
            assert await client.track("purchase", f"user-{n}")
    assert client.statistics().spooled == 5000
    assert len(segment_files(tmp_path)) >= 5
    kept = spooled_uuids(tmp_path)
    assert len(set(kept)) == 5000

    api = EventsAPI()
    async with asgi_client(api, datafile, **options) as later:
        with anyio.fail_after(20):
            assert await later.flush()
    stats = later.statistics()
    assert (stats.recovered, stats.delivered, stats.spooled, stats.spool_bytes) == (
        5000,
        5000,
        0,
        0,
    )
    assert sorted(delivered_uuids(api)) == sorted(kept)
    assert api.duplicate_uuids() == {}
    assert segment_files(tmp_path) == {}


@pytest.mark.parametrize(
    ("overflow", "accepted", "refused", "dropped"),
    [
        ("drop_newest", 15, {"queue_full": 15}, {}),
        # 5 evicted from the memory window, then 10 from disk (the window is empty).
        ("drop_oldest", 30, {}, {"queue_full": 15}),
        ("block", 15, {"queue_full": 15}, {}),
    ],
)
async def test_the_overflow_policy_applies_at_the_spools_bound(
    datafile: dict[str, Any],
    tmp_path: Path,
    overflow: str,
    accepted: int,
    refused: dict[str, int],
    dropped: dict[str, int],
) -> None:
    gate = Gate(EventsAPI())  # never opens: nothing is delivered
    async with asgi_client(
        gate,
        datafile,
        spool=tmp_path,
        overflow=overflow,
        overflow_timeout=0.01,
        max_queue_size=5,
        batch_size=5,
        max_in_flight=1,
        max_event_bytes=1000,
        max_spool_bytes=15 * 300,  # room for 15 events of ~290 bytes: 5 in flight, 5 in
        close_timeout=0,  # the memory window, 5 spilled
    ) as client:
        for n in range(30):
            await client.track("purchase", f"user-{n:03d}")
        stats = client.statistics()
        assert stats.accepted == accepted
        assert dict(stats.refused) == refused
        assert dict(stats.dropped) == dropped
        assert stats.spool_bytes <= 15 * 300
        check_ledger(stats)


async def test_a_caller_blocked_at_the_spools_bound_gets_in_once_deliveries_free_it(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    # Everything accepted is in flight, nothing is queued: the room a delivery frees in
    # the spool must reach the waiting caller without waiting for another batch.
    gate = Gate(EventsAPI())
    async with asgi_client(
        gate,
        datafile,
        spool=tmp_path,
        overflow="block",
        overflow_timeout=60,
        max_queue_size=10,
        batch_size=10,
        max_in_flight=1,
        max_event_bytes=1000,
        max_spool_bytes=10 * 300,  # room for the 10 in flight, not one more
    ) as client:
        for n in range(10):
            await client.track("purchase", f"user-{n:03d}")
        await client.flush(timeout=0)  # all 10 in flight, held at the gate
        results: list[optitrack.TrackResult] = []

        async def one_more() -> None:
            results.append(await client.track("purchase", "user-late"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(one_more)
                await anyio.wait_all_tasks_blocked()
                assert client.statistics().accepted == 10  # the late caller waits
                gate.open.set()
            assert [r.accepted for r in results] == [True]
            await client.flush()
        stats = client.statistics()
        assert (stats.accepted, stats.delivered) == (11, 11)
        check_ledger(stats)


async def test_a_second_client_on_the_spool_is_refused_clearly(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    async with asgi_client(EventsAPI(), datafile, spool=tmp_path):
        second = optitrack.Client(datafile, event_endpoint=EVENTS_URL, spool=tmp_path)
        with pytest.raises(SpoolLockedError, match="its own spool directory") as caught:
            async with second:
                pass  # pragma: no cover
        assert caught.value.path == str(tmp_path)
        assert isinstance(caught.value, optitrack.ClientStateError)
    async with asgi_client(EventsAPI(), datafile, spool=tmp_path):
        pass  # the lock went with the first client


async def test_a_forked_child_leaves_the_parents_spool_alone(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with asgi_client(
        gate, datafile, spool=tmp_path, flush_interval=60, max_queue_size=10, batch_size=10
    ) as client:
        for n in range(30):  # 10 in flight, 10 in the memory window, 10 spilled
            await client.track("purchase", f"parent-{n}")
        await client.flush(timeout=0)
        before = segment_files(tmp_path)
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read)
            stats = client.statistics()
            report = {
                "dropped": dict(stats.dropped),
                "track": str(client.track_nowait("purchase", "x").reason),
            }
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        with anyio.fail_after(30):
            await anyio.to_thread.run_sync(os.waitpid, pid, 0)
        report = json.loads(os.read(read, 65536))
        os.close(read)
        assert report == {"dropped": {"forked": 30}, "track": "closed"}
        assert segment_files(tmp_path) == before
        with pytest.raises(SpoolLockedError):  # the child's exit left the lock held
            Spool(str(tmp_path), max_bytes=1 << 20).open()
        gate.open.set()
        with anyio.fail_after(10):
            assert await client.flush()
    assert api.event_count == 30
    assert api.duplicate_uuids() == {}
    assert segment_files(tmp_path) == {}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_client_keeps_and_sends_through_the_spool(
    datafile: dict[str, Any], tmp_path: Path, backend: str
) -> None:
    # Nothing listens there: a request never gets as far as its body, so the close
    # deadline never cuts one off halfway.
    refused = f"http://127.0.0.1:{_unused_port()}/v1/events"
    client = optitrack.SyncClient(
        datafile,
        event_endpoint=refused,
        backend=backend,
        spool=tmp_path,
        close_timeout=0.2,
        retry=FAST,
    )
    with client:
        for n in range(20):
            assert client.track("purchase", f"user-{n}")
    assert client.statistics().spooled == 20
    check_ledger(client.statistics())
    up = EventsAPI()
    with (
        serve_in_thread(up) as server,
        optitrack.SyncClient(
            datafile, event_endpoint=server.url, backend=backend, spool=tmp_path
        ) as later,
    ):
        assert later.flush(10)
    assert later.statistics().delivered == 20
    assert up.duplicate_uuids() == {}


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_kill_9_during_an_outage_loses_nothing_accepted(
    datafile: dict[str, Any], tmp_path: Path, anyio_backend: str
) -> None:
    count = 3000
    refused = f"http://127.0.0.1:{_unused_port()}/v1/events"  # nothing listens
    process = await anyio.open_process(
        [
            sys.executable,
            str(SCRIPTS / "spool_outage.py"),
            str(SHARED_FIXTURES / "datafile_example.json"),
            str(tmp_path),
            refused,
            str(count),
            anyio_backend,
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(60):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 1 << 16)
        assert line.decode() == f"accepted {count}"
        # While it runs, the spool is its own: another process is refused, by its pid.
        with pytest.raises(SpoolLockedError, match=f"pid {process.pid}"):
            async with optitrack.Client(datafile, event_endpoint=refused, spool=tmp_path):
                pass  # pragma: no cover
    finally:
        process.send_signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await process.wait()
    left = spooled_uuids(tmp_path)
    assert len(left) == len(set(left)) == count

    api = EventsAPI()
    async with (
        serve(api) as server,
        optitrack.Client(datafile, event_endpoint=server.url, spool=tmp_path) as client,
    ):
        assert client.statistics().recovered == count
        with anyio.fail_after(30):
            assert await client.flush()
    assert client.statistics().delivered == count
    assert sorted(delivered_uuids(api)) == sorted(left)
    assert api.duplicate_uuids() == {}
    assert sorted(v.visitor_id for v in api.visitors) == sorted(f"user-{n}" for n in range(count))


def test_the_lock_is_held_across_threads_of_one_process(tmp_path: Path) -> None:
    # flock locks belong to the open file: a second client in the same process is
    # refused too, not only one in another process.
    first = Spool(str(tmp_path), max_bytes=1 << 20)
    first.open()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            Spool(str(tmp_path), max_bytes=1 << 20).open()
        except SpoolLockedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join()
    first.close()
    assert len(errors) == 1


def _cut_short(spool: Path) -> None:
    for segment in spool.glob("*.seg"):
        with open(segment, "r+b") as file:
            file.truncate(len(MAGIC))


async def test_spilled_events_lost_on_disk_are_dropped_as_damaged(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    api = EventsAPI()
    gate = Gate(api)
    async with asgi_client(
        gate, datafile, spool=tmp_path, max_queue_size=10, batch_size=10, max_in_flight=1
    ) as client:
        for n in range(100):
            assert await client.track("purchase", f"user-{n}")
        await client.flush(timeout=0)
        spilled = client.statistics().spooled
        assert spilled >= 70
        _cut_short(tmp_path)  # the files change under the client
        gate.open.set()
        with anyio.fail_after(10):
            await client.flush()
        stats = client.statistics()
    assert stats.dropped == {"spool_damaged": spilled}
    assert stats.delivered == 100 - spilled
    assert stats.spool_bytes == 0  # nothing held: the bound is free again
    check_ledger(stats)


async def test_refusals_at_the_call_never_reach_the_spool(
    datafile: dict[str, Any], tmp_path: Path
) -> None:
    async with asgi_client(EventsAPI(), datafile, spool=tmp_path, max_event_bytes=100) as client:
        result = await client.track("purchase", "user-1", None, {"note": "x" * 200})
        assert result.reason is optitrack.Reason.EVENT_TOO_LARGE
        assert client.statistics().spool_bytes == 0
    assert client.track_nowait("purchase", "user-2").reason is optitrack.Reason.CLOSED
    stats = client.statistics()
    assert (stats.accepted, stats.spooled) == (0, 0)
    assert dict(stats.refused) == {"event_too_large": 1, "closed": 1}
