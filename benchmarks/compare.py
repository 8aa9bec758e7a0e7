"""Compare the hot paths of two checkouts of optitrack, interleaved, on this machine.

A change on a hot path (track, decide, the worker) is measured against the code before
it in the same session: one full ``track.py`` run and then another minutes later differ
by more than most changes do (this VM's speed drifts). This script alternates the two
checkouts round by round, each in a fresh process, against the same stand-ins, and
prints per round:

* ``track``: the median caller time of ``await client.track(...)`` (100,000 calls after
  a warm-up), as ``track.py`` section 1 times it;
* ``drain``: the median of 5 ``aclose()`` of 10,000 queued events to the parsing
  stand-in, as ``track.py`` section 5;
* ``decide``: the median per-call time of ``await user.decide(flag)`` with its impression
  and without one (``DISABLE_DECISION_EVENT``), 3 loops of 50,000 calls, as
  ``decide.py``.

Then the median of each figure over the rounds, per checkout. Nothing is asserted.

Make the other checkout with git, then run from the repository root::

    git worktree add /tmp/optitrack-before HEAD~1
    python benchmarks/compare.py /tmp/optitrack-before          # this tree vs that one
    python benchmarks/compare.py /tmp/optitrack-before --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Run inside the measured checkout: its optitrack, and its benchmarks' own helpers.
_CHILD = r"""
import json, statistics, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/benchmarks"]
import anyio
import optitrack
assert optitrack.__file__.startswith(root), optitrack.__file__
from _bench import Collector
import decide, track

out = {}
with Collector() as parsing, Collector(count_only=True) as counting:
    for backend in ("asyncio", "trio"):
        sizes = track.Sizes(**{**track.QUICK.__dict__, "calls": 100_000, "warmup": 10_000})
        caller, _ = anyio.run(track.optitrack_caller_time, counting.url, sizes, backend=backend)
        out[f"track {backend} (us)"] = caller.median
        drains = [
            anyio.run(track.optitrack_drain, parsing, 10_000, backend=backend)[0]
            for _ in range(5)
        ]
        out[f"drain {backend} (ms)"] = statistics.median(drains) * 1000
        for quiet, label in ((False, "decide"), (True, "decide, no impression")):
            runs, _ = anyio.run(decide.optitrack_runs, counting, 50_000, 3, quiet, backend=backend)
            out[f"{label} {backend} (us)"] = statistics.median(r.median_us for r in runs)
print(json.dumps(out))
"""


def measure(root: Path) -> dict[str, float]:
    """One round of every figure for the checkout at ``root``, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> None:
    """Alternate the two checkouts for ``--rounds`` rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per checkout")
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "this": HERE}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for round_ in range(1, args.rounds + 1):
        for name, root in trees.items():
            for key, value in measure(root).items():
                figures[name].setdefault(key, []).append(value)
            print(f"round {round_}: {name} done", flush=True)
    keys = list(figures["this"])
    print(f"\n{'figure':<40} {'before':>10} {'this':>10} {'change':>8}")
    for key in keys:
        before = statistics.median(figures["before"][key])
        this = statistics.median(figures["this"][key])
        print(f"{key:<40} {before:>10.2f} {this:>10.2f} {this / before - 1:>+8.1%}")


if __name__ == "__main__":
    main(sys.argv[1:])
