"""Benchmark delivery when the Events API misbehaves: shutdown, outage recovery, poison.

Every figure is printed, never asserted; the batch processor's targets are printed
beside them. The Events API stand-in runs in a separate process (``_collector.py``) on
127.0.0.1 and is told to misbehave over its control pipe. The client runs with its
default settings unless said otherwise, on asyncio and on Trio.

What it measures:

1. ``await client.aclose(timeout=2)`` with 1000 events queued or in flight, while the
   endpoint hangs (``Hang``: requests are read, never answered), is down
   (``Respond(503)`` to everything) or refuses connections (nothing listening): how long
   the call takes, against the target "deadline + 0.1 s", and what was counted as dropped;
2. outage recovery: the endpoint answers 503 for a few seconds while the application
   tracks 10k events/s; then it heals. The time from the heal to every event delivered
   (``flush()`` returning complete), checked against the collector's count and
   duplicates; with the default retry policy, then (full run) with ``wait_max=1.0``, and
   an 8 s outage with the default policy (long enough, with the policy of before, for
   batches to run out of attempts while the endpoint was known to be down);
3. one poison event in a 500-event batch: the stand-in answers 400 to any body that
   holds it. Events delivered, dropped (with the reason) and requests used, for the
   poison first, in the middle and last.

Run it from the repository root::

    python benchmarks/delivery.py           # the full run, about 2.5 minutes
    python benchmarks/delivery.py --quick   # fewer runs and a shorter outage, under 20 s
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

import anyio
from _bench import (
    EVENT_KEY,
    USERS,
    Collector,
    datafile_text,
    delta,
    median,
    print_load,
    print_machine,
    spread,
    table,
)

import optitrack

BACKENDS = ("asyncio", "trio")
CLOSE_TIMEOUT = 2.0
CLOSE_EVENTS = 1000
BATCH = 500
#: A retry policy whose waits stop growing at 1 s, to compare recoveries with.
CAPPED = optitrack.RetryPolicy(wait_max=1.0)


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    close_runs: int
    close_faults: tuple[str, ...]
    outage_runs: int
    outage_seconds: float
    rate: int
    poison_positions: tuple[int, ...]
    capped_outage: bool
    long_outage_seconds: float | None
    long_outage_runs: int


FULL = Sizes(
    close_runs=3,
    close_faults=("hang", "503", "refused"),
    outage_runs=3,
    outage_seconds=3.0,
    rate=10_000,
    poison_positions=(0, 250, 499),
    capped_outage=True,
    long_outage_seconds=8.0,
    long_outage_runs=1,
)
QUICK = Sizes(
    close_runs=1,
    close_faults=("hang", "503"),
    outage_runs=1,
    outage_seconds=1.0,
    rate=10_000,
    poison_positions=(250,),
    capped_outage=False,
    long_outage_seconds=None,
    long_outage_runs=0,
)


class LogCounter(logging.Handler):
    """Counts the optitrack logger's records by level, instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """Count one record."""
        self.counts[record.levelname] += 1

    def take(self) -> str:
        """The counts since the last call, as text; then start again."""
        text = ", ".join(f"{n} {level}" for level, n in sorted(self.counts.items())) or "none"
        self.counts.clear()
        return text


LOGS = LogCounter()


def track_args(i: int) -> tuple[str, str, dict[str, str], dict[str, int]]:
    """The arguments of the i-th track call."""
    return EVENT_KEY, USERS[i % len(USERS)], {"plan": "pro"}, {"revenue": 4200}


def free_port() -> int:
    """A loopback port with nothing listening on it (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# 1. aclose() under faults ---------------------------------------------------------------


@dataclass(frozen=True)
class CloseRun:
    """One ``aclose(timeout=2)`` with a failing endpoint."""

    seconds: float
    exit_seconds: float
    accepted: int
    delivered: int
    dropped: dict[str, int]
    requests: int


async def close_under_fault(url: str) -> CloseRun:
    """Queue 1000 events, let the first requests fail or hang, then time ``aclose``."""
    client = optitrack.Client(datafile_text(), event_endpoint=url)
    async with client:
        for i in range(CLOSE_EVENTS):
            client.track_nowait(*track_args(i))
        await client.flush(timeout=0.3)  # the first batches go out and fail, or hang
        t0 = time.perf_counter()
        await client.aclose(timeout=CLOSE_TIMEOUT)
        seconds = time.perf_counter() - t0
    exit_seconds = time.perf_counter() - t0
    ledger = client.statistics()
    return CloseRun(
        seconds=seconds,
        exit_seconds=exit_seconds,
        accepted=ledger.accepted,
        delivered=ledger.delivered,
        dropped={str(k): v for k, v in ledger.dropped.items()},
        requests=ledger.requests,
    )


def section_close(collector: Collector, sizes: Sizes) -> dict[str, float]:
    """1. aclose(timeout=2) with the endpoint hanging, down, or refusing connections."""
    print(f"## 1. aclose(timeout={CLOSE_TIMEOUT:g}) with {CLOSE_EVENTS} events and a bad endpoint")
    worst: dict[str, float] = {}
    for fault in sizes.close_faults:
        if fault == "refused":
            url = f"http://127.0.0.1:{free_port()}/v1/events"
        else:
            url = collector.url
            collector.command(f"fail_all {fault}")
        for backend in BACKENDS:
            runs = []
            for _ in range(sizes.close_runs):
                run = anyio.run(close_under_fault, url, backend=backend)
                runs.append(run)
                print(
                    f"  {fault:<7} {backend:<7} aclose {run.seconds:.3f} s (out of the block "
                    f"{run.exit_seconds:.3f} s); accepted {run.accepted}, delivered "
                    f"{run.delivered}, dropped {run.dropped}; {run.requests} requests; "
                    f"logged: {LOGS.take()}"
                )
            worst[f"{fault} ({backend})"] = max(r.seconds for r in runs)
            print(
                f"  {fault:<7} {backend:<7} median {median([r.seconds for r in runs]):.3f} s, "
                f"max {max(r.seconds for r in runs):.3f} s"
            )
        collector.command("heal")
    print()
    return worst


# 2. Outage recovery ---------------------------------------------------------------------


@dataclass(frozen=True)
class OutageRun:
    """One outage, then the heal."""

    tracked: int
    recovery: float
    delivered: int
    dropped: dict[str, int]
    complete: bool
    requests: int
    retries: int
    refused: int


async def outage(
    collector: Collector, seconds: float, rate: int, retry: optitrack.RetryPolicy | None
) -> OutageRun:
    """Track at ``rate`` events/s while the endpoint answers 503, heal, time the recovery."""
    collector.command("fail_all 503")
    client = optitrack.Client(datafile_text(), event_endpoint=collector.url, retry=retry)
    burst = rate // 100  # every 10 ms
    tracked = 0
    async with client:
        start = time.perf_counter()
        tick = start
        while time.perf_counter() - start < seconds:
            for _ in range(burst):
                await client.track(*track_args(tracked))
                tracked += 1
            tick += 0.01
            await anyio.sleep(max(tick - time.perf_counter(), 0))
        collector.command("heal")  # blocks this loop for a pipe round trip (~0.1 ms)
        healed = time.perf_counter()
        result = await client.flush(timeout=60)
        recovery = time.perf_counter() - healed
    ledger = client.statistics()
    return OutageRun(
        tracked=tracked,
        recovery=recovery,
        delivered=ledger.delivered,
        dropped={str(k): v for k, v in ledger.dropped.items()},
        complete=result.complete,
        requests=ledger.requests,
        retries=ledger.retries,
        refused=sum(ledger.refused.values()),
    )


@dataclass(frozen=True)
class Outages:
    """Repeated outages with one retry policy."""

    recoveries: list[float]
    tracked: int
    dropped: int

    def line(self) -> str:
        """The figures, in a summary cell."""
        lost = (
            f"{self.dropped:,} of {self.tracked:,} events dropped" if self.dropped else "none lost"
        )
        return f"median {median(self.recoveries):.2f} s, max {max(self.recoveries):.2f} s; {lost}"


def section_outage(
    collector: Collector,
    sizes: Sizes,
    retry: optitrack.RetryPolicy | None,
    seconds: float,
    runs: int,
) -> Outages:
    """2. Outage recovery: time from the heal to everything delivered (or given up on)."""
    print(
        f"## 2. outage recovery: 503 for {seconds:g} s while tracking "
        f"{sizes.rate:,} events/s, then healed; {retry or 'the default RetryPolicy()'}"
    )
    recoveries: list[float] = []
    tracked = dropped = 0
    for backend in BACKENDS:
        for _ in range(runs):
            before = collector.stats()
            run = anyio.run(outage, collector, seconds, sizes.rate, retry, backend=backend)
            after = collector.stats()
            received = delta(after, before, "events")
            duplicates = delta(after, before, "duplicates")
            ok = run.complete and received == run.tracked == run.delivered and not duplicates
            print(
                f"  {backend:<7} heal -> flush() returned in {run.recovery:.3f} s; tracked "
                f"{run.tracked:,}, delivered {run.delivered:,}, received {received:,}, "
                f"{duplicates} duplicates, dropped {run.dropped}, refused {run.refused} "
                f"({'all delivered' if ok else 'NOT all delivered'}); {run.requests} "
                f"requests, {run.retries} retries; logged: {LOGS.take()}"
            )
            recoveries.append(run.recovery)
            tracked += run.tracked
            dropped += sum(run.dropped.values())
    print(
        f"  median {median(recoveries):.3f} s of {spread(recoveries, '{:.3f}')}, "
        f"max {max(recoveries):.3f} s"
    )
    print()
    return Outages(recoveries, tracked, dropped)


# 3. A poison event ----------------------------------------------------------------------


@dataclass(frozen=True)
class PoisonRun:
    """One 500-event batch with a poison event in it."""

    delivered: int
    received: int
    dropped: dict[str, int]
    requests: int
    seconds: float


async def poison(collector: Collector, position: int) -> PoisonRun:
    """Send a 500-event batch whose event at ``position`` the endpoint rejects (400)."""
    client = optitrack.Client(datafile_text(), event_endpoint=collector.url, batch_size=BATCH)
    before = collector.stats()
    async with client:
        for i in range(BATCH):
            key, user, attributes, tags = track_args(i)
            if i == position:
                client.track_nowait(key, user, attributes, {**tags, "note": "POISON-PILL"})
            else:
                client.track_nowait(key, user, attributes, tags)
        t0 = time.perf_counter()
        await client.flush(timeout=30)
        seconds = time.perf_counter() - t0
    after = collector.stats()
    ledger = client.statistics()
    return PoisonRun(
        delivered=ledger.delivered,
        received=delta(after, before, "events"),
        dropped={str(k): v for k, v in ledger.dropped.items()},
        requests=ledger.requests,
        seconds=seconds,
    )


def section_poison(collector: Collector, sizes: Sizes) -> list[PoisonRun]:
    """3. One poison event in a 500-event batch."""
    print(f"## 3. one poison event in a {BATCH}-event batch (the stand-in answers 400 to it)")
    collector.command("poison POISON-PILL")
    runs: list[PoisonRun] = []
    for backend in BACKENDS:
        for position in sizes.poison_positions:
            run = anyio.run(poison, collector, position, backend=backend)
            print(
                f"  {backend:<7} poison at {position:>3}: delivered {run.delivered} "
                f"(collector: {run.received}), dropped {run.dropped}, {run.requests} requests, "
                f"{run.seconds * 1000:.1f} ms; logged: {LOGS.take()}"
            )
            runs.append(run)
    collector.command("heal")
    print()
    return runs


def main(argv: list[str]) -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, under 20 s")
    args = parser.parse_args(argv[1:])
    sizes = QUICK if args.quick else FULL
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logger = logging.getLogger("optitrack")
    logger.addHandler(LOGS)
    logger.propagate = False

    print_machine("optitrack delivery benchmark", argv)
    with Collector() as collector:
        print(f"collector: pid {collector.pid}, {collector.url} (separate process)")
        print()
        worst = section_close(collector, sizes)
        recoveries = section_outage(collector, sizes, None, sizes.outage_seconds, sizes.outage_runs)
        # The wait before a retry grows to wait_max (10 s); while the breaker is open it is
        # capped at probe_interval (1 s). Capping it everywhere, for comparison:
        capped = (
            section_outage(collector, sizes, CAPPED, sizes.outage_seconds, sizes.outage_runs)
            if sizes.capped_outage
            else None
        )
        long = (
            section_outage(
                collector, sizes, None, sizes.long_outage_seconds, sizes.long_outage_runs
            )
            if sizes.long_outage_seconds
            else None
        )
        poisons = section_poison(collector, sizes)

    limit = CLOSE_TIMEOUT + 0.1
    rows = [["figure", "optitrack", "target", "verdict"]]
    for label, seconds in worst.items():
        rows.append(
            [
                f"aclose(timeout=2), endpoint {label}, worst run",
                f"{seconds:.3f} s",
                f"<= {limit:.1f} s",
                "met" if seconds <= limit else "**missed**",
            ]
        )
    rows.append(
        [
            f"outage recovery after {sizes.outage_seconds:g} s of 503",
            recoveries.line(),
            "-",
            "-",
        ]
    )
    if capped:
        rows.append(
            [
                f"  same, RetryPolicy(wait_max={CAPPED.wait_max:g})",
                capped.line(),
                "-",
                "-",
            ]
        )
    if long and sizes.long_outage_seconds:
        rows.append(
            [
                f"outage recovery after {sizes.long_outage_seconds:g} s of 503",
                long.line(),
                "-",
                "-",
            ]
        )
    ok = all(
        r.delivered == r.received == BATCH - 1 and r.dropped == {"http_400": 1} for r in poisons
    )
    rows.append(
        [
            f"poison event in a {BATCH}-event batch",
            f"{poisons[0].delivered} delivered, dropped {poisons[0].dropped}, "
            f"{median([r.requests for r in poisons]):.0f} requests",
            "499 delivered, 1 dropped with reason",
            "met" if ok else "**missed**",
        ]
    )
    print("## Summary")
    print(table(rows))
    print()
    print_load()


if __name__ == "__main__":
    main(sys.argv)
