"""Shared by the tests of optitrack.testing: the fixture payloads and in-process helpers."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from optitrack.testing import EventsAPI
from tests.conftest import SHARED_FIXTURES

CONVERSION_BODY = (SHARED_FIXTURES / "payload_conversion.json").read_bytes()
IMPRESSION_BODY = (SHARED_FIXTURES / "payload_impression.json").read_bytes()
CONVERSION = json.loads(CONVERSION_BODY)
IMPRESSION = json.loads(IMPRESSION_BODY)
JSON = {"content-type": "application/json"}
GUARD = 5  # seconds: only a guard against a hung test, never a wait


def conversion(uuid: str, *, visitor_id: str = "user_1", **tags: Any) -> dict[str, Any]:
    """The conversion fixture as one visitor, with its own uuid and tags."""
    visitor = copy.deepcopy(CONVERSION["visitors"][0])
    visitor["visitor_id"] = visitor_id
    event = visitor["snapshots"][0]["events"][0]
    event["uuid"] = uuid
    if tags:
        event["tags"] = tags
    return visitor  # type: ignore[no-any-return]


def batch_of(*visitors: dict[str, Any]) -> bytes:
    batch = copy.deepcopy(CONVERSION)
    batch["visitors"] = list(visitors)
    return json.dumps(batch).encode()


def in_process(api: EventsAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://events.test")


@asynccontextmanager
async def client(api: EventsAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(api) as http:
        yield http


async def post(http: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await http.post("/v1/events", content=body, headers={**JSON, **headers})


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "optitrack-testing-server"]


@pytest.fixture
def no_leftover_thread() -> Iterator[None]:
    yield
    assert server_threads() == []
