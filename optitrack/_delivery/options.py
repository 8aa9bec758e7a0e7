"""Delivery settings: :class:`BatchOptions`, :class:`Overflow` and their defaults.

Owns the knobs of the queue, the batches and the sender, their ``DEFAULT_*`` values
(durations in seconds, sizes in bytes) and the checks that refuse contradicting values
up front. Plain data: it must not import the queue, the sender or the processor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import httpx

from .retry import RetryPolicy

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_MAX_SPOOL_BYTES",
    "DEFAULT_OVERFLOW_TIMEOUT",
    "EVENTS_API_MAX_BODY",
    "BatchOptions",
    "Overflow",
    "SpoolFsync",
]

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH_BYTES = 1_000_000
DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_MAX_QUEUE_SIZE = 100_000
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_EVENT_BYTES = 256 * 1024
DEFAULT_OVERFLOW_TIMEOUT = 1.0
DEFAULT_MAX_IN_FLIGHT = 2
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_MAX_SPOOL_BYTES = 1024 * 1024 * 1024
#: The Events API's limit on one request body.
EVENTS_API_MAX_BODY = 3_500_000


class Overflow(StrEnum):
    """What track does when the queue is full."""

    #: Refuse the new event (``queue_full``). The default: the caller never waits.
    DROP_NEWEST = "drop_newest"
    #: Evict the oldest queued events to make room (counted as dropped, ``queue_full``).
    DROP_OLDEST = "drop_oldest"
    #: Wait up to ``overflow_timeout`` for room, then refuse (backpressure).
    BLOCK = "block"


class SpoolFsync(StrEnum):
    """When the spool's journal is forced to disk (``fsync``).

    Records are always written to the file in batches, once per turn of the event loop
    at the latest: a process crash (even ``kill -9``) loses nothing written. What
    survives a power loss or a kernel crash depends on this policy.
    """

    #: fsync after each batch of records is written, in a worker thread. The default: a
    #: power loss may lose the last batch (the events of one turn of the loop).
    BATCH = "batch"
    #: Write and fsync each record before ``track`` returns. Survives a power loss; costs
    #: an fsync per event, on the event loop's thread: for low volumes only.
    ALWAYS = "always"
    #: Never fsync: the OS writes the pages back when it likes. Survives a process
    #: crash, not a power loss.
    NEVER = "never"


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchOptions:
    """Queue, batch and delivery settings. Durations are in seconds, sizes in bytes.

    See :class:`optitrack.Client` for what each one means.

    Raises:
        ValueError: A value is out of range, or two values contradict each other; the
            message names the fix.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    overflow: Overflow = Overflow.DROP_NEWEST
    overflow_timeout: float = DEFAULT_OVERFLOW_TIMEOUT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    gzip: bool = False
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    spool: str | None = None
    max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES
    spool_fsync: SpoolFsync = SpoolFsync.BATCH

    def __post_init__(self) -> None:
        object.__setattr__(self, "overflow", Overflow(self.overflow))
        try:
            object.__setattr__(self, "spool_fsync", SpoolFsync(self.spool_fsync))
        except ValueError:
            choices = ", ".join(repr(p.value) for p in SpoolFsync)
            raise ValueError(
                f"spool_fsync ({self.spool_fsync!r}) must be one of {choices}"
            ) from None
        positive_ints = ("batch_size", "max_batch_bytes", "max_queue_size", "max_queue_bytes")
        for name in (*positive_ints, "max_event_bytes", "max_in_flight", "max_spool_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({value!r}) must be an integer >= 1")
        for name in ("flush_interval", "overflow_timeout", "close_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} ({value!r}) must be a finite number of seconds >= 0")
        if self.batch_size > self.max_queue_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be <= max_queue_size ({self.max_queue_size})"
            )
        if self.max_batch_bytes > EVENTS_API_MAX_BODY:
            raise ValueError(
                f"max_batch_bytes ({self.max_batch_bytes}) must be <= {EVENTS_API_MAX_BODY}, "
                "the Events API's limit on one request"
            )
        if self.max_event_bytes > self.max_batch_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must be <= max_batch_bytes "
                f"({self.max_batch_bytes})"
            )
        if self.spool is not None and self.max_event_bytes > self.max_spool_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must be <= max_spool_bytes "
                f"({self.max_spool_bytes})"
            )
        if self.max_event_bytes > self.max_queue_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) must be <= max_queue_bytes "
                f"({self.max_queue_bytes})"
            )


def check_endpoint(endpoint: str) -> str:
    """``endpoint``, if it is an http(s) URL with a host; else a ValueError naming the fix."""
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"event_endpoint ({endpoint!r}) is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"event_endpoint ({endpoint!r}) must be an http or https URL with a host, "
            "e.g. http://127.0.0.1:8765/v1/events"
        )
    return endpoint
