"""Delivery: opaque serialized items, batched by context, sent to an endpoint.

The engine knows nothing of Optimizely: an item is ``bytes``, and a
:class:`BatchContext` says where a batch goes and how its body is framed (a prefix, the
items joined by commas, a suffix). ``optitrack._events`` builds the Events API's
context; another endpoint with another envelope is another context, through the same
parts. Data flows one way::

    caller ── await queue.put(ctx, data) ──▶ BatchQueue ─────────────── queue.py
                  (Reason | None)            segments by context, bounds, overflow,
                                             the ledger, flush watermarks
                                                  │ ready() / take()
                                                  ▼
                                             Part ──────────────────── batch.py
                                             a batch: ctx, items, first seq, key
                                                  │ BatchProcessor ──────── processor.py
                                                  │ (senders, in-flight limit, drain, fork)
                                                  ▼
                                             Sender.send(part) ──────── sender.py
                                             attempts, backoff (retry.py), Retry-After,
                                             breaker, 400/413 halves, LOG_EVENT
                                                  │
                                                  ▼
                                             Transport.post ─────────── transport.py
                                             LeanTransport (h11 keep-alive) or
                                             HttpxTransport ──▶ endpoint

With ``spool=``, the queue is a :class:`SpoolQueue` (spool_queue.py): every accepted
item is first appended to the :class:`Spool`'s journal (spool.py, format in
spool_records.py); a full memory window spills to disk and is read back as it empties;
finished items are removed from the journal, and what shutdown could not send is kept.

    Sender.send returns an outcome (delivered, a drop reason, or two halves); the
    processor hands it to the queue's ledger (finish or split).

Refusals are not counted here: the queue returns a :class:`~optitrack._results.Reason`
and the caller counts and logs it (``optitrack._refusals``).
"""

from .batch import BatchContext, Part
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_MAX_SPOOL_BYTES,
    DEFAULT_OVERFLOW_TIMEOUT,
    EVENTS_API_MAX_BODY,
    BatchOptions,
    Overflow,
    SpoolFsync,
    check_endpoint,
)
from .processor import BatchProcessor
from .queue import BatchQueue
from .retry import RetryPolicy, is_retryable_status, parse_retry_after
from .sender import Outcome, Sender
from .spool import Spool
from .spool_queue import SpoolQueue

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
    "BatchContext",
    "BatchOptions",
    "BatchProcessor",
    "BatchQueue",
    "Outcome",
    "Overflow",
    "Part",
    "RetryPolicy",
    "Sender",
    "Spool",
    "SpoolFsync",
    "SpoolQueue",
    "check_endpoint",
    "is_retryable_status",
    "parse_retry_after",
]
