"""The spool's on-disk format: segment files of checksummed records, and reading them.

A segment file opens with :data:`MAGIC`, then holds records, each::

    length  uint32 little-endian   the payload's size
    crc     uint32 little-endian   zlib.crc32 of the payload
    payload kind (1 byte), then:
            b"C": a context: id uint32, endpoint size uint32, prefix size uint32,
                  endpoint (UTF-8), prefix, suffix
            b"E": an event: context id uint32, the serialized event (its uuid inside)

Context ids are local to a segment (each segment defines the contexts it uses before
its events), so a segment reads back alone once the older ones are removed.

Owns: encoding records and parsing them back, skipping what fails its checksum. Must not
touch: files' lifecycle, the lock, the queue (``spool.py`` does).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from zlib import crc32

from .batch import BatchContext

__all__ = [
    "EVENT_OVERHEAD",
    "HEADER",
    "MAGIC",
    "Scan",
    "context_record",
    "event_head",
    "parse",
    "scan",
]

#: The first bytes of every segment file: the format and its version.
MAGIC = b"OTSPOOL1"
#: A record's header: payload length, CRC32 of the payload.
HEADER = struct.Struct("<II")
_ID = struct.Struct("<I")
_CONTEXT = struct.Struct("<III")
#: The bytes a spooled event costs beyond its serialized size.
EVENT_OVERHEAD = HEADER.size + 1 + _ID.size


def event_head(ctx_id: int) -> bytes:
    """The payload's opening bytes for an event of context ``ctx_id``."""
    return b"E" + _ID.pack(ctx_id)


def context_record(ctx_id: int, ctx: BatchContext) -> bytes:
    """A whole record (header included) that defines context ``ctx_id`` in a segment."""
    endpoint = ctx.endpoint.encode()
    payload = b"".join(
        (
            b"C",
            _CONTEXT.pack(ctx_id, len(endpoint), len(ctx.prefix)),
            endpoint,
            ctx.prefix,
            ctx.suffix,
        )
    )
    return HEADER.pack(len(payload), crc32(payload)) + payload


def _context(payload: memoryview, endpoint: str | None) -> tuple[int, BatchContext]:
    ctx_id, endpoint_size, prefix_size = _CONTEXT.unpack_from(payload, 1)
    start = 1 + _CONTEXT.size
    if endpoint is None:
        endpoint = bytes(payload[start : start + endpoint_size]).decode()
    start += endpoint_size
    prefix = bytes(payload[start : start + prefix_size])
    suffix = bytes(payload[start + prefix_size :])
    return ctx_id, BatchContext(endpoint, prefix, suffix)


def parse(
    blob: bytes, offset: int, contexts: dict[int, BatchContext], endpoint: str | None = None
) -> Iterator[tuple[int, BatchContext | None, bytes | None]]:
    """Parse the records of ``blob`` from ``offset``, in order.

    Each event record yields ``(next_offset, ctx, data)``; a context record updates
    ``contexts`` and yields ``(next_offset, ctx, None)``; a record that fails its
    checksum, or an event of an unknown context, yields ``(next_offset, None, None)``
    (damaged, skipped). Parsing
    stops at the first record that does not fit in ``blob`` (a torn tail, or the end
    of what was read): the caller compares the last ``next_offset`` with the end.

    Args:
        blob: Bytes of a segment file (the whole file, or a chunk).
        offset: Where the first record starts in ``blob``.
        contexts: The segment's contexts so far, by id; updated in place.
        endpoint: Where the contexts read send their batches, instead of the endpoint
            recorded (``None`` keeps it).
    """
    view = memoryview(blob)
    end = len(blob)
    unpack = HEADER.unpack_from
    head_size = HEADER.size
    while offset + head_size <= end:
        length, crc = unpack(view, offset)
        start = offset + head_size
        stop = start + length
        if stop > end:
            return
        payload = view[start:stop]
        if length < 1 + _ID.size or crc32(payload) != crc:
            yield stop, None, None
        elif payload[0] == 0x45:  # b"E"
            ctx = contexts.get(_ID.unpack_from(payload, 1)[0])
            yield stop, ctx, (bytes(payload[1 + _ID.size :]) if ctx is not None else None)
        elif payload[0] == 0x43 and length >= 1 + _CONTEXT.size:  # b"C"
            ctx_id, ctx = _context(payload, endpoint)
            contexts[ctx_id] = ctx
            yield stop, ctx, None
        else:
            yield stop, None, None
        offset = stop


@dataclass(slots=True)
class Scan:
    """What a segment file holds, found by reading it through.

    Attributes:
        events: Event records whose checksum holds.
        event_bytes: Their serialized size (framing excluded).
        damaged: Records skipped: a failed checksum, an unknown kind or context, or a
            torn tail (counted once).
        end: Where the valid records end (the file's size, unless its tail is torn).
    """

    events: int = 0
    event_bytes: int = 0
    damaged: int = 0
    end: int = 0


def scan(blob: bytes) -> Scan:
    """Read a whole segment file's bytes through: count its events and damaged records."""
    result = Scan()
    if not blob.startswith(MAGIC):
        result.damaged = 1 if blob else 0
        result.end = 0
        return result
    offset = len(MAGIC)
    for stop, ctx, data in parse(blob, len(MAGIC), {}):
        offset = stop
        if ctx is None:
            result.damaged += 1
        elif data is not None:
            result.events += 1
            result.event_bytes += len(data)
    result.end = offset
    if offset < len(blob):
        result.damaged += 1  # a torn tail: a record cut off by a crash
    return result
