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
from ._common import Progress, example_datafile, positive
from .results import print_results

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
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        help="the seed of the random conversions: the same seed prints the same results, "
        "on either backend (default: %(default)s)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="do not draw the progress bar",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return anyio.run(
        lambda: demo(
            users=args.users,
            events=args.events,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=args.progress,
        ),
        backend=args.backend,
    )


async def demo(
    *,
    users: int,
    events: int,
    batch_size: int,
    seed: int = 7,
    progress: bool = True,
    out: Any = None,
) -> int:
    """Decide a flag for many users, then track their conversions, over loopback HTTP.

    Every user gets ``decide("new_checkout")`` (an impression), then ``events``
    conversions are tracked for random users, the treatment converting a little more
    often. Everything goes through the real client to the Events API stand-in, which
    then reports what it received, per variation.

    Args:
        users: How many users.
        events: How many conversions in all.
        batch_size: The client's batch size.
        seed: The seed of the random choices, drawn in one task in a fixed order, so the
            results do not depend on scheduling or the backend.
        progress: Draw a progress bar on standard error.
        out: Where to print.

    Returns:
        The exit status: 0 when every event arrived exactly once.
    """
    from ..testing import EventsAPI, serve

    def say(line: str = "") -> None:
        print(line, file=out or sys.stdout, flush=True)

    datafile = example_datafile()
    api = EventsAPI(db=":memory:", datafile=datafile, record=False)
    rng = random.Random(seed)
    plans = ("free", "pro", "team")
    async with serve(api) as server:
        say(f"optitrack {__version__} demo")
        say(f"  Events API stand-in listening on {server.url}")
        say("  An impression: a user was decided into a variation (decide sends one).")
        say("  A conversion: a tracked event (purchase, signup) by a user, after that.")
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
            with Progress("tracking", events, enabled=progress) as bar:
                for done in range(events):
                    n = rng.randrange(users)
                    if rng.random() < (0.6 if enabled[n] else 0.5):
                        key, tags = "purchase", {"revenue": rng.randrange(100, 10_000)}
                    else:
                        key, tags = "signup", {"source": "demo"}
                    t0 = time.perf_counter()
                    await contexts[n].track_event(key, tags)
                    caller.append(time.perf_counter() - t0)
                    if done % 100 == 99:
                        bar.advance(100)
                bar.advance(events % 100)
            tracked = time.perf_counter() - started - decided
            drain_started = time.perf_counter()
        drained = time.perf_counter() - drain_started
        elapsed = time.perf_counter() - started
        ledger = client.statistics()
        stats = api.statistics()
        assert api.store is not None
        stored = await anyio.to_thread.run_sync(api.store.count)
        results = await anyio.to_thread.run_sync(api.results)
    api.store.close()

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
    say("Results (conversions count from the user's first impression on, by timestamp)")
    print_results(results, out=out or sys.stdout)
    say("")
    say(
        f"Ledger: accepted {ledger.accepted:,} = delivered {ledger.delivered:,}"
        f" + dropped {ledger.dropped_total:,} + pending {ledger.pending:,}"
    )
    expected = users + events
    ok = (
        stats.events == expected
        and stored == expected
        and stats.duplicates == 0
        and ledger.delivered == expected
    )
    say("OK" if ok else "MISMATCH: not every event arrived exactly once")
    return 0 if ok else 1
