"""``optitrack collector``: serve the Events API stand-in and its results view.

Owns: the collector command. Must not touch: the stand-in itself (``optitrack.testing``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

import anyio

__all__ = ["collector", "register"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``collector`` to the command line."""
    parser = commands.add_parser(
        "collector",
        parents=[common],
        help="serve the Events API stand-in and its results view",
        description="Serve a local Events API: POST events to it, read the results at /.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="the port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="only parse bodies, do not validate them (twice as fast, for benchmarks)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(collector, args.host, args.port, args.validate, backend=args.backend)
    return 0


async def collector(host: str, port: int, validate: bool = True, out: Any = None) -> None:
    """Serve the Events API stand-in until interrupted."""
    out = out or sys.stdout
    from ..testing import EventsAPI, serve

    async with serve(EventsAPI(validate=validate), host=host, port=port) as server:
        print(f"Events API stand-in: POST {server.url}", file=out, flush=True)
        print(f"results: {server.base_url}/  (JSON: {server.base_url}/v1/stats)", file=out)
        print("Ctrl-C to stop.", file=out, flush=True)
        await anyio.sleep_forever()
