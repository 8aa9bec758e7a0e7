"""What optitrack reports back: track results, flush outcomes, ledger snapshots.

Owns: those value types and the reasons. Must not touch: how they are counted.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = ["FlushResult", "Reason", "Statistics", "TrackResult"]


class Reason(StrEnum):
    """Why an event was refused at the call, or dropped after it was accepted.

    Drops after acceptance that come from the Events API are counted as ``http_<status>``
    (e.g. ``http_400``) in :attr:`Statistics.dropped`, beside these.
    """

    #: The event key is not in the datafile.
    UNKNOWN_EVENT = "unknown_event"
    #: An argument has the wrong type (event key, user id, attributes, tags).
    INVALID_INPUT = "invalid_input"
    #: The tags cannot be sent as valid JSON (NaN, Infinity, a ``datetime``...).
    INVALID_TAGS = "invalid_tags"
    #: The serialized event is larger than ``max_event_bytes``.
    EVENT_TOO_LARGE = "event_too_large"
    #: The queue was full (refused at the call, or evicted by ``drop_oldest``).
    QUEUE_FULL = "queue_full"
    #: The client was closed (or inherited through ``fork``).
    CLOSED = "closed"
    #: Still queued or in flight when the shutdown deadline passed.
    SHUTDOWN = "shutdown"
    #: Every attempt failed (connection errors, timeouts, 5xx), or the batch's time
    #: budget ran out.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: Queued in a parent process before ``fork``: never sent by the child.
    FORKED = "forked"
    #: The client has no datafile yet (``sdk_key`` given, nothing fetched, no cache).
    NO_DATAFILE = "no_datafile"
    #: Spilled to the spool, then found damaged when read back (a disk fault, or the
    #: files changed under the client).
    SPOOL_DAMAGED = "spool_damaged"


@dataclass(frozen=True, slots=True)
class TrackResult:
    """The outcome of a track call. True when the event was accepted.

    Attributes:
        accepted: Whether the event was queued for delivery.
        reason: Why it was refused, when it was.
        message: A human-readable explanation, when it was refused.
    """

    accepted: bool
    reason: Reason | None = None
    message: str | None = None

    def __bool__(self) -> bool:
        return self.accepted


#: The result of every accepted track call (one shared, immutable instance).
ACCEPTED = TrackResult(accepted=True)


@dataclass(frozen=True, slots=True)
class FlushResult:
    """The outcome of :meth:`optitrack.Client.flush`.

    Attributes:
        complete: Whether every event accepted before the flush was delivered or given up
            on before the timeout.
        delivered: Events accepted before the flush that were delivered while it waited.
        dropped: Events accepted before the flush that were given up on while it waited.
        pending: Events accepted before the flush still queued or in flight at its end.
    """

    complete: bool
    delivered: int
    dropped: int
    pending: int

    def __bool__(self) -> bool:
        return self.complete


@dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    """A snapshot of the delivery ledger.

    At every moment ``accepted == delivered + sum(dropped.values()) + pending + spooled``
    (``spooled`` is 0 without a spool).

    Attributes:
        accepted: Events accepted by track and decision calls since the client started.
        delivered: Events the Events API acknowledged (any 2xx).
        dropped: Events given up on after acceptance, by reason.
        refused: Calls refused before acceptance, by reason (not part of the ledger).
        pending: Events queued or in flight (``queued + in_flight``).
        queued: Events waiting in the queue (the queue depth).
        queued_bytes: Serialized bytes waiting in the queue.
        in_flight: Events in batches being sent, retried or waiting to be retried.
        batches: Batches formed from the queue (a split batch counts once).
        requests: HTTP requests made, retries included.
        retries: Requests that were retries of an earlier failed attempt.
        bytes_sent: Request body bytes sent (after compression), retries included.
        spooled: Accepted events held in the spool only: spilled to disk while the queue
            was full (read back as it empties), or kept there at shutdown for the next
            client. 0 without a spool.
        recovered: Events an earlier process left in the spool, found when this client
            started (counted in ``accepted`` too).
        spool_skipped: Damaged spool records skipped when this client started (a failed
            checksum, a torn tail): never sent, never counted as accepted.
        spool_bytes: Bytes the spool holds for events not yet delivered or dropped.
    """

    accepted: int
    delivered: int
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    refused: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    pending: int
    queued: int
    queued_bytes: int
    in_flight: int
    batches: int
    requests: int
    retries: int
    bytes_sent: int
    spooled: int = 0
    recovered: int = 0
    spool_skipped: int = 0
    spool_bytes: int = 0

    @property
    def dropped_total(self) -> int:
        """All events dropped after acceptance, whatever the reason."""
        return sum(self.dropped.values())
