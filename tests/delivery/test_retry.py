"""The retry policy (optitrack/_delivery/retry.py): validation, backoff, Retry-After, statuses."""

from __future__ import annotations

import dataclasses
import email.utils

import pytest

from optitrack import RetryPolicy
from optitrack._delivery.retry import is_retryable_status, parse_retry_after


def test_policy_is_frozen_and_keyword_only() -> None:
    policy = RetryPolicy(attempts=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, r"attempts \(0\) must be an integer >= 1"),
        ({"attempts": 2.5}, r"attempts \(2.5\) must be an integer >= 1"),
        ({"timeout": 0}, r"timeout \(0\) must be > 0"),
        ({"attempt_timeout": -1}, r"attempt_timeout \(-1\) must be > 0"),
        ({"wait_initial": 2, "wait_max": 1}, r"wait_initial \(2\) must be <= wait_max \(1\)"),
        ({"wait_jitter": 1.5}, r"wait_jitter \(1.5\) must be between 0.0 and 1.0"),
        ({"wait_max": float("inf")}, r"wait_max \(inf\) must be >= 0 and finite"),
        ({"breaker_threshold": 0}, r"breaker_threshold \(0\) must be >= 1"),
        ({"probe_interval": -1}, r"probe_interval \(-1\) must be >= 0 and finite"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(wait_initial=0.1, wait_max=1.0, wait_jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.backoff(10_000) == 1.0


def test_full_jitter_stays_within_zero_and_the_cap() -> None:
    policy = RetryPolicy(wait_initial=0.1, wait_max=1.0)
    waits = [policy.backoff(3) for _ in range(2000)]
    assert all(0.0 <= w <= 0.4 for w in waits)
    assert min(waits) < 0.05
    assert max(waits) > 0.35


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(200, False), (204, False), (400, False), (404, False), (408, True), (413, False),
     (429, True), (500, True), (501, False), (502, True), (503, True), (504, True),
     (505, False), (599, True)],
)  # fmt: skip
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
