"""The decision API: activate, is_feature_enabled, decide, variables, and their impressions.

Impressions are checked on the wire (the Events API stand-in), and against what
optimizely-sdk 5.7.0 dispatches for the same calls.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import optitrack
from optitrack import (
    ClientStateError,
    DecideOption,
    DecisionContext,
    DecisionError,
    ForcedDecision,
    InMemoryUserProfileService,
    NotificationType,
)
from optitrack.testing import EventsAPI
from tests.conftest import asgi_client, comparable, load_fixture
from tests.test_events import FIXTURE_ATTRIBUTES

pytestmark = pytest.mark.anyio

PRO = {"plan": "pro"}


def impressions(api: EventsAPI) -> list[dict[str, Any]]:
    """The decisions of every impression received, with the visitor id."""
    out = []
    for visitor in api.visitors:
        snapshot = visitor.snapshots[0]
        for decision in snapshot.decisions or []:
            out.append(
                {"visitor": visitor.visitor_id} | decision.model_dump(mode="json")["metadata"]
            )
    return out


def with_variables(datafile: dict[str, Any]) -> dict[str, Any]:
    datafile = copy.deepcopy(datafile)
    datafile["featureFlags"][0]["variables"] = [
        {"id": "90001", "key": "title", "type": "string", "defaultValue": "Hello"},
        {"id": "90002", "key": "max_items", "type": "integer", "defaultValue": "3"},
        {"id": "90003", "key": "ratio", "type": "double", "defaultValue": "0.5"},
        {"id": "90004", "key": "express", "type": "boolean", "defaultValue": "false"},
        {
            "id": "90005",
            "key": "config",
            "type": "string",
            "subType": "json",
            "defaultValue": '{"a": 1}',
        },
    ]
    treatment = datafile["experiments"][0]["variations"][1]
    treatment["variables"] = [
        {"id": "90001", "value": "Hi"},
        {"id": "90002", "value": "7"},
        {"id": "90004", "value": "true"},
        {"id": "90005", "value": '{"a": 2, "b": [1]}'},
    ]
    return datafile


async def test_decide_impression_equals_the_optimizely_fixture(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", FIXTURE_ATTRIBUTES)
        decision = await user.decide("new_checkout")
        await client.flush()
    assert decision.variation_key == "treatment"
    assert decision.enabled is True
    assert decision.rule_key == "checkout_test"
    assert decision.flag_key == "new_checkout"
    assert decision.user_context is user
    assert decision.reasons == ()
    (request,) = api.requests
    assert comparable(request.json()) == comparable(load_fixture("payload_impression.json"))


async def test_activate_sends_an_experiment_impression(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert await client.activate("checkout_test", "user_1", PRO) == "treatment"
        assert await client.activate("nope", "user_1") is None
    assert impressions(api) == [
        {
            "visitor": "user_1",
            "flag_key": "",
            "rule_key": "checkout_test",
            "rule_type": "experiment",
            "variation_key": "treatment",
            "enabled": True,
        }
    ]


async def test_get_variation_sends_nothing(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert client.get_variation("checkout_test", "user_1") == "treatment"
        assert client.get_variation("checkout_test", "user_0") == "control"
        assert client.get_variation("nope", "user_0") is None
    assert api.request_count == 0


async def test_track_never_sends_an_impression(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        await client.track("purchase", "user_1")
    assert impressions(api) == []
    assert api.conversions == {"purchase": 1}


async def test_a_conversion_counts_after_an_impression(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", PRO)
        await user.decide("new_checkout")
        await user.track_event("purchase", {"revenue": 100})
    (arm,) = api.statistics().variations
    assert (arm.experiment, arm.variation, arm.conversions, arm.revenue) == (
        "checkout_test",
        "treatment",
        {"purchase": 1},
        100,
    )


@pytest.mark.parametrize("send_flag_decisions", [True, False])
async def test_is_feature_enabled_impressions(
    datafile: dict[str, Any], send_flag_decisions: bool
) -> None:
    datafile["sendFlagDecisions"] = send_flag_decisions
    # Stop the experiment: decisions fall through to the rollout.
    rollout_only = copy.deepcopy(datafile)
    rollout_only["experiments"][0]["status"] = "Paused"
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert await client.is_feature_enabled("new_checkout", "user_1") is True
    async with asgi_client(api, rollout_only) as client:
        assert await client.is_feature_enabled("new_checkout", "user_1", PRO) is True
        assert await client.is_feature_enabled("new_checkout", "user_2") is False
        assert await client.is_feature_enabled("nope", "user_2") is False
    got = [(i["visitor"], i["rule_type"], i["rule_key"], i["enabled"]) for i in impressions(api)]
    expected = [("user_1", "feature-test", "checkout_test", True)]
    if send_flag_decisions:
        expected += [
            ("user_1", "rollout", "pro_delivery", True),
            ("user_2", "rollout", "default-rollout-70101", False),
        ]
    assert got == expected


async def test_no_variation_impression_only_with_send_flag_decisions(
    datafile: dict[str, Any],
) -> None:
    datafile["experiments"][0]["status"] = "Paused"
    datafile["rollouts"][0]["experiments"] = []  # nothing can decide
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        decision = await client.create_user_context("u").decide("new_checkout")
        assert await client.is_feature_enabled("new_checkout", "u") is False
    assert (decision.variation_key, decision.enabled, decision.rule_key) == (None, False, None)
    visitor, _is_feature_enabled = api.visitors
    assert visitor.snapshots[0].decisions is not None
    first = visitor.snapshots[0].decisions[0]
    assert (first.campaign_id, first.experiment_id, first.variation_id) == ("", "", None)
    assert first.metadata.rule_type == "rollout"
    assert first.metadata.variation_key == ""
    assert visitor.snapshots[0].events[0].entity_id == ""


async def test_decide_options(datafile: dict[str, Any]) -> None:
    datafile = with_variables(datafile)
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", PRO)
        quiet = await user.decide("new_checkout", [DecideOption.DISABLE_DECISION_EVENT])
        assert quiet.enabled
        assert await client.flush()
        assert api.event_count == 0
        bare = await user.decide("new_checkout", ["EXCLUDE_VARIABLES", "DISABLE_DECISION_EVENT"])
        assert bare.variables == {}
        full = await user.decide(
            "new_checkout", [DecideOption.INCLUDE_REASONS, DecideOption.DISABLE_DECISION_EVENT]
        )
        assert full.variables == {
            "title": "Hi",
            "max_items": 7,
            "ratio": 0.5,
            "express": True,
            "config": {"a": 2, "b": [1]},
        }
        assert any("treatment" in reason for reason in full.reasons)
        control = client.create_user_context("user_0")
        off = await control.decide("new_checkout", ["DISABLE_DECISION_EVENT"])
        assert off.variation_key == "control"
        assert off.variables["title"] == "Hello"  # control is not enabled: defaults
        assert (
            await control.decide_for_keys(
                ["new_checkout"], ["ENABLED_FLAGS_ONLY", "DISABLE_DECISION_EVENT"]
            )
            == {}
        )
        # decide() ignores ENABLED_FLAGS_ONLY: a single decision is always returned.
        single = await control.decide("new_checkout", ["ENABLED_FLAGS_ONLY"])
        assert single.enabled is False


async def test_default_decide_options(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(
        api, datafile, default_decide_options=[DecideOption.DISABLE_DECISION_EVENT]
    ) as client:
        user = client.create_user_context("user_1")
        await user.decide("new_checkout")
        await user.decide_all()
        await client.flush()
        assert api.request_count == 0
        client.default_decide_options = ["INCLUDE_REASONS"]  # they may change
        assert client.default_decide_options == {DecideOption.INCLUDE_REASONS}
        decision = await user.decide("new_checkout")
        await client.flush()
    assert decision.reasons
    assert api.event_count == 1


async def test_decide_all_and_for_keys(datafile: dict[str, Any]) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        user = client.create_user_context("user_1")
        everything = await user.decide_all()
        assert list(everything) == ["new_checkout"]
        some = await user.decide_for_keys(["new_checkout", "nope"])
    assert some["new_checkout"].variation_key == "treatment"
    assert some["nope"] == optitrack.Decision(None, False, {}, None, "nope", user, ())


async def test_unknown_flag(datafile: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        decision = await client.create_user_context("u").decide("nope")
    assert decision.enabled is False
    assert decision.variation_key is None
    assert decision.reasons == ('No flag was found for key "nope".',)
    assert "No feature flag was found for key 'nope'." in caplog.text
    assert api.request_count == 0


async def test_strict_decisions_raise(datafile: dict[str, Any]) -> None:
    async with asgi_client(EventsAPI(), datafile, strict=True) as client:
        with pytest.raises(DecisionError, match="nope"):
            await client.create_user_context("u").decide("nope")
        with pytest.raises(DecisionError, match="experiment_key"):
            await client.activate("", "u")
        with pytest.raises(DecisionError, match="user_id"):
            await client.is_feature_enabled("new_checkout", 5)  # type: ignore[arg-type]


async def test_invalid_input_is_logged_not_raised(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        assert await client.activate(None, "u") is None  # type: ignore[arg-type]
        assert await client.activate("checkout_test", 7) is None  # type: ignore[arg-type]
        assert await client.activate("checkout_test", "u", ["x"]) is None  # type: ignore[arg-type]
        assert await client.is_feature_enabled("", "u") is False
        assert client.get_feature_variable("new_checkout", "", "u") is None
    assert caplog.text.count("invalid format") == 5


async def test_decisions_need_a_running_client(datafile: dict[str, Any]) -> None:
    client = optitrack.Client(datafile)
    with pytest.raises(ClientStateError):
        await client.activate("checkout_test", "u")
    with pytest.raises(ClientStateError):
        await client.create_user_context("u").decide("new_checkout")
    assert client.get_variation("checkout_test", "user_1") == "treatment"


async def test_forced_decisions(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", PRO)
        flag = DecisionContext("new_checkout")
        rule = DecisionContext("new_checkout", "checkout_test")
        assert user.set_forced_decision(rule, ForcedDecision("control"))
        assert user.get_forced_decision(rule) == ForcedDecision("control")
        by_rule = await user.decide("new_checkout")
        assert (by_rule.variation_key, by_rule.rule_key) == ("control", "checkout_test")
        user.set_forced_decision(flag, ForcedDecision("on"))
        by_flag = await user.decide("new_checkout")
        assert (by_flag.variation_key, by_flag.enabled, by_flag.rule_key) == ("on", True, None)
        assert user.remove_forced_decision(flag)
        assert not user.remove_forced_decision(flag)
        assert user.remove_all_forced_decisions()
        assert user.get_forced_decision(rule) is None
        assert (await user.decide("new_checkout")).variation_key == "treatment"
    # Forced decisions send impressions; the flag-level one has no rule, so its campaign,
    # experiment and rule are empty, as Optimizely's SDK sends them.
    assert [(i["rule_key"], i["variation_key"]) for i in impressions(api)] == [
        ("checkout_test", "control"),
        ("", "on"),
        ("checkout_test", "treatment"),
    ]
    flag_level = api.visitors[1].snapshots[0]
    assert flag_level.decisions is not None
    decision = flag_level.decisions[0]
    assert (decision.campaign_id, decision.experiment_id, decision.variation_id) == (
        "",
        "",
        "60201",
    )
    assert decision.metadata.rule_type == "feature-test"
    assert flag_level.events[0].entity_id == ""


async def test_forced_decision_impressions_match_optimizely_sdk(datafile: dict[str, Any]) -> None:
    from optimizely import optimizely as optimizely_module
    from optimizely.logger import NoOpLogger
    from optimizely.optimizely_user_context import OptimizelyUserContext

    recorder = _Recorder()
    reference = optimizely_module.Optimizely(
        json.dumps(datafile), event_dispatcher=recorder, logger=NoOpLogger()
    )
    contexts = [("new_checkout", None, "on"), ("new_checkout", "checkout_test", "control")]
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        for flag_key, rule_key, variation_key in contexts:
            mine = client.create_user_context("user_1", PRO)
            mine.set_forced_decision(
                DecisionContext(flag_key, rule_key), ForcedDecision(variation_key)
            )
            await mine.decide(flag_key)
            theirs = reference.create_user_context("user_1", PRO)
            theirs.set_forced_decision(
                OptimizelyUserContext.OptimizelyDecisionContext(flag_key, rule_key),
                OptimizelyUserContext.OptimizelyForcedDecision(variation_key),
            )
            theirs.decide(flag_key)
    reference.close()
    assert _visitors([r.json() for r in api.requests]) == _visitors(recorder.params)


async def test_forced_variations_and_the_whitelist(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert client.set_forced_variation("checkout_test", "user_1", "control")
        assert client.get_forced_variation("checkout_test", "user_1") == "control"
        assert await client.activate("checkout_test", "user_1") == "control"
        assert client.set_forced_variation("checkout_test", "user_1", None)
        assert client.get_forced_variation("checkout_test", "user_1") is None
        assert not client.set_forced_variation("checkout_test", "user_1", "nope")
        assert not client.set_forced_variation("nope", "user_1", "control")
        # The datafile's whitelist: qa_user_1 always gets treatment, and an impression.
        assert await client.activate("checkout_test", "qa_user_1") == "treatment"
    assert [i["variation_key"] for i in impressions(api)] == ["control", "treatment"]


async def test_user_profile_service_keeps_bucketing_sticky(datafile: dict[str, Any]) -> None:
    profiles = InMemoryUserProfileService()
    api = EventsAPI()
    async with asgi_client(api, datafile, user_profile_service=profiles) as client:
        assert await client.activate("checkout_test", "user_1") == "treatment"
    assert await profiles.lookup("user_1") == {
        "user_id": "user_1",
        "experiment_bucket_map": {"40101": {"variation_id": "60102"}},
    }
    everyone_to_control = copy.deepcopy(datafile)
    everyone_to_control["experiments"][0]["trafficAllocation"] = [
        {"entityId": "60101", "endOfRange": 10000}
    ]
    async with asgi_client(api, everyone_to_control, user_profile_service=profiles) as client:
        assert await client.activate("checkout_test", "user_1") == "treatment"
        user = client.create_user_context("user_1")
        assert (await user.decide("new_checkout")).variation_key == "treatment"
        ignored = await user.decide("new_checkout", ["IGNORE_USER_PROFILE_SERVICE"])
        assert ignored.variation_key == "control"
        assert client.get_variation("checkout_test", "user_2") == "control"
        # The sync calls use the in-memory service too, through its sync twins.
        assert client.get_variation("checkout_test", "user_1") == "treatment"


async def test_a_failing_user_profile_service_does_not_stop_decisions(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def lookup(self, user_id: str) -> Mapping[str, Any] | None:
            raise ConnectionError("profile store down")

        async def save(self, profile: Mapping[str, Any]) -> None:
            raise ConnectionError("profile store down")

    assert isinstance(Broken(), optitrack.UserProfileService)
    async with asgi_client(EventsAPI(), datafile, user_profile_service=Broken()) as client:
        assert await client.activate("checkout_test", "user_1") == "treatment"
    assert "failed to look up" in caplog.text
    assert "failed to save" in caplog.text


async def test_feature_variables(datafile: dict[str, Any]) -> None:
    datafile = with_variables(datafile)
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        assert client.get_feature_variable_string("new_checkout", "title", "user_1") == "Hi"
        assert client.get_feature_variable_integer("new_checkout", "max_items", "user_1") == 7
        assert client.get_feature_variable_double("new_checkout", "ratio", "user_1") == 0.5
        assert client.get_feature_variable_boolean("new_checkout", "express", "user_1") is True
        assert client.get_feature_variable_json("new_checkout", "config", "user_1") == {
            "a": 2,
            "b": [1],
        }
        assert client.get_feature_variable("new_checkout", "max_items", "user_0") == 3
        # The wrong typed getter, an unknown variable or flag: None.
        assert client.get_feature_variable_integer("new_checkout", "title", "user_1") is None
        assert client.get_feature_variable("new_checkout", "nope", "user_1") is None
        assert client.get_feature_variable("nope", "title", "user_1") is None
        assert client.get_all_feature_variables("new_checkout", "user_0") == {
            "title": "Hello",
            "max_items": 3,
            "ratio": 0.5,
            "express": False,
            "config": {"a": 1},
        }
        assert client.get_all_feature_variables("nope", "user_0") is None
    assert api.request_count == 0  # variables never send impressions


async def test_decision_notifications(datafile: dict[str, Any]) -> None:
    seen: list[optitrack.DecisionNotification] = []
    async with asgi_client(EventsAPI(), datafile) as client:
        client.notification_center.add_listener(NotificationType.DECISION, seen.append)
        await client.activate("checkout_test", "user_1")
        await client.is_feature_enabled("new_checkout", "user_1")
        await client.create_user_context("user_1").decide("new_checkout")
        client.get_feature_variable("new_checkout", "x", "user_1")
    assert [n.type for n in seen] == ["feature-test", "feature", "flag"]
    assert seen[0].decision_info == {
        "experiment_key": "checkout_test",
        "variation_key": "treatment",
    }
    assert seen[2].decision_info["decision_event_dispatched"] is True
    assert seen[2].decision_info["variation_id"] == "60102"


async def test_impressions_when_the_queue_is_closed_are_counted(datafile: dict[str, Any]) -> None:
    async with asgi_client(EventsAPI(), datafile) as client:
        await client.aclose()
        assert await client.activate("checkout_test", "user_1") == "treatment"
        assert client.statistics().refused == {"closed": 1}


async def test_qualified_segments(datafile: dict[str, Any]) -> None:
    datafile["typedAudiences"].append(
        {
            "id": "20503",
            "name": "vip",
            "conditions": ["and", {"type": "third_party_dimension", "match": "qualified",
                                   "name": "odp.audiences", "value": "vip"}],
        }
    )  # fmt: skip
    datafile["experiments"][0]["audienceConditions"] = ["or", "20503"]
    async with asgi_client(EventsAPI(), datafile) as client:
        user = client.create_user_context("user_1")
        assert (await user.decide("new_checkout")).rule_key != "checkout_test"
        user.qualified_segments = ["vip"]
        assert user.is_qualified_for("vip")
        assert (await user.decide("new_checkout")).rule_key == "checkout_test"


# -- differential: the same calls through optimizely-sdk 5.7.0 ---------------------------


class _Recorder:
    """An optimizely-sdk event dispatcher that keeps what it would send (no network)."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    def dispatch_event(self, event: Any) -> None:
        self.params.append(event.params)


def _visitors(payloads: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for payload in payloads:
        for visitor in comparable(payload)["visitors"]:
            out.append(visitor)
    return out


def _forwarding_reference(datafile: Mapping[str, Any]) -> tuple[Any, _Recorder]:
    """optimizely-sdk on ``datafile``, dispatching each event at once, in order, to a recorder."""
    from optimizely import optimizely as optimizely_module
    from optimizely.event.event_processor import ForwardingEventProcessor
    from optimizely.helpers.sdk_settings import OptimizelySdkSettings
    from optimizely.logger import NoOpLogger

    recorder = _Recorder()
    reference = optimizely_module.Optimizely(
        json.dumps(datafile),
        event_dispatcher=recorder,
        logger=NoOpLogger(),
        event_processor=ForwardingEventProcessor(recorder, logger=NoOpLogger()),
        settings=OptimizelySdkSettings(odp_disabled=True),
    )
    return reference, recorder


async def test_impressions_match_optimizely_sdk(datafile: dict[str, Any]) -> None:
    from optimizely import optimizely as optimizely_module
    from optimizely.logger import NoOpLogger

    rng = random.Random(11)
    datafile["sendFlagDecisions"] = True
    recorder = _Recorder()
    reference = optimizely_module.Optimizely(
        json.dumps(datafile), event_dispatcher=recorder, logger=NoOpLogger()
    )
    calls = []
    for n in range(150):
        attributes = {
            "plan": rng.choice(["pro", "free", None, 3]),
            "age": rng.choice([17, 18, 40, "x"]),
            "app_version": rng.choice(["1.9", "2.0.0", "2.1.0-beta", "abc"]),
        }
        attributes = {k: v for k, v in attributes.items() if v is not None}
        calls.append((rng.choice(["activate", "enabled", "decide"]), f"user-{n}", attributes))

    api = EventsAPI()
    results = []
    async with asgi_client(api, datafile) as client:
        for kind, user_id, attributes in calls:
            if kind == "activate":
                mine: Any = await client.activate("checkout_test", user_id, attributes)
                theirs: Any = reference.activate("checkout_test", user_id, attributes)
            elif kind == "enabled":
                mine = await client.is_feature_enabled("new_checkout", user_id, attributes)
                theirs = reference.is_feature_enabled("new_checkout", user_id, attributes)
            else:
                decision = await client.create_user_context(user_id, attributes).decide(
                    "new_checkout"
                )
                other = reference.create_user_context(user_id, attributes).decide("new_checkout")
                mine = (decision.variation_key, decision.enabled, decision.rule_key)
                theirs = (other.variation_key, other.enabled, other.rule_key)
            results.append((mine, theirs))
    reference.close()
    assert [m for m, _ in results] == [t for _, t in results]
    mine_visitors = _visitors([r.json() for r in api.requests])
    assert len(mine_visitors) == len(recorder.params) > 50
    assert mine_visitors == _visitors(recorder.params)


async def test_decide_is_quiet_about_logging(
    datafile: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="optitrack")
    async with asgi_client(EventsAPI(), datafile) as client:
        await client.create_user_context("user_1").decide("new_checkout")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_an_unknown_decide_option_is_ignored_not_the_others(
    datafile: dict[str, Any],
) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1")
        decision = await user.decide(
            "new_checkout", ["DISABLE_DECISION_EVENT", "INCLUDE_REASONS", "TYPO"]
        )
        assert decision.reasons
        not_a_key = await user.decide(["new_checkout"])  # type: ignore[arg-type]
        assert not_a_key.reasons
    assert api.request_count == 0


@pytest.mark.parametrize("seed", range(100))
async def test_every_call_matches_optimizely_sdk_on_random_datafiles(seed: int) -> None:
    """activate, is_feature_enabled, decide and get_enabled_features on generated
    datafiles (groups, holdouts, repeated keys and ids...): the same answers and the same
    impressions as optimizely-sdk, in the same order."""
    from tests.decisions._random_datafiles import _random_case

    datafile, users, _, _ = _random_case(seed)
    reference, recorder = _forwarding_reference(datafile)
    experiment_keys = [e["key"] for e in datafile["experiments"]] + [
        e["key"] for g in datafile["groups"] for e in g["experiments"]
    ]
    flag_keys = [f["key"] for f in datafile["featureFlags"]]
    mine: list[Any] = []
    theirs: list[Any] = []
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        for user, _ in [u for u in users if u[0].qualified_segments is None][:10]:
            user_id, attributes = user.user_id, dict(user.attributes)
            for key in experiment_keys:
                mine.append(await client.activate(key, user_id, attributes))
                theirs.append(reference.activate(key, user_id, attributes))
            for key in flag_keys:
                mine.append(await client.is_feature_enabled(key, user_id, attributes))
                theirs.append(reference.is_feature_enabled(key, user_id, attributes))
                ours = await client.create_user_context(user_id, attributes).decide(key)
                other = reference.create_user_context(user_id, attributes).decide(key)
                mine.append((ours.variation_key, ours.enabled, ours.rule_key))
                theirs.append((other.variation_key, other.enabled, other.rule_key))
            mine.append(sorted(await client.get_enabled_features(user_id, attributes)))
            theirs.append(sorted(reference.get_enabled_features(user_id, attributes)))
        await client.flush()
    reference.close()
    assert mine == theirs
    assert all(request.status == 204 for request in api.requests)  # none refused
    assert _visitors([r.json() for r in api.requests]) == _visitors(recorder.params)


async def test_an_impression_names_the_variation_optimizely_sdk_finds_by_id() -> None:
    # Two rules of a flag share a variation id, with other keys. Optimizely's SDK looks
    # the decided variation up again by id among the flag's variations, first rule first,
    # and sends that one's key: the impression says "a" although the user got "b".
    def rule(number: int, variation_key: str, audience_ids: list[str]) -> dict[str, Any]:
        return {
            "id": f"{number}000",
            "key": f"r{number}",
            "layerId": f"{number}050",
            "status": "Running",
            "audienceIds": audience_ids,
            "forcedVariations": {},
            "variations": [{"id": "42", "key": variation_key, "featureEnabled": True}],
            "trafficAllocation": [{"entityId": "42", "endOfRange": 10000}],
        }

    condition = ["or", {"name": "k", "type": "custom_attribute", "value": "x"}]
    datafile = {
        "version": "4",
        "accountId": "1",
        "projectId": "2",
        "revision": "3",
        "attributes": [{"id": "5", "key": "k"}],
        "audiences": [{"id": "77", "name": "k is x", "conditions": json.dumps(condition)}],
        "events": [],
        "groups": [],
        "rollouts": [],
        "experiments": [rule(1, "a", ["77"]), rule(2, "b", [])],
        "featureFlags": [
            {"id": "9", "key": "F", "experimentIds": ["1000", "2000"], "rolloutId": ""}
        ],
    }
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        decision = await client.create_user_context("u").decide("F")
        await client.flush()
    assert (decision.variation_key, decision.rule_key) == ("b", "r2")
    [impression] = impressions(api)
    assert (impression["rule_key"], impression["variation_key"]) == ("r2", "a")
    assert api.requests[0].json()["visitors"][0]["snapshots"][0]["decisions"] == [
        {
            "campaign_id": "2050",
            "experiment_id": "2000",
            "variation_id": "42",
            "metadata": {
                "flag_key": "F",
                "rule_key": "r2",
                "rule_type": "feature-test",
                "variation_key": "a",
                "enabled": True,
            },
        }
    ]


def _typed_variables(client: Any, user_id: str) -> list[Any]:
    """The five variables of ``with_variables``, each through its typed getter."""
    return [
        client.get_feature_variable_string("new_checkout", "title", user_id),
        client.get_feature_variable_integer("new_checkout", "max_items", user_id),
        client.get_feature_variable_double("new_checkout", "ratio", user_id),
        client.get_feature_variable_boolean("new_checkout", "express", user_id),
        client.get_feature_variable_json("new_checkout", "config", user_id),
    ]


async def test_variable_values_that_are_not_strings_cast_as_optimizely_sdk_casts_them(
    datafile: dict[str, Any],
) -> None:
    from optimizely import optimizely as optimizely_module
    from optimizely.logger import NoOpLogger

    datafile = with_variables(datafile)
    treatment = datafile["experiments"][0]["variations"][1]
    treatment["variables"] = [
        {"id": "90001", "value": 12},
        {"id": "90002", "value": 7},
        {"id": "90003", "value": None},
        {"id": "90004", "value": 1},
        {"id": "90005", "value": 3},
    ]
    reference = optimizely_module.Optimizely(json.dumps(datafile), logger=NoOpLogger())
    user = "qa_user_1"  # whitelisted in "treatment"
    async with asgi_client(EventsAPI(), datafile) as client:
        mine = client.get_all_feature_variables("new_checkout", user)
        decided = await client.create_user_context(user).decide("new_checkout")
        typed = _typed_variables(client, user)
    theirs = reference.get_all_feature_variables("new_checkout", user)
    their_typed = _typed_variables(reference, user)
    reference.close()
    assert mine == theirs == dict(decided.variables)
    assert mine["max_items"] == 7
    assert mine["ratio"] is None
    # The typed getters agree, but for a string variable holding a number: Optimizely's
    # SDK returns the number, get_feature_variable_string keeps to str and says None.
    assert typed[1:] == their_typed[1:]
    assert (typed[0], their_typed[0]) == (None, 12)


async def test_odd_flag_values_decide_as_optimizely_sdk_decides(datafile: dict[str, Any]) -> None:
    # featureEnabled 1 and botFiltering 1: datafiles hold booleans, but optimizely-sdk takes
    # these; Is Feature Enabled asks for true itself, and bot filtering must be a boolean.
    datafile["experiments"][0]["variations"][1]["featureEnabled"] = 1
    datafile["botFiltering"] = 1
    reference, recorder = _forwarding_reference(datafile)
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        mine = [
            await client.is_feature_enabled("new_checkout", "qa_user_1", PRO),
            await client.get_enabled_features("qa_user_1", PRO),
            (await client.create_user_context("qa_user_1", PRO).decide("new_checkout")).enabled,
            (await client.track("purchase", "qa_user_1", PRO)).accepted,
        ]
        await client.flush()
    theirs = [
        reference.is_feature_enabled("new_checkout", "qa_user_1", PRO),
        reference.get_enabled_features("qa_user_1", PRO),
        bool(reference.create_user_context("qa_user_1", PRO).decide("new_checkout").enabled),
        reference.track("purchase", "qa_user_1", PRO) is None,
    ]
    reference.close()
    assert mine == theirs == [False, [], True, True]
    [is_enabled, _, decided, conversion] = _visitors([r.json() for r in api.requests])
    [their_is_enabled, _, _, their_conversion] = _visitors(recorder.params)
    assert is_enabled == their_is_enabled  # "enabled": false in both
    assert conversion == their_conversion  # no $opt_bot_filtering in either
    assert decided["snapshots"][0]["decisions"][0]["metadata"]["enabled"] is True


async def test_options_may_be_any_iterable(datafile: dict[str, Any]) -> None:
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        user = client.create_user_context("user_1", PRO)
        once = await user.decide("new_checkout", (o for o in [DecideOption.INCLUDE_REASONS]))
        again = await user.decide("new_checkout", [DecideOption.INCLUDE_REASONS])
        await client.flush()
        sent = api.event_count
        await user.decide_for_keys(["new_checkout"], iter(["DISABLE_DECISION_EVENT"]))
        await user.decide_all(option for option in ["DISABLE_DECISION_EVENT"])
        await client.flush()
    assert once.reasons
    assert again.reasons == once.reasons
    assert api.event_count == sent  # no impression for the last two


async def test_update_datafile_switches_decisions_and_events_to_the_new_revision(
    datafile: dict[str, Any],
) -> None:
    new = copy.deepcopy(datafile)
    new["revision"] = "43"
    new["attributes"][0]["id"] = "10499"  # "plan" has a new id
    experiment = new["experiments"][0]  # checkout_test: everyone in treatment now
    experiment["trafficAllocation"] = [{"entityId": "60102", "endOfRange": 10000}]
    api = EventsAPI()
    async with asgi_client(api, datafile) as client:
        client.set_forced_variation("checkout_test", "forced_user", "control")
        user = client.create_user_context("user_7", PRO)
        before = await user.decide("new_checkout")
        await user.track_event("purchase")
        with pytest.raises(optitrack.DatafileError):
            client.update_datafile({**new, "version": "9"})  # refused: nothing changes
        assert client.config.revision == "42"
        client.update_datafile(new)
        after = [
            await client.create_user_context(f"u{n}", PRO).decide("new_checkout") for n in range(20)
        ]
        forced = client.get_variation("checkout_test", "forced_user")
        await user.track_event("purchase")  # a context made before the update
        await client.flush()
    assert client.config.revision == "43"
    assert before.rule_key == "checkout_test"
    assert {d.variation_key for d in after} == {"treatment"}
    assert forced == "control"  # forced variations outlive the datafile
    bodies = [r.json() for r in api.requests]
    assert [b["revision"] for b in bodies] == ["42", "43"]  # revisions never share a batch
    assert len(bodies[0]["visitors"]) == 2
    assert len(bodies[1]["visitors"]) == 21
    plan_ids = [
        [a["entity_id"] for a in v["attributes"] if a["key"] == "plan"]
        for b in bodies
        for v in b["visitors"]
    ]
    assert plan_ids[1] == ["10401"]
    assert plan_ids[-1] == ["10499"]


def test_update_datafile_moves_the_default_endpoint_only(datafile: dict[str, Any]) -> None:
    eu = {**datafile, "region": "EU"}
    default = optitrack.Client(datafile)
    default.update_datafile(eu)
    given = optitrack.Client(datafile, event_endpoint="http://127.0.0.1:9/v1/events")
    given.update_datafile(eu)
    assert default.event_endpoint == "https://eu.logx.optimizely.com/v1/events"
    assert given.event_endpoint == "http://127.0.0.1:9/v1/events"


@pytest.mark.anyio
async def test_variables_serialize_as_optimizely_sdks_and_stay_read_only(
    datafile: dict[str, Any],
) -> None:
    # Ported code serializes decision.variables (a dict in optimizely-sdk).
    async with asgi_client(EventsAPI(), datafile) as client:
        decision = await client.create_user_context("u1", {"plan": "pro"}).decide("new_checkout")
    assert isinstance(decision.variables, dict)
    assert json.loads(json.dumps(decision.variables)) == dict(decision.variables)
    with pytest.raises(TypeError, match="read-only"):
        decision.variables["x"] = 1
    with pytest.raises(TypeError, match="read-only"):
        decision.variables.update(x=1)


async def test_json_variables_are_the_callers_own_and_the_rest_stay_put(
    datafile: dict[str, Any],
) -> None:
    # Decisions may share their read-only variables, but never a JSON variable's dict:
    # a caller changing it must not change what the next decision says.
    datafile = with_variables(datafile)
    async with asgi_client(EventsAPI(), datafile) as client:
        user = client.create_user_context("user_1", PRO)
        first = await user.decide("new_checkout", [DecideOption.DISABLE_DECISION_EVENT])
        first.variables["config"]["a"] = "changed"
        first.variables["config"]["b"].append(2)
        second = await user.decide("new_checkout", [DecideOption.DISABLE_DECISION_EVENT])
        with pytest.raises(TypeError, match="read-only"):
            second.variables["title"] = "x"  # type: ignore[index]
    assert second.variables["config"] == {"a": 2, "b": [1]}
    assert second.variables["title"] == "Hi"
