"""The ``optitrack`` logger, and logging that does not flood.

Owns: the one ``optitrack`` logger every module imports, and :class:`Throttled`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import httpx

__all__ = ["Throttled", "log_closed", "log_started", "logger", "redact_url"]

logger = logging.getLogger("optitrack")


class Throttled:
    """Logs at most once per ``period`` per key, with a count of what it held back.

    Keys may carry callers' values (an unknown event key...), so at most ``max_keys`` are
    followed at a time: once that many have logged within a period, further new keys share
    one line per period between them.
    """

    _OTHERS = "\x00others"

    def __init__(self, period: float = 10.0, max_keys: int = 100) -> None:
        self._period = period
        self._max_keys = max_keys
        self._state: dict[str, tuple[float, int]] = {}
        # The sync client's callers log from their own threads.
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        with self._lock:
            message, args, say = self._decide(key, message, args)
        if say:
            logger.log(level, message, *args)

    def _decide(
        self, key: str, message: str, args: tuple[object, ...]
    ) -> tuple[str, tuple[object, ...], bool]:
        now = time.monotonic()
        state = self._state
        if key not in state and len(state) >= self._max_keys:
            # Forget the keys whose period is over (and what they held back, unsaid).
            for old in [k for k, (last, _) in state.items() if now - last >= self._period]:
                del state[old]
            if len(state) >= self._max_keys:
                key = self._OTHERS
        last, suppressed = state.get(key, (-math.inf, 0))
        if now - last < self._period:
            state[key] = (last, suppressed + 1)
            return message, args, False
        state[key] = (now, 0)
        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, suppressed, now - last)
        return message, args, True


def redact_url(url: str) -> str:
    """``url`` without what may be a secret: a user name, a password, the query."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(not a URL)"
    if parsed.userinfo or parsed.query:
        parsed = parsed.copy_with(username=None, password=None, query=None)
    return str(parsed)


def log_started(endpoint: str, datafile: str, revision: str | None, options: Any) -> None:
    """The one INFO line of a client's start: where events go and the key options.

    Never a payload, a token or a user id: the endpoint without its user info and query.
    """
    logger.info(
        "optitrack client started: events to %r, datafile %s (revision %s), batch_size %d, "
        "flush_interval %g s, max_queue_size %d, overflow %s, close_timeout %g s.",
        redact_url(endpoint),
        datafile,
        "none yet" if revision is None else repr(revision),
        options.batch_size,
        options.flush_interval,
        options.max_queue_size,
        options.overflow.value,
        options.close_timeout,
    )


def log_closed(stats: Any) -> None:
    """The one INFO line of a client's close: its ledger."""
    logger.info(
        "optitrack client closed: accepted %d = delivered %d + dropped %d + pending %d; "
        "refused %d; %d request(s), %d retry(ies).",
        stats.accepted,
        stats.delivered,
        stats.dropped_total,
        stats.pending,
        sum(stats.refused.values()),
        stats.requests,
        stats.retries,
    )
