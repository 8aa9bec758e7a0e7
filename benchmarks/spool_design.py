"""Measure the two spool designs considered: segment files of checksummed records, SQLite.

Not a benchmark of optitrack itself: a small script that settled the design of
``optitrack/_delivery/spool.py``. Each design journals N serialized events (about 300
bytes, like a conversion) in batches of 1000, syncing after each batch, then reads them
all back in order, then removes them as a delivered spool does; printed side by side:
microseconds per event to write (and sync), to read back, to remove, and the bytes on
disk per event.

- segment files: ``length + crc32 + body`` records appended to 16 MiB files (one
  ``os.write`` and one ``fsync`` per batch), read back with ``pread`` and checked;
  removal deletes whole files;
- SQLite: one table ``(seq INTEGER PRIMARY KEY, body BLOB)`` in WAL mode with
  ``synchronous=FULL`` (a sync per transaction, the same guarantee), one transaction
  and ``executemany`` per batch; read back by ``seq``; removal by ``DELETE ... WHERE
  seq < ?`` per batch, as deliveries would acknowledge them.

Run it from the repository root::

    python benchmarks/spool_design.py            # 200k events
    python benchmarks/spool_design.py --quick    # 20k events
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable

from _bench import print_load, print_machine, table

HEADER = struct.Struct("<II")
SEGMENT_BYTES = 16 * 1024 * 1024
BATCH = 1000


def events(n: int) -> list[bytes]:
    """N distinct serialized events of about 300 bytes."""
    pad = "x" * 220
    return [
        b'{"visitor_id":"user-%d","uuid":"%032x","pad":"%s"}' % (i, i, pad.encode())
        for i in range(n)
    ]


def segments(path: str, items: list[bytes]) -> tuple[float, float, float, int]:
    """Write, read back and remove with segment files: seconds for each, bytes on disk."""
    t0 = time.perf_counter()
    number, fd, size = 0, -1, SEGMENT_BYTES
    for start in range(0, len(items), BATCH):
        if size >= SEGMENT_BYTES:
            if fd >= 0:
                os.close(fd)
            number += 1
            fd = os.open(os.path.join(path, f"{number:012d}.seg"), os.O_WRONLY | os.O_CREAT, 0o644)
            size = 0
        buffer = bytearray()
        for body in items[start : start + BATCH]:
            buffer += HEADER.pack(len(body), zlib.crc32(body))
            buffer += body
        size += os.write(fd, buffer)
        os.fsync(fd)
    os.close(fd)
    t1 = time.perf_counter()
    read = 0
    names = sorted(os.listdir(path))
    for name in names:
        with open(os.path.join(path, name), "rb") as file:
            blob = file.read()
        view = memoryview(blob)
        offset = 0
        while offset < len(blob):
            length, crc = HEADER.unpack_from(view, offset)
            assert zlib.crc32(view[offset + 8 : offset + 8 + length]) == crc
            read += 1
            offset += 8 + length
    assert read == len(items)
    t2 = time.perf_counter()
    disk = sum(os.path.getsize(os.path.join(path, name)) for name in names)
    for name in names:
        os.unlink(os.path.join(path, name))
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, disk


def sqlite(path: str, items: list[bytes]) -> tuple[float, float, float, int]:
    """Write, read back and remove with SQLite: seconds for each, bytes on disk."""
    file = os.path.join(path, "spool.db")
    db = sqlite3.connect(file, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    t0 = time.perf_counter()
    for start in range(0, len(items), BATCH):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO events VALUES (?, ?)",
            ((start + i, body) for i, body in enumerate(items[start : start + BATCH])),
        )
        db.execute("COMMIT")
    t1 = time.perf_counter()
    read = 0
    for start in range(0, len(items), BATCH):
        rows = db.execute(
            "SELECT body FROM events WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, start + BATCH),
        ).fetchall()
        read += len(rows)
    assert read == len(items)
    t2 = time.perf_counter()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    disk = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    t2b = time.perf_counter()
    for start in range(0, len(items), BATCH):
        db.execute("BEGIN")
        db.execute("DELETE FROM events WHERE seq < ?", (start + BATCH,))
        db.execute("COMMIT")
    t3 = time.perf_counter()
    db.close()
    return t1 - t0, t2 - t1, t3 - t2b, disk


def main(argv: list[str]) -> None:
    """Measure both designs, three runs each, alternating; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k events")
    args = parser.parse_args(argv[1:])
    n = 20_000 if args.quick else 200_000
    print_machine("optitrack: spool designs, segment files vs SQLite", argv)
    items = events(n)
    print(f"{n:,} events of {len(items[0])} B, batches of {BATCH}, a sync per batch")
    designs: dict[str, Callable[[str, list[bytes]], tuple[float, float, float, int]]] = {
        "segment files": segments,
        "SQLite (WAL, synchronous=FULL)": sqlite,
    }
    results: dict[str, list[tuple[float, float, float, int]]] = {d: [] for d in designs}
    for _ in range(3):
        for name, design in designs.items():
            with tempfile.TemporaryDirectory(prefix="optitrack-design-") as path:
                results[name].append(design(path, items))
    rows = [["design", "write+sync µs/event", "read µs/event", "remove µs/event", "disk B/event"]]
    for name, runs in results.items():
        write, read, remove, disk = (sorted(r[i] for r in runs)[1] for i in range(4))
        rows.append(
            [
                name,
                f"{write / n * 1e6:.2f}",
                f"{read / n * 1e6:.2f}",
                f"{remove / n * 1e6:.3f}",
                f"{disk / n:.0f}",
            ]
        )
    print()
    print(table(rows))
    print()
    print_load()


if __name__ == "__main__":
    main(sys.argv)
