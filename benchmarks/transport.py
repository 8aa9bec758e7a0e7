"""Benchmark one POST: the lean transport against httpx (and bare httpcore), same run.

The counting Events API stand-in runs in another process on 127.0.0.1 (``_collector.py
--count-only``). Each client sends ``--posts`` sequential keep-alive POSTs of a one-event
body (after a warm-up on the same connection), in interleaved rounds: lean, httpx,
httpcore, lean, ... on asyncio and on Trio. Printed per POST: the client process's CPU
(``time.process_time``) and the wall time (the stand-in's share included), the median of
the rounds and their spread.

- ``lean``: ``optitrack._delivery.transport.LeanTransport.post`` (h11 over anyio streams);
- ``httpx``: ``HttpxTransport.post`` over an ``httpx.AsyncClient`` as the client made it
  before (the sender's streamed read of the answer included);
- ``httpcore``: ``httpcore.AsyncConnectionPool.request``, the pool under httpx, alone.

Run it from the repository root::

    python benchmarks/transport.py            # 5 rounds of 2,000 POSTs, about 40 s
    python benchmarks/transport.py --quick    # 1 round of 300, a few seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpcore
import httpx
from _bench import Collector, median, print_load, print_machine, spread

from optitrack._delivery.transport import HttpxTransport, LeanTransport, Timeouts
from optitrack._events import batch_context

BACKENDS = ("asyncio", "trio")
KINDS = ("lean", "httpx", "httpcore")
TIMEOUTS = Timeouts.uniform(10.0, 0.5)
HEADERS = {
    "Content-Type": "application/json",
    "Idempotency-Key": "k",
    "X-Optitrack-Attempt": "1",
}
VISITOR = (
    b'{"visitor_id":"bench","attributes":[],"snapshots":[{"events":[{"entity_id":"30101",'
    b'"key":"purchase","timestamp":1,"uuid":"6a1b2c3d-0000-4000-8000-000000000001"}]}]}'
)


async def per_post(kind: str, url: str, posts: int, warmup: int) -> tuple[float, float]:
    """(CPU us, wall us) per POST for ``posts`` sequential POSTs with ``kind``."""
    ctx = batch_context(
        account_id="12001", project_id="111001", revision="42", anonymize_ip=False, endpoint=url
    )
    body = ctx.body([VISITOR])
    post: Callable[[], Awaitable[Any]]
    async with httpx.AsyncClient(timeout=10.0) as http:
        pool = httpcore.AsyncConnectionPool(max_connections=3)
        lean = LeanTransport(2)
        wrapped = HttpxTransport(http)
        if kind == "lean":

            async def post() -> Any:
                return await lean.post(url, body, HEADERS, TIMEOUTS)

        elif kind == "httpx":

            async def post() -> Any:
                return await wrapped.post(url, body, HEADERS, TIMEOUTS)

        else:

            async def post() -> Any:
                return await pool.request("POST", url, headers=list(HEADERS.items()), content=body)

        for _ in range(warmup):
            await post()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(posts):
            await post()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await lean.aclose()
        await pool.aclose()
    return cpu / posts * 1e6, wall / posts * 1e6


def main(argv: list[str]) -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 300 POSTs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--posts", type=int, default=2000)
    args = parser.parse_args(argv[1:])
    rounds, posts = (1, 300) if args.quick else (args.rounds, args.posts)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print_machine("optitrack transport benchmark", argv)
    print(f"{rounds} round(s) of {posts:,} sequential keep-alive POSTs per client and backend")
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}
    with Collector(count_only=True) as collector:
        print(f"stand-in: pid {collector.pid}, {collector.url} (separate process, counting)")
        for n in range(rounds):
            for backend in BACKENDS:
                for kind in KINDS:
                    c, w = anyio.run(per_post, kind, collector.url, posts, 50, backend=backend)
                    cpu.setdefault((backend, kind), []).append(c)
                    wall.setdefault((backend, kind), []).append(w)
                    print(
                        f"  round {n + 1} {backend:<7} {kind:<8} {c:7.1f} us CPU {w:7.1f} us wall"
                    )
    print()
    print("per POST, median of the rounds (each round):")
    for backend in BACKENDS:
        for kind in KINDS:
            cpus, walls = cpu[backend, kind], wall[backend, kind]
            print(
                f"  {backend:<7} {kind:<8} CPU {median(cpus):7.1f} us ({spread(cpus, '{:.0f}')})"
                f"   wall {median(walls):7.1f} us ({spread(walls, '{:.0f}')})"
            )
        ratio = median(cpu[backend, "httpx"]) / median(cpu[backend, "lean"])
        print(f"  {backend:<7} httpx / lean CPU: {ratio:.1f}x")
    print()
    print_load()


if __name__ == "__main__":
    main(sys.argv)
