"""The decision engine: deciding flags, and differential tests against optimizely-sdk.

Flags: rollouts, forced decisions, holdouts, feature rollouts, the bucketing id, reasons,
and flags from another datafile. The differential tests run optimizely-sdk 5.7.0 (the
``compare`` extra; CI installs it, so it is imported unconditionally) side by side with
:class:`optitrack._decisions.DecisionEngine` on the example datafile and on seeded random
datafiles, and require the same variation, ``enabled``, rule and variables for decide, and
the same variation for get_variation, activate and is_feature_enabled. Optimizely never
touches the network here: ODP is off, events go to a processor that drops them, and
decide runs with DISABLE_DECISION_EVENT.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from optimizely.decision.optimizely_decide_option import OptimizelyDecideOption
from optimizely.optimizely_user_context import OptimizelyUserContext

from optitrack._decisions import (
    DecisionEngine,
    ProjectConfig,
    RuleType,
    UserInput,
    UserProfile,
    VariationDecision,
    load_datafile,
)

from ._builders import _decide, _experiment, _flag_config, _user
from ._random_datafiles import _MemoryProfiles, _random_case, _reference

# ---------------------------------------------------------------------------- the reference


_NO_EVENT = [OptimizelyDecideOption.DISABLE_DECISION_EVENT]


def _same(value: Any) -> str:
    # NaN != NaN, so compare values through their JSON text.
    return json.dumps(value, sort_keys=True, default=repr)


class _Ours:
    """optitrack's side: the engine plus the same profile store, used the way the client does."""

    def __init__(self, config: ProjectConfig, store: dict[str, Any] | None) -> None:
        self.config = config
        self.engine = DecisionEngine(config)
        self.store = store

    def profile(self, user_id: str) -> UserProfile | None:
        if self.store is None:
            return None
        return UserProfile.from_lookup(user_id, copy.deepcopy(self.store.get(user_id)))

    def saved(self, profile: UserProfile | None) -> None:
        if self.store is not None and profile is not None and profile.changed:
            stored = profile.to_dict()
            self.store[stored["user_id"]] = copy.deepcopy(stored)

    def decide(
        self,
        flag_key: str,
        user: UserInput,
        forced: dict[tuple[str, str | None], str],
        *,
        ignore_profiles: bool = False,
    ) -> VariationDecision:
        # IGNORE_USER_PROFILE_SERVICE: the client neither loads nor saves a profile.
        profile = None if ignore_profiles else self.profile(user.user_id)
        decision = self.engine.decide_flag(
            self.config.flags_by_key[flag_key], user, forced, profile, include_reasons=False
        )
        self.saved(profile)
        return decision

    def get_variation(self, experiment_key: str, user: UserInput, *, activate: bool) -> str | None:
        experiment = self.engine.experiment_by_key(experiment_key)
        assert experiment is not None
        profile = self.profile(user.user_id) or UserProfile(user.user_id)
        call = self.engine.activate if activate else self.engine.get_variation
        decision = call(experiment, user, profile, include_reasons=False)
        self.saved(profile)
        return decision.variation_key


class _ReferenceRaised(Exception):
    """optimizely-sdk raised where optitrack decides (a crash is not a decision to match)."""


def _reference_call(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise _ReferenceRaised from exc


def _compare(
    datafile: dict[str, Any],
    users: list[tuple[UserInput, dict[tuple[str, str | None], str]]],
    *,
    store: dict[str, Any] | None = None,
    forced_variations: Sequence[tuple[str, str, str | None]] = (),
    experiments_too: bool = True,
) -> int:
    """Decide everything for every user on both sides; assert they agree.

    Returns:
        How many decisions were compared. Where optimizely-sdk raises (a few semantic
        versions make it call ``int("beta")``), optitrack must still decide; that user is
        then left out, as is everything after it when a profile store is shared.
    """
    reference_store = copy.deepcopy(store) if store is not None else None
    client = _reference(
        datafile, _MemoryProfiles(reference_store) if reference_store is not None else None
    )
    ours = _Ours(load_datafile(datafile), copy.deepcopy(store) if store is not None else None)
    checks = 0
    try:
        for experiment_key, user_id, variation_key in forced_variations:
            expected = client.set_forced_variation(experiment_key, user_id, variation_key)
            got = ours.engine.set_forced_variation(experiment_key, user_id, variation_key)
            assert got == expected, (experiment_key, user_id, variation_key)
            assert ours.engine.get_forced_variation(
                experiment_key, user_id
            ) == client.get_forced_variation(experiment_key, user_id)
        flag_keys = [flag["key"] for flag in datafile.get("featureFlags", [])]
        # The client refuses an empty experiment key before deciding anything.
        experiment_keys = (
            [k for k in ours.engine.config.experiments_by_key if k] if experiments_too else []
        )
        for user, forced in users:
            try:
                checks += _compare_user(client, ours, user, forced, flag_keys, experiment_keys)
            except _ReferenceRaised:
                for flag_key in flag_keys:
                    ours.decide(flag_key, user, forced)
                for experiment_key in experiment_keys:
                    ours.get_variation(experiment_key, user, activate=True)
                if store is not None:
                    return checks
        if store is not None:
            assert ours.store == reference_store
    finally:
        client.close()
    return checks


def _compare_user(
    client: Any,
    ours: _Ours,
    user: UserInput,
    forced: dict[tuple[str, str | None], str],
    flag_keys: list[str],
    experiment_keys: list[str],
) -> int:
    checks = 0
    attributes = dict(user.attributes)
    context = client.create_user_context(user.user_id, attributes)
    if user.qualified_segments is not None:
        context.set_qualified_segments(sorted(user.qualified_segments))
    for (flag_key, rule_key), variation_key in forced.items():
        context.set_forced_decision(
            OptimizelyUserContext.OptimizelyDecisionContext(flag_key, rule_key),
            OptimizelyUserContext.OptimizelyForcedDecision(variation_key),
        )
    for flag_key in flag_keys:
        ignore_profiles = len(user.user_id) % 3 == 0
        options = list(_NO_EVENT)
        if ignore_profiles:
            options.append(OptimizelyDecideOption.IGNORE_USER_PROFILE_SERVICE)
        expected = _reference_call(context.decide, flag_key, options)
        got = ours.decide(flag_key, user, forced, ignore_profiles=ignore_profiles)
        where = (user, forced, flag_key)
        assert got.variation_key == expected.variation_key, where
        assert got.enabled == expected.enabled, where
        assert got.rule_key == expected.rule_key, where
        variables = ours.engine.all_variables(ours.config.flags_by_key[flag_key], got.variation)
        assert _same(variables) == _same(expected.variables), where
        checks += 1
        if not forced and user.qualified_segments is None:
            enabled = _reference_call(client.is_feature_enabled, flag_key, user.user_id, attributes)
            assert ours.decide(flag_key, user, {}).enabled == enabled, where
            checks += 1
    if user.qualified_segments is not None:
        return checks  # the experiment APIs take no segments
    for experiment_key in experiment_keys:
        expected_key = _reference_call(
            client.get_variation, experiment_key, user.user_id, attributes
        )
        got_key = ours.get_variation(experiment_key, user, activate=False)
        assert got_key == expected_key, (user, experiment_key)
        expected_key = _reference_call(client.activate, experiment_key, user.user_id, attributes)
        got_key = ours.get_variation(experiment_key, user, activate=True)
        assert got_key == expected_key, (user, experiment_key, "activate")
        checks += 2
    return checks


@pytest.mark.parametrize("seed", range(60))
def test_random_datafiles_decide_like_optimizely(seed: int) -> None:
    datafile, users, store, forced_variations = _random_case(seed)
    checks = _compare(datafile, users, store=store, forced_variations=forced_variations)
    assert checks > 0


def test_example_datafile_decides_like_optimizely(datafile: dict[str, Any]) -> None:
    rng = random.Random(0)
    users: list[tuple[UserInput, dict[tuple[str, str | None], str]]] = []
    for index in range(300):
        attributes: dict[str, Any] = {
            "plan": rng.choice(("pro", "free", 3, None)),
            "age": rng.choice((17, 18, 34, 18.5, "34", math.nan)),
            "app_version": rng.choice(("2.1.0", "1.9.9", "2.0.0-beta", "2", "x")),
        }
        forced: dict[tuple[str, str | None], str] = {}
        if index % 10 == 0:
            forced[("new_checkout", rng.choice((None, "checkout_test", "pro_delivery")))] = (
                rng.choice(("control", "treatment", "on", "off", "nope"))
            )
        user_id = "qa_user_1" if index % 25 == 0 else f"user_{index}"
        users.append((UserInput(user_id, attributes), forced))
    forced_variations = [("checkout_test", "user_3", "treatment"), ("pro_delivery", "user_4", "on")]
    assert _compare(datafile, users, forced_variations=forced_variations) > 1000
    assert _compare(datafile, users[:50], store={}) > 100


# ---------------------------------------------------------------------------- flags


def test_rollout_skips_to_everyone_else_when_bucketing_misses() -> None:
    rules = [
        _experiment("11", key="pro_rule", audiences=["100"], allocation=[("a", 0)]),
        _experiment("12", key="second_rule"),  # would take everyone
        _experiment("13", key="everyone_else", variations=("off",), enabled=(False,)),
    ]
    engine = DecisionEngine(_flag_config(rules=rules))
    pro = _decide(engine, _user(plan="pro"))
    assert (pro.rule_key, pro.variation_key, pro.rule_type) == ("everyone_else", "off", "rollout")
    assert not pro.enabled
    assert 'User "u" not bucketed into a targeting rule 1. Checking "Everyone Else" rule now.' in (
        pro.reasons
    )
    free = _decide(engine, _user(plan="free"))
    assert free.rule_key == "second_rule"

    # Everyone Else missing too: no variation, reported as a rollout decision.
    engine = DecisionEngine(_flag_config(rules=[{**rules[2], "trafficAllocation": []}]))
    nothing = _decide(engine, _user())
    assert (nothing.experiment, nothing.variation, nothing.rule_type) == (None, None, "rollout")


def test_rollout_rules_need_not_be_running() -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", status="Paused")]))
    assert _decide(engine, _user()).variation is not None


def test_forced_decisions() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", key="test", variations=("a", "b"))],
            rules=[_experiment("13", key="everyone_else", variations=("off",))],
        )
    )
    flag_level = _decide(engine, _user(), {("flag", None): "off"})
    assert flag_level.experiment is None
    assert (flag_level.variation_key, flag_level.rule_type) == ("off", "feature-test")
    assert flag_level.reasons == (
        "Variation (off) is mapped to flag (flag) and user (u) in the forced decision map.",
    )
    # A rule-level forced decision may name any variation of the flag.
    rule_level = _decide(engine, _user(), {("flag", "test"): "off"})
    assert (rule_level.rule_key, rule_level.variation_key) == ("test", "off")
    # An unknown variation is a reason, then the flag decides as usual.
    invalid = _decide(engine, _user(), {("flag", None): "zz"})
    assert invalid.rule_key == "test"
    assert invalid.reasons[0] == (
        "Invalid variation is mapped to flag (flag) and user (u) in the forced decision map."
    )
    # A rollout rule's forced decision counts once the experiment rules decided nothing.
    forced: dict[tuple[str, str | None], str] = {("flag", "everyone_else"): "b"}
    assert _decide(engine, _user(), forced).rule_key == "test"
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", key="test", status="Paused")],
            rules=[_experiment("13", key="everyone_else", variations=("off",))],
        )
    )
    rollout_level = _decide(engine, _user(), forced)
    assert (rollout_level.rule_key, rollout_level.variation_key) == ("everyone_else", "b")
    assert rollout_level.rule_type is RuleType.ROLLOUT


def _holdout(holdout_id: str, *, end: int = 10_000, **extra: Any) -> dict[str, Any]:
    return {
        "id": holdout_id,
        "key": f"holdout_{holdout_id}",
        "status": "Running",
        "variations": [{"id": f"{holdout_id}_off", "key": "off", "featureEnabled": False}],
        "trafficAllocation": [{"entityId": f"{holdout_id}_off", "endOfRange": end}],
        "audienceIds": [],
        **extra,
    }


def test_global_holdout_takes_the_user_before_any_rule() -> None:
    engine = DecisionEngine(_flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h")]))
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.variation_key, decision.rule_type) == (
        "holdout_h",
        "off",
        "holdout",
    )
    assert decision.holdout is None
    assert not decision.enabled
    # Not running: ignored.
    engine = DecisionEngine(
        _flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h", status="Draft")])
    )
    assert _decide(engine, _user()).rule_key == "exp_1"


def test_holdout_excluding_targeted_deliveries_lets_td_rules_and_rollouts_decide() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1"), _experiment("2", type="td")],
            holdouts=[_holdout("h", excludeTargetedDeliveries=True)],
        )
    )
    decision = _decide(engine, _user())
    assert decision.rule_key == "exp_2"  # exp_1 is skipped: not a targeted delivery
    assert decision.holdout is not None
    assert (decision.holdout.rule_key, decision.holdout.rule_type) == ("holdout_h", "holdout")

    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1")],
            holdouts=[_holdout("h", excludeTargetedDeliveries=True)],
        )
    )
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.rule_type) == ("everyone_else", "rollout")
    assert decision.holdout is not None


def test_local_holdouts_apply_to_their_rules_only() -> None:
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1")],
            localHoldouts=[_holdout("h", includedRules=["99"]), _holdout("x")],
        )
    )
    assert _decide(engine, _user()).rule_key == "exp_1"
    engine = DecisionEngine(
        _flag_config(
            experiments=[_experiment("1", allocation=[("a", 0)])],
            localHoldouts=[_holdout("h", includedRules=["99"])],
        )
    )
    decision = _decide(engine, _user())
    assert (decision.rule_key, decision.rule_type) == ("holdout_h", "holdout")


def test_feature_rollout_experiments_get_everyone_else() -> None:
    experiment = _experiment("1", key="fr_test", allocation=[("a", 5000)], type="fr")
    engine = DecisionEngine(
        _flag_config(
            experiments=[experiment],
            rules=[_experiment("13", key="everyone_else", variations=("off",), enabled=(False,))],
        )
    )
    keys = {
        (d.rule_key, d.variation_key) for d in (_decide(engine, _user(f"u{i}")) for i in range(200))
    }
    assert keys == {("fr_test", "a"), ("fr_test", "off")}
    # Only type "fr" does it (optimizely-sdk 5.7.0 compares with "fr", not "feature_rollout").
    engine = DecisionEngine(_flag_config(experiments=[{**experiment, "type": "feature_rollout"}]))
    keys = {
        (d.rule_key, d.variation_key) for d in (_decide(engine, _user(f"u{i}")) for i in range(200))
    }
    assert ("fr_test", "off") not in keys


def test_non_string_bucketing_id_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", key="everyone_else")]))
    with caplog.at_level(logging.WARNING, logger="optitrack"):
        decision = _decide(engine, _user("u", **{"$opt_bucketing_id": 42}))
    assert decision.variation_key == _decide(engine, _user("u")).variation_key
    assert "Bucketing ID attribute is not a string. Defaulted to user_id." in decision.reasons
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_string_bucketing_id_replaces_the_user_id() -> None:
    engine = DecisionEngine(_flag_config(rules=[_experiment("13", key="everyone_else")]))
    for index in range(50):
        by_bucketing_id = _decide(engine, _user("x", **{"$opt_bucketing_id": f"b{index}"}))
        assert by_bucketing_id.variation_key == _decide(engine, _user(f"b{index}")).variation_key


def test_reasons_can_be_skipped() -> None:
    engine = DecisionEngine(_flag_config())
    flag = engine.config.flags_by_key["flag"]
    assert engine.decide_flag(flag, _user(), {}, None, include_reasons=False).reasons == ()
    assert engine.decide_flag(flag, _user(), {}, None).reasons


# ---------------------------------------------------------------------------- the rest


def test_a_flag_from_elsewhere_is_decided_with_this_datafile() -> None:
    engine = DecisionEngine(_flag_config(experiments=[_experiment("1")]))
    stranger = load_datafile(
        {
            **_flag_config(experiments=[_experiment("1")]).datafile.model_dump(by_alias=True),
        }
    ).flags_by_key["flag"]
    assert engine.decide_flag(stranger, _user(), {}, None).rule_key == "exp_1"


def test_decision_properties() -> None:
    nothing = VariationDecision(None, None, None)
    assert (nothing.enabled, nothing.variation_key, nothing.rule_key) == (False, None, None)
    assert RuleType("feature-test") is RuleType.FEATURE_TEST
    assert f"{RuleType.HOLDOUT}" == "holdout"


def test_reasons_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    engine = DecisionEngine(_flag_config())
    flag = engine.config.flags_by_key["flag"]
    with caplog.at_level(logging.DEBUG, logger="optitrack"):
        decision = engine.decide_flag(flag, _user(), {}, None, include_reasons=False)
    assert decision.reasons == ()
    assert 'User "u" bucketed into a targeting rule Everyone Else.' in caplog.messages


def test_flag_whose_rollout_is_missing() -> None:
    config = _flag_config(rules=[])
    datafile = config.datafile.model_dump(by_alias=True)
    datafile["featureFlags"][0]["rolloutId"] = "gone"
    engine = DecisionEngine(load_datafile(datafile))
    decision = _decide(engine, _user())
    assert (decision.variation, decision.rule_type) == (None, "rollout")
    assert decision.reasons == ("There is no rollout of feature flag.",)


def test_holdout_audiences() -> None:
    engine = DecisionEngine(
        _flag_config(experiments=[_experiment("1")], holdouts=[_holdout("h", audienceIds=["100"])])
    )
    assert _decide(engine, _user(plan="pro")).rule_key == "holdout_h"
    free = _decide(engine, _user(plan="free"))
    assert free.rule_key == "exp_1"
    assert "User 'u' does not meet the conditions for holdout 'holdout_h'." in free.reasons


# ---------------------------------------------------------------------------- the lean path


@pytest.mark.parametrize("seed", range(40))
def test_the_lean_path_decides_as_the_general_one(seed: int) -> None:
    # decide's common case skips what cannot happen in it; where it answers, the answer is
    # decide_flag's, object for object. Holdouts removed in half the cases, for the lean
    # path to answer at all there.
    datafile, users, _, forced_variations = _random_case(seed)
    if seed % 2:
        datafile = {k: v for k, v in datafile.items() if k not in ("holdouts", "localHoldouts")}
    engine = DecisionEngine(load_datafile(json.dumps(datafile)))
    for experiment_key, user_id, variation_key in forced_variations[:1]:
        engine.set_forced_variation(experiment_key, user_id, variation_key)
    answered = 0
    for user, _ in users:
        attributes = user.attributes or {}
        for flag in engine.config.flags_by_key.values():
            lean = engine.decide_flag_lean(flag, user.user_id, attributes, user.qualified_segments)
            general = engine.decide_flag(flag, user, {}, None, include_reasons=False)
            if lean is None:
                continue
            answered += 1
            assert lean is general or lean == general, (seed, user, flag.key)
    if seed % 2 and engine.config.flags_by_key:
        assert answered > 0, "the lean path never answered"
