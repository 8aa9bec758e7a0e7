"""The ``optitrack`` command: ``demo`` and ``collector``.

Owns: the command line. Must not touch: the library's internals (it uses the public API
and ``optitrack.testing``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import anyio

from ._client import Client
from ._version import __version__

__all__ = ["main"]


def example_datafile() -> dict[str, Any]:
    """The example datafile bundled with optitrack (a flag, an experiment, a rollout)."""
    text = resources.files("optitrack").joinpath("example_datafile.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


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
    from .testing import EventsAPI, serve

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


async def collector(host: str, port: int, validate: bool = True, out: Any = None) -> None:
    """Serve the Events API stand-in until interrupted."""
    out = out or sys.stdout
    from .testing import EventsAPI, serve

    async with serve(EventsAPI(validate=validate), host=host, port=port) as server:
        print(f"Events API stand-in: POST {server.url}", file=out, flush=True)
        print(f"results: {server.base_url}/  (JSON: {server.base_url}/v1/stats)", file=out)
        print("Ctrl-C to stop.", file=out, flush=True)
        await anyio.sleep_forever()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optitrack`` command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="optitrack", description=__doc__)
    parser.add_argument("--version", action="version", version=f"optitrack {__version__}")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="track conversions to a local Events API stand-in and report"
    )
    run_demo.add_argument("--users", type=_positive, default=1_000)
    run_demo.add_argument("--events", type=_positive, default=5_000)
    run_demo.add_argument("--batch-size", type=_positive, default=1_000)
    run_collector = commands.add_parser(
        "collector", help="serve the Events API stand-in and its results view"
    )
    run_collector.add_argument("--host", default="127.0.0.1")
    run_collector.add_argument("--port", type=int, default=8765)
    run_collector.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="only parse bodies, do not validate them (twice as fast, for benchmarks)",
    )
    args = parser.parse_args(argv)
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        parser.error("--backend trio needs Trio: pip install 'optitrack[trio]'")

    if args.command == "demo":
        return anyio.run(
            lambda: demo(users=args.users, events=args.events, batch_size=args.batch_size),
            backend=args.backend,
        )
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(collector, args.host, args.port, args.validate, backend=args.backend)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
