"""The Events API stand-in as a separate process, for the benchmarks.

Serves ``optitrack.testing.EventsAPI(validate=False, record=False)`` with
:func:`optitrack.testing.serve` on 127.0.0.1, on a free port, so that the process under
test spends its CPU on the client alone. The benchmarks start it with
:class:`_bench.Collector`; run by hand, it is::

    python benchmarks/_collector.py [--backend asyncio|trio] [--count-only]

``--count-only`` serves ``EventsAPI(validate=False, parse=False, record=False)`` instead:
it does not parse bodies as JSON but picks their ``"uuid"`` values out with a regular
expression, so it still counts events and duplicate uuids without costing the client's
throughput the stand-in's JSON parsing (about 5-9 us of CPU per event here).

``--db PATH`` (or the ``OPTITRACK_COLLECTOR_DB`` environment variable, so that a benchmark
that starts it runs unchanged) stores the events in SQLite, as ``optitrack collector``
does; ``--db :memory:`` without a file. Compare a benchmark's figures with and without it
to see what the store costs the client (``docs/collector.md``).

It prints one JSON line, ``{"port": N}``, then reads commands from standard input, one a
line, and answers each with one JSON line:

- ``stats``: the stand-in's ``GET /v1/stats`` summary, plus ``cpu_s`` (this process's
  CPU seconds so far);
- ``wait_events N SECONDS``: the same, once at least ``N`` events were accepted or after
  ``SECONDS``;
- ``fail_all hang`` / ``fail_all reset`` / ``fail_all STATUS``: every request hangs, is
  reset, or is answered with ``STATUS`` (e.g. 503), until ``heal``;
- ``poison MARKER``: answer 400 to every body that contains ``MARKER``;
- ``heal``: clear ``fail_all`` and the poison rules;
- ``reset``: forget the counters and the uuids seen (faults stay);
- ``quit`` (or end of input): stop.

It stops by itself when its standard input closes, so it never outlives its benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import anyio
import anyio.to_thread

from optitrack.testing import EventsAPI, Hang, Reset, Respond, serve


def _stats(api: EventsAPI) -> dict[str, Any]:
    data = api.statistics().as_dict()
    data["cpu_s"] = time.process_time()
    return data


async def _command(api: EventsAPI, line: str) -> dict[str, Any] | None:
    words = line.split()
    if not words or words[0] == "quit":
        return None
    verb, args = words[0], words[1:]
    if verb == "stats":
        return _stats(api)
    if verb == "wait_events":
        target, seconds = int(args[0]), float(args[1])
        with anyio.move_on_after(seconds):
            await api.wait_for_events(target)
        return _stats(api)
    if verb == "fail_all":
        kind = args[0]
        if kind == "hang":
            api.fail_all(Hang())
        elif kind == "reset":
            api.fail_all(Reset())
        else:
            api.fail_all(Respond(int(kind)))
        return {"ok": True}
    if verb == "poison":
        marker = args[0].encode()
        api.fail_when(lambda body: marker in body, Respond(400))
        return {"ok": True}
    if verb == "heal":
        api.heal()
        return {"ok": True}
    if verb == "reset":
        api.reset()
        return {"ok": True}
    return {"error": f"unknown command: {line.strip()!r}"}


async def main(count_only: bool = False, db: str | None = None) -> None:
    """Serve the stand-in and answer commands until standard input closes.

    Args:
        count_only: Count events and duplicates by their ``"uuid"`` values, found with a
            regular expression, instead of parsing bodies as JSON.
        db: Store the events in this SQLite database (not with ``count_only``).
    """
    api = EventsAPI(
        validate=False, parse=not count_only, record=False, db=None if count_only else db
    )
    async with serve(api, host="127.0.0.1", port=0) as server:
        print(json.dumps({"port": server.port}), flush=True)
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            answer = await _command(api, line)
            if answer is None:
                return
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--count-only", action="store_true", help="count uuids (and duplicates), do not parse"
    )
    parser.add_argument("--profile", metavar="PATH", help="write a cProfile of the run to PATH")
    parser.add_argument(
        "--db",
        default=os.environ.get("OPTITRACK_COLLECTOR_DB") or None,
        help="store the events in this SQLite database (':memory:' for none)",
    )
    args = parser.parse_args()
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            anyio.run(main, args.count_only, args.db, backend=args.backend)
        profile.dump_stats(args.profile)
    else:
        anyio.run(main, args.count_only, args.db, backend=args.backend)
