"""Deciding an experiment: decision order, allocation holes, groups, forced variations,
user profiles and reasons."""

from __future__ import annotations

from typing import Any

from optitrack._decisions import DecisionEngine, RuleType, UserProfile, VariationDecision

from ._builders import _config, _experiment, _user


def test_experiment_order_running_forced_whitelist_profile_audience_bucket() -> None:
    experiment = _experiment("1", audiences=["100"], whitelist={"vip": "b", "typo": "zz"})
    engine = DecisionEngine(_config(experiments=[experiment]))
    entity = engine.experiment_by_key("exp_1")
    assert entity is not None
    stored = UserProfile("vip", {"1": {"variation_id": "1_a"}})

    # The whitelist beats a stored variation and the audience.
    decision = engine.get_variation(entity, _user("vip"), stored)
    assert decision.variation_key == "b"
    assert decision.rule_type is RuleType.EXPERIMENT
    assert 'User "vip" is forced in variation "b".' in decision.reasons
    assert not stored.changed

    # A forced variation beats the whitelist.
    assert engine.set_forced_variation("exp_1", "vip", "a")
    assert engine.get_variation(entity, _user("vip"), None).variation_key == "a"
    assert engine.get_forced_variation("exp_1", "vip") == "a"
    assert engine.set_forced_variation("exp_1", "vip", None)
    assert engine.get_forced_variation("exp_1", "vip") is None

    # A stored variation beats the audience; an unknown whitelisted key falls through.
    stored = UserProfile.from_lookup("typo", {"user_id": "typo", "experiment_bucket_map": {}})
    stored.experiment_bucket_map["1"] = {"variation_id": "1_b"}
    assert engine.get_variation(entity, _user("typo"), stored).variation_key == "b"

    # Not in the audience: nothing, and nothing stored.
    profile = UserProfile("u")
    decision = engine.get_variation(entity, _user("u", plan="free"), profile)
    assert decision == VariationDecision(None, None, None, decision.reasons)
    assert decision.reasons[-1] == 'User "u" does not meet conditions to be in experiment "exp_1".'
    assert not profile.changed

    # In the audience: bucketed, and the bucketing is stored.
    decision = engine.get_variation(entity, _user("u", plan="pro"), profile)
    assert decision.variation is not None
    assert profile.changed
    assert profile.to_dict() == {
        "user_id": "u",
        "experiment_bucket_map": {"1": {"variation_id": decision.variation.id}},
    }

    # Not running: nothing, even for the whitelisted user.
    paused = DecisionEngine(_config(experiments=[{**experiment, "status": "Paused"}]))
    entity = paused.experiment_by_key("exp_1")
    assert entity is not None
    decision = paused.get_variation(entity, _user("vip"), None)
    assert decision.variation is None
    assert decision.reasons == ('Experiment "exp_1" is not running.',)


def test_hole_and_short_allocation_are_not_bucketed() -> None:
    engine = DecisionEngine(
        _config(experiments=[_experiment("1", allocation=[("", 5000), ("a", 6000)])])
    )
    entity = engine.experiment_by_key("exp_1")
    assert entity is not None
    outcomes = {
        engine.get_variation(entity, _user(f"user{i}"), None).variation_key for i in range(300)
    }
    assert outcomes == {None, "a"}


def test_group_random_is_exclusive_and_overlapping_is_not() -> None:
    def group(policy: str) -> dict[str, Any]:
        return {
            "id": "g",
            "policy": policy,
            "trafficAllocation": [
                {"entityId": "1", "endOfRange": 4000},
                {"entityId": "", "endOfRange": 5000},
                {"entityId": "2", "endOfRange": 10_000},
            ],
            "experiments": [_experiment("1"), _experiment("2")],
        }

    for policy, exclusive in (("random", True), ("overlapping", False)):
        engine = DecisionEngine(_config(groups=[group(policy)]))
        one, two = engine.experiment_by_key("exp_1"), engine.experiment_by_key("exp_2")
        assert one is not None
        assert two is not None
        counts = {0: 0, 1: 0, 2: 0}
        for index in range(400):
            user = _user(f"user{index}")
            got = sum(
                engine.get_variation(e, user, None, include_reasons=False).variation is not None
                for e in (one, two)
            )
            counts[got] += 1
        if exclusive:
            assert counts[2] == 0
            assert counts[0] > 0  # the group's hole
            assert counts[1] > 0
        else:
            assert counts == {0: 0, 1: 0, 2: 400}


def test_user_profile_from_lookup() -> None:
    assert UserProfile.from_lookup("u", None).to_dict() == {
        "user_id": "u",
        "experiment_bucket_map": {},
    }
    assert UserProfile.from_lookup("u", {"user_id": "u"}).experiment_bucket_map == {}
    assert UserProfile.from_lookup("u", ["not", "a", "profile"]).user_id == "u"
    stored = {"user_id": "other", "experiment_bucket_map": {"1": {"variation_id": "x"}}}
    profile = UserProfile.from_lookup("u", stored)
    assert profile.user_id == "other"  # as optimizely-sdk, the stored record's id
    assert profile.variation_id("1") == "x"
    assert profile.variation_id("2") is None
    profile.save_variation("2", "y")
    assert profile.changed
    assert stored["experiment_bucket_map"] == {"1": {"variation_id": "x"}}  # not mutated
    assert "changed=True" in repr(profile)


def test_set_forced_variation_validates_and_survives_a_new_datafile() -> None:
    config = _config(experiments=[_experiment("1")])
    engine = DecisionEngine(config)
    assert not engine.set_forced_variation("nope", "u", "a")
    assert not engine.set_forced_variation("exp_1", "u", "zz")
    assert not engine.set_forced_variation("exp_1", "u", "")
    assert not engine.set_forced_variation("", "u", "a")
    assert engine.set_forced_variation("exp_1", "u", None)  # nothing to clear is fine
    assert engine.set_forced_variation("exp_1", "u", "b")
    engine.update_config(_config(experiments=[_experiment("1")], revision="4"))
    assert engine.get_forced_variation("exp_1", "u") == "b"
    assert engine.get_forced_variation("nope", "u") is None


def test_group_reasons() -> None:
    group = {
        "id": "g",
        "policy": "random",
        "trafficAllocation": [
            {"entityId": "1", "endOfRange": 3000},
            {"entityId": "", "endOfRange": 6000},
            {"entityId": "2", "endOfRange": 10_000},
        ],
        "experiments": [_experiment("1"), _experiment("2")],
    }
    engine = DecisionEngine(_config(groups=[group]))
    experiment = engine.experiment_by_key("exp_1")
    assert experiment is not None
    seen: set[str] = set()
    for index in range(100):
        reasons = engine.get_variation(experiment, _user(f"u{index}"), None).reasons
        seen.update(r.split('" ', 1)[1] for r in reasons if "group" in r or "no experiment" in r)
    assert seen == {
        "is in experiment exp_1 of group g.",
        'is not in experiment "exp_1" of group g.',
        "is in no experiment.",
    }
