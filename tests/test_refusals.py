"""Refusals (optitrack/_refusals.py): counted by reason, logged without flooding."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from optitrack.testing import EventsAPI
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio


async def test_refusal_logs_do_not_flood(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    import datetime

    async with asgi_client(EventsAPI(), datafile) as client:
        for _ in range(200):
            await client.track("purchase", "u", None, {"when": datetime.datetime.now()})
            await client.track("unknown", "u")
            await client.track("purchase", 42)  # type: ignore[arg-type]
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 3  # one of each, the rest held back for the period


async def test_many_distinct_bad_keys_do_not_flood_either(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Keys may come from callers: at most 100 are followed per period, the rest share a line.
    async with asgi_client(EventsAPI(), datafile) as client:
        for _ in range(3):
            for n in range(1100):
                await client.track(f"unknown-{n}", "u")
                await client.track("purchase", "u", {f"attribute-{n}": 1})
    events = [r for r in caplog.records if "is not in datafile" in r.getMessage()]
    assert len([r for r in events if r.getMessage().startswith("Event")]) == 101
    assert len([r for r in events if r.getMessage().startswith("Attribute")]) == 101


async def test_each_bad_event_key_and_argument_is_logged(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        for n in range(5):
            await client.track(f"unknown-{n}", "u")
        await client.track("purchase", None)  # type: ignore[arg-type]
        await client.track("purchase", "u", [])  # type: ignore[arg-type]
        await client.track("purchase", "u", None, [])  # type: ignore[arg-type]
        await client.track("purchase", "u", {"nope": 1})
        await client.track("purchase", "u", {"nope": 2, "plan": "pro"})
        await client.track("purchase", "u", {"nope_too": 1})
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        *(f"Event 'unknown-{n}' is not in datafile." for n in range(5)),
        "track() refused: user_id must be a str, not NoneType",
        "track() refused: attributes must be a mapping, not list",
        "track() refused: event_tags must be a mapping, not list",
        "Attribute 'nope' is not in datafile.",
        "Attribute 'nope_too' is not in datafile.",
    ]


async def test_refusal_logs_carry_no_tag_value_and_no_raw_key(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    class Secret:
        def __repr__(self) -> str:
            return "SECRET-TOKEN"

    async with asgi_client(EventsAPI(), datafile) as client:
        await client.track("purchase", "u", None, {"card": Secret()})
        await client.track("purchase", "u", None, {"k": [float("nan"), "SECRET-TOKEN"]})
        await client.track("unknown\nERROR forged line", "u")
        await client.track("purchase", "u", {"bad\nkey": 1})
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert lines
    assert not any("SECRET-TOKEN" in line for line in lines), lines
    assert not any("\n" in line for line in lines), lines
    assert "Event 'unknown\\nERROR forged line' is not in datafile." in lines
