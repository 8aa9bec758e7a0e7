"""``optitrack collector``: a persistent Events API stand-in, with its results.

Owns: the collector command (its options, the refusal of an open address without a
token, the listening line). Must not touch: the stand-in itself (``optitrack.testing``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
from typing import Any

import anyio

from ._common import naming_datafile

__all__ = ["collector", "register"]

#: The database file used when ``--db`` is not given, in the current folder.
DEFAULT_DB = "optitrack-events.db"
IDLE_TIMEOUT = 15.0
READ_TIMEOUT = 10.0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``collector`` to the command line."""
    parser = commands.add_parser(
        "collector",
        parents=[common],
        help="collect events in SQLite and serve their results",
        description="Serve a local Events API: POST events to /v1/events; they are stored in "
        "SQLite, de-duplicated by uuid; read the results at / (HTML) and /v1/results (JSON).",
    )
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help="the SQLite database file, created when missing; ':memory:' keeps nothing "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on; a non-loopback one needs --token (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="the port to listen on, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' on every request (events and results)",
    )
    parser.add_argument(
        "--datafile",
        default=None,
        help="the project's datafile (a JSON file), to name experiments and variations",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT,
        help="seconds a kept-alive connection may stay idle (default: %(default)s)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        help="seconds a request's head may take in all, and its body may stall "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="only parse bodies, do not validate them (twice as fast, for benchmarks)",
    )
    parser.set_defaults(run=_run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.token:
        print(
            f"optitrack collector: error: --host {args.host} is not a loopback address:"
            " give a --token too (clients then send 'Authorization: Bearer TOKEN')",
            file=sys.stderr,
        )
        return 2
    try:
        datafile = naming_datafile(args.datafile)
    except ValueError as exc:
        print(f"optitrack collector: error: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(
                lambda: collector(
                    args.host,
                    args.port,
                    args.validate,
                    db=args.db,
                    token=args.token,
                    datafile=datafile,
                    idle_timeout=args.idle_timeout,
                    read_timeout=args.read_timeout,
                ),
                backend=args.backend,
            )
    except OSError as exc:
        print(f"optitrack collector: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def collector(
    host: str,
    port: int,
    validate: bool = True,
    out: Any = None,
    *,
    db: str = ":memory:",
    token: str | None = None,
    datafile: dict[str, Any] | None = None,
    idle_timeout: float | None = IDLE_TIMEOUT,
    read_timeout: float | None = READ_TIMEOUT,
) -> None:
    """Serve the collector until interrupted.

    Args:
        host: The address to listen on.
        port: The port (0: any free one).
        validate: Validate each body against the wire format.
        out: Where to print (default: standard output).
        db: The SQLite database, or ``":memory:"``.
        token: The bearer token required on every request, if any.
        datafile: The project's datafile, for names in the results.
        idle_timeout: Seconds a kept-alive connection may stay idle.
        read_timeout: Seconds a request's head may take in all, and its body may stall.
    """
    out = out or sys.stdout
    from ..testing import EventsAPI, serve

    api = EventsAPI(validate=validate, record=False, db=db, token=token, datafile=datafile)
    assert api.store is not None
    try:
        stored = await anyio.to_thread.run_sync(api.store.count)
        print(f"database: {db} ({stored:,} events stored)", file=out, flush=True)
        async with serve(
            api,
            host=host,
            port=port,
            allow_remote=not is_loopback(host),
            idle_timeout=idle_timeout,
            read_timeout=read_timeout,
        ) as server:
            print(f"listening on {server.base_url}: POST {server.url}", file=out, flush=True)
            print(f"results: {server.base_url}/ (JSON: {server.base_url}/v1/results)", file=out)
            print("Ctrl-C to stop.", file=out, flush=True)
            await anyio.sleep_forever()
    finally:
        api.store.close()
