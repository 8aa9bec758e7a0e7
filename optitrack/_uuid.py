"""Unique ids, cheap enough for the hot paths: event uuids and idempotency keys.

Owns the id stream and its reseeding in a forked child. It knows nothing of events or of
delivery: ``_events`` stamps each event with one, and ``_delivery`` keys each request
with one.

Ids are 74 random bits per process (from the OS), then a 48-bit counter from a random
start, in the RFC 4122 version 4 layout. Unique within a process by the counter, across
processes by the random part; and three times cheaper than formatting 122 fresh random
bits per id, which the hot paths feel. The random part is drawn at a process's first id,
not at import, and again in a forked child: so workers forked from a master that
imported optitrack differ even when the fork skips Python's at-fork hooks (uWSGI).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

__all__ = ["new_uuid"]

_UUID_COUNTER_END = 1 << 48
_uuid_head = ""


def _new_uuid_stream() -> None:
    global _uuid_head, _uuid_count
    bits = int.from_bytes(os.urandom(16), "big")
    _uuid_head = "%08x-%04x-4%03x-%04x-" % (
        bits >> 96,
        (bits >> 80) & 0xFFFF,
        (bits >> 68) & 0xFFF,
        ((bits >> 54) & 0x3FFF) | 0x8000,
    )
    _uuid_count = itertools.count(bits & (_UUID_COUNTER_END // 2 - 1)).__next__


def _first_uuid_count() -> int:
    _new_uuid_stream()
    return _uuid_count()


def _forget_uuid_stream() -> None:
    global _uuid_count
    _uuid_count = _first_uuid_count


_uuid_count: Callable[[], int] = _first_uuid_count
os.register_at_fork(after_in_child=_forget_uuid_stream)


def new_uuid() -> str:
    """Return a unique id in the RFC 4122 version 4 layout, as a string."""
    count = _uuid_count()
    if count >= _UUID_COUNTER_END:  # after 2**47 ids at least: a new stream
        _new_uuid_stream()
        count = _uuid_count()
    return "%s%012x" % (_uuid_head, count)
