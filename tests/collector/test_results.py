"""The collector's store and results: counted by timestamp, de-duplicated by uuid."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from optitrack.testing import EventsAPI
from tests.collector.conftest import batch, conversion, impression, scenario
from tests.testing.conftest import client, post

pytestmark = pytest.mark.anyio

Z = 1.959963984540054


def arms(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (experiment,) = results["experiments"]
    return {v["variation_key"]: v for v in experiment["variations"]}


async def test_counts_by_timestamp_whatever_the_arrival_order() -> None:
    answers = []
    for seed in (1, 2, 3):
        entries = scenario()
        random.Random(seed).shuffle(entries)
        api = EventsAPI(db=":memory:")
        async with client(api) as http:
            for n in range(0, len(entries), 3):  # several requests, in a shuffled order
                assert (await post(http, batch(entries[n : n + 3]))).status_code == 204
            answer = (await http.get("/v1/results")).json()
        answers.append(answer)
    assert answers[0] == answers[1] == answers[2]

    (experiment,) = answers[0]["experiments"]
    assert (experiment["experiment_id"], experiment["experiment_key"]) == (
        "40101",
        "checkout_test",
    )
    control, treatment = experiment["variations"]
    assert (control["variation_id"], control["variation_key"]) == ("60101", "control")
    assert (control["visitors"], treatment["visitors"]) == (2, 2)
    assert control["conversions"]["purchase"] | {} == {
        "unique": 1,
        "total": 1,
        "rate": 0.5,
        "revenue": 100,
        "value": 0.0,
        "lift": None,
        "ci": None,
    }
    assert control["conversions"]["signup"]["unique"] == 0
    purchase = treatment["conversions"]["purchase"]
    assert (purchase["unique"], purchase["total"], purchase["revenue"]) == (1, 2, 500)
    assert treatment["conversions"]["signup"]["total"] == 1
    assert (control["revenue"], treatment["revenue"]) == (100, 500)
    assert treatment["conversions"]["signup"]["lift"] is None  # a zero baseline

    # Delta method on log(p1/p0): p = 1/2 on n = 2 each, se² = 2 * (1 - p)/(n p) = 1.
    assert purchase["lift"] == 0.0
    low, high = purchase["ci"]
    assert low == pytest.approx(math.exp(-Z) - 1)
    assert high == pytest.approx(math.exp(Z) - 1)
    # Revenue per visitor: 250 vs 50 (zeros included); each mean's variance s²/n.
    assert treatment["revenue_per_visitor"] == 250.0
    assert treatment["revenue_lift"] == pytest.approx(4.0)
    low, high = treatment["revenue_ci"]
    se = math.sqrt((62_500 / 2) / 250**2 + (2_500 / 2) / 50**2)
    assert low == pytest.approx(5 * math.exp(-Z * se) - 1)
    assert high == pytest.approx(5 * math.exp(Z * se) - 1)


async def test_a_resent_uuid_counts_once() -> None:
    api = EventsAPI(db=":memory:", record=False)
    body = batch(scenario())
    async with client(api) as http:
        await post(http, body)
        first = (await http.get("/v1/results")).json()
        await post(http, body)
        assert (await http.get("/v1/results")).json() == first
    stats = api.statistics()
    assert (stats.events, stats.duplicates) == (20, 10)


async def test_the_database_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    body = batch(scenario())
    api = EventsAPI(db=path)
    async with client(api) as http:
        await post(http, body)
    before = api.results()
    assert api.store is not None
    api.store.close()

    again = EventsAPI(db=path)
    async with client(again) as http:
        await post(http, body)
    assert again.statistics().duplicates == 10
    assert again.results() == before
    assert again.store is not None
    assert again.store.count() == 10
    again.store.close()


async def test_memory_does_not_grow_with_the_events_when_a_database_indexes_them() -> None:
    api = EventsAPI(db=":memory:", record=False)
    async with client(api) as http:
        for n in range(20):
            entries = [conversion(f"c-{n}-{k}", f"v-{k}", 1) for k in range(50)]
            await post(http, batch(entries))
    tallies = api._tallies
    assert api.event_count == 1000
    assert (len(tallies._uuids), len(tallies._first_seen), len(tallies.duplicates)) == (0, 0, 0)


async def test_a_token_is_required_everywhere_once_set() -> None:
    api = EventsAPI(db=":memory:", token="s3cret")
    body = batch(scenario())
    async with client(api) as http:
        for method, path in (("POST", "/v1/events"), ("GET", "/v1/results"), ("GET", "/")):
            answer = await http.request(method, path, content=body)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == "Bearer"
        wrong = await post(http, body, authorization="Bearer nope")
        assert wrong.status_code == 401
        assert (await post(http, body, authorization="Bearer s3cret")).status_code == 204
        results = await http.get("/v1/results", headers={"authorization": "Bearer s3cret"})
    assert results.status_code == 200
    assert api.event_count == 10


async def test_results_need_a_database() -> None:
    api = EventsAPI()
    async with client(api) as http:
        answer = await http.get("/v1/results")
        page = await http.get("/")
    assert answer.status_code == 404
    assert answer.json()["error"] == "no_database"
    assert page.status_code == 200  # the counters' page, as before
    with pytest.raises(RuntimeError, match="database"):
        api.results()


async def test_the_page_escapes_what_clients_send() -> None:
    api = EventsAPI(db=":memory:")
    hostile = impression("i-x", "<b>x</b>", "control", 1)
    hostile["snapshots"][0]["decisions"][0]["metadata"]["rule_key"] = "<script>alert(1)</script>"
    async with client(api) as http:
        await post(http, batch([hostile, conversion("c-x", "<b>x</b>", 2, key="<i>k</i>")]))
        page = (await http.get("/")).text
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<i>k" not in page
    assert "&lt;i&gt;k&lt;/i&gt; conversion rate per variation" in page
    assert "<svg" in page


async def test_the_datafile_names_and_orders_variations(datafile: dict[str, Any]) -> None:
    unnamed = impression("i-a", "a", "treatment", 1)
    unnamed["snapshots"][0]["decisions"][0]["metadata"].update(rule_key="", variation_key="")
    api = EventsAPI(db=":memory:", datafile=datafile)
    async with client(api) as http:
        await post(http, batch([unnamed, impression("i-b", "b", "control", 2)]))
    (experiment,) = api.results()["experiments"]
    assert experiment["experiment_key"] == "checkout_test"
    assert [v["variation_key"] for v in experiment["variations"]] == ["control", "treatment"]


async def test_a_bad_batch_stores_nothing_and_says_why() -> None:
    api = EventsAPI(db=":memory:", validate=False)
    good = conversion("c-1", "a", 1)
    async with client(api) as http:
        answer = await post(http, batch([good, {"snapshots": [{"events": [{}]}]}]))
        assert answer.status_code == 400
        assert "invalid" in answer.json()["message"]
        body = batch([good]).replace(b'"timestamp": 1}', b'"timestamp": NaN}')
        assert b"NaN" in body
        nan = await post(http, body)
        assert nan.status_code == 400
        assert nan.json()["error"] == "invalid_json"
    assert api.store is not None
    assert api.store.count() == 0
    assert api.batch_count == 0


@pytest.mark.parametrize("validate", [True, False])
async def test_parsed_or_validated_the_same_counts(validate: bool) -> None:
    api = EventsAPI(db=":memory:", validate=validate)
    async with client(api) as http:
        assert (await post(http, batch(scenario()))).status_code == 204
    stats = api.statistics()
    assert (stats.events, stats.impressions, stats.conversions) == (10, 5, 5)
    assert stats.conversions_by_event == {"purchase": 4, "signup": 1}
    assert stats.impressions_by_variation == {
        ("checkout_test", "control"): 3,
        ("checkout_test", "treatment"): 2,
    }
    assert arms(api.results())["treatment"]["revenue"] == 500


def test_options_that_cannot_go_together() -> None:
    with pytest.raises(ValueError, match="database"):
        EventsAPI(validate=False, parse=False, db=":memory:")
    with pytest.raises(ValueError, match="token"):
        EventsAPI(token="")


@pytest.mark.parametrize("use_rich", [True, False])
async def test_the_results_print_as_a_table_with_or_without_rich(use_rich: bool) -> None:
    import io

    from optitrack._cli.results import print_results

    api = EventsAPI(db=":memory:")
    async with client(api) as http:
        await post(http, batch(scenario()))
    out = io.StringIO()
    print_results(api.results(), out, use_rich=use_rich)
    text = out.getvalue()
    assert "checkout_test (experiment 40101)" in text
    control = next(line for line in text.splitlines() if "control" in line)
    treatment = next(line for line in text.splitlines() if "treatment" in line)
    assert "1/1" in control
    assert "50.00%" in control
    assert "1/2" in treatment
    assert "+400.0%" in treatment
    assert ("┃" in text) is use_rich
    empty = io.StringIO()
    print_results({"experiments": []}, empty, use_rich=use_rich)
    assert empty.getvalue() == "No impressions yet.\n"
