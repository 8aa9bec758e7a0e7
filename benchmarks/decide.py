"""Benchmark ``await user.decide(...)``, against optimizely-sdk's ``decide`` in the same run.

The flag is ``new_checkout`` of the bundled example datafile: an experiment rule
(``checkout_test``, 50/50) and a rollout (an audience rule, then "Everyone Else"). Users
are made up front (``user-0`` ... with ``{"plan": "pro", "age": 34}``, so both rule kinds
decide), and each call is timed with ``time.perf_counter_ns``.

What it prints, on asyncio and on Trio (medians of repeated runs):

1. decisions per second and per-call median and p99 of ``await user.decide(flag)``, the
   impression serialized and queued for delivery (the client's worker sends it to an
   in-process stand-in that only counts, between runs: the timed loop does no I/O);
2. the same with ``DISABLE_DECISION_EVENT`` (the decision alone);
3. optimizely-sdk 5.7.0's ``user.decide(flag)``, its impression built and handed to a
   dispatcher that keeps nothing (so no network either: the CPU cost alone), and with
   ``DISABLE_DECISION_EVENT``; then as its users get it by default, its default event
   processor (a ``BatchEventProcessor`` and its thread) with its default dispatcher's code
   posting the impressions to the stand-in, in a separate process on 127.0.0.1; and the
   ratios. Skipped, saying so, when optimizely-sdk is not installed.

Targets (issue #4): at least 100k decisions per second, and at least 20 times
optimizely-sdk's ``decide``.

Run it from the repository root::

    python benchmarks/decide.py           # the full run, well under a minute
    python benchmarks/decide.py --quick   # a smoke run with small counts
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from _bench import (
    Collector,
    datafile_text,
    median,
    percentile,
    print_load,
    print_machine,
    spread,
    table,
)

import optitrack
from optitrack.testing import EventsAPI

FLAG = "new_checkout"
ATTRIBUTES = {"plan": "pro", "age": 34}


@dataclass(frozen=True)
class Run:
    """One timed loop of decide calls."""

    per_second: float
    median_us: float
    p99_us: float


def summarize(samples: list[int], wall: float) -> Run:
    """Per-call figures from nanosecond samples and the loop's wall time."""
    ordered = sorted(samples)
    return Run(
        per_second=len(samples) / wall,
        median_us=median(ordered) / 1000,
        p99_us=percentile(ordered, 99) / 1000,
    )


async def optitrack_runs(calls: int, repeats: int, quiet: bool) -> list[Run]:
    """Time ``decide`` on a running client; impressions go to a counting stand-in."""
    api = EventsAPI(validate=False, parse=False, record=False)
    options = [optitrack.DecideOption.DISABLE_DECISION_EVENT] if quiet else []
    runs = []
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api)) as http,
        optitrack.Client(
            datafile_text(),
            event_endpoint="http://collector.test/v1/events",
            http_client=http,
            max_queue_size=max(calls * 2, 100_000),
            flush_interval=60,
            batch_size=500,
        ) as client,
    ):
        users = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(calls)]
        for user in users[:2000]:  # warm up
            await user.decide(FLAG, options)
        await client.flush()
        for _ in range(repeats):
            samples = []
            clock = time.perf_counter_ns
            gc.collect()
            started = time.perf_counter()
            for user in users:
                t0 = clock()
                await user.decide(FLAG, options)
                samples.append(clock() - t0)
            wall = time.perf_counter() - started
            runs.append(summarize(samples, wall))
            await client.flush()  # deliver between runs, outside the timed loop
    return runs


class _Discard:
    """An optimizely-sdk event dispatcher that keeps nothing (no network)."""

    def dispatch_event(self, event: Any) -> None:
        return None


def optimizely_runs(
    calls: int, repeats: int, quiet: bool, dispatcher: Any | None = None
) -> list[Run]:
    """Time optimizely-sdk's ``decide``, its default event processor, a given dispatcher."""
    from optimizely import optimizely as optimizely_module
    from optimizely.decision.optimizely_decide_option import OptimizelyDecideOption
    from optimizely.logger import NoOpLogger

    client = optimizely_module.Optimizely(
        datafile_text(), event_dispatcher=dispatcher or _Discard(), logger=NoOpLogger()
    )
    options = [OptimizelyDecideOption.DISABLE_DECISION_EVENT] if quiet else []
    users = [client.create_user_context(f"user-{n}", dict(ATTRIBUTES)) for n in range(calls)]
    for user in users[: min(1000, calls // 5)]:
        user.decide(FLAG, list(options))
    runs = []
    for _ in range(repeats):
        samples = []
        clock = time.perf_counter_ns
        gc.collect()
        started = time.perf_counter()
        for user in users:
            t0 = clock()
            user.decide(FLAG, list(options))
            samples.append(clock() - t0)
        wall = time.perf_counter() - started
        runs.append(summarize(samples, wall))
    client.close()
    return runs


def best_of(runs: list[Run]) -> Run:
    """The run with the median throughput (a quieter run than the worst, not the best)."""
    return sorted(runs, key=lambda r: r.per_second)[len(runs) // 2]


def optimizely_installed() -> bool:
    """Whether optimizely-sdk can be imported."""
    try:
        import optimizely  # noqa: F401
    except ImportError:
        return False
    return True


def row(name: str, run: Run, runs: list[Run]) -> list[str]:
    """A table row for one configuration."""
    return [
        name,
        f"{run.per_second:,.0f}",
        f"{run.median_us:.2f}",
        f"{run.p99_us:.2f}",
        spread([r.per_second / 1000 for r in runs], "{:.0f}k"),
    ]


def main(argv: list[str]) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    args = parser.parse_args(argv[1:])
    calls, repeats = (5_000, 3) if args.quick else (50_000, 5)
    logging.getLogger("optitrack").setLevel(logging.ERROR)
    print_machine("decide: optitrack vs optimizely-sdk", argv)
    print(f"{calls:,} users per run, {repeats} runs per configuration; flag {FLAG!r}\n")

    results: dict[str, tuple[Run, list[Run]]] = {}
    for backend in ("asyncio", "trio"):
        for quiet in (False, True):
            runs: list[Run] = anyio.run(optitrack_runs, calls, repeats, quiet, backend=backend)
            label = f"optitrack decide, {backend}" + (", no impression" if quiet else "")
            results[label] = (best_of(runs), runs)
    peer_ok = optimizely_installed()
    if peer_ok:
        for quiet in (False, True):
            runs = optimizely_runs(calls, repeats, quiet)
            label = "optimizely-sdk decide" + (", no impression" if quiet else "")
            results[label] = (best_of(runs), runs)
        from track import RequestsDispatcher

        with Collector() as collector:
            runs = optimizely_runs(calls // 25, repeats, False, RequestsDispatcher(collector.url))
        results["optimizely-sdk decide, defaults, posting to the stand-in"] = (
            best_of(runs),
            runs,
        )
    else:
        print("optimizely-sdk is not installed: no peer comparison (pip install optimizely-sdk)")

    rows = [["configuration", "decisions/s", "median us", "p99 us", "runs (decisions/s)"]]
    rows += [row(name, run, runs) for name, (run, runs) in results.items()]
    print(table(rows))
    print()
    mine = results["optitrack decide, asyncio"][0]
    print(f"target: >= 100,000 decisions/s -> {mine.per_second:,.0f} on asyncio")
    if peer_ok:
        theirs = results["optimizely-sdk decide"][0]
        quiet_ratio = (
            results["optitrack decide, asyncio, no impression"][0].per_second
            / results["optimizely-sdk decide, no impression"][0].per_second
        )
        default = results["optimizely-sdk decide, defaults, posting to the stand-in"][0]
        print(
            f"target: >= 20x optimizely-sdk -> {mine.per_second / default.per_second:.0f}x "
            f"its defaults (its thread posting impressions); CPU alone, "
            f"{mine.per_second / theirs.per_second:.1f}x with impressions, "
            f"{quiet_ratio:.1f}x without"
        )
    print_load()


if __name__ == "__main__":
    main(sys.argv)
