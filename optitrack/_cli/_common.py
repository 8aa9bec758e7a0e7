"""What the commands share: the example datafile, argument types, progress bars.

Owns: those helpers. Must not touch: any one command's logic.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import Any

__all__ = ["Progress", "example_datafile", "naming_datafile", "positive"]


def example_datafile() -> dict[str, Any]:
    """The example datafile bundled with optitrack (a flag, an experiment, a rollout)."""
    text = resources.files("optitrack").joinpath("example_datafile.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def naming_datafile(path: str | None) -> dict[str, Any] | None:
    """The datafile a ``--datafile PATH`` option names experiments with (``None``: none).

    Raises:
        ValueError: The file cannot be read, or is not JSON (the message says which).
    """
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise ValueError(f"--datafile: {exc}") from exc


def positive(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class Progress:
    """A progress bar on standard error, drawn by rich when it is installed.

    Without rich (``pip install 'optitrack[cli]'``), or when ``enabled`` is false, it draws
    nothing and costs nothing. Use as a context manager; ``advance`` it as work is done.
    """

    def __init__(self, description: str, total: float | None, *, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar
        except ImportError:
            return
        from rich.console import Console

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        """Record ``amount`` more units of work done."""
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()
