"""optitrack.testing._waiting: the wait_* methods, in one event loop and across threads."""

from __future__ import annotations

import anyio
import anyio.abc
import httpx
import pytest

from optitrack.testing import EventsAPI, Respond, serve_in_thread
from tests.testing.conftest import CONVERSION_BODY, GUARD, JSON, batch_of, client, conversion, post

pytestmark = pytest.mark.anyio


async def test_wait_for_events_wakes_when_they_arrive() -> None:
    api = EventsAPI()
    async with client(api) as http, anyio.create_task_group() as tg:

        async def send_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await post(http, batch_of(conversion("a"), conversion("b")))
            await post(http, batch_of(conversion("c")))

        tg.start_soon(send_later)
        with anyio.fail_after(GUARD):
            await api.wait_for_events(3)

    assert api.event_count == 3
    assert api.batch_count == 2


async def test_waiting_helpers_return_at_once_when_satisfied() -> None:
    api = EventsAPI(faults=[Respond(503)])
    async with client(api) as http:
        await post(http, CONVERSION_BODY)
        await post(http, CONVERSION_BODY)

    with anyio.fail_after(GUARD):
        await api.wait_for_requests(2)
        await api.wait_for_batches(1)
        await api.wait_for_events(1)
        await api.wait_until(lambda: api.revenue == 4200)


async def test_wait_until_raises_what_the_predicate_raises() -> None:
    api = EventsAPI()
    calls = 0

    def predicate() -> bool:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise LookupError("boom")
        return False

    async with client(api) as http, anyio.create_task_group() as tg:

        async def send_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await post(http, CONVERSION_BODY)

        tg.start_soon(send_later)
        with anyio.fail_after(GUARD), pytest.raises(LookupError, match="boom"):
            await api.wait_until(predicate)


# Across threads -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_leftover_thread")
async def test_waiting_across_threads() -> None:
    api = EventsAPI()
    with serve_in_thread(api) as server, anyio.fail_after(GUARD):
        async with httpx.AsyncClient() as http, anyio.create_task_group() as tg:

            async def send_later() -> None:
                await anyio.wait_all_tasks_blocked()
                await http.post(server.url, content=CONVERSION_BODY, headers=JSON)

            tg.start_soon(send_later)
            await api.wait_for_events(1)

    assert api.event_count == 1
