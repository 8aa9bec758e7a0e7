"""Helpers shared by the delivery tests: a gate in front of the stand-in, contexts, items.

Every test that goes through :func:`tests.conftest.asgi_client` runs twice: in-process
through httpx (``httpx``), and over 127.0.0.1 through the client's own transport
(``lean``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import pytest

from optitrack import RetryPolicy
from optitrack._delivery import BatchContext
from optitrack._events import batch_context
from tests import conftest as shared


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    function = metafunc.function
    in_process = metafunc.definition.get_closest_marker("in_process") is not None
    if not in_process and "asgi_client" in inspect.getsource(function):
        metafunc.parametrize("transport", ["httpx", "lean"], indirect=True)


@pytest.fixture(autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which transport :func:`tests.conftest.asgi_client` sends through."""
    kind = str(getattr(request, "param", "httpx"))
    monkeypatch.setattr(shared, "OVER_LOOPBACK", kind == "lean")
    return kind


FAST = RetryPolicy(attempts=50, wait_initial=0.001, wait_max=0.01, timeout=30)


class Gate:
    """Wraps an app: requests wait until the gate opens; counts concurrent requests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.open = anyio.Event()
        self.active = 0
        self.max_active = 0

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.open.wait()
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def context(endpoint: str) -> BatchContext:
    """An Events API batch context (the stand-in validates the envelope) for ``endpoint``."""
    return batch_context(
        account_id="12001",
        project_id="111001",
        revision="42",
        anonymize_ip=False,
        endpoint=endpoint,
    )


def visitor(user_id: str) -> bytes:
    """A serialized ``visitors[]`` entry: one conversion of ``purchase``."""
    return json.dumps(
        {
            "visitor_id": user_id,
            "attributes": [],
            "snapshots": [
                {
                    "events": [
                        {
                            "entity_id": "30101",
                            "key": "purchase",
                            "timestamp": 1,
                            "uuid": f"uuid-{user_id}",
                        }
                    ]
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
