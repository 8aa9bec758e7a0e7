"""Count the CPU instructions of the hot paths, for this checkout and another.

Timings on a shared virtual machine drift by tens of percent from one minute to the next;
instruction counts do not. This script runs each workload under valgrind's callgrind
(which counts every instruction the process executes, the same count for the same code
and input), once with no calls and once with ``--calls`` calls, and prints the difference
per call. Everything else (the interpreter's start, the imports, the client's setup, the
user contexts made beforehand) is the same in both runs and cancels out.

The first three workloads run in a client whose queue holds everything (nothing is sent,
so only the caller's path is counted):

* ``track``: ``await client.track("purchase", user_id, {"plan": PLAN}, {"revenue": i})``
  with fresh dicts per call, as ``track.py --rounds``;
* ``decide``: ``await user.decide("new_checkout")`` with its impression, a fresh user
  context per call (``{"plan": "pro", "age": 34}``), as ``decide.py``;
* ``decide, no impression``: the same with ``DISABLE_DECISION_EVENT``.

The last two deliver: the same ``track`` calls, then ``await client.flush()``, to the
counting stand-in (``_collector.py --count-only``), which runs in its own process outside
callgrind, so that only the client's instructions are counted: the caller's path, and the
worker's (taking batches, building bodies, the sender, the transport):

* ``track, delivered``: at the default ``batch_size`` (1,000);
* ``track, delivered, batch 10``: ten events a batch, where the worker's cost per batch
  shows (a hundred times as many batches).

How often the event loop turns while a request is out depends on timing, so these two
move by a few tenths of a percent from run to run; the first three repeat exactly.

Instructions are not time (a cache miss costs more than an add), but for the same
workload on the same interpreter, fewer instructions is faster: it tells whether a change
on a hot path helped, where a timing would need many interleaved rounds. Timings stay
in ``track.py``, ``decide.py`` and ``compare.py``.

Run it from the repository root (valgrind is Debian's ``valgrind`` package; without it
the script says so and stops)::

    python benchmarks/instructions.py                      # this tree
    git worktree add /tmp/optitrack-before HEAD~1
    python benchmarks/instructions.py /tmp/optitrack-before  # and that one, side by side
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "benchmarks"))

from _bench import Collector, print_machine  # noqa: E402

# Each workload, and the batch size its client sends with (None: nothing is sent).
WORKLOADS: dict[str, int | None] = {
    "track": None,
    "decide": None,
    "decide, no impression": None,
    "track, delivered": 1000,
    "track, delivered, batch 10": 10,
}

# Run inside the measured checkout: its optitrack, and its benchmarks' datafile.
_CHILD = r"""
import sys
root, workload, calls, made = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
url, batch = sys.argv[5], int(sys.argv[6])
sys.path[:0] = [root, root + "/benchmarks"]
import gc, anyio, optitrack
from _bench import datafile_text

FLAG, ATTRIBUTES, PLANS = "new_checkout", {"plan": "pro", "age": 34}, ("pro", "free", "team")
QUIET = [optitrack.DecideOption.DISABLE_DECISION_EVENT]

async def main():
    if batch:  # delivered to the stand-in, batch by batch
        options = dict(event_endpoint=url, batch_size=batch, flush_interval=3600.0)
    else:  # held: the queue takes everything and nothing is sent
        options = dict(
            event_endpoint="http://127.0.0.1:9/v1/events", max_queue_size=10_000_000,
            max_queue_bytes=3_000_000_000, batch_size=10_000_000, max_batch_bytes=3_500_000,
            flush_interval=3600.0, close_timeout=0.0,
        )
    async with optitrack.Client(datafile_text(), **options) as client:
        for n in range(500):  # warm up: every cache filled, every plan made
            await client.create_user_context(f"user-{n}", ATTRIBUTES).decide(FLAG)
            await client.create_user_context(f"user-{n}", ATTRIBUTES).decide(FLAG, QUIET)
            await client.track("purchase", f"user-{n}", {"plan": PLANS[n % 3]}, {"revenue": n})
        users = [client.create_user_context(f"user-{n}", ATTRIBUTES) for n in range(made)]
        ids = [f"user-{n}" for n in range(made)]
        gc.collect()
        gc.disable()
        if batch:
            await client.flush()
        if workload.startswith("track"):
            track = client.track
            for n in range(calls):
                await track("purchase", ids[n], {"plan": PLANS[n % 3]}, {"revenue": n})
            if batch:
                assert (await client.flush()).complete
        elif workload == "decide":
            for user in users[:calls]:
                await user.decide(FLAG)
        else:
            for user in users[:calls]:
                await user.decide(FLAG, QUIET)
        gc.enable()
        await client.aclose(timeout=0)

anyio.run(main)
"""


def count(root: Path, workload: str, calls: int, made: int, url: str) -> int:
    """The instructions of one run of the child under callgrind."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            str(root),
            workload,
            str(calls),
            str(made),
            url,
            str(WORKLOADS[workload] or 0),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # String hashes are seeded per process, and a dict's probes with them: fixed,
        # two runs of the same code count the same.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"the run failed ({root}, {workload}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_call(root: Path, workload: str, calls: int, url: str) -> float:
    """Instructions per call: a run with ``calls`` calls less one with none."""
    with ThreadPoolExecutor(2) as pool:
        none, some = pool.map(lambda n: count(root, workload, n, calls, url), (0, calls))
    return (some - none) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", nargs="?", type=Path, help="another checkout of optitrack")
    parser.add_argument("--calls", type=int, default=5000, help="calls per counted run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    roots = {"this": HERE} | ({"other": args.other.resolve()} if args.other else {})
    print_machine("Instructions per call, counted by callgrind", sys.argv)
    if args.other:
        print(f"other: {roots['other']}")
    print(f"{args.calls:,} calls per counted run, less a run with none\n")
    with Collector(count_only=True) as collector:
        for workload in WORKLOADS:
            figures = {
                name: per_call(root, workload, args.calls, collector.url)
                for name, root in roots.items()
            }
            line = f"{workload:<28} this {figures['this']:>9,.0f}"
            if "other" in figures:
                change = figures["this"] / figures["other"] - 1
                line += f"   other {figures['other']:>9,.0f}   change {change:+.1%}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
