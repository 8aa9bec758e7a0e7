"""Where the time of ``track`` and of delivery goes: a breakdown, cProfile, per-request cost.

Not a benchmark of targets but the diagnosis behind them (docs/benchmarks.md quotes it):

1. the hot path of ``track`` piece by piece, each timed alone in a loop (median of
   repeats, nanoseconds per call): the whole ``track_nowait`` and ``await track``, the
   serialization (``EventFactory.conversion``) and its parts (uuid, timestamp, tags,
   attributes), the enqueue, the cost of an ``await`` of a coroutine that does nothing;
2. cProfile of 100k ``await client.track(...)`` calls on asyncio, the top entries by
   internal time (cProfile inflates Python-level calls; read it for the ranking);
3. delivery cost in the client: drain queued events to the counting collector with
   batch sizes 100, 500, 1000 (the default) and 2000, client CPU per event, fitted as a
   fixed cost per request plus a cost per event; then cProfile of a drain at the default
   batch size, the top entries;
4. the client CPU of a bare ``httpx.AsyncClient.post`` of a tiny body, on asyncio and
   Trio: the HTTP client's own share of the cost per request;
5. the awaited track calls that yield to the worker (one per ``batch_size``), timed apart
   from the others: they carry the p99.9 of the caller time.

It reaches into private modules (``optitrack._events``, ``optitrack._uuid``) and the
client's queue to time the pieces. The stand-in runs in a separate process
(``_collector.py --count-only``) on 127.0.0.1.

Run it from the repository root::

    python benchmarks/profile_track.py           # about 1 minute
    python benchmarks/profile_track.py --quick   # smaller loops, under 20 s
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import pstats
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import httpx
from _bench import (
    EVENT_KEY,
    USERS,
    Collector,
    datafile_text,
    median,
    print_load,
    print_machine,
    table,
)

import optitrack
from optitrack._delivery import DEFAULT_BATCH_SIZE
from optitrack._events import encode_tags
from optitrack._uuid import new_uuid

#: Batch sizes of the delivery-cost drains (section 3).
DRAIN_BATCH_SIZES = (100, 500, 1000, 2000)


def per_call_ns(loop: Callable[[int], None], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the wall time of ``loop(calls)``, per call, in ns."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        loop(calls)
        times.append((time.perf_counter_ns() - t0) / calls)
    return median(times)


def async_per_call_ns(
    loop: Callable[[int], Coroutine[Any, Any, None]], calls: int, repeats: int
) -> float:
    """Like :func:`per_call_ns`, for a loop that awaits (run inside the event loop)."""
    times = []

    async def run() -> None:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            await loop(calls)
            times.append((time.perf_counter_ns() - t0) / calls)

    anyio.run(run)
    return median(times)


def top(profile: cProfile.Profile, count: int) -> str:
    """The ``count`` top entries of a profile by internal time, as text."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text


# 1. The hot path, piece by piece --------------------------------------------------------


def breakdown(url: str, calls: int, repeats: int) -> list[tuple[str, float]]:
    """Time each piece of the track hot path alone, in ns per call."""
    users = USERS
    n = len(users)
    ns: dict[str, float] = {}

    async def measure_client(piece: str) -> None:
        # A fresh client for each piece, since the queue keeps what it is given and a
        # growing heap slows later loops down. Nothing is sent while measuring: no batch
        # ever fills, no interval ever passes; what was queued is dropped at the end.
        async with optitrack.Client(
            datafile_text(),
            event_endpoint=url,
            max_queue_size=10_000_000,
            max_queue_bytes=3_000_000_000,
            flush_interval=3600.0,
            batch_size=10_000_000,
            max_batch_bytes=3_500_000,
            close_timeout=0.0,
        ) as client:
            factory = client._intake.factory
            queue = client._intake.queue
            context = client._intake.context
            data = factory.conversion(EVENT_KEY, users[0], {"plan": "pro"}, {"revenue": 4200})
            assert data is not None

            async def awaited(k: int) -> None:
                track = client.track
                for i in range(k):
                    await track(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})

            def nowait(k: int) -> None:
                for i in range(k):
                    client.track_nowait(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})

            def conversion(k: int) -> None:
                for i in range(k):
                    factory.conversion(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})

            def attributes(k: int) -> None:
                for _ in range(k):
                    factory.attributes_json({"plan": "pro"})

            def enqueue(k: int) -> None:
                for _ in range(k):
                    queue.put_nowait(context, data)

            if piece == "await":
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter_ns()
                    await awaited(calls)
                    times.append((time.perf_counter_ns() - t0) / calls)
                ns["await"] = median(times)
            else:
                loops = {
                    "nowait": nowait,
                    "conversion": conversion,
                    "attributes": attributes,
                    "enqueue": enqueue,
                }
                ns[piece] = per_call_ns(loops[piece], calls, repeats)
            await client.aclose(timeout=0)

    for piece in ("await", "nowait", "conversion", "attributes", "enqueue"):
        gc.collect()
        anyio.run(measure_client, piece)

    def tags(k: int) -> None:
        for _ in range(k):
            encode_tags({"revenue": 4200})

    def uuids(k: int) -> None:
        for _ in range(k):
            new_uuid()

    def timestamp(k: int) -> None:
        for _ in range(k):
            time.time_ns() // 1_000_000

    def literals(k: int) -> None:
        for i in range(k):
            (EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})

    async def noop() -> None:
        return None

    async def awaits(k: int) -> None:
        for _ in range(k):
            await noop()

    ns["tags"] = per_call_ns(tags, calls, repeats)
    ns["uuid"] = per_call_ns(uuids, calls, repeats)
    ns["time"] = per_call_ns(timestamp, calls, repeats)
    ns["literals"] = per_call_ns(literals, calls, repeats)
    ns["noop"] = async_per_call_ns(awaits, calls, repeats)
    rest = ns["conversion"] - ns["attributes"] - ns["tags"] - ns["uuid"] - ns["time"]
    return [
        ("await client.track(...), no delivery running", ns["await"]),
        ("client.track_nowait(...)", ns["nowait"]),
        ("  EventFactory.conversion(...)", ns["conversion"]),
        ("    attributes_json({'plan': 'pro'})", ns["attributes"]),
        ("    encode_tags({'revenue': 4200})", ns["tags"]),
        ("    new_uuid()", ns["uuid"]),
        ("    time.time_ns() // 1_000_000", ns["time"]),
        ("    the rest (formatting the visitor, revenue, encode)", rest),
        ("  queue.put_nowait(ctx, data)", ns["enqueue"]),
        ("the arguments: two dict literals, a user id", ns["literals"]),
        ("await of a coroutine that returns", ns["noop"]),
    ]


# 2. cProfile of track -------------------------------------------------------------------


def profile_track(url: str, calls: int) -> str:
    """cProfile of ``calls`` awaited track calls on asyncio, delivering meanwhile."""
    profile = cProfile.Profile()

    async def run() -> None:
        users = USERS
        n = len(users)
        async with optitrack.Client(
            datafile_text(), event_endpoint=url, max_queue_size=1_000_000, close_timeout=60.0
        ) as client:
            track = client.track
            profile.enable()
            for i in range(calls):
                await track(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})
            profile.disable()

    anyio.run(run)
    return top(profile, 18)


# 3. Delivery cost -----------------------------------------------------------------------


async def drain_cpu(
    url: str, events: int, batch_size: int, profile: cProfile.Profile | None = None
) -> tuple[float, float]:
    """Queue ``events``, then drain them on close: (wall seconds, client CPU seconds)."""
    users = USERS
    n = len(users)
    client = optitrack.Client(
        datafile_text(),
        event_endpoint=url,
        batch_size=batch_size,
        max_queue_size=max(events, batch_size),
        close_timeout=60.0,
    )
    async with client:
        for i in range(events):
            client.track_nowait(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})
        if profile is not None:
            profile.enable()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await client.aclose()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if profile is not None:
            profile.disable()
    assert client.statistics().delivered == events
    return wall, cpu


def delivery_cost(url: str, events: int, repeats: int) -> tuple[list[list[str]], str]:
    """Client CPU per delivered event by batch size, the fit, and a profile of a drain."""
    rows = [["batch size", "requests", "drain wall", "client CPU / event", "events/s"]]
    points: list[tuple[float, float]] = []
    for batch_size in DRAIN_BATCH_SIZES:
        runs = [anyio.run(drain_cpu, url, events, batch_size) for _ in range(repeats)]
        wall = median([r[0] for r in runs])
        cpu_per_event = median([r[1] for r in runs]) / events * 1e6
        points.append((1 / batch_size, cpu_per_event))
        rows.append(
            [
                str(batch_size),
                str(-(-events // batch_size)),
                f"{wall:.3f} s",
                f"{cpu_per_event:.2f} us",
                f"{events / wall:,.0f}",
            ]
        )
    # Least squares of cpu_per_event = per_event + per_request / batch_size.
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    rows.append(["fit", "", "", f"{my - slope * mx:.2f} us/event + {slope:.0f} us/request", ""])
    profile = cProfile.Profile()
    anyio.run(drain_cpu, url, events, DEFAULT_BATCH_SIZE, profile)
    return rows, top(profile, 18)


# 4. A bare httpx request -----------------------------------------------------------------


async def bare_post_cpu(url: str, requests: int) -> float:
    """Client CPU per ``httpx.AsyncClient.post`` of a tiny body, in microseconds."""
    body = b'{"visitors":[]}'
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        for _ in range(50):  # a connection, warm code paths
            await http.post(url, content=body, headers=headers)
        cpu0 = time.process_time()
        for _ in range(requests):
            await http.post(url, content=body, headers=headers)
        return (time.process_time() - cpu0) / requests * 1e6


# 5. The calls that yield -----------------------------------------------------------------


async def checkpoint_calls(url: str, calls: int) -> list[str]:
    """Time each awaited track call, and tell apart those that yielded to the worker.

    ``track`` yields once per ``batch_size`` calls (and at every call while the queue is
    short of room): ``BatchQueue.put`` counts its calls and, when one is due, resets the
    count and yields; in that checkpoint the worker forms a batch and starts its request.
    """
    users = USERS
    n = len(users)
    samples = [0] * calls
    yielded = [False] * calls
    clock = time.perf_counter_ns
    async with optitrack.Client(
        datafile_text(),
        event_endpoint=url,
        max_queue_size=1_000_000,
        max_queue_bytes=1_000_000_000,
        close_timeout=60.0,
    ) as client:
        queue = client._intake.queue
        track = client.track
        for i in range(10_000):
            await track(EVENT_KEY, users[i % n], {"plan": "pro"}, {"revenue": 4200})
        for i in range(calls):
            user = users[i % n]
            t0 = clock()
            await track(EVENT_KEY, user, {"plan": "pro"}, {"revenue": 4200})
            samples[i] = clock() - t0
            yielded[i] = queue._offers == 0  # put yielded, and started counting again
    at = [samples[i] for i in range(calls) if yielded[i]]
    rest = [samples[i] for i in range(calls) if not yielded[i]]
    slow = [i for i in range(calls) if samples[i] > 50_000]
    return [
        f"calls that yielded: {len(at):,} of {calls:,}, median {median(at) / 1000:.1f} us; "
        f"the others: median {median(rest) / 1000:.2f} us",
        f"calls over 50 us: {len(slow):,}, of which {sum(yielded[i] for i in slow):,} yielded",
        f"the yielding calls add {sum(at) / calls / 1000:.2f} us per call on average",
    ]


def main(argv: list[str]) -> None:
    """Print the breakdown, the profiles and the delivery cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loops, under 20 s")
    args = parser.parse_args(argv[1:])
    calls, repeats, events = (20_000, 3, 20_000) if args.quick else (200_000, 5, 100_000)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # The breakdown drops what it queued on purpose: no need to hear about it.
    logging.getLogger("optitrack").addHandler(logging.NullHandler())
    print_machine("optitrack: where the time goes", argv)

    with Collector(count_only=True) as collector:
        print(f"## 1. the track hot path, piece by piece (ns per call, median of {repeats})")
        rows = [["piece", "ns per call"]]
        rows += [[name, f"{ns:,.0f}"] for name, ns in breakdown(collector.url, calls, repeats)]
        print(table(rows))
        print()

        print(f"## 2. cProfile of {calls:,} awaited track calls (asyncio), top by tottime")
        print(profile_track(collector.url, calls))
        print()

        print(f"## 3. delivery cost in the client: drain {events:,} queued events on close")
        rows, drain_profile = delivery_cost(collector.url, events, repeats)
        print(table(rows))
        print()
        print(
            f"cProfile of one drain of {events:,} events, batch {DEFAULT_BATCH_SIZE}, "
            "top by tottime"
        )
        print(drain_profile)
        print()

        print("## 4. a bare httpx.AsyncClient.post of a 15-byte body: client CPU per request")
        for backend in ("asyncio", "trio"):
            cpu = anyio.run(bare_post_cpu, collector.url, calls // 100, backend=backend)
            print(f"  {backend:<7} {cpu:.0f} us")
        print()

        print(f"## 5. the track calls that yield to the worker ({calls:,} calls, asyncio)")
        for line in anyio.run(checkpoint_calls, collector.url, calls):
            print(f"  {line}")
    print()
    print_load()


if __name__ == "__main__":
    main(sys.argv)
