"""``optitrack track``: send one conversion, and say what became of it.

Owns: the track command. Must not touch: the client.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio

from .._client import Client
from ._records import typed
from .send import UsageError, add_client_options, make_client, quiet_refusals

__all__ = ["register", "track"]


def _pair(text: str) -> tuple[str, Any]:
    """An ``argparse`` type: ``KEY=VALUE``, the value typed as :func:`._records.typed` says."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text!r}")
    return key, typed(value)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``track`` to the command line."""
    parser = commands.add_parser(
        "track",
        parents=[common],
        help="send one conversion and report what became of it",
        description="Track one conversion of EVENT for USER, send it, and print the outcome. "
        "Exit status: 0 when delivered, 1 when refused or dropped, 2 for a usage error.",
    )
    parser.add_argument("event", metavar="EVENT", help="the event key (from the datafile)")
    parser.add_argument("user", metavar="USER", help="the user id")
    parser.add_argument(
        "--attribute",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a user attribute (repeat for more); VALUE is read as JSON when it parses "
        "(42, 4.5, true), else as a string",
    )
    parser.add_argument(
        "--tag",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an event tag (repeat for more), VALUE read as for --attribute; revenue=1999 "
        "is revenue in minor units",
    )
    parser.add_argument(
        "--timestamp",
        type=int,
        default=None,
        metavar="MS",
        help="when the event happened, in ms since the epoch (default: now)",
    )
    add_client_options(parser)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    quiet_refusals()
    try:
        client = make_client(args)
    except UsageError as exc:
        print(f"optitrack track: error: {exc}", file=sys.stderr)
        return 2
    return anyio.run(
        lambda: track(
            client,
            args.event,
            args.user,
            dict(args.attribute) or None,
            dict(args.tag) or None,
            args.timestamp,
        ),
        backend=args.backend,
    )


async def track(
    client: Client,
    event_key: str,
    user_id: str,
    attributes: dict[str, Any] | None,
    tags: dict[str, Any] | None,
    timestamp: int | None,
    out: Any = None,
) -> int:
    """Track one conversion with ``client`` (not yet entered), close it, and report.

    Returns:
        The exit status: 0 when the event was delivered, 1 when refused or dropped.
    """
    out = out or sys.stdout
    async with client:
        result = await client._intake.track_at(event_key, user_id, attributes, tags, timestamp)
    if not result.accepted:
        print(f"refused: {result.reason}: {result.message}", file=out)
        return 1
    stats = client.statistics()
    if stats.delivered == 1:
        print(f"sent: {event_key} for {user_id!r} to {client.event_endpoint}", file=out)
        return 0
    reasons = ", ".join(f"{reason} {n}" for reason, n in stats.dropped.items() if n)
    print(f"dropped: {reasons or 'not delivered'}", file=out)
    return 1
