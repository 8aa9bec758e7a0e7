"""The ``optitrack`` logger, and logging that does not flood.

Owns: the one ``optitrack`` logger every module imports, and :class:`Throttled`.
"""

from __future__ import annotations

import logging
import math
import time

__all__ = ["Throttled", "logger"]

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

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def log(self, level: int, key: str, message: str, *args: object) -> None:
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
            return
        state[key] = (now, 0)
        if suppressed:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, suppressed, now - last)
        logger.log(level, message, *args)
