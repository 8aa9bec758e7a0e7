"""``optitrack validate``: check a datafile and list every problem in it.

Owns: the validate command. Must not touch: the datafile's models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .._decisions import load_datafile
from .._exceptions import DatafileError

__all__ = ["register", "validate"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``validate`` to the command line."""
    parser = commands.add_parser(
        "validate",
        parents=[common],
        help="check a datafile and list every problem in it",
        description="Check a project datafile as the client does on load, and print every "
        "problem found, each with where it is (a JSON path). Exit status: 0 when valid, "
        "1 when invalid (not JSON, or problems), 2 when the file cannot be read.",
    )
    parser.add_argument("datafile", metavar="DATAFILE", help="the datafile (a JSON file)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return validate(args.datafile)


def validate(path: str, out: Any = None, err: Any = None) -> int:
    """Validate the datafile at ``path`` and print the outcome.

    Returns:
        The exit status: 0 valid, 1 invalid, 2 unreadable.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        Path(path).read_bytes()
    except OSError as exc:
        print(f"optitrack validate: error: {path}: {exc.strerror or exc}", file=err)
        return 2
    try:
        config = load_datafile(Path(path))
    except DatafileError as exc:
        count = len(exc.problems)
        print(f"{path}: invalid, {count} problem{'s' if count != 1 else ''}:", file=out)
        for problem in exc.problems:
            print(f"  {problem}", file=out)
        return 1
    datafile = config.datafile
    print(
        f"{path}: valid (version {datafile.version}, revision {datafile.revision}:"
        f" {len(datafile.events)} events, {len(datafile.experiments)} experiments,"
        f" {len(datafile.feature_flags)} flags, {len(datafile.attributes)} attributes,"
        f" {len(datafile.audiences) + len(datafile.typed_audiences)} audiences)",
        file=out,
    )
    return 0
