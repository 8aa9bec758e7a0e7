"""Benchmark ``SyncClient.track`` beside ``await Client.track`` and optimizely-sdk's ``track``.

Every figure is printed, never asserted. In one run, against the same stand-in (a
separate process on 127.0.0.1, counting): the caller time of each call (median and p99)
of

1. ``await client.track(...)`` on the async client (asyncio), as ``track.py`` times it;
2. ``client.track(...)`` on a ``SyncClient`` from one thread, and from 4 threads at once
   (each call timed in its own thread);
3. optimizely-sdk 5.7.0's ``track`` with ``batch_size=100`` (its queue large enough to
   hold every event), when it is installed;

then each run's delivery (everything tracked arrived once). The targets: the sync median
at most 3x the async one, and at least 3x faster than optimizely-sdk's.

Run it from the repository root::

    python benchmarks/sync_track.py           # 3 rounds of 100,000 calls each
    python benchmarks/sync_track.py --quick   # 1 round of 20,000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import EVENT_KEY, USERS, Collector, datafile_text
from track import (
    CALLER_OPTIONS,
    FULL,
    CallerTime,
    optimizely_installed,
    optimizely_run,
    optitrack_caller_time,
)

import optitrack


def sync_caller_time(url: str, calls: int, threads: int) -> tuple[CallerTime, int]:
    """Time each ``SyncClient.track`` of ``calls`` spread over ``threads`` threads."""
    users = USERS
    n_users = len(users)
    per_thread = calls // threads
    samples: list[list[int]] = [[] for _ in range(threads)]
    client = optitrack.SyncClient(datafile_text(), event_endpoint=url, **CALLER_OPTIONS)
    with client:
        for i in range(10_000):  # warm-up
            client.track(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})

        def work(k: int) -> None:
            mine = samples[k]
            clock = time.perf_counter_ns
            track = client.track
            for i in range(per_thread):
                start = clock()
                track(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
                mine.append(clock() - start)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    delivered = client.statistics().delivered
    return CallerTime.of([s for part in samples for s in part]), delivered


def main(argv: list[str]) -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 20,000 calls")
    args = parser.parse_args(argv)
    rounds, calls = (1, 20_000) if args.quick else (3, 100_000)
    peer = optimizely_installed()
    medians: dict[str, list[float]] = {}

    def note(name: str, caller: CallerTime, extra: str = "") -> None:
        medians.setdefault(name, []).append(caller.median)
        print(f"  {name:<34} median {caller.median:6.2f} us  p99 {caller.p99:7.2f} us  {extra}")

    with Collector(count_only=True) as collector:
        sizes: Any = FULL.__class__(**{**FULL.__dict__, "calls": calls, "runs": 1})
        for round_ in range(1, rounds + 1):
            print(f"round {round_}")
            caller, _ = anyio.run(optitrack_caller_time, collector.url, sizes)
            note("async Client.track (asyncio)", caller)
            for threads in (1, 4):
                caller, delivered = sync_caller_time(collector.url, calls, threads)
                note(f"SyncClient.track, {threads} thread(s)", caller, f"delivered {delivered:,}")
            if peer:
                run = optimizely_run(collector, calls // 4, 100)
                note(
                    "optimizely-sdk track, batch 100",
                    run.caller,
                    f"delivered {run.throughput.delivered:,}",
                )
    print("\nmedians of rounds")
    for name, values in medians.items():
        print(f"  {name:<34} {statistics.median(values):6.2f} us")
    sync = statistics.median(medians["SyncClient.track, 1 thread(s)"])
    async_ = statistics.median(medians["async Client.track (asyncio)"])
    print(f"\ntarget: sync median <= 3x the async median -> {sync / async_:.2f}x")
    if peer:
        theirs = statistics.median(medians["optimizely-sdk track, batch 100"])
        print(f"target: >= 3x faster than optimizely-sdk's track -> {theirs / sync:.1f}x")
    else:
        print("optimizely-sdk is not installed: its figure is skipped")


if __name__ == "__main__":
    main(sys.argv[1:])
