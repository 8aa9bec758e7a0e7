"""The web apps of ``examples/``, run as real server processes and shut down by SIGTERM.

Each server test starts the Events API stand-in on 127.0.0.1 (in a thread of this
process), starts the app's server as a subprocess on a free loopback port, waits until it
answers ``GET /healthz``, sends requests that decide ``new_checkout`` and track
``purchase``, sends SIGTERM and waits for the process to exit. Then every event must have
reached the stand-in exactly once (by uuid), and the exit status must be the server's own
on SIGTERM: uvicorn re-raises the signal once it has shut down (status ``-SIGTERM``),
aiohttp exits with 0.

Every wait is bounded: the readiness wait polls with short HTTP attempts until a
deadline, the exit wait has a timeout, and a server still running when a test ends
(failed or not) is killed. The tests are sync (the servers run their own event loops);
the requests go out from a thread pool.

The examples and the README's FastAPI snippet are also imported and run in-process, so
that they cannot rot.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from optitrack.testing import (
    ASGIApp,
    ASGIMessage,
    ASGIReceive,
    ASGISend,
    EventsAPI,
    serve,
    serve_in_thread,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(path.stem for path in (ROOT / "examples").glob("*.py") if path.stem != "__init__")

READY_TIMEOUT = 30.0  # the server's start, imports included, on a busy machine
EXIT_TIMEOUT = 20.0  # SIGTERM to exit: the drain's close_timeout is 5 s
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Launch:
    """How to start one app's server on a port, and the status it exits with on SIGTERM."""

    argv: Callable[[int], list[str]]
    env: Callable[[int], dict[str, str]]
    sigterm_status: int


def _no_env(port: int) -> dict[str, str]:
    return {}


LAUNCHES = {
    "fastapi-uvicorn": Launch(
        argv=lambda port: [
            *("-m", "uvicorn", "examples.fastapi_app:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
        ],
        env=_no_env,
        # uvicorn shuts down, restores the default handler and raises the signal again.
        sigterm_status=-signal.SIGTERM,
    ),
    "aiohttp-web": Launch(
        argv=lambda port: [
            *("-m", "aiohttp.web", "-H", "127.0.0.1", "-P", str(port)),
            "examples.aiohttp_app:create_app",
        ],
        env=_no_env,
        sigterm_status=0,  # GracefulExit is caught by run_app; then "Stopped", status 0
    ),
    "aiohttp-run_app": Launch(
        argv=lambda port: ["-m", "examples.aiohttp_app"],
        env=lambda port: {"HOST": "127.0.0.1", "PORT": str(port)},
        sigterm_status=0,
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, then wait (bounded) for the exit; return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit {EXIT_TIMEOUT} s after SIGTERM:\n{self.output()[-3000:]}")


def _wait_ready(process: subprocess.Popen[bytes], base_url: str) -> bool:
    """Poll ``GET /healthz`` with short attempts until 200; False if the process exited."""
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(base_url=base_url, timeout=0.5) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                response = http.get("/healthz")
                if response.status_code == 200 and response.json() == {"ready": True}:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    pytest.fail(f"{base_url} did not answer within {READY_TIMEOUT} s")


@contextlib.contextmanager
def running(name: str, endpoint: str, tmp_path: Path) -> Iterator[Running]:
    """The app's server, ready; killed on the way out if it still runs."""
    launch = LAUNCHES[name]
    for attempt in range(3):  # a free port can be taken before the server binds it
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "OPTIMIZELY_SDK_KEY"}
        env.update(launch.env(port), OPTITRACK_EVENT_ENDPOINT=endpoint, PYTHONUNBUFFERED="1")
        log = tmp_path / f"{name}-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *launch.argv(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            base_url = f"http://127.0.0.1:{port}"
            if _wait_ready(process, base_url):
                yield Running(process, base_url, log)
                return
            output = log.read_text(errors="replace")
            if "already in use" not in output:
                pytest.fail(f"{name} exited with {process.returncode} before ready:\n{output}")
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=EXIT_TIMEOUT)
    pytest.fail(f"{name}: no free port after 3 attempts")


def _checkout(http: httpx.Client, user_id: str) -> dict[str, Any]:
    response = http.post(f"/checkout/{user_id}", params={"plan": "pro"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_exactly_once(api: EventsAPI, users: set[str]) -> None:
    """One impression and one conversion per user of ``users``, and nothing else."""
    assert api.duplicate_uuids() == {}
    assert api.conversions == {"purchase": len(users)}
    assert sum(api.impressions.values()) == len(users)
    assert api.event_count == 2 * len(users)
    arrived = [visitor.visitor_id for visitor in api.visitors]
    assert sorted(arrived) == sorted([*users, *users])


@pytest.mark.parametrize("name", list(LAUNCHES))
def test_sigterm_delivers_every_event_once(name: str, tmp_path: Path) -> None:
    n = 200
    api = EventsAPI()
    with serve_in_thread(api) as collector, running(name, collector.url, tmp_path) as server:
        users = [f"user-{i}" for i in range(n)]
        limits = httpx.Limits(max_connections=16)
        with (
            httpx.Client(base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT) as http,
            ThreadPoolExecutor(16) as pool,
        ):
            answers = list(pool.map(lambda user: _checkout(http, user), users))
        assert all(answer["tracked"] for answer in answers), answers
        status = server.terminate()
        output = server.output()

    assert status == LAUNCHES[name].sigterm_status, output[-3000:]
    _assert_exactly_once(api, set(users))
    # The revenue of each answer's variation, so these are the events the handlers made.
    assert api.revenue == sum(4200 if a["new_checkout"] else 3900 for a in answers)
    assert "were dropped" not in output  # the shutdown deadline's ERROR line
    assert "Traceback" not in output


@pytest.mark.parametrize("name", ["fastapi-uvicorn", "aiohttp-web"])
def test_sigterm_under_load_delivers_what_was_answered(name: str, tmp_path: Path) -> None:
    # SIGTERM while requests keep coming: the server stops taking new ones, finishes those
    # in flight, then closes the client. Every request answered 200 had its events
    # delivered, once; a request cut off may have been handled too (its events arrive).
    workers, per_worker, before_sigterm = 8, 150, 100
    api = EventsAPI()
    answered: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def worker(k: int, http: httpx.Client) -> None:
        for i in range(per_worker):
            user = f"w{k}-{i}"
            try:
                response = http.post(f"/checkout/{user}")
            except httpx.TransportError:
                return  # the server is going or gone
            if response.status_code != 200:
                return
            assert response.json()["tracked"]
            with lock:
                answered.append(user)
                if len(answered) >= before_sigterm:
                    enough.set()

    with serve_in_thread(api) as collector, running(name, collector.url, tmp_path) as server:
        limits = httpx.Limits(max_connections=workers)
        with (
            httpx.Client(base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT) as http,
            ThreadPoolExecutor(workers) as pool,
        ):
            futures = [pool.submit(worker, k, http) for k in range(workers)]
            assert enough.wait(READY_TIMEOUT), "too few answers before SIGTERM"
            status = server.terminate()
            for future in futures:
                future.result(timeout=REQUEST_TIMEOUT)
        output = server.output()

    assert status == LAUNCHES[name].sigterm_status, output[-3000:]
    assert len(answered) < workers * per_worker, "SIGTERM came after the load"
    handled = {visitor.visitor_id for visitor in api.visitors}
    assert set(answered) <= handled
    _assert_exactly_once(api, handled)
    assert "were dropped" not in output  # the shutdown deadline's ERROR line


# -- the examples and the README, in-process ---------------------------------------------


@pytest.mark.parametrize("module", EXAMPLES)
def test_example_imports(module: str) -> None:
    imported = importlib.import_module(f"examples.{module}")
    assert imported.__doc__


def test_examples_are_the_ones_tested() -> None:
    # The async ones run here; the WSGI ones in tests/test_wsgi.py.
    assert EXAMPLES == ["aiohttp_app", "django_app", "fastapi_app", "flask_app"]


def _readme_snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    [block] = [block for block in blocks if marker in block]
    return str(block)


@contextlib.asynccontextmanager
async def lifespan_of(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    """Run an ASGI app's lifespan as a server does; yield the app with the lifespan state."""
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": state}
    to_app, app_receives = anyio.create_memory_object_stream[ASGIMessage](1)
    app_sends, from_app = anyio.create_memory_object_stream[ASGIMessage](1)

    async def run_lifespan() -> None:
        await app(scope, app_receives.receive, app_sends.send)

    async with to_app, app_receives, app_sends, from_app, anyio.create_task_group() as tg:
        tg.start_soon(run_lifespan)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"

        async def with_state(scope: ASGIMessage, receive: ASGIReceive, send: ASGISend) -> None:
            await app({**scope, "state": dict(state)}, receive, send)

        yield with_state
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


async def _run_fastapi_app(app: ASGIApp, monkeypatch: pytest.MonkeyPatch) -> tuple[EventsAPI, Any]:
    """Start the app's lifespan, decide and track for one user, shut it down."""
    api = EventsAPI()
    async with serve(api) as collector:
        monkeypatch.setenv("OPTITRACK_EVENT_ENDPOINT", collector.url)
        monkeypatch.delenv("OPTIMIZELY_SDK_KEY", raising=False)
        async with lifespan_of(app) as running_app:
            transport = httpx.ASGITransport(app=running_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                response = await http.post("/checkout/user-1")
                assert response.status_code == 200, response.text
        # The lifespan's shutdown drained the client: everything has arrived.
    return api, response.json()


@pytest.mark.anyio
async def test_readme_fastapi_snippet_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    code = _readme_snippet("FastAPI(lifespan=lifespan)")
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), namespace)
    api, answer = await _run_fastapi_app(namespace["app"], monkeypatch)
    assert set(answer) == {"new_checkout"}
    _assert_exactly_once(api, {"user-1"})


@pytest.mark.anyio
async def test_fastapi_example_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.fastapi_app import app

    api, answer = await _run_fastapi_app(app, monkeypatch)
    assert answer["tracked"] is True
    assert answer["variation"] in ("control", "treatment")
    _assert_exactly_once(api, {"user-1"})
