"""Benchmark ``await user.decide(...)``, against optimizely-sdk's ``decide`` in the same run.

The flag is ``new_checkout`` of the bundled example datafile: an experiment rule
(``checkout_test``, 50/50) and a rollout (an audience rule, then "Everyone Else"). User
contexts are made before each timed run, fresh ones every run (``user-0`` ... with
``{"plan": "pro", "age": 34}``, so both rule kinds decide), so that every timed call is
the first decision of its context, as when a context is made per request (optitrack
renders a context's attributes once, at its first impression); each call is timed with
``time.perf_counter_ns``.

What it prints, on asyncio and on Trio (medians of repeated runs):

1. decisions per second and per-call median and p99 of ``await user.decide(flag)`` with
   the client's defaults, the impression serialized and queued for delivery; ``decide``
   lets the worker run once per ``batch_size`` calls, so the timed loop includes the
   client's side of delivery, to the stand-in (``_collector.py --count-only``, a separate
   process on 127.0.0.1); and the process CPU per decision over the loop and the
   delivery of the rest of its impressions after it;
2. the same with ``DISABLE_DECISION_EVENT`` (the decision alone);
3. optimizely-sdk 5.7.0's ``user.decide(flag)`` ("CPU only"): its impression built by its
   ``BatchEventProcessor`` thread and handed to a dispatcher that only counts (no
   network), with a queue that holds every impression, and with
   ``DISABLE_DECISION_EVENT``; then as its users get it by default, its default event
   processor (a 1000-slot queue and its thread) with its default dispatcher's code
   posting the impressions to the same stand-in; and the ratios. Skipped, saying so,
   when optimizely-sdk is not installed;
4. impressions per decision, for each library: what was queued and delivered, against
   the decisions made (warm-up included). optimizely-sdk's event queue holds 1000 events
   and drops the rest when its thread falls behind: fewer impressions per decision than
   optitrack means it dropped some (and that its calls were cheaper for it).

Targets: at least 100k decisions per second, and at least 20 times
optimizely-sdk's ``decide``.

Run it from the repository root::

    python benchmarks/decide.py           # the full run, well under a minute
    python benchmarks/decide.py --quick   # a smoke run with small counts
    python benchmarks/decide.py --profile # instead: optitrack's decide piece by piece
    python benchmarks/decide.py --rounds 5  # instead: 5 interleaved rounds against
                                            # optimizely-sdk, ratios round by round
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import pstats
import queue
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio
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

FLAG = "new_checkout"
ATTRIBUTES = {"plan": "pro", "age": 34}
PEER_CPU = "optimizely-sdk decide, CPU only"
PEER_DEFAULTS = "optimizely-sdk decide, defaults, posting to the stand-in"


@dataclass(frozen=True)
class Impressions:
    """What became of the impressions of a series of runs."""

    decisions: int
    queued: int | None  # None: not known (optimizely-sdk drops silently when full)
    delivered: int
    refused: int | None = None
    duplicates: int | None = None

    def line(self) -> str:
        """The figures, on one line."""
        per = self.delivered / max(self.decisions, 1)
        queued = "" if self.queued is None else f"{self.queued:,} impressions queued, "
        extra = "" if self.refused is None else f", {self.refused} refused"
        if self.duplicates is not None:
            extra += f", {self.duplicates} duplicates"
        return (
            f"{self.decisions:,} decisions, {queued}{self.delivered:,} impressions "
            f"delivered ({per:.3f} per decision){extra}"
        )


@dataclass(frozen=True)
class Run:
    """One timed loop of decide calls."""

    per_second: float
    median_us: float
    p99_us: float
    #: Process CPU per decision over the loop and the processing of its impressions
    #: after it (all threads); ``None`` when not every impression could be waited for.
    cpu_us: float | None
    #: Decisions per second from the first call until every impression was processed
    #: (delivered, or handed to the dispatcher); ``None`` when they were not waited for.
    all_in_per_second: float | None = None


def summarize(
    samples: list[int], wall: float, cpu: float | None, all_in: float | None = None
) -> Run:
    """Per-call figures from nanosecond samples, the loop's wall time and CPU seconds,
    and the wall time until every impression was processed."""
    ordered = sorted(samples)
    return Run(
        per_second=len(samples) / wall,
        median_us=median(ordered) / 1000,
        p99_us=percentile(ordered, 99) / 1000,
        cpu_us=None if cpu is None else cpu / len(samples) * 1e6,
        all_in_per_second=None if all_in is None else len(samples) / all_in,
    )


async def optitrack_runs(
    collector: Collector, calls: int, repeats: int, quiet: bool
) -> tuple[list[Run], Impressions]:
    """Time ``decide`` on a running client; impressions go to the counting stand-in."""
    options = [optitrack.DecideOption.DISABLE_DECISION_EVENT] if quiet else []
    runs = []
    before = collector.stats()
    async with optitrack.Client(
        datafile_text(), event_endpoint=collector.url, max_queue_size=max(calls * 2, 100_000)
    ) as client:
        warmup = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(2000)]
        for user in warmup:
            await user.decide(FLAG, options)
        await client.flush()
        for _ in range(repeats):
            users = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(calls)]
            samples = []
            clock = time.perf_counter_ns
            gc.collect()
            cpu0 = time.process_time()
            started = time.perf_counter()
            for user in users:
                t0 = clock()
                await user.decide(FLAG, options)
                samples.append(clock() - t0)
            wall = time.perf_counter() - started
            await client.flush()  # deliver the rest, outside the timed loop
            all_in = time.perf_counter() - started
            runs.append(summarize(samples, wall, time.process_time() - cpu0, all_in))
    ledger = client.statistics()
    after = collector.stats()
    impressions = Impressions(
        decisions=len(warmup) + calls * repeats,
        queued=ledger.accepted,
        delivered=after["events"] - before["events"],
        refused=sum(ledger.refused.values()),
        duplicates=after["duplicates"] - before["duplicates"],
    )
    return runs, impressions


async def profile_optitrack(url: str, calls: int) -> str:
    """cProfile of ``calls`` decide calls with impressions (asyncio), top by tottime."""
    profile = cProfile.Profile()
    async with optitrack.Client(
        datafile_text(), event_endpoint=url, max_queue_size=max(calls * 2, 100_000)
    ) as client:
        for n in range(2000):  # warm up
            await client.create_user_context(f"user-{n}", ATTRIBUTES).decide(FLAG)
        await client.flush()
        users = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(calls)]
        profile.enable()
        for user in users:
            await user.decide(FLAG)
        profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text


async def breakdown(url: str, calls: int, repeats: int) -> list[tuple[str, float]]:
    """The decide path piece by piece, nothing sent meanwhile: ns per call, median."""
    pieces: dict[str, list[float]] = {}
    quiet = [optitrack.DecideOption.DISABLE_DECISION_EVENT]
    async with optitrack.Client(
        datafile_text(),
        event_endpoint=url,
        max_queue_size=10_000_000,
        max_queue_bytes=3_000_000_000,
        batch_size=10_000_000,
        max_batch_bytes=3_500_000,
        flush_interval=3600.0,
        close_timeout=0.0,
    ) as client:
        for n in range(2000):  # warm up
            await client.create_user_context(f"user-{n}", ATTRIBUTES).decide(FLAG)
        clock = time.perf_counter_ns
        for _ in range(repeats):
            gc.collect()
            t0 = clock()
            users = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(calls)]
            pieces.setdefault("create_user_context(...)", []).append((clock() - t0) / calls)
            for label, options, again in (
                ("decide, DISABLE_DECISION_EVENT, a new context", quiet, False),
                ("decide, an impression, a new context (the benchmark's case)", None, False),
                ("decide, an impression, a context that decided before", None, True),
            ):
                if not again:
                    users = [
                        client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(calls)
                    ]
                gc.collect()
                t0 = clock()
                for user in users:
                    await user.decide(FLAG, options)
                pieces.setdefault(label, []).append((clock() - t0) / calls)
            for label, ns in _inner_pieces(client, users, calls):
                pieces.setdefault(label, []).append(ns)
        await client.aclose(timeout=0)  # what was queued is dropped: never sent
    return [(label, median(values)) for label, values in pieces.items()]


def _inner_pieces(
    client: optitrack.Client, users: list[Any], calls: int
) -> list[tuple[str, float]]:
    """Parts of one decide, each alone over ``users`` (private parts: what they cost)."""
    from optitrack._decisions.lean import decide_lean

    decider = client._decider
    factory = client._intake.factory
    plan = decider._common_plans.get(FLAG)
    assert plan is not None, "the benchmark's flag takes the common path"
    forced = decider.engine.forced_users
    outcome = decide_lean(plan, forced, users[0].user_id, users[0]._attributes, None)
    assert outcome is not None
    assert outcome.fragment is not None
    fragment = outcome.fragment
    wire = users[0].wire_attributes(factory)
    queue, context = client._intake.queue, client._intake.context
    data = factory.visitor_impression(users[0].user_id, wire, fragment)
    clock = time.perf_counter_ns
    out = []
    gc.collect()
    t0 = clock()
    for user in users:
        decide_lean(plan, forced, user.user_id, user._attributes, user._segments)
    out.append(("  walking the flag's plan (its rules, MurmurHash3)", (clock() - t0) / calls))
    t0 = clock()
    for user in users:
        factory.visitor_impression(user.user_id, wire, fragment)
    out.append(("  serializing the impression alone", (clock() - t0) / calls))
    t0 = clock()
    for user in users:
        factory.attributes_json(user._attributes)
    out.append(("  rendering a context's attributes alone", (clock() - t0) / calls))
    t0 = clock()
    for user in users:
        optitrack.Decision("on", True, {}, "rule", FLAG, user, ())
    out.append(("  building a Decision alone", (clock() - t0) / calls))
    t0 = clock()
    for _ in users:
        queue.put_nowait(context, data)
    out.append(("  queueing the impression alone (put_nowait)", (clock() - t0) / calls))
    return out


class _Discard:
    """An optimizely-sdk event dispatcher that keeps nothing (no network), but counts."""

    def __init__(self) -> None:
        self.events = 0

    def dispatch_event(self, event: Any) -> None:
        """Count the visitors of a log event, and forget it."""
        self.events += len(event.params.get("visitors", ()))


def optimizely_runs(
    calls: int, repeats: int, quiet: bool, dispatcher: Any
) -> tuple[list[Run], int]:
    """Time optimizely-sdk's ``decide``, its default event processor, a given dispatcher.

    With a :class:`_Discard` dispatcher, its event queue is sized to hold every
    impression (its default 1000 slots drop most of them when its thread falls behind),
    and after each run the impressions are waited for, so that the CPU per decision
    covers them; with another dispatcher, everything is its default.

    Returns the runs, and the decisions made in all (warm-up included).
    """
    from optimizely import optimizely as optimizely_module
    from optimizely.decision.optimizely_decide_option import OptimizelyDecideOption
    from optimizely.logger import NoOpLogger

    counting = isinstance(dispatcher, _Discard)
    warmup_calls = min(1000, calls // 5)
    extra: dict[str, Any] = {}
    if counting:
        capacity = warmup_calls + calls * repeats + 10
        extra["event_processor_options"] = {"event_queue": queue.Queue(maxsize=capacity)}
    client = optimizely_module.Optimizely(
        datafile_text(), event_dispatcher=dispatcher, logger=NoOpLogger(), **extra
    )
    options = [OptimizelyDecideOption.DISABLE_DECISION_EVENT] if quiet else []
    warmup = [
        client.create_user_context(f"user-{n}", dict(ATTRIBUTES)) for n in range(warmup_calls)
    ]
    for user in warmup:
        user.decide(FLAG, list(options))
    made = len(warmup)
    if counting and not quiet:
        _wait_dispatched(client, dispatcher, made)
    runs = []
    for _ in range(repeats):
        users = [client.create_user_context(f"user-{n}", dict(ATTRIBUTES)) for n in range(calls)]
        samples = []
        clock = time.perf_counter_ns
        gc.collect()
        cpu0 = time.process_time()
        started = time.perf_counter()
        for user in users:
            t0 = clock()
            user.decide(FLAG, list(options))
            samples.append(clock() - t0)
        wall = time.perf_counter() - started
        made += len(users)
        cpu: float | None = None
        all_in: float | None = None
        if counting and (quiet or _wait_dispatched(client, dispatcher, made)):
            cpu = time.process_time() - cpu0
            all_in = time.perf_counter() - started
        runs.append(summarize(samples, wall, cpu, all_in))
    client.close()  # its thread sends what is queued (joined for at most 5 s)
    return runs, made


def _wait_dispatched(client: Any, dispatcher: _Discard, count: int) -> bool:
    """Flush optimizely-sdk's processor and wait until ``count`` impressions went out."""
    client.event_processor.flush()
    deadline = time.perf_counter() + 60.0
    while dispatcher.events < count:
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.001)
    return True


def interleaved_rounds(collector: Collector, calls: int, count: int) -> None:
    """optitrack's decide (asyncio, defaults) and optimizely-sdk's (CPU only) in turns.

    Each round runs one loop of each, one after the other, so that both meet the same
    state of the machine; the ratios are taken round by round: decisions/s in the timed
    loop; process CPU per decision, every impression processed; and decisions/s until
    every impression was processed (optitrack's delivered to the stand-in,
    optimizely-sdk's handed to its dispatcher), which counts the work a library leaves
    for after its loop.
    """
    ratios, cpu_ratios, all_in_ratios = [], [], []
    mine_all, theirs_all = [], []
    for number in range(1, count + 1):
        runs, _ = anyio.run(optitrack_runs, collector, calls, 1, False)
        mine = runs[0]
        peer, _ = optimizely_runs(calls, 1, False, _Discard())
        theirs = peer[0]
        mine_all.append(mine)
        theirs_all.append(theirs)
        ratios.append(mine.per_second / theirs.per_second)
        line = (
            f"  round {number}: optitrack {mine.per_second:>9,.0f} decisions/s "
            f"({mine.cpu_us or 0:.2f} us CPU each), optimizely-sdk {theirs.per_second:>7,.0f} "
            f"({theirs.cpu_us or 0:.1f} us CPU each): {ratios[-1]:.1f}x"
        )
        if mine.cpu_us and theirs.cpu_us:
            cpu_ratios.append(theirs.cpu_us / mine.cpu_us)
            line += f", {cpu_ratios[-1]:.1f}x by CPU per decision"
        if mine.all_in_per_second and theirs.all_in_per_second:
            all_in_ratios.append(mine.all_in_per_second / theirs.all_in_per_second)
            line += f", {all_in_ratios[-1]:.1f}x until every impression was processed"
        print(line, flush=True)
    print()
    print(
        f"  median decisions/s: optitrack {median([r.per_second for r in mine_all]):,.0f}, "
        f"optimizely-sdk CPU only {median([r.per_second for r in theirs_all]):,.0f}"
    )
    print(f"  ratio, decisions/s in the loop: {median(ratios):.1f}x {spread(ratios, '{:.1f}')}")
    if all_in_ratios:
        print(
            "  ratio, decisions/s until every impression was processed: "
            f"{median(all_in_ratios):.1f}x {spread(all_in_ratios, '{:.1f}')}"
        )
    if cpu_ratios:
        print(
            f"  ratio, CPU per decision: {median(cpu_ratios):.1f}x {spread(cpu_ratios, '{:.1f}')}"
        )


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


def cpu_per_decision(runs: list[Run]) -> float | None:
    """The median CPU per decision of some runs, if every run has one."""
    values = [r.cpu_us for r in runs]
    return median([v for v in values if v is not None]) if None not in values else None


def row(name: str, run: Run, runs: list[Run]) -> list[str]:
    """A table row for one configuration."""
    cpu = cpu_per_decision(runs)
    return [
        name,
        f"{run.per_second:,.0f}",
        f"{run.median_us:.2f}",
        f"{run.p99_us:.2f}",
        "-" if cpu is None else f"{cpu:.2f}",
        spread([r.per_second / 1000 for r in runs], "{:.0f}k"),
    ]


def main(argv: list[str]) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, a smoke run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only optitrack's decide, piece by piece, and a cProfile",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="only N interleaved rounds of optitrack and optimizely-sdk (CPU only), ratios "
        "round by round",
    )
    args = parser.parse_args(argv[1:])
    calls, repeats = (5_000, 3) if args.quick else (50_000, 5)
    logging.getLogger("optitrack").setLevel(logging.ERROR)
    if args.rounds:
        print_machine("decide: optitrack and optimizely-sdk, interleaved rounds", argv)
        if not optimizely_installed():
            raise SystemExit("optimizely-sdk is not installed (pip install optimizely-sdk)")
        print(
            f"{calls:,} decisions per run, each with its impression; optitrack on asyncio "
            "with its defaults, optimizely-sdk CPU only (see below)\n"
        )
        with Collector(count_only=True) as collector:
            interleaved_rounds(collector, calls, args.rounds)
        print_load()
        return
    if args.profile:
        # The breakdown drops what it queued on purpose: no need to hear about it.
        logging.getLogger("optitrack").setLevel(logging.CRITICAL)
        print_machine("decide: where optitrack's time goes", argv)
        with Collector(count_only=True) as collector:
            rows = [["piece (asyncio, nothing sent meanwhile)", "ns per call"]]
            pieces = anyio.run(breakdown, collector.url, calls, repeats)
            rows += [[label, f"{ns:,.0f}"] for label, ns in pieces]
            print(f"the decide path, piece by piece (loops of {calls:,}, median of {repeats})")
            print(table(rows))
            print()
            print(f"cProfile of {calls:,} awaited decide calls with impressions (asyncio)")
            print("(cProfile inflates Python-level calls: read it for the ranking)")
            print(anyio.run(profile_optitrack, collector.url, calls))
        return
    print_machine("decide: optitrack vs optimizely-sdk", argv)
    print(f"{calls:,} users per run, {repeats} runs per configuration; flag {FLAG!r}\n")

    results: dict[str, tuple[Run, list[Run]]] = {}
    impressions: dict[str, Impressions] = {}
    peer_ok = optimizely_installed()
    with Collector(count_only=True) as collector:
        print(f"stand-in: pid {collector.pid}, {collector.url} (separate process, counting)\n")
        for backend in ("asyncio", "trio"):
            for quiet in (False, True):
                runs, made = anyio.run(
                    optitrack_runs, collector, calls, repeats, quiet, backend=backend
                )
                label = f"optitrack decide, {backend}" + (", no impression" if quiet else "")
                results[label] = (best_of(runs), runs)
                if not quiet:
                    impressions[label] = made
        if peer_ok:
            for quiet in (False, True):
                discard = _Discard()
                runs, decisions = optimizely_runs(calls, repeats, quiet, discard)
                label = PEER_CPU + (", no impression" if quiet else "")
                results[label] = (best_of(runs), runs)
                if not quiet:
                    impressions[label] = Impressions(decisions, None, discard.events)
            from _bench import RequestsDispatcher

            before = collector.stats()
            runs, decisions = optimizely_runs(
                calls // 25, repeats, False, RequestsDispatcher(collector.url)
            )
            # Its close() joined the thread: what is not there within 2 s was dropped.
            after = collector.wait_events(before["events"] + decisions, 2.0)
            results[PEER_DEFAULTS] = (best_of(runs), runs)
            impressions[PEER_DEFAULTS] = Impressions(
                decisions,
                None,
                after["events"] - before["events"],
                duplicates=after["duplicates"] - before["duplicates"],
            )
        else:
            print(
                "optimizely-sdk is not installed: no peer comparison (pip install optimizely-sdk)"
            )

    rows = [
        [
            "configuration",
            "decisions/s",
            "median us",
            "p99 us",
            "CPU us/decision",
            "runs (decisions/s)",
        ]
    ]
    rows += [row(name, run, runs) for name, (run, runs) in results.items()]
    print(table(rows))
    print()
    print("impressions (optimizely-sdk: counted by its dispatcher or the stand-in)")
    for name, made in impressions.items():
        print(f"  {name}: {made.line()}")
    print()
    mine = results["optitrack decide, asyncio"][0]
    print(f"target: >= 100,000 decisions/s -> {mine.per_second:,.0f} on asyncio")
    if peer_ok:
        theirs = results[PEER_CPU][0]
        quiet_ratio = (
            results["optitrack decide, asyncio, no impression"][0].per_second
            / results[PEER_CPU + ", no impression"][0].per_second
        )
        default = results[PEER_DEFAULTS][0]
        print(
            f"target: >= 20x optimizely-sdk -> {mine.per_second / default.per_second:.1f}x "
            f"its defaults (its thread posting impressions, dropping what its queue cannot "
            f"hold); CPU only, {mine.per_second / theirs.per_second:.1f}x with impressions, "
            f"{quiet_ratio:.1f}x without"
        )
        mine_cpu = cpu_per_decision(results["optitrack decide, asyncio"][1])
        theirs_cpu = cpu_per_decision(results[PEER_CPU][1])
        if mine_cpu and theirs_cpu:
            print(
                f"process CPU per decision, every impression processed: optitrack "
                f"{mine_cpu:.2f} us, optimizely-sdk {theirs_cpu:.2f} us "
                f"({theirs_cpu / mine_cpu:.1f}x)"
            )
    print_load()


if __name__ == "__main__":
    main(sys.argv)
