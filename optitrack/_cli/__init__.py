"""The ``optitrack`` command line.

Owns: parsing the command line and handing each command its arguments. Must not touch:
the library's internals (each command uses the public API and ``optitrack.testing``).

Each command lives in its own module, which exposes ``register(commands, common)``: it
adds its sub-parser (with ``common`` among its parents, so ``--backend`` works before or
after the command) and sets ``run`` on it, a function of the parsed arguments that
returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from .._version import __version__
from . import collector, demo, results, send, track, validate

__all__ = ["main"]

#: The commands, in the order ``optitrack --help`` lists them.
COMMANDS = (demo, collector, results, send, track, validate)

DESCRIPTION = """\
optitrack: Optimizely Track, decisions and batched Events API delivery, on asyncio and Trio.
Run a command with --help for its options."""


def _parser() -> argparse.ArgumentParser:
    # --backend sits on the main parser and on every command's, so it may come before or
    # after the command; SUPPRESS keeps a command's default from hiding the one given first.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default=argparse.SUPPRESS,
        help="the event loop to run on (default: asyncio; trio needs optitrack[trio])",
    )
    parser = argparse.ArgumentParser(prog="optitrack", description=DESCRIPTION, parents=[common])
    parser.add_argument("--version", action="version", version=f"optitrack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``optitrack`` command line.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "backend"):
        args.backend = "asyncio"
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        parser.error("--backend trio needs Trio: pip install 'optitrack[trio]'")
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
