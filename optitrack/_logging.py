"""The ``optitrack`` logger, and logging that does not flood."""

from __future__ import annotations

import logging
import math
import time

__all__ = ["Throttled", "logger"]

logger = logging.getLogger("optitrack")


class Throttled:
    """Logs at most once per ``period`` per key, with a count of what it held back."""

    def __init__(self, period: float = 10.0) -> None:
        self._period = period
        self._state: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        if len(self._state) > 1000:  # keys may carry user input: stay bounded
            self._state.clear()
        now = time.monotonic()
        last, suppressed = self._state.get(key, (-math.inf, 0))
        if now - last < self._period:
            self._state[key] = (last, suppressed + 1)
            return
        self._state[key] = (now, 0)
        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, suppressed, now - last)
        logger.log(level, message, *args)
