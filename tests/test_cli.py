"""The command line: ``optitrack demo`` runs end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optitrack._cli import main


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_delivers_everything(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--backend", backend, "demo", "--events", "600", "--users", "50"])
    out = capsys.readouterr().out
    assert status == 0
    assert "events       650 (0 duplicate uuids)" in out  # 50 impressions, 600 conversions
    assert "impressions  50" in out
    assert "checkout_test" in out  # the results per variation
    assert "Ledger: accepted 650 = delivered 650 + dropped 0 + pending 0" in out
    assert out.rstrip().endswith("OK")


def test_python_dash_m_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "optitrack", "demo", "--events", "100", "--users", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("optitrack ")
