"""Bucketing: the spec's vectors, an independent MurmurHash3, and the traffic allocation walk."""

from __future__ import annotations

import random

import mmh3
import pytest
from optimizely import bucketer as optimizely_bucketer

from optitrack._decisions.bucketing import (
    BUCKETING_ID_ATTRIBUTE,
    bucket_value,
    compile_allocation,
    find_bucket,
    resolve_bucketing_id,
)
from optitrack._decisions.datafile import TrafficAllocation

# The vectors every Optimizely SDK tests its bucketing with.
SPEC_VECTORS = [
    ("ppid11886780721", 5254),
    ("ppid21886780721", 4299),
    ("ppid21886780722", 2434),
    ("ppid31886780721", 5439),
    (
        "a very very very very very very very very very very very very very very very long "
        "ppd string1886780721",
        6128,
    ),
    ("user_140101", 9239),
    ("user_040101", 4397),
]


@pytest.mark.parametrize(("key", "bucket"), SPEC_VECTORS)
def test_spec_vectors(key: str, bucket: int) -> None:
    assert bucket_value(key) == bucket


def _murmur3_x86_32(data: bytes, seed: int) -> int:
    """MurmurHash3 x86_32, written from the reference algorithm (independent of mmh3)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = 0
    tail = data[whole:]
    for index in reversed(range(len(tail))):
        k = (k << 8) | tail[index]
    if tail:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def _keys(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_.@ ÄéüßЖ用户😀"
    keys = []
    for index in range(count):
        if index % 3 == 0:
            keys.append(f"user_{rng.randrange(10**12)}{rng.randrange(10**8)}")
        else:
            length = rng.randrange(0, 40)
            keys.append("".join(rng.choices(alphabet, k=length)))
    return keys


def test_bucket_formula_for_100k_keys() -> None:
    # Exact integer arithmetic on the unsigned hash (mmh3's signed result, masked): float64
    # holds h * 10000 / 2**32 exactly (46 bits), so floor() must agree with the shift.
    mismatches = [
        key
        for key in _keys(100_000, seed=7)
        if bucket_value(key) != (mmh3.hash(key.encode(), 1) & 0xFFFFFFFF) * 10_000 >> 32
    ]
    assert mismatches == []


def test_hash_matches_an_independent_murmur3() -> None:
    mismatches = [
        key
        for key in _keys(10_000, seed=11)
        if bucket_value(key) != _murmur3_x86_32(key.encode(), 1) * 10_000 >> 32
    ]
    assert mismatches == []


def test_bucket_matches_optimizely_sdk() -> None:
    reference = optimizely_bucketer.Bucketer()
    for key in _keys(5_000, seed=8):
        assert bucket_value(key) == reference._generate_bucket_value(key), key


def test_bucket_range_and_extremes() -> None:
    values = [bucket_value(key) for key in _keys(20_000, seed=9)]
    assert min(values) >= 0
    assert max(values) <= 9_999
    # The largest unsigned hash, had it a key, would still land in 9999.
    assert int(0xFFFFFFFF / 4294967296.0 * 10_000) == 9_999


def test_lone_surrogate_does_not_crash() -> None:
    # mmh3 given such a str crashes the interpreter; its UTF-8 bytes (surrogatepass) are used.
    key = "user\ud800x"
    assert (
        bucket_value(key)
        == _murmur3_x86_32(key.encode("utf-8", "surrogatepass"), 1) * (10_000) >> 32
    )


ALLOCATION = ((1000, "a"), (1000, "zero-width"), (2500, ""), (5000, "b"), (9000, "c"))


def _key_in(bucket_range: range) -> str:
    for index in range(100_000):
        key = f"k{index}"
        if bucket_value(key + "parent") in bucket_range:
            return key
    raise AssertionError(bucket_range)  # pragma: no cover


@pytest.mark.parametrize(
    ("bucket_range", "entity"),
    [
        (range(1000), "a"),
        (range(1000, 2500), None),  # the hole; the zero-width range never matches
        (range(2500, 5000), "b"),
        (range(5000, 9000), "c"),
        (range(9000, 10_000), None),  # past the last range
    ],
)
def test_find_bucket_walks_in_order(bucket_range: range, entity: str | None) -> None:
    assert find_bucket(_key_in(bucket_range), "parent", ALLOCATION) == entity


def test_find_bucket_end_of_range_is_exclusive() -> None:
    key = _key_in(range(10_000))
    bucket = bucket_value(key + "parent")
    assert find_bucket(key, "parent", ((bucket, "low"), (bucket + 1, "high"))) == "high"
    assert find_bucket(key, "parent", ()) is None


def test_find_bucket_first_matching_range_wins_even_if_not_sorted() -> None:
    key = _key_in(range(5000))
    assert find_bucket(key, "parent", ((10_000, "first"), (5000, "second"))) == "first"


def test_compile_allocation_keeps_order() -> None:
    allocation = compile_allocation(
        [
            TrafficAllocation(entity_id="1", end_of_range=10),
            TrafficAllocation(entity_id="", end_of_range=0),
        ]
    )
    assert allocation == ((10, "1"), (0, ""))


def test_bucketing_id() -> None:
    assert resolve_bucketing_id("u", {}) == ("u", False)
    assert resolve_bucketing_id("u", {BUCKETING_ID_ATTRIBUTE: "b"}) == ("b", False)
    assert resolve_bucketing_id("u", {BUCKETING_ID_ATTRIBUTE: ""}) == ("", False)
    assert resolve_bucketing_id("u", {BUCKETING_ID_ATTRIBUTE: None}) == ("u", False)
    assert resolve_bucketing_id("u", {BUCKETING_ID_ATTRIBUTE: 5}) == ("u", True)
