"""A worker run by ``optitrack.run``: tracks COUNT events, says so, then waits for a signal.

Usage: signalled_worker.py DATAFILE ENDPOINT COUNT BACKEND. Prints ``tracked N``, then
runs until SIGTERM or SIGINT; prints ``stopped`` and the client's statistics as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

import optitrack


async def main(config: dict[str, Any], endpoint: str, count: int) -> None:
    client = optitrack.Client(config, event_endpoint=endpoint, close_timeout=20)
    try:
        async with client:
            for n in range(count):
                await client.track("purchase", f"user-{n}")
            print(f"tracked {count}", flush=True)
            await anyio.sleep_forever()
    finally:
        stats = client.statistics()
        print(
            "stopped",
            json.dumps(
                {
                    "delivered": stats.delivered,
                    "pending": stats.pending,
                    "dropped": dict(stats.dropped),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    path, endpoint, count, backend = sys.argv[1:]
    optitrack.run(main, json.loads(Path(path).read_text()), endpoint, int(count), backend=backend)
