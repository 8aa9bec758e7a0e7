"""``optitrack track`` and ``optitrack validate``, end to end, as subprocesses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

import optitrack
from optitrack._cli import main
from optitrack.testing import EventsAPI, serve

DATAFILE = Path(optitrack.__file__).parent / "example_datafile.json"
T0 = 1_764_000_000_000


async def run(*argv: str) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-m", "optitrack", *argv], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.anyio
async def test_track_sends_one_conversion() -> None:
    api = EventsAPI()
    async with serve(api) as server:
        status, out, err = await run(
            "track", "purchase", "alice",
            "--attribute", "plan=pro", "--attribute", "age=31",
            "--tag", "revenue=1999", "--tag", "coupon=SAVE10", "--tag", 'code="42"',
            "--timestamp", str(T0),
            "--endpoint", server.url, "--datafile", str(DATAFILE),
        )  # fmt: skip
    assert status == 0, err
    assert out.startswith("sent: purchase for 'alice'")
    [visitor] = api.visitors
    event = visitor.snapshots[0].events[0]
    assert visitor.visitor_id == "alice"
    assert (event.key, event.timestamp, event.revenue) == ("purchase", T0, 1999)
    assert event.tags == {"revenue": 1999, "coupon": "SAVE10", "code": "42"}
    attributes = {a.key: a.value for a in visitor.attributes if a.key[0] != "$"}
    assert attributes == {"plan": "pro", "age": 31}


@pytest.mark.anyio
async def test_track_refused_or_dropped_exits_1() -> None:
    api = EventsAPI()
    api.fail_all(optitrack.testing.Respond(400))
    async with serve(api) as server:
        common = ("--endpoint", server.url, "--datafile", str(DATAFILE))
        status, out, err = await run("track", "no_such_event", "bob", *common)
        assert status == 1, err
        assert out.startswith("refused: unknown_event: Event 'no_such_event' is not in datafile.")
        assert err == ""  # said once, on standard output
        status, out, err = await run("track", "signup", "bob", *common)
        assert status == 1, err
        assert out.startswith("dropped: http_400 1")


def test_track_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["track", "signup", "bob", "--endpoint", "x", "--datafile", str(DATAFILE)])
    assert status == 2
    assert "must be an http or https URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["track", "signup", "bob", "--tag", "novalue", "--endpoint", "http://127.0.0.1:9"])
    assert exited.value.code == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err


@pytest.mark.anyio
async def test_validate(tmp_path: Path) -> None:
    status, out, err = await run("validate", str(DATAFILE))
    assert (status, err) == (0, "")
    assert out.count("\n") == 1
    assert out.startswith(f"{DATAFILE}: valid (version 4, revision ")

    broken = json.loads(DATAFILE.read_text())
    del broken["revision"]
    broken["events"][1]["id"] = 7
    broken["experiments"][0]["trafficAllocation"][0]["endOfRange"] = 20_000
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    status, out, err = await run("validate", str(path))
    assert status == 1
    assert out.splitlines() == [
        f"{path}: invalid, 3 problems:",
        "  revision: is required",
        "  events[1].id: must be a string (got 7)",
        "  experiments[0].trafficAllocation[0].endOfRange: must be <= 10000 (got 20000)",
    ]


def test_validate_unreadable_or_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "none.json")]) == 2
    assert "none.json: No such file or directory" in capsys.readouterr().err
    path = tmp_path / "text.json"
    path.write_text("{oops")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "invalid, 1 problem:" in out
    assert "not valid JSON" in out
