"""Events through a proxy the environment names (``HTTP(S)_PROXY``, ``NO_PROXY``): noticed,
and sent through httpx, which speaks to proxies (the lean transport does not).

The proxy is played by a small ASGI app served on 127.0.0.1 by ``serve``.
"""

from __future__ import annotations

from typing import Any

import pytest

import optitrack
from optitrack._delivery.transport import uses_proxy
from optitrack.testing import serve

pytestmark = pytest.mark.anyio


def test_proxies_from_the_environment_are_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert not uses_proxy("https://logx.optimizely.com/v1/events")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert uses_proxy("https://logx.optimizely.com/v1/events")
    assert not uses_proxy("http://logx.optimizely.com/v1/events")
    monkeypatch.setenv("NO_PROXY", "logx.optimizely.com")
    assert not uses_proxy("https://logx.optimizely.com/v1/events")


class Proxy:
    """Plays a forward proxy: records each request's target and answers 204."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.targets.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_a_client_under_an_environment_proxy_sends_through_it(
    datafile: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Proxy()
    for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    async with serve(app) as proxy:
        # An endpoint that does not resolve is reached only through the proxy.
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        async with optitrack.Client(
            datafile, event_endpoint="http://events.invalid/v1/events"
        ) as client:
            await client.track("purchase", "u")
            assert (await client.flush()).delivered == 1
    assert app.targets == ["http://events.invalid/v1/events"]
