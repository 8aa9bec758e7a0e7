"""Delivered events/s of optitrack and optimizely-sdk in interleaved rounds, with ratios.

Used by ``track.py`` (its section 8, or alone with ``track.py --rounds``). Every run tracks
``N`` events as fast as it can, each call with fresh attribute and tag dicts (a new
``{"plan": ...}`` and ``{"revenue": ...}`` per call, their values varying), to the same
stand-in in another process, and is timed from the first call until the stand-in has
them all (optitrack: ``aclose()`` returned; optimizely-sdk: ``close()``, then the
stand-in's count). One round runs each configuration once, in turn; the figures are the
medians of the rounds, with every round's value beside them:

- optitrack with its defaults (batch 1000), and with ``batch_size=500``, each through its
  own transport (``lean``) and through an ``httpx.AsyncClient`` given as ``http_client``
  (``httpx``, how every event was sent before the lean transport);
- optimizely-sdk 5.7.0's ``BatchEventProcessor`` with ``batch_size=100``, its default
  dispatcher's code posting to the stand-in, its queue sized to hold every event.
"""

from __future__ import annotations

import queue
import time
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
    spread,
)

import optitrack

PLANS = ("free", "pro", "enterprise")

#: optitrack's runs: backpressure instead of drops, and time enough to drain.
BASE: dict[str, Any] = {"overflow": "block", "overflow_timeout": 30.0, "close_timeout": 60.0}

#: (label, batch_size or None for the default, transport)
OPTITRACK_CONFIGS = (
    ("optitrack defaults, lean", None, "lean"),
    ("optitrack defaults, httpx", None, "httpx"),
    ("optitrack batch_size=500, lean", 500, "lean"),
    ("optitrack batch_size=500, httpx", 500, "httpx"),
)
PEER = "optimizely-sdk batch_size=100"


@dataclass(frozen=True)
class Run:
    """One run's figures."""

    events: int
    seconds: float
    cpu_seconds: float
    received: int
    duplicates: int
    requests: int

    @classmethod
    def between(
        cls,
        events: int,
        seconds: float,
        cpu_seconds: float,
        before: dict[str, Any],
        after: dict[str, Any],
    ) -> Run:
        """A run of ``events``, from the stand-in's counts before and after it."""
        return cls(
            events=events,
            seconds=seconds,
            cpu_seconds=cpu_seconds,
            received=delta(after, before, "events"),
            duplicates=delta(after, before, "duplicates"),
            requests=delta(after, before, "requests"),
        )

    @property
    def events_per_s(self) -> float:
        """Events over the time from the first call to the last delivery."""
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        """The client process's CPU per delivered event, in microseconds."""
        return self.cpu_seconds / max(self.received, 1) * 1e6

    def line(self) -> str:
        """The figures on one line."""
        ok = "ok" if self.received == self.events and not self.duplicates else "MISMATCH"
        return (
            f"{self.events_per_s:>9,.0f} events/s, "
            f"{self.cpu_us_per_event:5.2f} us CPU/event, "
            f"{self.received:,}/{self.events:,} received ({ok}), {self.requests:,} requests"
        )


async def optitrack_run(
    collector: Collector, events: int, batch_size: int | None, transport: str
) -> Run:
    """Track ``events`` with fresh dicts per call, close, and time it."""
    options = dict(BASE)
    if batch_size is not None:
        options["batch_size"] = batch_size
    users = USERS
    n_users = len(users)
    collector.command("reset")
    before = collector.stats()
    async with httpx.AsyncClient(timeout=10.0) as http:
        if transport == "httpx":
            options["http_client"] = http
        client = optitrack.Client(datafile_text(), event_endpoint=collector.url, **options)
        async with client:
            track = client.track
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(events):
                await track(EVENT_KEY, users[i % n_users], {"plan": PLANS[i % 3]}, {"revenue": i})
            await client.aclose()
            t1 = time.perf_counter()
            cpu1 = time.process_time()
    after = collector.stats()
    return Run.between(events, t1 - t0, cpu1 - cpu0, before, after)


def optimizely_run(collector: Collector, events: int, batch_size: int) -> Run:
    """The same with optimizely-sdk, waiting for the stand-in to have every event."""
    from optimizely import optimizely as optimizely_module

    client = optimizely_module.Optimizely(
        datafile=datafile_text(),
        event_dispatcher=RequestsDispatcher(collector.url),
        event_processor_options={
            "event_queue": queue.Queue(maxsize=events + 10),
            "batch_size": batch_size,
        },
    )
    users = USERS
    n_users = len(users)
    track = client.track
    collector.command("reset")
    before = collector.stats()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(events):
        track(EVENT_KEY, users[i % n_users], {"plan": PLANS[i % 3]}, {"revenue": i})
    client.close()
    after = collector.wait_events(before["events"] + events, 120.0)
    t1 = time.perf_counter()
    cpu1 = time.process_time()
    return Run.between(events, t1 - t0, cpu1 - cpu0, before, after)


def section_rounds(
    collector: Collector, rounds: int, events: int, peer_events: int, peer: bool
) -> dict[str, list[float]]:
    """Run the rounds, print every run, then the medians, spreads and ratios."""
    print(
        f"## 8. delivered events/s, {rounds} interleaved rounds (asyncio; {events:,} events "
        f"per optitrack run, {peer_events:,} per optimizely-sdk run; fresh dicts per call)"
    )
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for n in range(rounds):
        for label, batch_size, transport in OPTITRACK_CONFIGS:
            run = anyio.run(optitrack_run, collector, events, batch_size, transport)
            rates.setdefault(label, []).append(run.events_per_s)
            cpu.setdefault(label, []).append(run.cpu_us_per_event)
            print(f"  round {n + 1} {label:<32} {run.line()}")
        if peer:
            run = optimizely_run(collector, peer_events, 100)
            rates.setdefault(PEER, []).append(run.events_per_s)
            cpu.setdefault(PEER, []).append(run.cpu_us_per_event)
            print(f"  round {n + 1} {PEER:<32} {run.line()}")
    print()
    print("  median events/s (every round); client CPU us per event (every round):")
    for label, values in rates.items():
        print(
            f"  {label:<32} {median(values):>9,.0f}  {spread(values, '{:,.0f}')}"
            f"  {median(cpu[label]):6.2f}  {spread(cpu[label])}"
        )
    if PEER in rates:
        base = median(rates[PEER])
        print(f"  ratios to {PEER} (median of the rounds; each round's own ratio):")
        for label, _, _ in OPTITRACK_CONFIGS:
            each = [a / b for a, b in zip(rates[label], rates[PEER], strict=True)]
            print(f"  {label:<32} {median(rates[label]) / base:5.1f}x  {spread(each, '{:.1f}')}")
    for lean, httpx_label in ((0, 1), (2, 3)):
        a, b = OPTITRACK_CONFIGS[lean][0], OPTITRACK_CONFIGS[httpx_label][0]
        each = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        print(f"  lean / httpx, {a.split(',')[0]:<25} {median(each):5.2f}x  {spread(each)}")
    print()
    return rates
