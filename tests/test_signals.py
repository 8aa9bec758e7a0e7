"""optitrack.run (optitrack/_signals.py): SIGTERM and SIGINT drain the clients of a plain
script or worker, with the batches in flight waited for, never sent twice."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import optitrack
from optitrack.testing import Delay, EventsAPI, serve, serve_in_thread
from tests.conftest import SHARED_FIXTURES

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.anyio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_drains_every_event_once(anyio_backend: str, signum: signal.Signals) -> None:
    count = 20_000
    api = EventsAPI()
    api.fail_all(Delay(0.05))  # so that batches are in flight when the signal comes
    async with serve(api) as server:
        process = await anyio.open_process(
            [
                sys.executable,
                str(SCRIPTS / "signalled_worker.py"),
                str(SHARED_FIXTURES / "datafile_example.json"),
                server.url,
                str(count),
                anyio_backend,
            ]
        )
        try:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(60):
                assert await lines.receive_until(b"\n", 1 << 16) == f"tracked {count}".encode()
                process.send_signal(signum)
                stopped = (await lines.receive_until(b"\n", 1 << 16)).decode()
                assert await process.wait() == 0
        finally:
            if process.returncode is None:  # pragma: no cover - only when failing
                process.kill()
                await process.wait()
    word, stats = stopped.split(" ", 1)
    assert word == "stopped"
    assert json.loads(stats) == {"delivered": count, "pending": 0, "dropped": {}}
    assert api.event_count == count
    assert api.duplicate_uuids() == {}
    assert api.request_count == api.batch_count  # no batch was sent twice


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_returns_what_main_returns(backend: str) -> None:
    async def main(a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    assert optitrack.run(main, 2, 3, backend=backend) == 5


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_signal_to_the_process_stops_main_after_the_drain(
    backend: str, datafile: dict[str, Any]
) -> None:
    api = EventsAPI()
    reached: list[str] = []

    async def main(url: str) -> str:
        async with optitrack.Client(datafile, event_endpoint=url, flush_interval=60) as client:
            for n in range(100):
                await client.track("purchase", f"user-{n}")
            os.kill(os.getpid(), signal.SIGTERM)
            try:
                await anyio.sleep_forever()
            finally:
                reached.append("cancelled")
                # The drain ran before main was cancelled: all is delivered already.
                reached.append(str(client.statistics().delivered))
        return "unreachable"  # pragma: no cover

    with serve_in_thread(api) as server:
        assert optitrack.run(main, server.url, backend=backend) is None
    assert reached == ["cancelled", "100"]
    assert api.event_count == 100


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_what_main_raises_comes_out_as_itself(backend: str) -> None:
    async def main() -> None:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        optitrack.run(main, backend=backend)


def test_run_refuses_a_bad_backend_and_other_threads() -> None:
    async def main() -> None:
        pass  # pragma: no cover

    with pytest.raises(ValueError, match="backend"):
        optitrack.run(main, backend="curio")
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            optitrack.run(main)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert "main thread" in str(errors[0])
