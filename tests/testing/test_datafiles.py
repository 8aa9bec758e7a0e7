"""optitrack.testing._datafiles: DatafileAPI, in-process and over loopback sockets."""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from optitrack.testing import (
    DatafileAPI,
    DatafileRequest,
    Delay,
    Fault,
    Hang,
    Reset,
    Respond,
    SimulatedReset,
    When,
    serve,
    serve_in_thread,
)
from tests.testing.conftest import GUARD

pytestmark = pytest.mark.anyio

DATAFILE = {"version": "4", "revision": "1", "projectId": "123", "accountId": "456"}
COMPACT = b'{"version":"4","revision":"1","projectId":"123","accountId":"456"}'
URL = "/datafiles/KEY.json"
AUTH_URL = "/datafiles/auth/KEY.json"

Connect = Callable[[DatafileAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def in_process(api: DatafileAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    with anyio.fail_after(GUARD):
        async with httpx.AsyncClient(transport=transport, base_url="http://cdn.test") as http:
            yield http


@asynccontextmanager
async def loopback(api: DatafileAPI) -> AsyncIterator[httpx.AsyncClient]:
    with anyio.fail_after(GUARD):
        async with serve(api) as server, httpx.AsyncClient(base_url=server.base_url) as http:
            yield http


@pytest.fixture(params=[in_process, loopback], ids=["in-process", "loopback"])
def connect(request: pytest.FixtureRequest) -> Connect:
    """Each test that takes it runs in-process and over real loopback sockets."""
    return request.param  # type: ignore[no-any-return]


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def seconds(date: str) -> float:
    return email.utils.parsedate_to_datetime(date).timestamp()


# Serving ------------------------------------------------------------------------------


async def test_serves_a_mapping_as_compact_json(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        response = await http.get(URL, headers={"x-request": "1"})

    assert response.status_code == 200
    assert response.content == COMPACT
    assert response.headers["content-type"] == "application/json"
    etag = response.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag)  # strong: no W/
    assert seconds(response.headers["last-modified"]) > 0
    [record] = api.requests
    assert isinstance(record, DatafileRequest)
    assert (record.method, record.path, record.sdk_key) == ("GET", URL, "KEY")
    assert (record.status, record.etag, record.fault) == (200, etag, None)
    assert record.headers["X-Request"] == "1"
    assert api.request_count == 1
    assert api.sdk_keys == ["KEY"]


async def test_str_and_bytes_are_served_as_they_are(connect: Connect) -> None:
    api = DatafileAPI({"text": "{not json", "raw": b"\xff\x00"})
    async with connect(api) as http:
        text = await http.get("/datafiles/text.json")
        raw = await http.get("/datafiles/raw.json")

    assert (text.status_code, text.text) == (200, "{not json")
    assert text.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        text.json()
    assert (raw.status_code, raw.content) == (200, b"\xff\x00")


async def test_200_then_304_on_the_etag(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        first = await http.get(URL)
        etag, last_modified = first.headers["etag"], first.headers["last-modified"]
        unchanged = await http.get(URL, headers={"if-none-match": etag})
        weak = await http.get(URL, headers={"if-none-match": f'"other", W/{etag}'})
        star = await http.get(URL, headers={"if-none-match": "*"})
        # If-None-Match wins: a date that would match does not make an old ETag a 304.
        other = await http.get(
            URL, headers={"if-none-match": '"other"', "if-modified-since": last_modified}
        )

    assert first.status_code == 200
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert unchanged.headers["etag"] == etag
    assert unchanged.headers["last-modified"] == last_modified
    assert "content-type" not in unchanged.headers
    assert (weak.status_code, star.status_code) == (304, 304)
    assert (other.status_code, other.content) == (200, COMPACT)
    assert [r.status for r in api.requests] == [200, 304, 304, 304, 200]
    assert {r.etag for r in api.requests} == {etag}


async def test_304_on_if_modified_since(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        last_modified = (await http.get(URL)).headers["last-modified"]
        later = http_date(seconds(last_modified) + 3600)
        earlier = http_date(seconds(last_modified) - 1)
        same = await http.get(URL, headers={"if-modified-since": last_modified})
        after = await http.get(URL, headers={"if-modified-since": later})
        before = await http.get(URL, headers={"if-modified-since": earlier})
        invalid = await http.get(URL, headers={"if-modified-since": "yesterday"})
        utc = last_modified.replace("GMT", "-0000")
        unzoned = await http.get(URL, headers={"if-modified-since": utc})

    assert (same.status_code, same.content) == (304, b"")
    assert after.status_code == 304
    assert (before.status_code, before.content) == (200, COMPACT)
    assert invalid.status_code == 200
    assert unzoned.status_code == 304


async def test_set_datafile_makes_a_new_revision(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        first = await http.get(URL)
        old = {
            "if-none-match": first.headers["etag"],
            "if-modified-since": first.headers["last-modified"],
        }
        etag = api.set_datafile("KEY", {**DATAFILE, "revision": "2"})
        changed = await http.get(URL, headers=old)
        again = api.set_datafile("KEY", {**DATAFILE, "revision": "2"})  # the same bytes
        by_date = await http.get(
            URL, headers={"if-modified-since": changed.headers["last-modified"]}
        )

    assert changed.status_code == 200
    assert changed.json()["revision"] == "2"
    assert changed.headers["etag"] == etag != first.headers["etag"]
    # Within the same second, Last-Modified still moves on: dates alone tell them apart.
    assert seconds(changed.headers["last-modified"]) > seconds(first.headers["last-modified"])
    assert (by_date.status_code, by_date.headers["etag"]) == (200, again)
    assert again != etag
    assert [r.etag for r in api.requests] == [first.headers["etag"], etag, again]


async def test_unknown_keys_other_paths_and_methods(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        unknown = await http.get("/datafiles/OTHER.json")
        paths = [
            await http.get(path)
            for path in ("/", "/datafiles/KEY", "/datafiles/a/KEY.json", "/v1/events")
        ]
        posted = await http.post(URL, content=b"{}")

    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "message": "no datafile for sdk key 'OTHER'"}
    assert [r.status_code for r in paths] == [404, 404, 404, 404]
    assert paths[0].json()["message"] == "no such path: /"
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET")
    # Every request is recorded, whatever it was answered.
    assert [(r.sdk_key, r.status) for r in api.requests] == [
        ("OTHER", 404),
        (None, 404),
        (None, 404),
        (None, 404),
        (None, 404),
        ("KEY", 405),
    ]


async def test_remove_datafile(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        before = await http.get(URL)
        api.remove_datafile("KEY")
        after = await http.get(URL)
        api.set_datafile("KEY", DATAFILE)
        back = await http.get(URL)

    assert [r.status_code for r in (before, after, back)] == [200, 404, 200]
    assert back.headers["etag"] != before.headers["etag"]
    with pytest.raises(KeyError):
        api.remove_datafile("OTHER")


# Access tokens ------------------------------------------------------------------------


async def test_the_auth_path_needs_the_bearer_token(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE}, token="secret")
    async with connect(api) as http:
        missing = await http.get(AUTH_URL)
        basic = await http.get(AUTH_URL, headers={"authorization": "Basic c2VjcmV0"})
        empty = await http.get(AUTH_URL, headers={"authorization": "Bearer"})
        wrong = await http.get(AUTH_URL, headers={"authorization": "Bearer nope"})
        right = await http.get(AUTH_URL, headers={"authorization": "Bearer secret"})
        lower = await http.get(AUTH_URL, headers={"authorization": "bearer secret"})
        unknown = await http.get(
            "/datafiles/auth/OTHER.json", headers={"authorization": "Bearer secret"}
        )
        public = await http.get(URL)

    assert [r.status_code for r in (missing, basic, empty)] == [401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    assert (wrong.status_code, wrong.json()["error"]) == (403, "forbidden")
    assert (right.status_code, right.content) == (200, COMPACT)
    assert lower.status_code == 200
    assert unknown.status_code == 404
    # A secure environment's datafile is not on the public CDN.
    assert public.status_code == 404
    assert [r.sdk_key for r in api.requests] == ["KEY"] * 6 + ["OTHER", "KEY"]


async def test_without_a_token_both_paths_serve_freely(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http:
        plain = await http.get(URL)
        auth = await http.get(AUTH_URL)
        whatever = await http.get(AUTH_URL, headers={"authorization": "Bearer anything"})
        conditional = await http.get(AUTH_URL, headers={"if-none-match": plain.headers["etag"]})

    assert [r.status_code for r in (plain, auth, whatever, conditional)] == [200, 200, 200, 304]
    assert auth.headers["etag"] == plain.headers["etag"]


async def test_the_token_can_change() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, token="old")
    bearer = {"authorization": "Bearer new"}
    async with in_process(api) as http:
        refused = await http.get(AUTH_URL, headers=bearer)
        api.token = "new"
        served = await http.get(AUTH_URL, headers=bearer)

    assert (refused.status_code, served.status_code) == (403, 200)


# Faults -------------------------------------------------------------------------------


async def test_a_500_fault_then_healthy(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Respond(500)])
    assert api.pending_faults == 1
    async with connect(api) as http:
        failed = await http.get(URL)
        healthy = await http.get(URL)

    assert failed.status_code == 500
    assert failed.json()["error"] == "injected_fault"
    assert (healthy.status_code, healthy.content) == (200, COMPACT)
    assert api.pending_faults == 0
    assert [(r.status, r.fault, r.etag) for r in api.requests] == [
        (500, Respond(500), None),
        (200, None, healthy.headers["etag"]),
    ]


async def test_inject_fail_all_and_heal(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    api.inject(Respond(502), Respond(429, retry_after=2))
    api.fail_all(Respond(503))
    async with connect(api) as http:
        failed = [await http.get(URL) for _ in range(4)]
        api.heal()
        healed = await http.get(URL)

    assert [r.status_code for r in failed] == [502, 429, 503, 503]
    assert failed[1].headers["retry-after"] == "2"
    assert healed.status_code == 200
    assert api.pending_faults == 0


async def test_rules_match_the_path(connect: Connect) -> None:
    api = DatafileAPI(
        {"KEY": DATAFILE, "OTHER": DATAFILE},
        rules=[When(lambda path: path == b"/datafiles/OTHER.json", Respond(503))],
    )
    api.fail_when(lambda path: b"/auth/" in path, Respond(500))
    async with connect(api) as http:
        ours = await http.get(URL)
        other = await http.get("/datafiles/OTHER.json")
        auth = await http.get(AUTH_URL)

    assert (ours.status_code, other.status_code, auth.status_code) == (200, 503, 500)
    assert [r.fault for r in api.requests] == [None, Respond(503), Respond(500)]


async def test_a_2xx_fault_replaces_only_a_served_answer(connect: Connect) -> None:
    api = DatafileAPI(
        {"KEY": DATAFILE},
        faults=[Respond(200, body="{}"), Respond(200, body="{}"), Respond(203)],
    )
    async with connect(api) as http:
        unknown = await http.get("/datafiles/OTHER.json")
        replaced = await http.get(URL)
        etag = (await http.get(URL)).headers.get("etag")
        served = await http.get(URL)

    assert unknown.status_code == 404
    assert (replaced.status_code, replaced.text) == (200, "{}")
    assert "etag" not in replaced.headers
    assert etag is None  # the 203's answer has no ETag either
    assert served.status_code == 200
    assert [(r.status, r.etag is None) for r in api.requests] == [
        (404, True),
        (200, True),
        (203, True),
        (200, False),
    ]


async def test_a_2xx_rule_replaces_a_served_answer(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Delay(0)])
    api.fail_when(lambda path: True, Respond(200, body="[]"))
    async with connect(api) as http:
        replaced = await http.get(URL)
        unknown = await http.get("/datafiles/OTHER.json")

    assert (replaced.status_code, replaced.text) == (200, "[]")
    assert unknown.status_code == 404
    assert [r.fault for r in api.requests] == [Respond(200, body="[]")] * 2


async def test_delay_then_serve(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Delay(0.05), Delay(0, then=Respond(502))])
    async with connect(api) as http:
        start = anyio.current_time()
        delayed = await http.get(URL)
        elapsed = anyio.current_time() - start
        then_failed = await http.get(URL)

    assert (delayed.status_code, elapsed >= 0.05) == (200, True)
    assert then_failed.status_code == 502
    assert [r.fault for r in api.requests] == [Delay(0.05), Delay(0, then=Respond(502))]


async def test_reset_over_loopback_is_a_connection_error() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Reset()])
    async with loopback(api) as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.get(URL)
        after = await http.get(URL)

    assert not isinstance(caught.value, SimulatedReset)  # a real reset, from the socket
    assert after.status_code == 200
    assert [r.status for r in api.requests] == [None, 200]


async def test_reset_in_process_is_a_simulated_reset() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Reset()])
    async with in_process(api) as http:
        with pytest.raises(SimulatedReset, match="DatafileAPI"):
            await http.get(URL)
        after = await http.get(URL)

    assert after.status_code == 200
    assert api.requests[0].fault == Reset()


async def test_hang_over_loopback_lets_the_client_timeout_fire() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Hang()])
    async with loopback(api) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(URL, timeout=0.1)
        after = await http.get(URL)

    assert after.status_code == 200
    assert [(r.status, r.fault) for r in api.requests] == [(None, Hang()), (200, None)]


async def test_hang_in_process_waits_until_cancelled() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Hang()])
    async with in_process(api) as http:
        with anyio.move_on_after(0.05) as scope:
            await http.get(URL)
        after = await http.get(URL)

    assert scope.cancelled_caught
    assert after.status_code == 200


async def test_an_unknown_fault_is_an_error() -> None:
    api = DatafileAPI({"KEY": DATAFILE}, faults=[Fault()])
    async with in_process(api) as http:
        with pytest.raises(TypeError, match="unknown fault"):
            await http.get(URL)


# Recording and waiting ----------------------------------------------------------------


async def test_wait_for_requests_and_reset(connect: Connect) -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    async with connect(api) as http, anyio.create_task_group() as tg:

        async def fetch_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await http.get(URL)
            await http.get("/datafiles/OTHER.json")

        tg.start_soon(fetch_later)
        await api.wait_for_requests(2)
        await api.wait_until(lambda: api.requests[-1].status == 404)

    assert api.request_count == 2
    api.reset()
    assert (api.requests, api.request_count) == ([], 0)
    assert api.sdk_keys == ["KEY"]  # the datafiles stay
    await api.wait_for_requests(0)


@pytest.mark.usefixtures("no_leftover_thread")
async def test_serve_in_thread_while_the_test_sets_datafiles() -> None:
    api = DatafileAPI({"KEY": {"revision": "0"}})
    etags: set[str] = set()
    with serve_in_thread(api) as server, anyio.fail_after(GUARD):
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            async with anyio.create_task_group() as tg:

                async def fetch_later() -> None:
                    await anyio.wait_all_tasks_blocked()
                    await http.get(URL)

                tg.start_soon(fetch_later)
                await api.wait_for_requests(1)  # recorded in the server's thread
            for revision in range(1, 6):
                etags.add(api.set_datafile("KEY", {"revision": str(revision)}))
                response = await http.get(URL)
                assert response.json() == {"revision": str(revision)}
                assert response.headers["etag"] in etags

    assert api.request_count == 6
    assert len(etags) == 5
    assert all(r.client is not None for r in api.requests)


async def test_a_client_leaving_mid_request_is_not_recorded() -> None:
    api = DatafileAPI({"KEY": DATAFILE})
    with anyio.fail_after(GUARD):
        async with serve(api) as server:
            stream = await anyio.connect_tcp(server.host, server.port)
            async with stream:
                await stream.send(b"GET /datafiles/KEY.json HTTP/1.1\r\nHost: x\r\n")
                await stream.send(b"Content-Length: 10\r\n\r\n12345")
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                response = await http.get(URL)

    assert response.status_code == 200
    assert api.request_count == 1


async def test_other_scopes_are_ignored() -> None:
    async def receive() -> MutableMapping[str, Any]:
        raise AssertionError("not called")

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError("not called")

    api = DatafileAPI()
    await api({"type": "websocket"}, receive, send)
    assert api.request_count == 0


async def test_lifespan_protocol() -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await DatafileAPI()({"type": "lifespan"}, receive, send)

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# Arguments ----------------------------------------------------------------------------


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="token"):
        DatafileAPI(token="")
    with pytest.raises(ValueError, match="sdk_key"):
        DatafileAPI({"": DATAFILE})
    with pytest.raises(ValueError, match="sdk_key"):
        DatafileAPI({"a/b": DATAFILE})
    with pytest.raises(TypeError, match="list"):
        DatafileAPI({"KEY": [DATAFILE]})
    with pytest.raises(ValueError, match="JSON"):
        DatafileAPI({"KEY": {"nan": float("nan")}})


def test_repr_and_keys() -> None:
    api = DatafileAPI({"B": DATAFILE, "A": "{}"})
    assert repr(api) == "<DatafileAPI datafiles=2 requests=0>"
    assert api.sdk_keys == ["B", "A"]
    api.remove_datafile("B")
    assert api.sdk_keys == ["A"]
