"""Refused calls: counted by reason, and logged without flooding.

Owns the count of calls refused before acceptance (``Statistics.refused``) and their
log lines. The client owns one and reports every refusal to it, whether the client
decided it (bad input, an unknown event, a closed client) or the delivery queue did
(``put`` returned a reason). It must not touch the queue or the ledger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType

from ._logging import Throttled
from ._results import Reason

__all__ = ["Refusals"]

_CAPACITY = frozenset({Reason.QUEUE_FULL, Reason.CLOSED, Reason.EVENT_TOO_LARGE})


class Refusals:
    """Counts refused calls by reason, and logs them without flooding.

    Capacity refusals (``queue_full``, ``closed``, ``event_too_large``) are logged as
    warnings, the others as errors. Each reason and key is logged, a repeat at most once
    per 10 s with the count of those held back; at most 100 keys are followed per period,
    and the rest share one line.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._throttled = Throttled()
        self._lock = threading.Lock()

    def refuse(self, reason: Reason, message: str = "", key: str = "") -> None:
        """Count a refused call, and log it without flooding.

        Args:
            reason: Why it was refused.
            message: What to log; defaults to the reason.
            key: What makes this refusal another one than the last of its reason (an
                event key, the argument at fault): each is logged, and a repeated one
                at most once per period, with the count of the others.
        """
        with self._lock:  # the sync client's callers refuse from their own threads
            self._counts[reason] = self._counts.get(reason, 0) + 1
        self._throttled.log(
            logging.WARNING if reason in _CAPACITY else logging.ERROR,
            f"{reason.value}:{key}",
            "%s",
            message or f"Event refused ({reason.value}).",
        )

    def refuse_event(self, reason: Reason) -> None:
        """Count and log an event the delivery queue refused (``put`` gave ``reason``)."""
        self.refuse(reason, f"Event refused: {reason.value}.")

    def counts(self) -> Mapping[str, int]:
        """A snapshot of the counts, by reason."""
        with self._lock:
            return MappingProxyType(dict(self._counts))
