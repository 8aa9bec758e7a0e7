"""The journal (optitrack/_delivery/spool.py, spool_records.py): writing and reading back,
damage found by checksum, the bound's bookkeeping, the lock, removal once done."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from optitrack import SpoolFsync, SpoolLockedError
from optitrack._delivery import BatchContext, Spool
from optitrack._delivery.spool_records import EVENT_OVERHEAD, MAGIC, scan

CTX = BatchContext("http://events.test/v1/events", b'{"visitors":[', b"]}")
OTHER = BatchContext("http://eu.events.test/v1/events", b'{"v":[', b"]}")


def spool_at(path: Path, **options: object) -> Spool:
    spool = Spool(str(path), max_bytes=1 << 30, **options)  # type: ignore[arg-type]
    spool.open()
    return spool


def item(n: int) -> bytes:
    return b'{"uuid":"%08d","n":%d}' % (n, n)


def read_all(spool: Spool, start: int = 0) -> list[tuple[BatchContext, bytes]]:
    return spool.read(spool.reading_plan(), start, 1_000_000, 1 << 30)


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_items_read_back_in_order_with_their_contexts(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(10):
        spool.append(CTX if n % 3 else OTHER, item(n))
    got = read_all(spool)
    assert [data for _, data in got] == [item(n) for n in range(10)]
    assert [ctx for ctx, _ in got] == [CTX if n % 3 else OTHER for n in range(10)]
    assert spool.live_bytes == sum(len(item(n)) + EVENT_OVERHEAD for n in range(10))
    spool.close()


def test_a_new_spool_recovers_what_an_earlier_one_left(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(5):
        spool.append(CTX, item(n))
    spool.close()
    again = spool_at(tmp_path)
    assert again.recovered == 5
    assert again.skipped == 0
    assert [data for _, data in read_all(again)] == [item(n) for n in range(5)]
    again.close()


def test_reading_starts_at_the_first_item_not_in_memory(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(6):
        spool.append(CTX, item(n))
    assert [data for _, data in read_all(spool, start=4)] == [item(4), item(5)]
    spool.append(CTX, item(6))
    assert [data for _, data in read_all(spool, start=6)] == [item(6)]
    spool.close()


def test_a_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(4):
        spool.append(CTX, item(n))
    spool.close()
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with open(segment, "r+b") as file:
        file.truncate(size - 3)  # the last record, cut off by a crash
    again = spool_at(tmp_path)
    assert again.recovered == 3
    assert again.skipped == 1
    assert [data for _, data in read_all(again)] == [item(n) for n in range(3)]
    again.close()


def test_a_corrupt_record_in_the_middle_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(5):
        spool.append(CTX, item(n))
    spool.close()
    (segment,) = segments(tmp_path)
    blob = bytearray(segment.read_bytes())
    where = blob.index(item(2))
    blob[where + 5] ^= 0xFF  # a flipped bit in the third event's body
    segment.write_bytes(bytes(blob))
    again = spool_at(tmp_path)
    assert (again.recovered, again.skipped) == (4, 1)
    assert [data for _, data in read_all(again)] == [item(n) for n in (0, 1, 3, 4)]
    again.close()


def test_a_file_that_is_not_a_segment_is_counted_and_removed(tmp_path: Path) -> None:
    (tmp_path / "000000000001.seg").write_bytes(b"garbage, not a segment")
    spool = spool_at(tmp_path)
    assert (spool.recovered, spool.skipped) == (0, 1)
    assert not (tmp_path / "000000000001.seg").exists()
    spool.close()


def test_scan_counts_events_and_finds_the_end(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(CTX, item(0))
    spool.close()
    (segment,) = segments(tmp_path)
    found = scan(segment.read_bytes())
    assert (found.events, found.event_bytes, found.damaged) == (1, len(item(0)), 0)
    assert found.end == segment.stat().st_size > len(MAGIC)


def test_segments_are_removed_once_every_item_is_done(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 30, segment_bytes=200)
    spool.open()
    for n in range(20):
        spool.append(CTX, item(n))
    spool.write()
    assert len(segments(tmp_path)) > 3
    first = len(segments(tmp_path))
    spool.done(0, 10, sum(len(item(n)) for n in range(10)))
    assert 0 < len(segments(tmp_path)) < first
    spool.done(10, 10, sum(len(item(n)) for n in range(10, 20)))
    assert spool.live_bytes == 0
    spool.close()
    assert segments(tmp_path) == []
    assert spool_at(tmp_path).recovered == 0


def test_items_not_done_stay_after_close(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for n in range(3):
        spool.append(CTX, item(n))
    spool.done(0, 1, len(item(0)))
    spool.close()
    # A segment goes as a whole: the first item is read again (at least once).
    assert spool_at(tmp_path).recovered == 3


def test_a_second_spool_on_the_directory_is_refused_with_the_path(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    with pytest.raises(SpoolLockedError, match=f"pid {os.getpid()}") as caught:
        spool_at(tmp_path)
    assert caught.value.path == str(tmp_path)
    assert "its own spool directory" in str(caught.value)
    spool.close()
    spool_at(tmp_path).close()  # released


@pytest.mark.parametrize("policy", list(SpoolFsync))
def test_every_fsync_policy_writes_what_it_was_given(tmp_path: Path, policy: SpoolFsync) -> None:
    spool = spool_at(tmp_path, fsync=policy)
    for n in range(3):
        spool.append(CTX, item(n))
    spool.close()
    assert spool_at(tmp_path).recovered == 3


def test_always_writes_each_item_before_append_returns(tmp_path: Path) -> None:
    spool = spool_at(tmp_path, fsync=SpoolFsync.ALWAYS)
    spool.append(CTX, item(0))
    (segment,) = segments(tmp_path)
    assert scan(segment.read_bytes()).events == 1
    spool.close()


def test_an_abandoned_spool_writes_and_deletes_nothing(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(CTX, item(0))
    spool.write()
    before = {p.name: p.read_bytes() for p in segments(tmp_path)}
    spool.abandon()  # what a forked child does
    spool.append(CTX, item(1))
    spool.write()
    spool.done(0, 1, len(item(0)))
    spool.close()
    assert {p.name: p.read_bytes() for p in segments(tmp_path)} == before


def test_a_failed_write_is_logged_kept_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = spool_at(tmp_path, fsync=SpoolFsync.ALWAYS)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", full)
        spool.append(CTX, item(0))  # does not raise
    assert "cannot write" in caplog.text
    spool.append(CTX, item(1))  # the disk has room again: both are written
    spool.close()
    again = spool_at(tmp_path)
    assert [data for _, data in read_all(again)] == [item(0), item(1)]
    again.close()
