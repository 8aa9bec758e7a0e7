"""``optitrack collector``, ``results`` and ``demo`` end to end, as subprocesses on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import pytest

from optitrack._cli import _parser
from tests.collector.conftest import GUARD, batch, collector_process, run_cli, scenario

JSON = {"content-type": "application/json"}


def test_a_restarted_collector_still_knows_the_uuids(tmp_path: Path) -> None:
    db = str(tmp_path / "events.db")
    body = batch(scenario())
    with collector_process("--db", db) as running:
        assert any("(0 events stored)" in line for line in running.lines)
        with httpx.Client(base_url=running.base_url, timeout=GUARD) as http:
            assert http.post("/v1/events", content=body, headers=JSON).status_code == 204
            first = http.get("/v1/results").json()
    assert first["experiments"][0]["variations"][0]["visitors"] == 2

    with (
        collector_process("--db", db) as running,
        httpx.Client(base_url=running.base_url, timeout=GUARD) as http,
    ):
        assert http.post("/v1/events", content=body, headers=JSON).status_code == 204
        assert http.get("/v1/results").json() == first
        stats = http.get("/v1/stats").json()
        page = http.get("/")
    assert (stats["events"], stats["duplicates"]) == (10, 10)
    assert page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text

    done = run_cli("results", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == first

    table = run_cli("results", "--db", db)
    assert table.returncode == 0, table.stderr
    assert "checkout_test" in table.stdout
    assert "control" in table.stdout
    assert "treatment" in table.stdout
    assert "1/2" in table.stdout  # treatment's purchase: 1 converter, 2 conversions

    page_file = tmp_path / "results.html"
    written = run_cli("results", "--db", db, "--html", str(page_file))
    assert written.returncode == 0, written.stderr
    assert "<svg" in page_file.read_text()


def test_results_without_a_database_say_so(tmp_path: Path) -> None:
    done = run_cli("results", "--db", str(tmp_path / "missing.db"))
    assert done.returncode == 2
    assert done.stderr.startswith("optitrack results: error: no database at ")
    assert not (tmp_path / "missing.db").exists()


def test_an_open_address_needs_a_token() -> None:
    done = run_cli("collector", "--host", "0.0.0.0", "--port", "0", "--db", ":memory:")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--token" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_collector_with_a_token_refuses_others() -> None:
    body = batch(scenario())
    with (
        collector_process("--db", ":memory:", "--token", "s3cret") as running,
        httpx.Client(base_url=running.base_url, timeout=GUARD) as http,
    ):
        assert http.post("/v1/events", content=body, headers=JSON).status_code == 401
        assert http.get("/v1/results").status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        posted = http.post("/v1/events", content=body, headers={**JSON, **auth})
        assert posted.status_code == 204
        results = http.get("/v1/results", headers=auth).json()
    assert results["experiments"][0]["experiment_key"] == "checkout_test"


def test_every_option_has_help() -> None:
    parser = _parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings}"
        # argparse formats option help with %, not descriptions: no stray %% shows.
        assert "%%" not in command.format_help(), name


def _results_section(out: str) -> str:
    start = out.index("Results (conversions count")
    return out[start : out.index("Ledger:")]


@pytest.mark.parametrize("seed", ["3"])
def test_the_demo_prints_the_same_results_for_a_seed_on_both_backends(seed: str) -> None:
    runs = [
        run_cli("--backend", backend, "demo", "--seed", seed, "--users", "40", "--events", "300")
        for backend in ("asyncio", "trio")
    ]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert done.stdout.rstrip().endswith("OK")
        assert "An impression:" in done.stdout
        assert "A conversion:" in done.stdout
    assert _results_section(runs[0].stdout) == _results_section(runs[1].stdout)
    other = run_cli("demo", "--seed", "4", "--users", "40", "--events", "300")
    assert _results_section(other.stdout) != _results_section(runs[0].stdout)
