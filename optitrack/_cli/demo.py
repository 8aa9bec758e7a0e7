"""``optitrack demo``: decide and track for many users against a local stand-in, and report.

Owns: the demo. Must not touch: the library's internals.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from typing import Any

import anyio

from .._client import Client
from .._version import __version__
from ._common import example_datafile, positive

__all__ = ["demo", "register"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the command line."""
    parser = commands.add_parser(
        "demo",
        parents=[common],
        help="track conversions to a local Events API stand-in and report",
        description="Decide a flag for many users, track their conversions through the real "
        "client to an Events API stand-in on 127.0.0.1, then print what arrived.",
    )
    parser.add_argument(
        "--users", type=positive, default=1_000, help="how many users (default: %(default)s)"
    )
    parser.add_argument(
        "--events",
        type=positive,
        default=5_000,
        help="how many conversions in all (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive,
        default=1_000,
        help="the client's batch size (default: %(default)s)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return anyio.run(
        lambda: demo(users=args.users, events=args.events, batch_size=args.batch_size),
        backend=args.backend,
    )


async def demo(*, users: int, events: int, batch_size: int, out: Any = None) -> int:
    """Decide a flag for many users, then track their conversions, over loopback HTTP.

    Every user gets ``decide("new_checkout")`` (an impression), then ``events``
    conversions are tracked for random users, the treatment converting a little more
    often. Everything goes through the real client to the Events API stand-in, which
    then reports what it received, per variation.

    Args:
        users: How many users.
        events: How many conversions in all.
        batch_size: The client's batch size.
        out: Where to print.

    Returns:
        The exit status: 0 when every event arrived exactly once.
    """
    from ..testing import EventsAPI, serve

    def say(line: str = "") -> None:
        print(line, file=out or sys.stdout, flush=True)

    datafile = example_datafile()
    api = EventsAPI()
    rng = random.Random(7)
    plans = ("free", "pro", "team")
    async with serve(api) as server:
        say(f"optitrack {__version__} demo")
        say(f"  Events API stand-in listening on {server.url}")
        started = time.perf_counter()
        caller: list[float] = []
        async with Client(datafile, event_endpoint=server.url, batch_size=batch_size) as client:
            contexts = [
                client.create_user_context(f"user-{n}", {"plan": plans[n % 3], "age": 18 + n % 50})
                for n in range(users)
            ]
            enabled = [(await user.decide("new_checkout")).enabled for user in contexts]
            decided = time.perf_counter() - started
            tags: dict[str, object]
            for _ in range(events):
                n = rng.randrange(users)
                if rng.random() < (0.6 if enabled[n] else 0.5):
                    key, tags = "purchase", {"revenue": rng.randrange(100, 10_000)}
                else:
                    key, tags = "signup", {"source": "demo"}
                t0 = time.perf_counter()
                await contexts[n].track_event(key, tags)
                caller.append(time.perf_counter() - t0)
            tracked = time.perf_counter() - started - decided
            drain_started = time.perf_counter()
        drained = time.perf_counter() - drain_started
        elapsed = time.perf_counter() - started
        ledger = client.statistics()
        stats = api.statistics()

    caller.sort()
    say(f"  decided new_checkout for {users:,} users in {decided:.3f} s (one impression each)")
    say(f"  tracked {events:,} conversions in {tracked:.3f} s")
    say(
        f"  caller time of await track(): median {statistics.median(caller) * 1e6:.1f} us,"
        f" p99 {caller[int(len(caller) * 0.99)] * 1e6:.1f} us"
    )
    say(f"  drained on close in {drained:.3f} s")
    say("")
    say("What the collector received")
    say(f"  events       {stats.events:,} ({stats.duplicates} duplicate uuids)")
    say(f"  requests     {stats.requests:,} ({stats.batches:,} batches accepted)")
    per_event = stats.bytes_received / max(stats.events, 1)
    say(f"  bytes        {stats.bytes_received:,} ({per_event:.0f} per event)")
    say(f"  impressions  {stats.impressions:,}")
    for key, count in sorted(stats.conversions_by_event.items()):
        say(f"  {key:<12} {count:,} conversions")
    say(f"  revenue      {stats.revenue:,} (minor units)")
    say(f"  throughput   {stats.events / elapsed:,.0f} events/s, first call to delivered")
    say("")
    say("Results per variation (conversions count after the user's first impression)")
    say(f"  {'rule':<24} {'variation':<10} {'visitors':>8} {'purchases':>10} {'revenue':>12}")
    for arm in stats.variations:
        say(
            f"  {arm.experiment:<24} {arm.variation:<10} {arm.visitors:>8,}"
            f" {arm.conversions.get('purchase', 0):>10,} {arm.revenue:>12,}"
        )
    say("")
    say(
        f"Ledger: accepted {ledger.accepted:,} = delivered {ledger.delivered:,}"
        f" + dropped {ledger.dropped_total:,} + pending {ledger.pending:,}"
    )
    expected = users + events
    ok = stats.events == expected and stats.duplicates == 0 and ledger.delivered == expected
    say("OK" if ok else "MISMATCH: not every event arrived exactly once")
    return 0 if ok else 1
