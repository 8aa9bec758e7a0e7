"""The retry policy: which answers to retry, how long to wait, when to give up.

Owns :class:`RetryPolicy` (its knobs, their defaults and checks, the backoff formula) and
the pure helpers that read an answer: :func:`is_retryable_status` and
:func:`parse_retry_after`. It decides nothing by itself and keeps no state: no event
loop, no I/O; the sender applies it.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after"]

DEFAULT_ATTEMPTS = 8
DEFAULT_ATTEMPT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_WAIT_INITIAL = 0.2
DEFAULT_WAIT_MAX = 10.0
DEFAULT_WAIT_JITTER = 1.0
DEFAULT_RETRY_AFTER_MAX = 30.0
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_PROBE_INTERVAL = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How a batch is retried. Durations are in seconds.

    The wait before retry *n* (1-based) is ``min(wait_max, wait_initial * 2 ** (n - 1))``,
    of which the fraction ``wait_jitter`` is random: ``1.0`` (the default) is "full
    jitter", ``0.0`` is deterministic. A ``Retry-After`` answer waits at least that long
    (clamped to ``retry_after_max``), and pauses every batch bound for the endpoint.
    A batch is given up on after ``attempts`` failed attempts or ``timeout`` seconds,
    whichever comes first.

    Attributes:
        attempts: Attempts per batch, the first included.
        attempt_timeout: Time limit of one attempt (connect, send and answer).
        timeout: Time budget of a batch, from its first attempt to its last; a retry that
            could not start within it is not made.
        wait_initial: The first backoff wait.
        wait_max: The longest backoff wait.
        wait_jitter: The random fraction of each wait, from 0.0 to 1.0.
        retry_after_max: The longest ``Retry-After`` honoured.
        breaker_threshold: Consecutive failed attempts after which the circuit breaker
            opens: one batch at a time probes the endpoint until it answers again.
            While it is open, failed attempts do not count against ``attempts`` (an
            outage says nothing of the batch; ``timeout`` still bounds it), and waiting
            batches go again as soon as the endpoint answers.
        probe_interval: The time between two probes while the breaker is open: one
            request at a time, at most one per interval (the batches in flight take
            turns), so that the end of an outage is noticed within about that long and
            costs one request per interval.

    Raises:
        ValueError: A value is out of range (the message says which).
    """

    attempts: int = DEFAULT_ATTEMPTS
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    wait_initial: float = DEFAULT_WAIT_INITIAL
    wait_max: float = DEFAULT_WAIT_MAX
    wait_jitter: float = DEFAULT_WAIT_JITTER
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    probe_interval: float = DEFAULT_PROBE_INTERVAL

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or self.attempts < 1
        ):
            raise ValueError(f"attempts ({self.attempts!r}) must be an integer >= 1")
        for name in ("attempt_timeout", "timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} ({value}) must be > 0")
        for name in ("wait_initial", "wait_max", "retry_after_max", "probe_interval"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} ({value}) must be >= 0 and finite")
        if self.wait_initial > self.wait_max:
            raise ValueError(
                f"wait_initial ({self.wait_initial}) must be <= wait_max ({self.wait_max})"
            )
        if not 0.0 <= self.wait_jitter <= 1.0:
            raise ValueError(f"wait_jitter ({self.wait_jitter}) must be between 0.0 and 1.0")
        if not isinstance(self.breaker_threshold, int) or self.breaker_threshold < 1:
            raise ValueError(f"breaker_threshold ({self.breaker_threshold}) must be >= 1")

    def backoff(self, retry: int) -> float:
        """The wait before a retry.

        Args:
            retry: Which retry this is, from 1.

        Returns:
            The wait in seconds, jittered.
        """
        cap = min(self.wait_max, self.wait_initial * 2.0 ** min(retry - 1, 62))
        return cap * (1.0 - self.wait_jitter * random.random())


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth another attempt: 408, 429 and 5xx but 501 and 505."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header.

    Args:
        value: The header's value: delay seconds, or an HTTP date.
        now: The current time as a Unix timestamp (for tests); defaults to the clock.

    Returns:
        The delay in seconds (never negative), or ``None`` when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; be lenient with ones that omit it
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
