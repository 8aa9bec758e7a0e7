"""Unique ids (optitrack/_uuid.py): RFC 4122 layout, unique, a new stream per process."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from optitrack import _uuid
from optitrack._uuid import new_uuid


def test_uuids_are_unique_and_rfc4122() -> None:
    seen = {new_uuid() for _ in range(100_000)}
    assert len(seen) == 100_000
    parsed = uuid.UUID(next(iter(seen)))
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122


def test_uuid_stream_is_reseeded_in_a_forked_child() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, new_uuid().encode())
        os._exit(0)
    os.close(write)
    mine = new_uuid()
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child
    assert child != mine


def test_a_new_uuid_stream_starts_before_the_counter_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The counter's last block: its ids, then a new stream.
    last_block = _uuid._UUID_COUNTER_END // _uuid._BLOCK - 1
    monkeypatch.setattr(_uuid, "_uuid_block", itertools.count(last_block).__next__)
    _uuid._spare.clear()
    ids = [new_uuid() for _ in range(_uuid._BLOCK)]
    last = ids[-1]
    fresh = new_uuid()
    assert ids[0].endswith("-ffffffffff00")
    assert last.endswith("-ffffffffffff")
    assert fresh[:24] != last[:24]  # another random part
    assert int(fresh[24:], 16) < _uuid._UUID_COUNTER_END // 2
    assert uuid.UUID(fresh).version == 4


def test_importing_draws_no_uuid_stream() -> None:
    # Workers forked from a master that only imported optitrack must not share a stream,
    # even when the fork skips Python's at-fork hooks (uWSGI by default).
    import subprocess
    import sys

    code = (
        "import optitrack\n"
        "from optitrack import _uuid\n"
        "print(repr(_uuid._uuid_head))\n"
        "print(_uuid.new_uuid()[:24] == _uuid._uuid_head)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["''", "True"]


def test_threads_taking_ids_at_once_never_share_one() -> None:
    # Ids are made a block at a time: threads that refill at the same moment must not
    # hand out the same id (the sync client serializes in its callers' threads).
    import threading

    results: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(len(results))

    def take(out: list[str]) -> None:
        start.wait()
        out.extend(new_uuid() for _ in range(50_000))

    threads = [threading.Thread(target=take, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for out in results for i in out]
    assert len(set(every)) == len(every) == 200_000
