"""Shared fixtures: every async test runs on asyncio and on Trio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both backends, declared explicitly: anyio's plugin skips missing ones silently."""
    return str(request.param)


def load_fixture(name: str) -> Any:
    """A JSON fixture captured from optimizely-sdk 5.7.0 (see tests/fixtures/README.md)."""
    return json.loads((SHARED_FIXTURES / name).read_text())


@pytest.fixture
def datafile() -> dict[str, Any]:
    """The example v4 datafile the fixture payloads were captured with."""
    return load_fixture("datafile_example.json")  # type: ignore[no-any-return]
