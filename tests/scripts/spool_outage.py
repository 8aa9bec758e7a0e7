"""Accept events into a spool while the endpoint refuses every connection, then wait.

Usage: spool_outage.py DATAFILE SPOOL ENDPOINT COUNT BACKEND. Prints ``accepted N`` once
every event is accepted and written to the spool, then waits to be killed (SIGKILL).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

import optitrack


async def main(config: dict[str, Any], spool: str, endpoint: str, count: int) -> None:
    async with optitrack.Client(
        config, event_endpoint=endpoint, spool=spool, max_queue_size=1000, batch_size=100
    ) as client:
        accepted = 0
        for n in range(count):
            accepted += bool(await client.track("purchase", f"user-{n}", None, {"n": n}))
        await client.flush(timeout=0)  # writes the journal out
        print(f"accepted {accepted}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    path, spool, endpoint, count, backend = sys.argv[1:]
    anyio.run(
        main, json.loads(Path(path).read_text()), spool, endpoint, int(count), backend=backend
    )
