"""The durable spool: an append-only journal of accepted items, in segment files.

A spool is a directory: ``spool.lock`` (an ``fcntl.flock`` held while a client runs)
and segment files ``<number>.seg`` (format in ``spool_records.py``). Items are appended
to a buffer in memory and written to the active segment in batches (once per turn of the
event loop, by :meth:`Spool.writer`, or when the buffer passes 1 MiB), then synced
per :class:`~.options.SpoolFsync`. A segment is rolled at ``segment_bytes`` and deleted
once every item in it has been delivered or dropped for good.

Bookkeeping is by sequence number, as in the queue: the spool holds items in journal
order, so segment ``k`` holds the run ``[first_seq, first_seq + count)`` and counts how
many of them are still outstanding. At start the spool reads what an earlier process
left (checking every record), and those items take the first sequence numbers.

Owns: the lock, the segment files, writing, syncing, reading back in order (the read
cursor), and removal. Must not touch: the queue or its ledger (``spool_queue.py`` wires
the two), HTTP, tasks other than its writer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import weakref
from collections import deque
from collections.abc import Callable
from zlib import crc32

import anyio

from .._exceptions import SpoolLockedError
from .._logging import Throttled, logger
from .batch import BatchContext
from .options import SpoolFsync
from .spool_records import EVENT_OVERHEAD, HEADER, MAGIC, context_record, event_head, parse, scan

__all__ = ["DEFAULT_SEGMENT_BYTES", "Spool"]

#: A segment is rolled once it holds this many bytes.
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_WRITE_AT = 1024 * 1024  # the buffer is written at once past this size (rarely: the
# writer task writes it at every turn of the loop, and a write in a call costs its p99)
_READ_CHUNK = 1024 * 1024
_RETRY_WRITE = 1.0  # seconds before a failed write is tried again

_open_spools: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_open_spools):
        spool.abandon()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Segment:
    """One segment file and the run of sequence numbers it holds."""

    __slots__ = ("count", "end", "first_seq", "number", "outstanding", "path")

    def __init__(self, number: int, path: str, first_seq: int) -> None:
        self.number = number
        self.path = path
        self.first_seq = first_seq
        self.count = 0  # items
        self.outstanding = 0  # items not yet delivered or dropped for good
        self.end = 0  # bytes of valid records written


class Spool:
    """An append-only, checksummed journal of items, bounded in bytes.

    Args:
        path: The spool directory (made if missing).
        max_bytes: The bound on the items it holds (framing included).
        fsync: When writes are forced to disk.
        segment_bytes: When a segment is rolled.

    Attributes:
        live_bytes: Bytes of the items held and not yet delivered or dropped.
        recovered: Items an earlier process left, found at :meth:`open`.
        skipped: Damaged records skipped at :meth:`open` (failed checksum, torn tail).
    """

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int,
        fsync: SpoolFsync = SpoolFsync.BATCH,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._fsync = fsync
        self._always = fsync is SpoolFsync.ALWAYS
        self._segment_bytes = segment_bytes
        self.live_bytes = 0
        self.recovered = 0
        self.skipped = 0
        self._segments: deque[_Segment] = deque()
        self._lock_fd: int | None = None
        self._fd: int | None = None  # the active segment, open for appending
        self._active: _Segment | None = None
        self._ids: dict[BatchContext, bytes] = {}  # the active segment's contexts
        self._last_ctx: BatchContext | None = None
        self._last_head = b""
        self._buffer = bytearray()
        self._dirty: anyio.Event | None = None  # the writer waits on it
        self._next_seq = 0
        # The read cursor: the next record to read back lies in _segments[_read] at _at.
        self._read_number = -1
        self._read_at = 0
        self._read_seq = 0  # the sequence number of the item at the cursor
        self._read_contexts: dict[int, BatchContext] = {}
        self._abandoned = False
        self._closed = False
        self._throttled = Throttled()
        #: Where the events an earlier process left are sent (``None``: where it sent).
        self.readdress: str | None = None
        self._own_from = 0  # the number of the first segment this spool wrote

    # -- opening ---------------------------------------------------------------------

    def open(self) -> None:
        """Take the lock, read what an earlier process left, start a new segment.

        Blocking (it reads every segment through): run it in a worker thread.

        Raises:
            SpoolLockedError: Another client holds the lock.
            OSError: The directory cannot be made or read.
        """
        os.makedirs(self.path, exist_ok=True)
        lock_path = os.path.join(self.path, "spool.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLockedError(self.path, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _open_spools.add(self)
        numbers = sorted(
            int(name[:-4])
            for name in os.listdir(self.path)
            if name.endswith(".seg") and name[:-4].isdigit()
        )
        seq = 0
        for number in numbers:
            path = self._segment_path(number)
            with open(path, "rb") as file:
                found = scan(file.read())
            self.skipped += found.damaged
            if not found.events:
                os.unlink(path)
                continue
            segment = _Segment(number, path, seq)
            segment.count = segment.outstanding = found.events
            segment.end = found.end
            self._segments.append(segment)
            self.live_bytes += found.event_bytes + found.events * EVENT_OVERHEAD
            seq += found.events
        self.recovered = self._next_seq = seq
        if self.skipped:
            logger.warning(
                "Spool %r: skipped %d damaged record(s) (a torn or corrupt write).",
                self.path,
                self.skipped,
            )
        if self._segments:
            self._read_number = self._segments[0].number
            self._read_at = len(MAGIC)
        self._own_from = (numbers[-1] + 1) if numbers else 1
        self._roll(self._own_from)

    def _segment_path(self, number: int) -> str:
        return os.path.join(self.path, f"{number:012d}.seg")

    # -- writing ---------------------------------------------------------------------

    def append(self, ctx: BatchContext, data: bytes) -> None:
        """Add an item to the journal (written in the next batch; at once with ``always``)."""
        if self._abandoned:
            return
        buffer = self._buffer
        if not buffer:
            dirty = self._dirty
            if dirty is not None:
                self._dirty = None
                dirty.set()
        active = self._active
        assert active is not None
        if active.end + len(buffer) >= self._segment_bytes and self._try(self._next_segment):
            active = self._active
            assert active is not None
        if ctx is not self._last_ctx:
            self._use_context(ctx)
        head = self._last_head
        buffer += HEADER.pack(len(data) + 5, crc32(data, crc32(head)))
        buffer += head
        buffer += data
        active.count += 1
        active.outstanding += 1
        self._next_seq += 1
        self.live_bytes += len(data) + EVENT_OVERHEAD
        if self._always:
            self._try(self._write_and_sync)
        elif len(buffer) >= _WRITE_AT:
            self._try(self.write)

    def _try(self, operation: Callable[[], None]) -> bool:
        """Run a disk operation from the caller's path: an OSError is logged, not raised.

        What could not be written stays in the buffer and is tried again at the next
        batch (a full disk, a lost mount).
        """
        try:
            operation()
        except OSError as exc:
            self._throttled.log(
                logging.ERROR,
                "write",
                "Spool %r: cannot write (%s); the records wait in memory and are retried.",
                self.path,
                exc,
            )
            return False
        return True

    def _write_and_sync(self) -> None:
        self.write()
        self.sync()

    def _next_segment(self) -> None:
        self.write()  # the buffered records use this segment's context ids
        assert self._active is not None
        self._roll(self._active.number + 1)

    def _use_context(self, ctx: BatchContext) -> None:
        head = self._ids.get(ctx)
        if head is None:
            ctx_id = len(self._ids)
            head = self._ids[ctx] = event_head(ctx_id)
            self._buffer += context_record(ctx_id, ctx)
        self._last_ctx = ctx
        self._last_head = head

    def write(self) -> None:
        """Write the buffered records to the active segment (no fsync).

        Raises:
            OSError: The write failed; what was not written stays buffered.
        """
        buffer = self._buffer
        if not buffer or self._abandoned or self._fd is None:
            return
        active = self._active
        assert active is not None
        while buffer:
            written = os.write(self._fd, buffer)
            del buffer[:written]
            active.end += written

    def sync(self) -> None:
        """fsync the active segment (blocking: from a worker thread, unless ``always``)."""
        fd = self._fd
        if fd is not None and not self._abandoned:
            try:
                os.fsync(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
                # The segment was rolled meanwhile, and synced as it was closed.

    async def commit(self) -> None:
        """Write the buffered records, and fsync them unless the policy is ``never``."""
        if self._try(self.write) and self._fsync is not SpoolFsync.NEVER:
            await anyio.to_thread.run_sync(self._try, self.sync)

    def _roll(self, number: int) -> None:
        path = self._segment_path(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        try:
            os.write(fd, MAGIC)
            self._sync_directory()
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None:
            try:
                if self._fsync is not SpoolFsync.NEVER:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
        self._fd = fd
        segment = _Segment(number, path, self._next_seq)
        segment.end = len(MAGIC)
        self._segments.append(segment)
        self._active = segment
        self._ids = {}
        self._last_ctx = None
        self._delete_done()

    def _sync_directory(self) -> None:
        if self._fsync is SpoolFsync.NEVER:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def writer(self) -> None:
        """Write buffered records once per turn of the loop, and sync them per policy."""
        batch = self._fsync is SpoolFsync.BATCH
        while not self._abandoned and not self._closed:
            if not self._buffer:
                self._dirty = anyio.Event()
                await self._dirty.wait()
                continue
            if not self._try(self.write):
                await anyio.sleep(_RETRY_WRITE)
                continue
            if batch:
                await anyio.to_thread.run_sync(self._try, self.sync)

    # -- reading back ----------------------------------------------------------------

    def reading_plan(self) -> list[tuple[int, str, int, int]]:
        """The segments left to read, as ``(number, path, end, first_seq)``: for :meth:`read`.

        Writes the buffer first, so that every item appended so far can be read.
        """
        self._try(self.write)
        return [
            (s.number, s.path, s.end, s.first_seq)
            for s in self._segments
            if s.number >= self._read_number
        ]

    def read(
        self, plan: list[tuple[int, str, int, int]], start: int, max_count: int, max_bytes: int
    ) -> list[tuple[BatchContext, bytes]]:
        """Read items back, in journal order, from sequence number ``start``.

        Blocking (it reads files): run it in a worker thread, with a plan taken on the
        loop by :meth:`reading_plan`. Damaged records are skipped; items before
        ``start`` (they went straight to memory) are passed over.

        Args:
            plan: The segments to read, from :meth:`reading_plan`.
            start: The sequence number of the first item wanted.
            max_count: Items at most.
            max_bytes: Serialized bytes at most (one item is read even if larger).
        """
        items: list[tuple[BatchContext, bytes]] = []
        nbytes = 0
        for number, path, end, first_seq in plan:
            if number != self._read_number:
                self._read_number = number
                self._read_at = len(MAGIC)
                self._read_seq = first_seq
                self._read_contexts = {}
            size = _READ_CHUNK
            endpoint = self.readdress if number < self._own_from else None
            with open(path, "rb") as file:
                while self._read_at < end:
                    base = self._read_at
                    want = min(size, end - base)
                    blob = os.pread(file.fileno(), want, base)
                    for stop, ctx, data in parse(blob, 0, self._read_contexts, endpoint):
                        self._read_at = base + stop
                        if data is None or ctx is None:
                            continue
                        self._read_seq += 1
                        if self._read_seq <= start:
                            continue
                        items.append((ctx, data))
                        nbytes += len(data)
                        if len(items) >= max_count or nbytes >= max_bytes:
                            return items
                    if self._read_at == base:
                        if len(blob) < want or want >= end - base:
                            break  # a torn tail (counted at open), or a file cut short
                        size *= 2  # a record larger than the chunk
            self._read_at = end
        return items

    # -- removal ---------------------------------------------------------------------

    def done(self, first_seq: int, count: int, nbytes: int) -> None:
        """Items ``[first_seq, first_seq + count)`` were delivered or dropped for good.

        Args:
            first_seq: The first item's sequence number.
            count: How many.
            nbytes: Their serialized size.
        """
        if self._abandoned or not count:
            return
        self.live_bytes -= nbytes + count * EVENT_OVERHEAD
        last = first_seq + count
        emptied = False
        for segment in self._segments:
            start = segment.first_seq
            if start >= last:
                break
            overlap = min(last, start + segment.count) - max(first_seq, start)
            if overlap > 0:
                segment.outstanding -= overlap
                emptied = emptied or segment.outstanding == 0
        if emptied:
            self._delete_done()

    def mean_item_bytes(self) -> int:
        """The mean serialized size of the items held (framing excluded)."""
        held = sum(segment.outstanding for segment in self._segments)
        return max(self.live_bytes // held - EVENT_OVERHEAD, 0) if held else 0

    def _delete_done(self) -> None:
        keep: deque[_Segment] = deque()
        for segment in self._segments:
            if segment.outstanding or segment is self._active:
                keep.append(segment)
                continue
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # it is read again at the next start: at least once
                self._throttled.warning(
                    "unlink", "Spool %r: cannot remove %r (%s).", self.path, segment.path, exc
                )
        self._segments = keep

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Write and sync what is buffered, remove finished segments, release the lock."""
        if self._closed or self._abandoned:
            self._closed = True
            return
        self._closed = True
        dirty = self._dirty
        if dirty is not None:
            self._dirty = None
            dirty.set()
        if self._fd is not None:
            if self._try(self.write) and self._fsync is not SpoolFsync.NEVER:
                self._try(self.sync)
            if self._buffer:
                logger.error(
                    "Spool %r: %d byte(s) of records could not be written before closing.",
                    self.path,
                    len(self._buffer),
                )
            os.close(self._fd)
            self._fd = None
            active = self._active
            self._active = None
            if active is not None and not active.outstanding:
                self._delete_done()
            self._try(self._sync_directory)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        _open_spools.discard(self)

    def abandon(self) -> None:
        """In a forked child: never write, delete or unlock what the parent owns."""
        self._abandoned = True
        self._buffer.clear()
        # The parent's descriptors stay open: closing a flock'd one is harmless, but
        # unlocking it would release the parent's lock.
        self._fd = None
        self._lock_fd = None
