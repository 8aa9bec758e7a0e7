"""Shared fixtures: every async test runs on asyncio and on Trio."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import optitrack
from optitrack.testing import ASGIApp, serve

SHARED_FIXTURES = Path(__file__).parent / "fixtures"
EVENTS_URL = "http://events.test/v1/events"


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


#: Whether :func:`asgi_client` serves its app on 127.0.0.1 and sends through the client's
#: own transport instead (tests/delivery/conftest.py sets it, test by test).
OVER_LOOPBACK = False


@asynccontextmanager
async def asgi_client(
    app: ASGIApp, datafile: Mapping[str, Any], **options: Any
) -> AsyncIterator[optitrack.Client]:
    """A running client whose requests go in-process to ``app`` (no sockets).

    With :data:`OVER_LOOPBACK` set, ``app`` is served on 127.0.0.1 instead, and the client
    sends through its default transport.
    """
    if OVER_LOOPBACK:
        async with (
            serve(app) as server,
            optitrack.Client(datafile, event_endpoint=server.url, **options) as client,
        ):
            yield client
        return
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        optitrack.Client(
            datafile, event_endpoint=EVENTS_URL, http_client=http, **options
        ) as client,
    ):
        yield client


def comparable(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload without what differs from run to run and SDK to SDK."""
    out: dict[str, Any] = json.loads(json.dumps(payload))
    out.pop("client_name")
    out.pop("client_version")
    for visitor in out["visitors"]:
        for snapshot in visitor["snapshots"]:
            for event in snapshot["events"]:
                del event["uuid"], event["timestamp"]
    return out


def check_ledger(stats: optitrack.Statistics) -> None:
    """The ledger invariant: accepted = delivered + dropped + pending + spooled."""
    assert stats.accepted == (
        stats.delivered + stats.dropped_total + stats.pending + stats.spooled
    ), stats
    assert stats.pending == stats.queued + stats.in_flight, stats
