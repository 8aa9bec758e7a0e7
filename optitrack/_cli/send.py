"""``optitrack send``: import conversions from a JSON Lines or CSV file.

Owns: the send command, and what it shares with ``track``: the ``--endpoint`` and
``--datafile`` options and making the client from them. Must not touch: the file formats
(:mod:`._records`), the client.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.lowlevel

from .._client import Client
from .._delivery.options import DEFAULT_BATCH_SIZE
from .._exceptions import DatafileError
from ._common import Progress, positive
from ._records import FORMATS, BadLine, csv_parser, jsonl_parser, line_chunks

__all__ = ["add_client_options", "make_client", "quiet_refusals", "register", "send"]

#: Seconds ``send`` and ``track`` wait on close for the last events to be delivered.
DEFAULT_SEND_CLOSE_TIMEOUT = 60.0


class UsageError(Exception):
    """A command line that cannot run (exit status 2), with the message to print."""


def quiet_refusals() -> None:
    """Keep the client's refusal warnings off standard error: the command reports them.

    Without a handler of its own, logging would print each one through its last resort,
    beside the command's own line for it.
    """
    logger = logging.getLogger("optitrack")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--endpoint``, ``--datafile`` and ``--close-timeout`` to a command."""
    parser.add_argument(
        "--endpoint",
        required=True,
        metavar="URL",
        help="the Events API URL to send to (required: there is no default, so that nothing "
        "reaches Optimizely by mistake), e.g. http://127.0.0.1:8765/v1/events",
    )
    parser.add_argument(
        "--datafile",
        required=True,
        metavar="PATH",
        help="the project datafile (JSON) the events are checked against and made for",
    )
    parser.add_argument(
        "--close-timeout",
        type=float,
        default=DEFAULT_SEND_CLOSE_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait at the end for the last events to be delivered "
        "(default: %(default)s)",
    )


def make_client(args: argparse.Namespace, **options: Any) -> Client:
    """The client a command sends with.

    Raises:
        UsageError: The datafile cannot be read or is invalid, or the endpoint is not an
            http(s) URL.
    """
    path = Path(args.datafile)
    if not path.is_file():
        raise UsageError(f"--datafile {args.datafile}: no such file")
    try:
        return Client(
            path,
            event_endpoint=args.endpoint,
            close_timeout=args.close_timeout,
            **options,
        )
    except DatafileError as exc:
        raise UsageError(f"--datafile {args.datafile}: {exc}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``send`` to the command line."""
    parser = commands.add_parser(
        "send",
        parents=[common],
        help="send conversions from a JSON Lines or CSV file",
        description="Send the conversions of a JSON Lines or CSV file (one a line, each with "
        "its own timestamp) to an Events API, checked against the datafile. Bad lines are "
        "reported by number and skipped. Exit status: 0 when every line was sent, 1 when "
        "some were skipped or dropped, 2 for a usage error.",
    )
    parser.add_argument("file", metavar="FILE", help="the file to read, or - for standard input")
    add_client_options(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the file's format (default: from its extension: .jsonl, .ndjson or .json for "
        "JSON Lines, .csv for CSV; needed for standard input)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive,
        default=DEFAULT_BATCH_SIZE,
        help="events per request (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar",
    )
    parser.set_defaults(run=_run)


def _format(args: argparse.Namespace) -> str:
    if args.format is not None:
        return str(args.format)
    suffix = Path(args.file).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise UsageError(
        f"cannot tell the format of {args.file!r} from its extension: give --format jsonl or csv"
    )


def _run(args: argparse.Namespace) -> int:
    quiet_refusals()
    try:
        fmt = _format(args)
        if args.file == "-":
            stream: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            try:
                stream = open(args.file, "rb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise UsageError(f"{args.file}: {exc.strerror or exc}") from exc
            total = os.fstat(stream.fileno()).st_size
        try:
            client = make_client(args, batch_size=args.batch_size)
            return anyio.run(
                lambda: send(
                    client, stream, fmt, name=args.file, total=total, progress=not args.quiet
                ),
                backend=args.backend,
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    except UsageError as exc:
        print(f"optitrack send: error: {exc}", file=sys.stderr)
        return 2


async def send(
    client: Client,
    stream: IO[bytes],
    fmt: str,
    *,
    name: str = "-",
    total: int | None = None,
    progress: bool = True,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Send every conversion of ``stream`` with ``client`` (not yet entered), then report.

    Args:
        client: The client to send with; entered and closed here.
        stream: The file, opened in binary mode.
        fmt: ``"jsonl"`` or ``"csv"``.
        name: The file's name, in messages.
        total: The file's size in bytes, for the progress bar (``None``: unknown).
        progress: Draw a progress bar on standard error.
        out: Where the report goes (default: standard output).
        err: Where bad lines are reported (default: standard error).

    Returns:
        The exit status: 0 when every line was sent, 1 when some were skipped or dropped,
        2 when a CSV file's header is unusable.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    skipped: Counter[str] = Counter()
    lines = 0
    sent_lines = 0
    track_now = client._intake.track_at_nowait
    put_waiting = client._intake.put_waiting
    offered = client._intake.queue.offered
    async with client:
        with Progress(f"sending {name}", total, enabled=progress) as bar:
            parse = jsonl_parser() if fmt == "jsonl" else None
            async for chunk in line_chunks(stream):
                if parse is None:
                    try:
                        parse = csv_parser(chunk[0])
                    except ValueError as exc:
                        print(f"optitrack send: error: {name}: {exc}", file=err)
                        return 2
                    bar.advance(len(chunk[0]))
                    lines, chunk = 1, chunk[1:]
                for line in chunk:
                    lines += 1
                    record = parse(line)
                    if record is None:
                        continue
                    if type(record) is BadLine:
                        skipped[record.reason] += 1
                        print(f"{name}:{lines}: {record.reason}: {record.message}", file=err)
                        continue
                    outcome = track_now(*record)  # type: ignore[misc]
                    if isinstance(outcome, bytes):  # the queue is full: wait for room
                        event_key, user_id, attributes, tags, _ = record  # type: ignore[misc]
                        outcome = await put_waiting(outcome, event_key, user_id, attributes, tags)
                    result = outcome
                    if result.accepted:
                        sent_lines += 1
                    else:
                        reason = str(result.reason)
                        skipped[reason] += 1
                        print(f"{name}:{lines}: {reason}: {result.message}", file=err)
                    if offered():  # let delivery run, as track() does
                        await anyio.lowlevel.checkpoint()
                bar.advance(sum(map(len, chunk)))
    stats = client.statistics()
    _report(out, lines, sent_lines, skipped, stats.delivered, dict(stats.dropped))
    return 0 if not skipped and not stats.dropped_total else 1


def _report(
    out: IO[str],
    lines: int,
    accepted: int,
    skipped: Counter[str],
    delivered: int,
    dropped: dict[str, int],
) -> None:
    dropped = {reason: n for reason, n in dropped.items() if n}
    print(f"lines read   {lines:,}", file=out)
    print(f"sent         {delivered:,} (of {accepted:,} accepted)", file=out)
    print(f"skipped      {sum(skipped.values()):,}", file=out)
    for reason, n in sorted(skipped.items()):
        print(f"  {reason:<18} {n:,}", file=out)
    print(f"dropped      {sum(dropped.values()):,}", file=out)
    for reason, n in sorted(dropped.items()):
        print(f"  {reason:<18} {n:,}", file=out)
