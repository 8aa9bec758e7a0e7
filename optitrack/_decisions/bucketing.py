"""Bucketing: from a user's bucketing id to a variation, exactly as Optimizely's SDKs do it.

The hash is MurmurHash3 x86_32 with seed 1 over the UTF-8 bytes of
``bucketing_id + parent_id``, where ``parent_id`` is an experiment or rule id (variation
stage) or a group id (group stage). The unsigned 32-bit hash ``h`` becomes a bucket in
``[0, 9999]``: ``floor(h / 2**32 * 10000)``, computed in float64. A traffic allocation is
walked in order and the first range whose ``endOfRange`` is above the bucket wins; its
``entityId`` is the result, and an empty ``entityId`` is a hole (not bucketed).

Everything here is on the hot path of every decision, so allocations are precompiled into
plain tuples once per datafile (:func:`compile_allocation`) and no pydantic model is
touched per call.

Owns: hashing and allocation ranges. Must not touch: audiences, the decision order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import mmh3

from .datafile import TrafficAllocation

__all__ = [
    "BUCKETING_ID_ATTRIBUTE",
    "HASH_SEED",
    "MAX_TRAFFIC_VALUE",
    "Allocation",
    "bucket_value",
    "compile_allocation",
    "find_bucket",
    "resolve_bucketing_id",
]


#: The seed of Optimizely's MurmurHash3.
HASH_SEED: Final = 1
#: Buckets are in ``[0, MAX_TRAFFIC_VALUE)``.
MAX_TRAFFIC_VALUE: Final = 10_000
#: The reserved attribute that replaces the user id for bucketing.
BUCKETING_ID_ATTRIBUTE: Final = "$opt_bucketing_id"

_MAX_HASH_VALUE: Final = 4294967296.0  # 2**32, as a float64

#: A compiled traffic allocation: ``(end_of_range, entity_id)`` pairs, in datafile order.
Allocation = tuple[tuple[int, str], ...]


def bucket_value(bucketing_key: str) -> int:
    """The bucket, in ``[0, 9999]``, of a bucketing key.

    Args:
        bucketing_key: The bucketing id followed by the parent (experiment, rule or group)
            id.

    Returns:
        ``floor(murmur3_x86_32(key, seed=1) / 2**32 * 10000)``, computed in float64.
    """
    if bucketing_key.isascii():
        hashed = mmh3.hash(bucketing_key, HASH_SEED, False)
    else:
        # mmh3 crashes the interpreter on a lone surrogate when given a str; the UTF-8
        # bytes are what it hashes anyway, and "surrogatepass" keeps such keys usable.
        hashed = mmh3.hash(bucketing_key.encode("utf-8", "surrogatepass"), HASH_SEED, False)
    return int(hashed / _MAX_HASH_VALUE * MAX_TRAFFIC_VALUE)


def compile_allocation(traffic_allocation: Iterable[TrafficAllocation]) -> Allocation:
    """Turn a datafile traffic allocation into the plain tuple the hot path walks.

    Args:
        traffic_allocation: The ranges, in datafile order.

    Returns:
        ``(end_of_range, entity_id)`` pairs in the same order.
    """
    return tuple((entry.end_of_range, entry.entity_id) for entry in traffic_allocation)


def find_bucket(bucketing_id: str, parent_id: str, allocation: Allocation) -> str | None:
    """Bucket a user into one entity of a traffic allocation.

    Args:
        bucketing_id: The user's bucketing id (see :func:`resolve_bucketing_id`).
        parent_id: The id of the experiment or rule (variation stage) or of the group
            (group stage) whose allocation this is.
        allocation: The compiled allocation (see :func:`compile_allocation`).

    Returns:
        The ``entityId`` of the first range whose ``endOfRange`` is above the user's bucket,
        or ``None`` when no range is, or when that range is a hole (empty ``entityId``).
    """
    key = bucketing_id + parent_id
    if key.isascii():  # bucket_value, inlined: this runs for every decision
        bucket = int(mmh3.hash(key, HASH_SEED, False) / _MAX_HASH_VALUE * MAX_TRAFFIC_VALUE)
    else:
        bucket = bucket_value(key)
    for end_of_range, entity_id in allocation:
        if bucket < end_of_range:
            return entity_id or None
    return None


def resolve_bucketing_id(user_id: str, attributes: Mapping[str, Any]) -> tuple[str, bool]:
    """The id a user is bucketed with.

    Args:
        user_id: The user id.
        attributes: The user's attributes; ``$opt_bucketing_id`` replaces the user id when
            it is a ``str``.

    Returns:
        The bucketing id, and whether a ``$opt_bucketing_id`` that is not a ``str`` was
        ignored (the caller logs a WARNING and adds a reason, as Optimizely does).
    """
    value = attributes.get(BUCKETING_ID_ATTRIBUTE)
    if value is None:
        return user_id, False
    if isinstance(value, str):
        return value, False
    return user_id, True
