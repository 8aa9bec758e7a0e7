"""Benchmark ``await client.track(...)`` and delivery, against optimizely-sdk in the same run.

Every figure is printed, never asserted; the batch processor's targets are printed
beside them. The Events API stand-in runs in a separate process (``_collector.py``,
``EventsAPI(validate=False, record=False)`` on 127.0.0.1), so the CPU measured here is
the client's alone. The call is always
``track("purchase", user, {"plan": "pro"}, {"revenue": 4200})`` with the bundled example
datafile, ``user`` cycling over 1000 ids.

What it measures, on asyncio and on Trio (medians of repeated runs):

1. caller time of ``await client.track(...)``: ``time.perf_counter_ns`` around each call,
   over 200k calls after a 10k warm-up, delivering to the collector meanwhile;
2. delivered events/s: track N events as fast as possible with ``overflow="block"``, then
   ``await client.aclose()``; N / (first track to ``aclose`` returning), checked against
   the collector's count (and its duplicates). Then the same to a collector that picks
   the ``"uuid"`` values out of each body with a regular expression instead of parsing
   JSON (``_collector.py --count-only``: it counts events and duplicates all the same),
   with the default batch size (1000) and with ``batch_size=2000``: the parsing stand-in
   costs about as much CPU per event as the client, so these runs show what the client
   itself can deliver;
3. process CPU per delivered event (``time.process_time`` over the same run);
4. memory per queued event: ``tracemalloc`` around 100k ``track_nowait`` calls that the
   worker has no chance to send, compared with their serialized size;
5. drain time of 10k queued events on ``aclose()`` with a healthy endpoint;
6. bytes per event on the wire (request bodies; headers estimated);
7. optimizely-sdk 5.7.0's ``Optimizely.track`` with its ``BatchEventProcessor``, with its
   defaults (batch size 1) and with ``batch_size=100`` (to both collectors), its
   dispatcher's code pointed at the same collector: caller time, delivered events/s, CPU
   per event, and the ratios. Skipped, saying so, when optimizely-sdk is not installed;
8. delivered events/s in 3 interleaved rounds (``_rounds.py``): optitrack with its
   defaults and with ``batch_size=500``, each through its own transport and through an
   ``httpx.AsyncClient``, and optimizely-sdk with ``batch_size=100``, fresh attribute and
   tag dicts per call, to the parsing stand-in (``--counting``: the counting one); the
   medians, every round's figure, and the ratios.

Run it from the repository root::

    python benchmarks/track.py           # the full run, under 2 minutes
    python benchmarks/track.py --quick   # a smoke run with small counts, under 20 s
    python benchmarks/track.py --rounds  # section 8 alone, about a minute
"""

from __future__ import annotations

import argparse
import gc
import queue
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from _bench import (
    EVENT_KEY,
    USERS,
    Collector,
    RequestsDispatcher,
    datafile_text,
    delta,
    median,
    percentile,
    print_load,
    print_machine,
    spread,
    table,
)
from _rounds import section_rounds

import optitrack

BACKENDS = ("asyncio", "trio")
PEER_DEFAULTS = "defaults (batch 1)       "
PEER_BATCH100 = "batch_size=100           "
PEER_BATCH100_COUNTED = "batch_size=100, counting "


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does."""

    runs: int
    calls: int
    warmup: int
    events: int
    memory_events: int
    drain_events: int
    drain_runs: int
    opt_runs: int
    opt_events_batch1: int
    opt_events_batch100: int
    rounds_events: int


FULL = Sizes(
    runs=3,
    calls=200_000,
    warmup=10_000,
    events=200_000,
    memory_events=100_000,
    drain_events=10_000,
    drain_runs=5,
    opt_runs=3,
    opt_events_batch1=1_500,
    opt_events_batch100=30_000,
    rounds_events=100_000,
)
QUICK = Sizes(
    runs=1,
    calls=20_000,
    warmup=2_000,
    events=20_000,
    memory_events=20_000,
    drain_events=10_000,
    drain_runs=1,
    opt_runs=1,
    opt_events_batch1=300,
    opt_events_batch100=3_000,
    rounds_events=10_000,
)

#: Caller-time runs: the defaults, with a queue big enough that no call is refused.
CALLER_OPTIONS: dict[str, Any] = {
    "max_queue_size": 1_000_000,
    "max_queue_bytes": 1_000_000_000,
    "close_timeout": 60.0,
}
#: Throughput runs: the defaults (batch 1000, 2 in flight, queue 100k), with backpressure
#: instead of drops, and time enough to drain.
THROUGHPUT_OPTIONS: dict[str, Any] = {
    "overflow": "block",
    "overflow_timeout": 30.0,
    "close_timeout": 60.0,
}
#: The same with bigger batches: about 750 kB a request, under the 1 MB default cap.
THROUGHPUT_TUNED: dict[str, Any] = {**THROUGHPUT_OPTIONS, "batch_size": 2000}


# Caller time ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerTime:
    """Per-call times of a run, in microseconds."""

    calls: int
    median: float
    p99: float
    p999: float
    mean: float
    worst: float

    @classmethod
    def of(cls, samples_ns: list[int]) -> CallerTime:
        """Summarize per-call times given in nanoseconds."""
        ordered = sorted(samples_ns)
        return cls(
            calls=len(ordered),
            median=median(ordered) / 1000,
            p99=percentile(ordered, 99) / 1000,
            p999=percentile(ordered, 99.9) / 1000,
            mean=sum(ordered) / len(ordered) / 1000,
            worst=ordered[-1] / 1000,
        )

    @staticmethod
    def combine(runs: list[CallerTime]) -> CallerTime:
        """The median of each figure over repeated runs."""
        return CallerTime(
            calls=sum(r.calls for r in runs),
            median=median([r.median for r in runs]),
            p99=median([r.p99 for r in runs]),
            p999=median([r.p999 for r in runs]),
            mean=median([r.mean for r in runs]),
            worst=max(r.worst for r in runs),
        )

    def line(self) -> str:
        """The figures on one line."""
        return (
            f"median {self.median:.2f} us, p99 {self.p99:.2f} us, p99.9 {self.p999:.1f} us, "
            f"mean {self.mean:.2f} us, max {self.worst:.0f} us ({self.calls:,} calls)"
        )


def timer_overhead_ns() -> float:
    """The median cost of the two ``perf_counter_ns`` calls around each timed call."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = clock()
        samples.append(clock() - t0)
    return median(samples)


async def optitrack_caller_time(url: str, sizes: Sizes) -> tuple[CallerTime, optitrack.Statistics]:
    """Time each ``await client.track(...)`` of one run."""
    users = USERS
    n_users = len(users)
    samples = [0] * sizes.calls
    clock = time.perf_counter_ns
    async with optitrack.Client(datafile_text(), event_endpoint=url, **CALLER_OPTIONS) as client:
        track = client.track
        for i in range(sizes.warmup):
            await track(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
        for i in range(sizes.calls):
            user = users[i % n_users]
            t0 = clock()
            await track(EVENT_KEY, user, {"plan": "pro"}, {"revenue": 4200})
            samples[i] = clock() - t0
    return CallerTime.of(samples), client.statistics()


# Throughput -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """One track-N-then-close run."""

    events: int
    seconds: float
    track_seconds: float
    cpu_seconds: float
    delivered: int
    received: int
    duplicates: int
    body_bytes: int
    requests: int
    collector_cpu: float
    retries: int | None = None

    @property
    def events_per_s(self) -> float:
        """Events over the time from the first track to all delivered."""
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        """The client process's CPU per delivered event, in microseconds."""
        return self.cpu_seconds / max(self.received, 1) * 1e6

    @property
    def bytes_per_event(self) -> float:
        """Request body bytes per delivered event."""
        return self.body_bytes / max(self.received, 1)

    def line(self) -> str:
        """The figures on one line."""
        ok = self.received == self.events == self.delivered and not self.duplicates
        retries = "" if self.retries is None else f", {self.retries} retries"
        return (
            f"{self.events_per_s:>9,.0f} events/s, {self.cpu_us_per_event:6.2f} us CPU/event, "
            f"tracked in {self.track_seconds:.2f} s, delivered in {self.seconds:.2f} s; "
            f"received {self.received:,}/{self.events:,}, {self.duplicates} duplicates "
            f"({'ok' if ok else 'MISMATCH'}); {self.requests:,} requests{retries}; "
            f"collector CPU {self.collector_cpu:.2f} s"
        )


async def optitrack_throughput(
    collector: Collector, events: int, options: dict[str, Any]
) -> Throughput:
    """Track ``events`` as fast as possible, then close; time it to the last delivery."""
    users = USERS
    n_users = len(users)
    collector.command("reset")  # a fresh uuid set: the collector's cost stays the same
    before = collector.stats()
    client = optitrack.Client(datafile_text(), event_endpoint=collector.url, **options)
    async with client:
        track = client.track
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(events):
            await track(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
        t_tracked = time.perf_counter()
        await client.aclose()
        t1 = time.perf_counter()
        cpu1 = time.process_time()
    after = collector.stats()
    ledger = client.statistics()
    return Throughput(
        events=events,
        seconds=t1 - t0,
        track_seconds=t_tracked - t0,
        cpu_seconds=cpu1 - cpu0,
        delivered=ledger.delivered,
        received=delta(after, before, "events"),
        duplicates=delta(after, before, "duplicates"),
        body_bytes=delta(after, before, "bytes_received"),
        requests=delta(after, before, "requests"),
        collector_cpu=delta(after, before, "cpu_s"),
        retries=ledger.retries,
    )


# Memory and drain -----------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Memory held by queued events."""

    queued: int
    traced_bytes: int
    serialized_bytes: int

    @property
    def per_event(self) -> float:
        """Traced bytes per queued event."""
        return self.traced_bytes / self.queued

    @property
    def serialized_per_event(self) -> float:
        """Serialized bytes per queued event."""
        return self.serialized_bytes / self.queued


async def optitrack_memory(url: str, events: int) -> Memory:
    """Queue ``events`` with ``track_nowait`` (the worker cannot run meanwhile) and trace."""
    users = USERS
    n_users = len(users)
    async with optitrack.Client(
        datafile_text(), event_endpoint=url, max_queue_size=events, close_timeout=60.0
    ) as client:
        track_nowait = client.track_nowait
        track_nowait(EVENT_KEY, users[0], {"plan": "pro"}, {"revenue": 4200})  # warm caches
        await client.flush()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(events):
            track_nowait(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        ledger = client.statistics()
    return Memory(
        queued=ledger.queued, traced_bytes=after - before, serialized_bytes=ledger.queued_bytes
    )


async def optitrack_drain(collector: Collector, events: int) -> tuple[float, int]:
    """Queue ``events`` without letting the worker run, then time ``aclose()``."""
    users = USERS
    n_users = len(users)
    client = optitrack.Client(datafile_text(), event_endpoint=collector.url, close_timeout=30.0)
    async with client:
        for i in range(events):
            client.track_nowait(EVENT_KEY, users[i % n_users], {"plan": "pro"}, {"revenue": 4200})
        t0 = time.perf_counter()
        await client.aclose()
        seconds = time.perf_counter() - t0
    return seconds, client.statistics().delivered


def request_header_bytes(url: str, body_size: int) -> int:
    """Bytes of the request line and headers of one batch, as httpx sends them."""
    with httpx.Client() as http:
        request = http.build_request(
            "POST",
            url,
            content=b"x" * body_size,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"optitrack/{optitrack.__version__}",
                "Idempotency-Key": "00000000-0000-4000-8000-000000000000",
                "X-Optitrack-Attempt": "1",
            },
        )
    line = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\n"
    headers = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return len(line) + len(headers) + 2


# optimizely-sdk -------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerRun:
    """One optimizely-sdk run: caller times and delivery."""

    caller: CallerTime
    throughput: Throughput


def optimizely_run(collector: Collector, events: int, batch_size: int | None) -> PeerRun:
    """Track ``events`` with optimizely-sdk (timing each call), close, wait for delivery.

    The queue holds every event (its default 1000 slots would drop most of them), so both
    libraries deliver the same events; ``batch_size=None`` keeps the SDK's default (1).
    """
    from optimizely import optimizely as optimizely_module

    options: dict[str, Any] = {"event_queue": queue.Queue(maxsize=events + 10)}
    if batch_size is not None:
        options["batch_size"] = batch_size
    client = optimizely_module.Optimizely(
        datafile=datafile_text(),
        event_dispatcher=RequestsDispatcher(collector.url),
        event_processor_options=options,
    )
    users = USERS
    n_users = len(users)
    samples = [0] * events
    clock = time.perf_counter_ns
    track: Callable[..., None] = client.track
    collector.command("reset")
    before = collector.stats()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(events):
        user = users[i % n_users]
        start = clock()
        track(EVENT_KEY, user, {"plan": "pro"}, {"revenue": 4200})
        samples[i] = clock() - start
    t_tracked = time.perf_counter()
    client.close()  # joins its thread for at most 5 s; then wait for the rest
    after = collector.wait_events(before["events"] + events, 120.0)
    t1 = time.perf_counter()
    cpu1 = time.process_time()
    received = delta(after, before, "events")
    return PeerRun(
        caller=CallerTime.of(samples),
        throughput=Throughput(
            events=events,
            seconds=t1 - t0,
            track_seconds=t_tracked - t0,
            cpu_seconds=cpu1 - cpu0,
            delivered=received,
            received=received,
            duplicates=delta(after, before, "duplicates"),
            body_bytes=delta(after, before, "bytes_received"),
            requests=delta(after, before, "requests"),
            collector_cpu=delta(after, before, "cpu_s"),
        ),
    )


def optimizely_installed() -> str | None:
    """optimizely-sdk's version, or ``None`` when it cannot be imported."""
    try:
        from optimizely.version import __version__ as version
    except ImportError:
        return None
    return str(version)


# The run --------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """How a figure compares with its target."""
    return "met" if ok else "**missed**"


def section_caller(collector: Collector, sizes: Sizes) -> dict[str, CallerTime]:
    """1. Caller time, on each backend."""
    print("## 1. caller time of await client.track(...)")
    print(f"options: defaults + {CALLER_OPTIONS}; {sizes.warmup:,} warm-up calls per run")
    caller: dict[str, CallerTime] = {}
    for backend in BACKENDS:
        runs = []
        for _ in range(sizes.runs):
            result, ledger = anyio.run(optitrack_caller_time, collector.url, sizes, backend=backend)
            refused = sum(ledger.refused.values())
            print(f"  {backend:<7} run: {result.line()}; refused {refused}")
            runs.append(result)
        caller[backend] = CallerTime.combine(runs)
        print(f"  {backend:<7} median of {len(runs)} runs: {caller[backend].line()}")
    print()
    return caller


def section_throughput(
    collector: Collector, sizes: Sizes, options: dict[str, Any]
) -> dict[str, list[Throughput]]:
    """2-3. Delivered events/s and CPU per event, on each backend."""
    print(f"options: defaults + {options}; N = {sizes.events:,} per run")
    results: dict[str, list[Throughput]] = {}
    for backend in BACKENDS:
        results[backend] = []
        for _ in range(sizes.runs):
            run = anyio.run(optitrack_throughput, collector, sizes.events, options, backend=backend)
            print(f"  {backend:<7} {run.line()}")
            results[backend].append(run)
    print()
    return results


def section_memory(collector: Collector, sizes: Sizes) -> Memory:
    """4. Memory per queued event."""
    print("## 4. memory per queued event (tracemalloc, asyncio)")
    memory = anyio.run(optitrack_memory, collector.url, sizes.memory_events)
    print(
        f"  {memory.queued:,} queued: {memory.per_event:.0f} B per event traced, "
        f"serialized {memory.serialized_per_event:.0f} B, overhead "
        f"{memory.per_event - memory.serialized_per_event:+.0f} B per event"
    )
    print()
    return memory


def section_drain(collector: Collector, sizes: Sizes) -> dict[str, list[float]]:
    """5. Drain time of queued events on close, on each backend."""
    print("## 5. drain of queued events on aclose() (healthy endpoint)")
    drain: dict[str, list[float]] = {}
    for backend in BACKENDS:
        drain[backend] = []
        for _ in range(sizes.drain_runs):
            seconds, delivered = anyio.run(
                optitrack_drain, collector, sizes.drain_events, backend=backend
            )
            drain[backend].append(seconds)
            if delivered != sizes.drain_events:
                print(f"  {backend}: only {delivered:,} of {sizes.drain_events:,} delivered")
        print(
            f"  {backend:<7} {sizes.drain_events:,} events: median "
            f"{median(drain[backend]):.3f} s of {spread(drain[backend], '{:.3f}')}"
        )
    print()
    return drain


def section_wire(collector: Collector, throughput: list[Throughput], memory: Memory) -> None:
    """6. Bytes per event on the wire."""
    print("## 6. bytes per event on the wire")
    wire = median([r.bytes_per_event for r in throughput])
    batch = median([r.received / max(r.requests, 1) for r in throughput])
    headers = request_header_bytes(collector.url, int(wire * batch))
    print(
        f"  request body: {wire:.1f} B per event (serialized visitor "
        f"{memory.serialized_per_event:.0f} B + comma + the batch envelope / {batch:.0f}); "
        f"HTTP request line and headers: {headers} B per request, "
        f"{headers / batch:.2f} B per event at {batch:.0f} events per request"
    )
    print()


def section_peer(collector: Collector, counting: Collector, sizes: Sizes) -> dict[str, PeerRun]:
    """7. optimizely-sdk, with its defaults and with batch_size=100 (to both collectors)."""
    print("## 7. optimizely-sdk in the same run")
    peer_version = optimizely_installed()
    peer: dict[str, PeerRun] = {}
    if peer_version is None:
        print("  SKIPPED: optimizely-sdk is not installed (pip install 'optitrack[benchmarks]')")
        print()
        return peer
    print(
        f"  optimizely-sdk {peer_version}, BatchEventProcessor, the default dispatcher's "
        "code (requests, a new Session per batch) posting to the collector; queue "
        "sized to hold every event"
    )
    for label, target, batch_size, events in (
        (PEER_DEFAULTS, collector, None, sizes.opt_events_batch1),
        (PEER_BATCH100, collector, 100, sizes.opt_events_batch100),
        (PEER_BATCH100_COUNTED, counting, 100, sizes.opt_events_batch100),
    ):
        runs = [optimizely_run(target, events, batch_size) for _ in range(sizes.opt_runs)]
        for run in runs:
            print(f"  {label} caller: {run.caller.line()}")
            print(f"  {label} {run.throughput.line()}")
        by_speed = sorted(runs, key=lambda r: r.throughput.events_per_s)
        peer[label] = PeerRun(
            caller=CallerTime.combine([r.caller for r in runs]),
            throughput=by_speed[len(by_speed) // 2].throughput,  # the median run
        )
    print()
    return peer


def main(argv: list[str]) -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under 20 s")
    parser.add_argument(
        "--rounds", action="store_true", help="section 8 alone: interleaved rounds, ~1 min"
    )
    parser.add_argument(
        "--counting",
        action="store_true",
        help="section 8 to the counting stand-in instead of the parsing one",
    )
    args = parser.parse_args(argv[1:])
    sizes = QUICK if args.quick else FULL
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    print_machine("optitrack track benchmark", argv)
    if args.rounds:
        with Collector(count_only=args.counting) as collector:
            kind = "counting" if args.counting else "parsing"
            print(f"collector: pid {collector.pid}, {collector.url} ({kind}, separate process)")
            print()
            section_rounds(
                collector,
                sizes.runs,
                sizes.rounds_events,
                sizes.opt_events_batch100,
                optimizely_installed() is not None,
            )
        print_load()
        return
    print(f"timer overhead (two perf_counter_ns calls, median): {timer_overhead_ns():.0f} ns")
    print()

    with Collector() as collector, Collector(count_only=True) as counting:
        print(f"collector: pid {collector.pid}, {collector.url} (separate process)")
        print(f"counting collector: pid {counting.pid}, {counting.url} (separate process)")
        print()
        caller = section_caller(collector, sizes)

        print("## 2-3. delivered events/s and CPU per delivered event")
        throughput = section_throughput(collector, sizes, THROUGHPUT_OPTIONS)
        print("## 2b. the same, to a collector that counts instead of parsing (client-bound)")
        print("(it finds duplicate uuids too, with a regular expression over each body)")
        counted = section_throughput(counting, sizes, THROUGHPUT_OPTIONS)
        print("## 2c. the same, with batch_size=2000 (half the requests of the default)")
        tuned = section_throughput(counting, sizes, THROUGHPUT_TUNED)

        memory = section_memory(collector, sizes)
        drain = section_drain(collector, sizes)
        section_wire(collector, throughput["asyncio"], memory)
        peer = section_peer(collector, counting, sizes)
        section_rounds(
            counting if args.counting else collector,
            sizes.runs,
            sizes.rounds_events,
            sizes.opt_events_batch100,
            bool(peer),
        )

    summarize(caller, throughput, counted, tuned, memory, drain, peer, sizes)
    print()
    print_load()


def summarize(
    caller: dict[str, CallerTime],
    throughput: dict[str, list[Throughput]],
    counted: dict[str, list[Throughput]],
    tuned: dict[str, list[Throughput]],
    memory: Memory,
    drain: dict[str, list[float]],
    peer: dict[str, PeerRun],
    sizes: Sizes,
) -> None:
    """Print the figures beside the spec's targets, and the ratios to optimizely-sdk."""
    eps = {b: median([r.events_per_s for r in throughput[b]]) for b in BACKENDS}
    cpu = {b: median([r.cpu_us_per_event for r in throughput[b]]) for b in BACKENDS}
    eps_counted = {b: median([r.events_per_s for r in counted[b]]) for b in BACKENDS}
    cpu_counted = {b: median([r.cpu_us_per_event for r in counted[b]]) for b in BACKENDS}
    eps_tuned = {b: median([r.events_per_s for r in tuned[b]]) for b in BACKENDS}
    cpu_tuned = {b: median([r.cpu_us_per_event for r in tuned[b]]) for b in BACKENDS}
    drained = {b: median(drain[b]) for b in BACKENDS}
    overhead = memory.per_event - memory.serialized_per_event
    peer100 = peer.get(PEER_BATCH100)
    peer100c = peer.get(PEER_BATCH100_COUNTED)
    ratio = eps["asyncio"] / peer100.throughput.events_per_s if peer100 else None
    ratio_counted = eps_counted["asyncio"] / peer100c.throughput.events_per_s if peer100c else None
    ratio_tuned = eps_tuned["asyncio"] / peer100c.throughput.events_per_s if peer100c else None

    def times(value: float | None) -> str:
        return f"{value:.1f}x" if value is not None else "skipped"

    def fifteen(value: float | None) -> str:
        return verdict(value >= 15) if value is not None else "-"

    def both(fmt: str, values: dict[str, float]) -> str:
        return " / ".join(fmt.format(values[b]) for b in BACKENDS)

    rows = [
        ["figure (asyncio / trio)", "optitrack", "target", "verdict"],
        [
            "track() caller time, median",
            both("{:.2f} us", {b: caller[b].median for b in BACKENDS}),
            "<= 5 us",
            verdict(all(caller[b].median <= 5 for b in BACKENDS)),
        ],
        [
            "track() caller time, p99",
            both("{:.2f} us", {b: caller[b].p99 for b in BACKENDS}),
            "<= 25 us",
            verdict(all(caller[b].p99 <= 25 for b in BACKENDS)),
        ],
        [
            "delivered events/s",
            both("{:,.0f}", eps),
            ">= 150,000",
            verdict(all(v >= 150_000 for v in eps.values())),
        ],
        [
            "  to a counting collector",
            both("{:,.0f}", eps_counted),
            ">= 150,000",
            verdict(all(v >= 150_000 for v in eps_counted.values())),
        ],
        [
            "  same, batch_size=2000",
            both("{:,.0f}", eps_tuned),
            ">= 150,000",
            verdict(all(v >= 150_000 for v in eps_tuned.values())),
        ],
        [
            "  vs optimizely-sdk batch 100 (asyncio)",
            times(ratio),
            ">= 15x",
            fifteen(ratio),
        ],
        [
            "  same, both to the counting collector",
            times(ratio_counted),
            ">= 15x",
            fifteen(ratio_counted),
        ],
        [
            "  same, optitrack at batch_size=2000",
            times(ratio_tuned),
            ">= 15x",
            fifteen(ratio_tuned),
        ],
        [
            "process CPU per delivered event",
            both("{:.2f} us", cpu),
            "<= 10 us",
            verdict(all(v <= 10 for v in cpu.values())),
        ],
        [
            "  to a counting collector",
            both("{:.2f} us", cpu_counted),
            "<= 10 us",
            verdict(all(v <= 10 for v in cpu_counted.values())),
        ],
        [
            "  same, batch_size=2000",
            both("{:.2f} us", cpu_tuned),
            "<= 10 us",
            verdict(all(v <= 10 for v in cpu_tuned.values())),
        ],
        [
            "memory per queued event",
            f"{memory.per_event:.0f} B ({overhead:+.0f} B over "
            f"{memory.serialized_per_event:.0f} B serialized)",
            "<= serialized + 100 B",
            verdict(overhead <= 100),
        ],
        [
            f"drain of {sizes.drain_events:,} queued on close",
            both("{:.3f} s", drained),
            "<= 0.5 s",
            verdict(all(v <= 0.5 for v in drained.values())),
        ],
        [
            "bytes per event on the wire (body)",
            f"{median([r.bytes_per_event for r in throughput['asyncio']]):.1f} B",
            "-",
            "-",
        ],
    ]
    print("## Summary (medians of runs)")
    print(table(rows))
    print()
    if not peer:
        return
    base = caller["asyncio"]
    rows = [["asyncio", "median", "p99", "mean", "events/s", "CPU/event"]]
    for label, run in peer.items():
        rows.append(
            [
                f"optimizely-sdk, {label.strip()}",
                f"{run.caller.median:.2f} us",
                f"{run.caller.p99:.1f} us",
                f"{run.caller.mean:.1f} us",
                f"{run.throughput.events_per_s:,.0f}",
                f"{run.throughput.cpu_us_per_event:.1f} us",
            ]
        )
    for label, events_per_s, cpu_per_event in (
        ("optitrack", eps["asyncio"], cpu["asyncio"]),
        ("optitrack, counting", eps_counted["asyncio"], cpu_counted["asyncio"]),
        ("optitrack, batch 2000, counting", eps_tuned["asyncio"], cpu_tuned["asyncio"]),
    ):
        rows.append(
            [
                label,
                f"{base.median:.2f} us",
                f"{base.p99:.1f} us",
                f"{base.mean:.1f} us",
                f"{events_per_s:,.0f}",
                f"{cpu_per_event:.1f} us",
            ]
        )
    print(table(rows))
    print()
    for label, run in peer.items():
        counting = label == PEER_BATCH100_COUNTED
        mine_eps = eps_counted["asyncio"] if counting else eps["asyncio"]
        mine_cpu = cpu_counted["asyncio"] if counting else cpu["asyncio"]
        print(
            f"optitrack vs optimizely-sdk {label.strip()} (asyncio): caller time median "
            f"{run.caller.median / base.median:.1f}x lower, p99 {run.caller.p99 / base.p99:.1f}x "
            f"lower, mean {run.caller.mean / base.mean:.1f}x lower; delivered events/s "
            f"{mine_eps / run.throughput.events_per_s:.1f}x higher; CPU per event "
            f"{run.throughput.cpu_us_per_event / mine_cpu:.1f}x lower"
        )


if __name__ == "__main__":
    main(sys.argv)
