"""Unique ids, cheap enough for the hot paths: event uuids and idempotency keys.

Owns the id stream and its reseeding in a forked child. It knows nothing of events or of
delivery: ``_events`` stamps each event with one, and ``_delivery`` keys each request
with one.

Ids are 74 random bits per process (from the OS), then a 48-bit counter from a random
start, in the RFC 4122 version 4 layout. Unique within a process by the counter, across
processes by the random part. Made 256 at a time (they share all but the last two hex
digits), an id costs a list pop: a tenth of formatting 122 fresh random bits, which the
hot paths feel. The random part is drawn at a process's first id,
not at import, and again in a forked child: so workers forked from a master that
imported optitrack differ even when the fork skips Python's at-fork hooks (uWSGI).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

__all__ = ["new_uuid"]

_UUID_COUNTER_END = 1 << 48
#: Ids are made a block of 256 at a time, then handed out one by one: in a block, they
#: share all but their last two hex digits, so each costs one concatenation.
_BLOCK = 256
#: The last two hex digits, in the order the ids are handed out (``list.pop`` takes last).
_LAST_DIGITS = tuple("%02x" % n for n in reversed(range(_BLOCK)))
_uuid_head = ""
#: The ids formatted and not yet handed out, the next one last.
_spare: list[str] = []


def _new_uuid_stream() -> None:
    global _uuid_head, _uuid_block
    bits = int.from_bytes(os.urandom(16), "big")
    _uuid_head = "%08x-%04x-4%03x-%04x-" % (
        bits >> 96,
        (bits >> 80) & 0xFFFF,
        (bits >> 68) & 0xFFF,
        ((bits >> 54) & 0x3FFF) | 0x8000,
    )
    # Blocks of the counter, from a random start in its lower half. count().__next__ is
    # atomic: threads formatting ids at once never get the same block.
    _uuid_block = itertools.count((bits & (_UUID_COUNTER_END // 2 - 1)) // _BLOCK).__next__


def _first_uuid_block() -> int:
    _new_uuid_stream()
    return _uuid_block()


def _forget_uuid_stream() -> None:
    global _uuid_block
    _uuid_block = _first_uuid_block
    _spare.clear()


_uuid_block: Callable[[], int] = _first_uuid_block
os.register_at_fork(after_in_child=_forget_uuid_stream)


def _refill() -> None:
    block = _uuid_block()
    if (block + 1) * _BLOCK > _UUID_COUNTER_END:  # after 2**47 ids at least: a new stream
        _new_uuid_stream()
        block = _uuid_block()
    shared = "%s%010x" % (_uuid_head, block)
    # A slice assignment: a thread that refills at the same time only replaces ids
    # nobody was given; each block is made once, so no id is ever given twice.
    _spare[:] = [shared + digits for digits in _LAST_DIGITS]


def new_uuid() -> str:
    """Return a unique id in the RFC 4122 version 4 layout, as a string."""
    try:
        return _spare.pop()
    except IndexError:
        _refill()
        return new_uuid()
