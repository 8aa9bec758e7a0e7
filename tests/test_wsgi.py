"""The WSGI examples under gunicorn: every event arrives exactly once, from every worker.

Each test serves the Events API stand-in on 127.0.0.1 from a thread, runs an example app
(examples/) under ``gunicorn --preload --workers 3`` in a process group of its own, sends
it requests from a few threads, stops it with SIGTERM, and then checks what arrived: each
request's impression and conversion, once. The client is made in the master at import
(``--preload``) and started afresh in each worker; nothing closes it but interpreter exit
in each worker, so the test also shows that gunicorn's graceful shutdown drains it.

Every wait is bounded; the process group is killed in ``finally`` whatever happened.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from optitrack.testing import EventsAPI, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 300
THREADS = 6
WORKERS = 3
#: Bounds, in seconds.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10
REQUEST_TIMEOUT = 5.0

APPS = [
    pytest.param("examples.flask_app:app", id="flask"),
    pytest.param("examples.django_app:application", id="django"),
]


GUNICORN = tuple(int(part) for part in version("gunicorn").split(".")[:2])


def _gunicorn_command(app: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers",
        str(WORKERS),
        # Port 0: the kernel picks a free port; the test reads it from gunicorn's log.
        "--bind",
        "127.0.0.1:0",
        "--graceful-timeout",
        str(STOP_TIMEOUT),
    ]
    if GUNICORN >= (25, 1):
        # Not the shared default (~/.gunicorn/gunicorn.ctl): concurrent runs would clash.
        command.append("--no-control-socket")
    return [*command, app]


def _wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    """Wait until gunicorn answers HTTP; return its port."""
    deadline = time.monotonic() + START_TIMEOUT
    port: int | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        if port is None:
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                port = int(found.group(1))
        if port is not None:
            try:
                # Any answer will do (the apps answer 404 at /, and track nothing).
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5):
                    return port
            except urllib.error.HTTPError as error:
                error.close()
                return port
            except OSError:
                pass
        time.sleep(0.05)
    pytest.fail(f"gunicorn did not answer within {START_TIMEOUT} s:\n{log.read_text()}")


def _checkout(port: int, n: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/checkout?user=user-{n}&plan=pro"
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill gunicorn's process group (master and workers) if the master still runs.

    A master that exited has stopped its workers (SIGKILL after ``graceful_timeout``);
    while it is not reaped, its pid (the group's id) cannot be reused.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


@pytest.mark.parametrize("app", APPS)
def test_every_event_arrives_once_after_sigterm(app: str, tmp_path: Path) -> None:
    api = EventsAPI()
    log = tmp_path / "gunicorn.log"
    env = {key: value for key, value in os.environ.items() if key != "OPTIMIZELY_SDK_KEY"}
    with serve_in_thread(api) as server:
        env["OPTITRACK_EVENT_ENDPOINT"] = server.url
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _gunicorn_command(app),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one in finally
            )
        try:
            port = _wait_for_port(proc, log)
            with ThreadPoolExecutor(THREADS) as pool:
                answers = list(pool.map(lambda n: _checkout(port, n), range(REQUESTS)))
            arrived_before_sigterm = api.event_count
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=STOP_TIMEOUT + 5)
        finally:
            _stop(proc)
        output = log.read_text()
        assert returncode == 0, output

        assert all(answer["tracked"] for answer in answers), answers
        pids = collections.Counter(answer["pid"] for answer in answers)
        assert len(pids) > 1, f"one worker served every request: {pids}"

        # Everything has arrived: each worker closed its client (sending what it held)
        # before it exited, and the master exits after its workers.
        assert api.duplicate_uuids() == {}
        assert api.event_count == 2 * REQUESTS, (
            f"{api.event_count} events, {arrived_before_sigterm} before SIGTERM\n{output}"
        )
        assert api.conversions == {"purchase": REQUESTS}
        assert sum(api.impressions.values()) == REQUESTS
        per_user = collections.Counter(
            (visitor.visitor_id, visitor.snapshots[0].events[0].key) for visitor in api.visitors
        )
        expected = {
            (f"user-{n}", key): 1
            for n in range(REQUESTS)
            for key in ("campaign_activated", "purchase")
        }
        assert per_user == expected
