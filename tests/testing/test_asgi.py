"""optitrack.testing._asgi: the ASGI protocol beyond HTTP requests."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from optitrack.testing import EventsAPI

pytestmark = pytest.mark.anyio


async def test_lifespan_protocol() -> None:
    api = EventsAPI()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await api({"type": "lifespan"}, receive, send)

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
