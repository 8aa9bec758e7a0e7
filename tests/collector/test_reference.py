"""optimizely-sdk 5.7.0 and optitrack, making the same calls, get the same results."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from optitrack.testing import EventsAPI, serve_in_thread
from tests.collector.conftest import GUARD
from tests.conftest import asgi_client

pytestmark = pytest.mark.anyio

USERS = 60


class _Poster:
    """An optimizely-sdk event dispatcher that POSTs each event to a collector."""

    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http = http
        self.url = url
        self.statuses: list[int] = []

    def dispatch_event(self, event: Any) -> None:
        answer = self.http.post(
            self.url,
            content=json.dumps(event.params).encode(),
            headers={"content-type": "application/json"},
            timeout=GUARD,
        )
        self.statuses.append(answer.status_code)


def _plan(n: int) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    attributes = {"plan": ("free", "pro", "team")[n % 3], "age": 20 + n % 40}
    events: list[tuple[str, dict[str, Any]]] = []
    if n % 2:
        events.append(("purchase", {"revenue": 100 * (n % 7 + 1)}))
    if n % 3 == 0:
        events += [("signup", {}), ("signup", {})]
    return attributes, events


def _comparable(results: dict[str, Any]) -> list[Any]:
    return [
        (
            experiment["experiment_key"],
            [
                (
                    v["variation_key"],
                    v["visitors"],
                    {k: (c["unique"], c["total"]) for k, c in v["conversions"].items()},
                    v["revenue"],
                )
                for v in experiment["variations"]
            ],
        )
        for experiment in results["experiments"]
    ]


async def test_the_same_calls_give_the_same_results(datafile: dict[str, Any]) -> None:
    from optimizely import optimizely as optimizely_module
    from optimizely.event.event_processor import ForwardingEventProcessor
    from optimizely.logger import NoOpLogger

    theirs_api = EventsAPI(db=":memory:")
    with serve_in_thread(theirs_api) as server, httpx.Client() as http:
        poster = _Poster(http, server.url)
        # Each event is POSTed as the calls make it (a batch of one), in this thread.
        reference = optimizely_module.Optimizely(
            json.dumps(datafile),
            event_dispatcher=poster,
            logger=NoOpLogger(),
            event_processor=ForwardingEventProcessor(poster),
        )
        for n in range(USERS):
            attributes, events = _plan(n)
            user = reference.create_user_context(f"user-{n}", attributes)
            user.decide("new_checkout")
            for key, tags in events:
                user.track_event(key, tags)
        reference.close()
    assert poster.statuses
    assert set(poster.statuses) == {204}

    mine_api = EventsAPI(db=":memory:")
    async with asgi_client(mine_api, datafile) as client:
        for n in range(USERS):
            attributes, events = _plan(n)
            user = client.create_user_context(f"user-{n}", attributes)
            await user.decide("new_checkout")
            for key, tags in events:
                await user.track_event(key, tags)

    theirs, mine = theirs_api.results(), mine_api.results()
    assert _comparable(theirs) == _comparable(mine)
    (experiment,) = mine["experiments"]
    assert sum(v["visitors"] for v in experiment["variations"]) > 0
    assert sum(v["revenue"] for v in experiment["variations"]) > 0
