"""The common ``decide`` (a known flag, default options, nothing forced) against the
general way: the same decisions and, byte for byte but for uuids and timestamps, the same
impressions, on generated datafiles; and the plans it keeps follow the datafile and the
default options."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from optitrack import DecideOption, Decision
from optitrack.testing import EventsAPI
from tests.conftest import asgi_client, load_fixture
from tests.decisions._random_datafiles import _random_case

pytestmark = pytest.mark.anyio

# Decide options that change nothing in a client without a user profile service: given
# to a call, they send it the general way.
GENERAL = [DecideOption.IGNORE_USER_PROFILE_SERVICE]
_VOLATILE = re.compile(rb'"timestamp":\d+|"uuid":"[0-9a-f-]+"')


def _fields(decision: Decision) -> str:
    # A repr: a variable may be NaN, which equals nothing.
    return repr(
        (
            decision.variation_key,
            decision.enabled,
            dict(decision.variables),
            decision.rule_key,
            decision.flag_key,
            decision.reasons,
        )
    )


def _bodies(api: EventsAPI) -> list[bytes]:
    return [_VOLATILE.sub(b"", request.content) for request in api.requests]


@pytest.mark.parametrize("seed", range(40))
async def test_the_common_decide_answers_and_sends_as_the_general_way(seed: int) -> None:
    datafile, users, _, _ = _random_case(seed)
    datafile = {k: v for k, v in datafile.items() if k not in ("holdouts", "localHoldouts")}
    defaults = [
        [],
        [DecideOption.EXCLUDE_VARIABLES],
        [DecideOption.DISABLE_DECISION_EVENT],
    ][seed % 3]
    flag_keys = [flag["key"] for flag in datafile["featureFlags"]]
    common_api, general_api = EventsAPI(), EventsAPI()
    options = {"batch_size": 1, "default_decide_options": defaults}
    async with (
        asgi_client(common_api, datafile, **options) as common,
        asgi_client(general_api, datafile, **options) as general,
    ):
        for user, _ in users:
            for key in flag_keys:
                one = common.create_user_context(user.user_id, user.attributes)
                other = general.create_user_context(user.user_id, user.attributes)
                one.qualified_segments = other.qualified_segments = user.qualified_segments
                decision = await one.decide(key)
                assert _fields(decision) == _fields(await other.decide(key, GENERAL)), (
                    seed,
                    user,
                    key,
                )
                assert decision.user_context is one
        await common.flush()
        await general.flush()
        planned = [plan for plan in common._decider._common_plans.values() if plan is not None]
        assert common.statistics().accepted == general.statistics().accepted
    assert _bodies(common_api) == _bodies(general_api)
    if flag_keys:
        assert planned, "the common path never answered"


async def test_plans_follow_a_new_datafile() -> None:
    datafile = load_fixture("datafile_example.json")
    async with asgi_client(EventsAPI(), datafile) as client:
        before = await client.create_user_context("user_1", {"plan": "pro"}).decide("new_checkout")
        changed = copy.deepcopy(datafile)
        changed["revision"] = str(int(datafile["revision"]) + 1)
        for experiment in changed["experiments"]:
            for allocation in experiment["trafficAllocation"]:
                allocation["endOfRange"] = 0  # nobody in any experiment now
        client.update_datafile(changed)
        after = await client.create_user_context("user_1", {"plan": "pro"}).decide("new_checkout")
        general = await client.create_user_context("user_1", {"plan": "pro"}).decide(
            "new_checkout", GENERAL
        )
    assert before.rule_key != after.rule_key
    assert _fields(after) == _fields(general)


async def test_a_decision_listener_or_a_forced_decision_is_honoured() -> None:
    from optitrack import DecisionContext, ForcedDecision, NotificationType

    datafile = load_fixture("datafile_example.json")
    heard: list[Any] = []
    async with asgi_client(EventsAPI(), datafile) as client:
        user = client.create_user_context("user_1", {"plan": "pro"})
        plain = await user.decide("new_checkout")
        forced_key = next(
            v["key"]
            for e in datafile["experiments"]
            if e["key"] == plain.rule_key
            for v in e["variations"]
            if v["key"] != plain.variation_key
        )
        user.set_forced_decision(
            DecisionContext("new_checkout", plain.rule_key), ForcedDecision(forced_key)
        )
        assert (await user.decide("new_checkout")).variation_key == forced_key
        user.remove_all_forced_decisions()
        client.notification_center.add_listener(NotificationType.DECISION, heard.append)
        assert _fields(await user.decide("new_checkout")) == _fields(plain)
    assert len(heard) == 1
