"""``optitrack send``: JSON Lines and CSV imports, end to end, as a subprocess.

The command runs as ``python -m optitrack send`` against the Events API stand-in served
in the test's own event loop on 127.0.0.1, so that what arrived (visitors, timestamps,
tags) can be checked. Bad lines are reported by number and skipped; the good ones all
arrive, each with its own timestamp.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import optitrack
from optitrack._cli import main
from optitrack._cli._records import BadLine, csv_parser, jsonl_parser, typed
from optitrack.testing import EventsAPI, serve

from .conftest import asgi_client

pytestmark = pytest.mark.anyio

DATAFILE = Path(optitrack.__file__).parent / "example_datafile.json"
T0 = 1_764_000_000_000  # 2025-11-24, ms since the epoch

JSONL = "\n".join(
    [
        json.dumps(
            {
                "event_key": "purchase",
                "user_id": "u1",
                "attributes": {"plan": "pro", "age": 30},
                "tags": {"revenue": 1999, "sku": "a-1"},
                "timestamp": T0,
            }
        ),
        json.dumps({"event_key": "no_such_event", "user_id": "u2"}),  # 2: unknown_event
        "{not json",  # 3: not_json
        "",  # 4: blank, ignored
        json.dumps({"event_key": "signup", "user_id": 5}),  # 5: invalid_input
        json.dumps({"event_key": "signup", "user_id": "u6", "timestamp": -5}),  # 6
        '{"event_key": "signup", "user_id": "u7", "tags": {"v": NaN}}',  # 7: invalid_tags
        json.dumps({"event_key": "signup", "user_id": "u8", "tag": {}}),  # 8: bad_record
        json.dumps({"event_key": "signup", "user_id": "u9", "timestamp": T0 + 9}),
        json.dumps(["signup", "u10"]),  # 10: bad_record
        json.dumps({"user_id": "u11"}),  # 11: bad_record (no event_key)
        json.dumps({"event_key": "signup", "user_id": "u12"}),  # no timestamp: now
    ]
)

CSV = "\n".join(
    [
        "event_key,user_id,timestamp,attr:plan,attr:age,tag:revenue,tag:coupon",
        f"purchase,u1,{T0},pro,30,1999,",
        "no_such_event,u2,,,,,",  # 3: unknown_event
        f'purchase,"u,3",{T0 + 3},team,,250,"SAVE,10"',
        "signup,u5,yesterday,,,,",  # 5: invalid_input (the timestamp)
        "signup,u6",  # 6: bad_csv (too few values)
        '"signup,u7,,,,,',  # 7: bad_csv (an unterminated quote)
        "signup,u8,,,,,",  # no timestamp: now
    ]
)


async def run_send(
    url: str, path: Path | str, *extra: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "optitrack", "send", str(path), "--endpoint", url]
    command += ["--datafile", str(DATAFILE), "--quiet", *extra]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, input=stdin, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def arrived(api: EventsAPI) -> dict[str, Any]:
    """The visitors received, by id: (event key, timestamp, tags, datafile attributes)."""
    out = {}
    for visitor in api.visitors:
        event = visitor.snapshots[0].events[0]
        attributes = {a.key: a.value for a in visitor.attributes if a.key[0] != "$"}
        out[visitor.visitor_id] = (event.key, event.timestamp, event.tags, attributes)
    return out


async def test_jsonl_good_lines_arrive_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "conversions.jsonl"
    path.write_text(JSONL + "\n")
    api = EventsAPI()
    async with serve(api) as server:
        status, out, err = await run_send(server.url, path)
    assert status == 1, err
    name = str(path)
    for number, reason in [
        (2, "unknown_event"),
        (3, "not_json"),
        (5, "invalid_input"),
        (6, "invalid_input"),
        (7, "invalid_tags"),
        (8, "bad_record"),
        (10, "bad_record"),
        (11, "bad_record"),
    ]:
        assert f"{name}:{number}: {reason}: " in err, (number, err)
    assert err.count(f"{name}:") == 8
    assert "timestamp must be positive" in err
    assert "'tag'" in err
    assert "event_key is required" in err
    assert "Traceback" not in err
    got = arrived(api)
    assert sorted(got) == ["u1", "u12", "u9"]
    assert got["u1"] == (
        "purchase",
        T0,
        {"revenue": 1999, "sku": "a-1"},
        {"plan": "pro", "age": 30},
    )
    assert got["u9"][:2] == ("signup", T0 + 9)
    assert got["u12"][1] > T0 + 10**9  # now, not a line's timestamp
    assert api.revenue == 1999
    assert "sent         3 (of 3 accepted)" in out
    assert "skipped      8" in out
    assert "  bad_record         3" in out
    assert "dropped      0" in out


async def test_csv_good_lines_arrive_bad_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "conversions.csv"
    path.write_text(CSV + "\n")
    api = EventsAPI()
    async with serve(api) as server:
        status, out, err = await run_send(server.url, path)
    assert status == 1, err
    name = str(path)
    for number, reason in [
        (3, "unknown_event"),
        (5, "invalid_input"),
        (6, "bad_csv"),
        (7, "bad_csv"),
    ]:
        assert f"{name}:{number}: {reason}: " in err, (number, err)
    assert err.count(f"{name}:") == 4
    got = arrived(api)
    assert sorted(got) == ["u,3", "u1", "u8"]
    # Cells that are JSON numbers are numbers: revenue an int, age too.
    assert got["u1"] == ("purchase", T0, {"revenue": 1999}, {"plan": "pro", "age": 30})
    assert got["u,3"] == (
        "purchase",
        T0 + 3,
        {"revenue": 250, "coupon": "SAVE,10"},
        {"plan": "team"},
    )
    assert got["u8"][2] is None
    assert api.revenue == 2249
    assert "sent         3 (of 3 accepted)" in out


async def test_stdin_all_good_exits_0() -> None:
    lines = [
        json.dumps({"event_key": "signup", "user_id": f"u{n}", "timestamp": T0 + n})
        for n in range(2_500)
    ]
    api = EventsAPI()
    async with serve(api) as server:
        status, out, err = await run_send(
            server.url,
            "-",
            "--format",
            "jsonl",
            "--batch-size",
            "100",
            stdin="\n".join(lines).encode(),
        )
    assert status == 0, err
    assert err == ""
    assert api.event_count == 2_500
    assert api.batch_count == 25
    assert sorted(e.timestamp for e in api.events) == [T0 + n for n in range(2_500)]
    assert "sent         2,500 (of 2,500 accepted)" in out


async def test_drops_are_reported_and_exit_1(tmp_path: Path) -> None:
    # A collector that refuses every batch: the lines are accepted, then dropped.
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"event_key": "signup", "user_id": "u1"}) + "\n")
    api = EventsAPI()
    api.fail_all(optitrack.testing.Respond(400))
    async with serve(api) as server:
        status, out, err = await run_send(server.url, path)
    assert status == 1, err
    assert "sent         0 (of 1 accepted)" in out
    assert "dropped      1" in out
    assert "http_400" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl"], "missing.jsonl: No such file or directory"),
        (["{tmp}/c.txt"], "give --format jsonl or csv"),
        (["{tmp}/c.jsonl", "--datafile-is", "{tmp}/c.jsonl"], "accountId: is required"),
        (["{tmp}/c.jsonl", "--datafile-is", "{tmp}/none.json"], "no such file"),
        (["{tmp}/c.jsonl", "--endpoint-is", "ftp://x"], "must be an http or https URL"),
        (["{tmp}/h.csv"], "needs an 'user_id' column"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    for name in ("c.txt", "c.jsonl"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "h.csv").write_text("event_key,userid\nsignup,u1\n")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    datafile, endpoint = str(DATAFILE), "http://127.0.0.1:9/v1/events"
    if "--datafile-is" in argv:
        datafile = argv.pop(argv.index("--datafile-is") + 1)
        argv.remove("--datafile-is")
    if "--endpoint-is" in argv:
        endpoint = argv.pop(argv.index("--endpoint-is") + 1)
        argv.remove("--endpoint-is")
    status = main(["send", *argv, "--endpoint", endpoint, "--datafile", datafile, "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err


def test_endpoint_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["send", "c.jsonl", "--datafile", str(DATAFILE)])
    assert exited.value.code == 2
    assert "--endpoint" in capsys.readouterr().err


async def test_a_timestamp_is_checked_and_kept(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        for bad, problem in [
            (0, "must be positive"),
            (-1, "must be positive"),
            (1.5e12, "must be an int"),
            (True, "must be an int"),
            ("1764000000000", "must be an int"),
            (10**15, "more than a day in the future"),
        ]:
            result = await client._intake.track_at("signup", "u", None, None, bad)  # type: ignore[arg-type]
            assert not result.accepted
            assert result.reason == optitrack.Reason.INVALID_INPUT
            assert problem in str(result.message), result.message
        assert await client._intake.track_at("signup", "u", None, None, T0)
    assert [e.timestamp for e in api.events] == [T0]
    assert client.statistics().refused == {"invalid_input": 6}


def test_typed_values() -> None:
    assert typed("42") == 42
    assert typed("4.5") == 4.5
    assert typed("true") is True
    assert typed('"42"') == "42"
    assert typed("pro") == "pro"
    assert typed("007") == "007"  # not JSON: the text
    assert typed("") == ""


def test_parsers_line_by_line() -> None:
    parse = jsonl_parser()
    assert parse(b'{"event_key": "e", "user_id": "u"}\n') == ("e", "u", None, None, None)
    assert parse(b"   \n") is None
    # The common line takes a shortcut; every other shape reads as the decoder reads it.
    same = ("e", "u", None, None, None)
    for line in (
        b'{"event_key":"e","user_id":"u"}',  # the last line, without a newline
        b'{"event_key":"e","user_id":"u"}\r\n',
        b' {"event_key":"e","user_id":"u"} \n',
        b'\xef\xbb\xbf{"event_key":"e","user_id":"u"}\n',  # a byte order mark
    ):
        assert parse(line) == same, line
    for line, problem in (
        (b'{"event_key":"e","user_id":"u"} {}\n', "Extra data"),
        (b'{"event_key":"e",\n', "Expecting property name"),
        (b'{"event_key":"\xff","user_id":"u"}\n', "can't decode byte 0xff"),
    ):
        bad = parse(line)
        assert isinstance(bad, BadLine), line
        assert (bad.reason, problem in bad.message) == ("not_json", True), bad
    parse = csv_parser(b"\xef\xbb\xbfuser_id,event_key,tag:n\r\n")  # a BOM, CRLF
    assert parse(b"u,e,3\r\n") == ("e", "u", None, {"n": 3}, None)
    with pytest.raises(ValueError, match="unknown CSV column 'plan'"):
        csv_parser(b"event_key,user_id,plan\n")
    with pytest.raises(ValueError, match="repeats a column"):
        csv_parser(b"event_key,user_id,user_id\n")


async def test_a_full_queue_makes_the_import_wait_never_drop() -> None:
    # A queue of 5 for 300 lines: the import waits for room again and again, and every
    # line arrives once, none refused or dropped.
    import io

    from optitrack._cli.send import send

    lines = "".join(
        json.dumps({"event_key": "purchase", "user_id": f"u{n}", "timestamp": T0 + n}) + "\n"
        for n in range(300)
    )
    api = EventsAPI()
    async with serve(api) as server:
        client = optitrack.Client(
            DATAFILE, event_endpoint=server.url, max_queue_size=5, batch_size=5
        )
        out, err = io.StringIO(), io.StringIO()
        with anyio.fail_after(30):
            status = await send(
                client, io.BytesIO(lines.encode()), "jsonl", progress=False, out=out, err=err
            )
    assert status == 0, err.getvalue()
    stats = client.statistics()
    assert (stats.accepted, stats.delivered, sum(stats.refused.values())) == (300, 300, 0)
    assert sorted(v.visitor_id for v in api.visitors) == sorted(f"u{n}" for n in range(300))
    assert "sent         300 (of 300 accepted)" in out.getvalue()
