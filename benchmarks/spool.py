"""Benchmark ``await client.track(...)`` with a durable spool against in memory, same run.

Every figure is printed, never asserted. The Events API stand-in runs in a separate
process (``_collector.py`` on 127.0.0.1). The call is always
``track("purchase", user, {"plan": "pro"}, {"revenue": 4200})`` with the bundled example
datafile, ``user`` cycling over 1000 ids, as in ``track.py``.

What it measures, on asyncio and on Trio: the caller time of ``await client.track(...)``
(``time.perf_counter_ns`` around each call, after a warm-up, delivering to the collector
meanwhile), median and p99, for a client without a spool and for clients with
``spool=<a temporary directory>`` and each ``spool_fsync`` policy worth timing
(``batch``, the default, and ``never``; ``always`` costs an fsync per call and is timed
over fewer calls). Runs alternate between the variants, so that a busy machine weighs on
each alike; the medians of the runs are printed side by side with the ratio to the
in-memory median (the target: at most 3x).

Run it from the repository root::

    python benchmarks/spool.py           # the full run, about a minute
    python benchmarks/spool.py --quick   # a smoke run with small counts
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import anyio
from _bench import (
    EVENT_KEY,
    USERS,
    Collector,
    datafile_text,
    median,
    percentile,
    print_load,
    print_machine,
    table,
)

import optitrack

BACKENDS = ("asyncio", "trio")
OPTIONS: dict[str, Any] = {
    "max_queue_size": 1_000_000,
    "max_queue_bytes": 1_000_000_000,
    "close_timeout": 60.0,
}


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    runs: int
    warmup: int
    calls: int
    always_calls: int


FULL = Sizes(runs=5, warmup=10_000, calls=100_000, always_calls=2_000)
QUICK = Sizes(runs=2, warmup=2_000, calls=10_000, always_calls=300)


@dataclass(frozen=True)
class Run:
    """One run's caller times, in microseconds."""

    median: float
    p99: float


async def caller_time(url: str, calls: int, warmup: int, spool: dict[str, Any]) -> Run:
    """Time each ``await client.track(...)`` of one run."""
    users = USERS
    n_users = len(users)
    samples = [0] * calls
    clock = time.perf_counter_ns
    async with optitrack.Client(datafile_text(), event_endpoint=url, **OPTIONS, **spool) as client:
        track = client.track
        for i in range(warmup):
            await track(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
        for i in range(calls):
            user = users[i % n_users]
            t0 = clock()
            await track(EVENT_KEY, user, {"plan": "pro"}, {"revenue": 4200})
            samples[i] = clock() - t0
    stats = client.statistics()
    assert stats.accepted == stats.delivered == warmup + calls, stats
    samples.sort()
    return Run(median=median(samples) / 1000, p99=percentile(samples, 99) / 1000)


def run_variant(url: str, backend: str, sizes: Sizes, variant: str) -> Run:
    """One run of a variant: ``memory`` or ``spool/<fsync policy>``."""
    if variant == "memory":
        return anyio.run(caller_time, url, sizes.calls, sizes.warmup, {}, backend=backend)
    policy = variant.split("/")[1]
    calls = sizes.always_calls if policy == "always" else sizes.calls
    warmup = min(sizes.warmup, calls)
    with tempfile.TemporaryDirectory(prefix="optitrack-spool-") as path:
        spool = {"spool": path, "spool_fsync": policy}
        return anyio.run(caller_time, url, calls, warmup, spool, backend=backend)


def main(argv: list[str]) -> None:
    """Run every variant, alternating, and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts")
    args = parser.parse_args(argv[1:])
    sizes = QUICK if args.quick else FULL
    logging.getLogger("optitrack").setLevel(logging.ERROR)
    print_machine("optitrack: await track() with a durable spool vs in memory", argv)
    print(
        f"{sizes.runs} runs per variant, alternating; {sizes.calls:,} timed calls per run "
        f"({sizes.always_calls:,} with spool_fsync='always') after a warm-up; "
        f"options: defaults + {OPTIONS}; the spool in {tempfile.gettempdir()}"
    )
    variants = ("memory", "spool/batch", "spool/never", "spool/always")
    rows = [["backend", "variant", "median µs", "p99 µs", "median / in-memory"]]
    with Collector("asyncio", count_only=True) as collector:
        for backend in BACKENDS:
            results: dict[str, list[Run]] = {v: [] for v in variants}
            for _ in range(sizes.runs):
                for variant in variants:
                    results[variant].append(run_variant(collector.url, backend, sizes, variant))
            base = median([r.median for r in results["memory"]])
            for variant in variants:
                med = median([r.median for r in results[variant]])
                p99 = median([r.p99 for r in results[variant]])
                rows.append([backend, variant, f"{med:.2f}", f"{p99:.2f}", f"{med / base:.2f}x"])
    print()
    print(table(rows))
    print()
    print("target: spool/batch median <= 3x the in-memory median")
    print_load()


if __name__ == "__main__":
    main(sys.argv)
