"""Time the worker's own cost per batch, for this checkout and another, in alternating runs.

The worker is everything between the queue and the wire: waiting for a due batch, taking
it, building its body, the sender's bookkeeping, and accounting for its outcome. Here it
sends through a transport that answers 204 at once (no socket, no HTTP), so that only that
machinery is timed, apart from the transport's and the endpoint's costs.

Each run is a child process (``python -c``, with the measured checkout first on
``sys.path``): a ``BatchProcessor`` with ``batch_size=B`` and the default
``max_in_flight``; ``B`` serialized events are queued with ``put_nowait`` and the worker
given a turn, ``--batches`` times over, then ``flush()``. The figure is the process's CPU
time per batch, the ``put_nowait`` calls included (the same code in both checkouts). Runs
alternate between the two checkouts, so that the machine's drift falls on both alike;
each line prints the median of the runs and their spread.

Run it from the repository root::

    python benchmarks/worker.py                          # this tree alone
    git worktree add /tmp/optitrack-before HEAD~1
    python benchmarks/worker.py /tmp/optitrack-before    # and that one, alternating
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _bench import median, print_machine, spread, table

HERE = Path(__file__).resolve().parent.parent

_CHILD = r"""
import sys, time
root, backend, size, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path[:0] = [root]
import anyio
from anyio.lowlevel import checkpoint
from optitrack._delivery import BatchOptions, BatchProcessor
from optitrack._events import batch_context
from optitrack._delivery.transport import Answer
from optitrack._notifications import NotificationCenter

ITEM = (b'{"visitor_id":"user-1","attributes":[],"snapshots":[{"decisions":[],"events":'
        b'[{"entity_id":"15","key":"purchase","timestamp":1700000000000,"uuid":'
        b'"8d7e9f10-1c2b-4a5d-9e8f-0a1b2c3d4e5f","tags":{"revenue":42},"revenue":42}]}]}')


class Instant:
    async def post(self, url, body, headers, timeouts):
        return Answer(204, {}, b"")

    async def aclose(self):
        pass


async def main():
    ctx = batch_context(account_id="1", project_id="2", revision="3", anonymize_ip=False,
                        endpoint="http://127.0.0.1:9/v1/events")
    processor = BatchProcessor(BatchOptions(batch_size=size, flush_interval=3600.0),
                               NotificationCenter())
    put = processor.queue.put_nowait
    async with anyio.create_task_group() as tg:
        await tg.start(processor.run, Instant())
        for _ in range(20):  # warm up
            for _ in range(size):
                put(ctx, ITEM)
            await checkpoint()
        await processor.flush()
        started = time.process_time()
        for _ in range(batches):
            for _ in range(size):
                put(ctx, ITEM)
            await checkpoint()
        assert (await processor.flush()).complete
        cpu = time.process_time() - started
        processor.close(0)
    stats = processor.statistics()
    assert stats.delivered == (batches + 20) * size, stats
    print(cpu / batches * 1e6)

anyio.run(main, backend=backend)
"""


def run(root: Path, backend: str, size: int, batches: int) -> float:
    """CPU microseconds per batch, in one child process."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), backend, str(size), str(batches)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"the run failed ({root}, {backend}, {size}):\n{result.stderr[-2000:]}")
    return float(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", nargs="?", type=Path, help="another checkout of optitrack")
    parser.add_argument("--runs", type=int, default=5, help="runs per checkout and line")
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    args = parser.parse_args()
    roots = {"this": HERE} | ({"other": args.other.resolve()} if args.other else {})
    print_machine("The worker's CPU per batch, instant transport", sys.argv)
    if args.other:
        print(f"other: {roots['other']}")
    rows = [["backend", "batch_size", *(f"{name} µs/batch" for name in roots)]]
    if args.other:
        rows[0].append("this / other (CPU)")
    for backend in ("asyncio", "trio"):
        for size in (10, 500):
            batches = max(args.events // size, 50)
            figures: dict[str, list[float]] = {name: [] for name in roots}
            for n in range(args.runs):
                order = list(roots.items())
                if n % 2:
                    order.reverse()
                for name, root in order:
                    figures[name].append(run(root, backend, size, batches))
            row = [backend, str(size)]
            row += [f"{median(v):.1f} {spread(v, '{:.1f}')}" for v in figures.values()]
            if args.other:
                row.append(f"{median(figures['this']) / median(figures['other']):.2f}")
            rows.append(row)
            print(f"  {backend} batch {size}: done", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
