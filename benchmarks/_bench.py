"""Helpers shared by the benchmark scripts: the collector process, statistics, the machine.

Not a benchmark itself: the scripts of this directory import it (they run as
``python benchmarks/NAME.py``, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata, resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HERE = Path(__file__).resolve().parent

#: The event every benchmark tracks: ``("purchase", user, {"plan": "pro"}, {"revenue": 4200})``.
EVENT_KEY = "purchase"

#: Users the benchmarks cycle through (ids made up front, outside the timed calls).
USERS = [f"user-{n}" for n in range(1000)]


def datafile_text() -> str:
    """The example datafile bundled with optitrack (event ``purchase``, attribute ``plan``)."""
    return resources.files("optitrack").joinpath("example_datafile.json").read_text()


class CollectorError(RuntimeError):
    """The collector process died or answered something unexpected."""


class Collector:
    """The Events API stand-in, in a child process (``_collector.py``), on 127.0.0.1.

    Use it as a context manager; it stops when the block ends (and by itself if this
    process dies, since its standard input closes). Commands are answered synchronously,
    over a pipe: call them while no client is sending, or from another thread than the
    event loop's when one is.

    Args:
        backend: The collector's event loop, ``"asyncio"`` or ``"trio"``.
        count_only: Count events, and find duplicates, by the ``"uuid"`` values picked out
            of each body with a regular expression instead of parsing it as JSON (much
            cheaper, so the client's own limits show).
        profile: Where the collector writes a cProfile of its run, if anywhere.
    """

    def __init__(
        self, backend: str = "asyncio", *, count_only: bool = False, profile: str | None = None
    ) -> None:
        extra = ["--profile", profile] if profile else []
        if count_only:
            extra.append("--count-only")
        self.count_only = count_only
        self._process = subprocess.Popen(
            [sys.executable, str(HERE / "_collector.py"), "--backend", backend, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.port = int(hello["port"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base_url}/v1/events"
        self.pid = self._process.pid

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise CollectorError(f"the collector exited (status {self._process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise CollectorError(answer["error"])
        return answer

    def command(self, line: str) -> dict[str, Any]:
        """Send one command (see ``_collector.py``) and return its JSON answer."""
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        return self._read()

    def stats(self) -> dict[str, Any]:
        """What the collector received so far, and its CPU seconds (``cpu_s``)."""
        return self.command("stats")

    def wait_events(self, count: int, timeout: float) -> dict[str, Any]:
        """Wait until ``count`` events were accepted in all, or ``timeout`` seconds."""
        return self.command(f"wait_events {count} {timeout}")

    def close(self) -> None:
        """Stop the collector process and wait for it."""
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write("quit\n")
                self._process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def delta(after: dict[str, Any], before: dict[str, Any], key: str) -> Any:
    """``after[key] - before[key]`` for two collector snapshots."""
    return after[key] - before[key]


# Statistics -----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median of some values (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of values sorted ascending, by nearest rank."""
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """The values of repeated runs, for the record: ``[1.00, 1.10, 0.98]``."""
    return "[" + ", ".join(fmt.format(v) for v in values) + "]"


# The machine ----------------------------------------------------------------------------


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def optitrack_path() -> str:
    """Where ``import optitrack`` finds the package measured."""
    spec = importlib.util.find_spec("optitrack")
    origin = spec.origin if spec is not None else None
    return str(Path(origin).parent) if origin else "not found"


def source_revision() -> str:
    """The commit of the optitrack measured, and whether its working tree differs from it.

    Asked of the checkout that ``import optitrack`` finds, which is not this directory's
    when ``PYTHONPATH`` points at another clone.
    """
    package = optitrack_path()
    root = Path(package).parent if package != "not found" else HERE.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "optitrack"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if changed:
        return f"{commit} + uncommitted changes in optitrack/"
    return commit


def machine() -> dict[str, str]:
    """What the figures were measured on: CPUs, Python, library versions, date, load."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "optitrack source": f"{source_revision()}, imported from {optitrack_path()}",
        "cpus": f"{os.cpu_count()} (usable: {affinity}), {cpu}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "versions": ", ".join(
            f"{name} {_version(name)}"
            for name in ("optitrack", "anyio", "httpx", "trio", "optimizely-sdk", "requests")
        ),
        "load average at start": " ".join(f"{x:.2f}" for x in load),
    }


def print_machine(title: str, argv: Sequence[str]) -> None:
    """Print a header: what runs, the exact command, and the machine."""
    print(f"# {title}")
    print(f"command: python {' '.join(argv)}")
    for key, value in machine().items():
        print(f"{key}: {value}")
    print()


def print_load() -> None:
    """Print the load average now: figures taken while others were busy read low."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end: {load} (on {os.cpu_count()} CPUs; this run keeps about 2 busy)")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as a Markdown table (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"

    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(row) for row in rows[1:])
    return "\n".join(out)


class Stopwatch:
    """Wall time since it was made, in seconds (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the stopwatch was made."""
        return time.perf_counter() - self.start


# optimizely-sdk ---------------------------------------------------------------------------


class RequestsDispatcher:
    """optimizely-sdk's default ``EventDispatcher``, sending to another URL.

    The same code as ``optimizely.event_dispatcher.EventDispatcher.dispatch_event`` for a
    POST (a new ``requests.Session`` per batch, urllib3 retries on 5xx, the SDK's timeout),
    only with the collector's URL instead of the Events API's.

    Args:
        url: Where to post.
    """

    def __init__(self, url: str) -> None:
        import requests
        from optimizely.helpers.enums import EventDispatchConfig
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.url = url
        self._requests = requests
        self._adapter = HTTPAdapter
        self._retry = Retry
        self._retries: int = EventDispatchConfig.RETRIES
        self._timeout: float = EventDispatchConfig.REQUEST_TIMEOUT

    def dispatch_event(self, event: Any) -> None:
        """Post one log event, as the SDK's default dispatcher does."""
        try:
            session = self._requests.Session()
            retries = self._retry(
                total=self._retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            )
            adapter = self._adapter(max_retries=retries)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.post(
                self.url,
                data=json.dumps(event.params),
                headers=event.headers,
                timeout=self._timeout,
            ).raise_for_status()
        except self._requests.exceptions.RequestException as error:
            logging.error(f"Dispatch event failed. Error: {error}")
