"""Shared by the collector's tests: events built to order, and a collector as a subprocess."""

from __future__ import annotations

import copy
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.testing.conftest import CONVERSION, IMPRESSION

GUARD = 10  # seconds: only a guard against a hung test, never a wait


def impression(uuid: str, visitor: str, variation: str, timestamp: int) -> dict[str, Any]:
    """The impression fixture (checkout_test), for ``visitor`` in ``variation``."""
    entry = copy.deepcopy(IMPRESSION["visitors"][0])
    entry["visitor_id"] = visitor
    snapshot = entry["snapshots"][0]
    snapshot["events"][0].update(uuid=uuid, timestamp=timestamp)
    decision = snapshot["decisions"][0]
    decision["variation_id"] = {"control": "60101", "treatment": "60102"}[variation]
    decision["metadata"]["variation_key"] = variation
    return entry  # type: ignore[no-any-return]


def conversion(
    uuid: str, visitor: str, timestamp: int, key: str = "purchase", revenue: int | None = None
) -> dict[str, Any]:
    """The conversion fixture, for ``visitor``, with ``revenue`` (or none)."""
    entry = copy.deepcopy(CONVERSION["visitors"][0])
    entry["visitor_id"] = visitor
    event = entry["snapshots"][0]["events"][0]
    event.update(uuid=uuid, timestamp=timestamp, key=key)
    event.pop("value")
    event.pop("tags")
    if revenue is None:
        event.pop("revenue")
    else:
        event["revenue"] = revenue
    return entry  # type: ignore[no-any-return]


def batch(entries: Sequence[dict[str, Any]]) -> bytes:
    """A batch of these visitor entries."""
    body = copy.deepcopy(CONVERSION)
    body["visitors"] = list(entries)
    return json.dumps(body).encode()


def scenario() -> list[dict[str, Any]]:
    """Four visitors in checkout_test, with conversions before and after their impression.

    Counted by timestamp: control has a and b (a converts once after, b only before its
    impression); treatment has c and d (c converts twice with revenue, d once, and d's
    second impression, in control, later, does not move d).
    """
    t = 1_800_000_000_000
    return [
        conversion("c-b-early", "b", t + 5),  # before b's impression: not counted
        impression("i-a", "a", "control", t + 10),
        impression("i-b", "b", "control", t + 10),
        impression("i-c", "c", "treatment", t + 20),
        impression("i-d", "d", "treatment", t + 30),
        conversion("c-a", "a", t + 10, revenue=100),  # at the impression's time: counted
        conversion("c-c1", "c", t + 40, revenue=300),
        conversion("c-c2", "c", t + 50, revenue=200),
        conversion("c-d", "d", t + 60, key="signup"),
        impression("i-d2", "d", "control", t + 70),  # d's later impression: d stays
    ]


@dataclass
class Running:
    """A collector subprocess and its address."""

    process: subprocess.Popen[str]
    base_url: str
    lines: list[str]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "optitrack", *args]


@contextmanager
def collector_process(*args: str) -> Iterator[Running]:
    """Start ``optitrack collector --port 0 ARGS``, wait until it listens; kill it at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        _cli("collector", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    try:
        seen = []
        while True:
            line = lines.get(timeout=GUARD)
            if not line:
                assert process.stderr is not None
                raise AssertionError(f"collector exited: {process.stderr.read()}")
            seen.append(line)
            if line.startswith("listening on "):
                break
        base_url = line.split()[2].rstrip(":")
        yield Running(process, base_url, seen)
    finally:
        process.kill()
        process.wait(timeout=GUARD)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``optitrack ARGS`` to its end, bounded in time."""
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=60, check=False)
