"""Benchmark ``optitrack send`` against the same file sent through optimizely-sdk.

Every figure is printed, never asserted. In one run, against one Events API stand-in (a
separate process on 127.0.0.1, counting by uuid):

1. a JSON Lines file of ``--lines`` conversions is generated (users, plans, revenue, a
   timestamp each);
2. ``optitrack send`` imports it, called in-process (``send()``, batch size 1000, the
   command's default), until the stand-in has received every event;
3. the same, as a subprocess (``python -m optitrack send FILE --quiet``), once;
4. optimizely-sdk 5.7.0 sends the same lines: a loop that parses each line
   (``json.loads``) and calls ``track``, its ``BatchEventProcessor`` with
   ``batch_size=100`` (its queue large enough to hold every event) and a dispatcher that
   posts to the stand-in as its default one does, until the stand-in has them all.

It prints events/s for each (first line read to last event received), the ratio (target:
optitrack at least 10x optimizely-sdk's), and the peak RSS of the process that sent: the
import streams the file, so its memory does not grow with the file's size (try
``--lines 2000000``).

Run it from the repository root::

    python benchmarks/send.py                    # 200,000 lines
    python benchmarks/send.py --lines 20000      # quicker
    python benchmarks/send.py --memory --lines 7000000   # a 1 GB file's peak RSS
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import Collector, RequestsDispatcher, print_load, print_machine, table
from track import optimizely_installed

import optitrack
from optitrack._cli.send import quiet_refusals, send

DATAFILE = Path(optitrack.__file__).parent / "example_datafile.json"
PLANS = ("free", "pro", "team")


def generate(path: Path, lines: int) -> int:
    """Write ``lines`` conversions as JSON Lines; return the file's size in bytes."""
    t0 = 1_764_000_000_000
    with path.open("w") as out:
        for n in range(lines):
            if n % 3:
                record: dict[str, Any] = {"event_key": "signup", "user_id": f"user-{n % 50_000}"}
                record["tags"] = {"source": "import"}
            else:
                record = {"event_key": "purchase", "user_id": f"user-{n % 50_000}"}
                record["tags"] = {"revenue": 100 + n % 9_900}
            record["attributes"] = {"plan": PLANS[n % 3], "age": 18 + n % 50}
            record["timestamp"] = t0 + n
            out.write(json.dumps(record) + "\n")
    return path.stat().st_size


def rss_mb(who: int) -> float:
    """Peak resident set size, in MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def optitrack_in_process(collector: Collector, path: Path, lines: int) -> float:
    """Seconds for ``send()`` to import the file until the stand-in has every event."""
    collector.command("reset")
    client = optitrack.Client(DATAFILE, event_endpoint=collector.url, close_timeout=120)
    with path.open("rb") as stream:
        started = time.perf_counter()
        status = anyio.run(lambda: send(client, stream, "jsonl", progress=False, out=io.StringIO()))
    received = collector.wait_events(lines, 120.0)["events"]
    elapsed = time.perf_counter() - started
    if status != 0 or received != lines:
        raise SystemExit(f"optitrack send: status {status}, {received} of {lines} received")
    return elapsed


def optitrack_subprocess(collector: Collector, path: Path, lines: int) -> float:
    """Seconds for ``python -m optitrack send`` to import the file, all received."""
    collector.command("reset")
    command = [sys.executable, "-m", "optitrack", "send", str(path), "--quiet"]
    command += ["--endpoint", collector.url, "--datafile", str(DATAFILE)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    received = collector.wait_events(lines, 120.0)["events"]
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or received != lines:
        raise SystemExit(f"optitrack send exited {done.returncode}: {done.stderr}")
    return elapsed


def optimizely_sdk(collector: Collector, path: Path, lines: int) -> float:
    """Seconds for optimizely-sdk to parse and track every line, all received."""
    import queue

    from optimizely import optimizely as optimizely_module
    from optimizely.logger import NoOpLogger

    collector.command("reset")
    client = optimizely_module.Optimizely(
        datafile=DATAFILE.read_text(),
        event_dispatcher=RequestsDispatcher(collector.url),
        logger=NoOpLogger(),
        event_processor_options={"event_queue": queue.Queue(maxsize=lines + 10), "batch_size": 100},
    )
    track = client.track
    loads = json.loads
    started = time.perf_counter()
    with path.open("rb") as stream:
        for line in stream:
            record = loads(line)
            track(record["event_key"], record["user_id"], record["attributes"], record["tags"])
    client.close()  # joins its thread for at most 5 s; then wait for the rest
    received = collector.wait_events(lines, 600.0)["events"]
    elapsed = time.perf_counter() - started
    if received != lines:
        raise SystemExit(f"optimizely-sdk: {received} of {lines} received")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines in the file")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only the subprocess import, for its peak RSS against the file's size "
        "(try --lines 7000000, about 1 GB)",
    )
    args = parser.parse_args()
    print_machine("optitrack send vs optimizely-sdk track, one JSON Lines file", sys.argv)
    quiet_refusals()
    lines = args.lines
    with tempfile.TemporaryDirectory() as tmp, Collector(count_only=True) as collector:
        path = Path(tmp) / "conversions.jsonl"
        size = generate(path, lines)
        print(f"file: {lines:,} lines, {size / 1e6:.1f} MB")
        if args.memory:
            child = optitrack_subprocess(collector, path, lines)
            print(
                f"optitrack send, subprocess: {child:.2f} s, {lines / child:,.0f} events/s,"
                f" peak RSS {rss_mb(resource.RUSAGE_CHILDREN):.0f} MB"
            )
            print_load()
            return
        rss_before = rss_mb(resource.RUSAGE_SELF)
        ours = optitrack_in_process(collector, path, lines)
        rss_ours = rss_mb(resource.RUSAGE_SELF)
        child = optitrack_subprocess(collector, path, lines)
        rss_child = rss_mb(resource.RUSAGE_CHILDREN)
        rows = [
            ["run", "seconds", "events/s", "peak RSS"],
            [
                "optitrack send, in-process",
                f"{ours:.2f}",
                f"{lines / ours:,.0f}",
                f"{rss_ours:.0f} MB (before: {rss_before:.0f} MB)",
            ],
            [
                "optitrack send, subprocess",
                f"{child:.2f}",
                f"{lines / child:,.0f}",
                f"{rss_child:.0f} MB",
            ],
        ]
        theirs = None
        if optimizely_installed():
            theirs = optimizely_sdk(collector, path, lines)
            rows.append(
                [
                    "optimizely-sdk track, batch 100",
                    f"{theirs:.2f}",
                    f"{lines / theirs:,.0f}",
                    f"{rss_mb(resource.RUSAGE_SELF):.0f} MB (this process, after all)",
                ]
            )
    print(table(rows))
    print()
    if theirs is not None:
        print(
            f"target: >= 10x optimizely-sdk -> in-process {theirs / ours:.1f}x,"
            f" subprocess {theirs / child:.1f}x"
        )
    else:
        print("optimizely-sdk is not installed: its figure is skipped")
    print_load()


if __name__ == "__main__":
    main()
