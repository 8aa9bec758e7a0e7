"""Sending one part until it is delivered, given up on, or must be split.

Owns everything between a part and the transport (:mod:`.transport`): the body (gzipped
off the event loop when large), the headers (``Idempotency-Key``, the attempt count), the
attempts and the backoff between them, ``Retry-After`` pauses by endpoint, the circuit
breaker, the 400 and 413 bisection, what an answer means (the 307/308 followed once), and
the LOG_EVENT notifications. It must not touch the
queue or the ledger: :meth:`Sender.send` returns an outcome, and the processor accounts
for it. It starts no task and knows nothing of what an item holds.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import TypeAlias

import anyio
import anyio.to_thread
import httpx

from .._logging import Throttled, logger
from .._notifications import LogEventNotification, NotificationCenter, NotificationType
from .._results import Reason
from .._version import __version__
from .batch import Part
from .retry import RetryPolicy, is_retryable_status, parse_retry_after
from .transport import RESPONSE_READ_CAP, HttpxTransport, Timeouts, Transport

__all__ = ["GZIP_IN_THREAD_BYTES", "RESPONSE_READ_CAP", "Outcome", "Sender"]


#: Bodies at least this large are compressed in a worker thread, off the event loop.
GZIP_IN_THREAD_BYTES = 64 * 1024

#: How long a 2xx answer's body is waited for, at most: it changes nothing.
SUCCESS_BODY_WAIT = 0.5

#: The most of an answer's body logged (at DEBUG).
RESPONSE_LOG_CAP = 500

IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Optitrack-Attempt"

#: What became of a part: ``None``, delivered; a reason (``http_<status>`` too), dropped;
#: two halves, to send instead of it.
Outcome: TypeAlias = tuple[Part, Part] | str | None


class Sender:
    """Sends parts over a transport, with retries, a circuit breaker and bisection.

    Args:
        retry: When to retry, how long to wait, when to give up.
        notifications: Where LOG_EVENT notifications go.
        gzip: Whether bodies are sent gzipped (``Content-Encoding: gzip``).
        on_breaker: Called with ``True`` when the circuit breaker opens (send one part at
            a time) and ``False`` when it closes.

    Attributes:
        requests: HTTP requests made, retries included (read only, as are the others).
        retries: Requests that were retries of an earlier failed attempt.
        bytes_sent: Request body bytes sent, after compression.
    """

    def __init__(
        self,
        retry: RetryPolicy,
        notifications: NotificationCenter,
        *,
        gzip: bool = False,
        on_breaker: Callable[[bool], None] | None = None,
    ) -> None:
        self._retry = retry
        self._notifications = notifications
        self._gzip = gzip
        self._on_breaker = on_breaker
        self._transport: Transport | None = None
        self._timeouts = Timeouts.uniform(retry.attempt_timeout, SUCCESS_BODY_WAIT)
        self._now: Callable[[], float] = anyio.current_time
        self.requests = 0
        self.retries = 0
        self.bytes_sent = 0
        self._failures = 0
        self._breaker_open = False
        # Set (then replaced) to end every backoff early: the endpoint answers again, or
        # the client is closing and each batch gets one last attempt.
        self._nudge = anyio.Event()
        # While the breaker is open, one attempt at a time probes the endpoint, at most one
        # per probe_interval: the parts already in flight when it opened wait their turn.
        self._probing = False
        self._probe_at = -math.inf
        self._probe_turn = anyio.Event()  # set (then replaced) when a probe ends
        self._closing = False  # no more pacing: each part gets its last attempt at once
        # Retry-After pauses, by endpoint, on the loop's clock.
        self._resume_at: dict[str, float] = {}
        self._throttled = Throttled()
        # The smallest body size answered 413, by endpoint: bodies this large are split
        # before they are sent.
        self._refused_size: dict[str, int] = {}

    def attach(self, transport: Transport | httpx.AsyncClient, clock: Callable[[], float]) -> None:
        """Send with ``transport`` (never closed here), and time with ``clock``.

        Args:
            transport: What posts; an ``httpx.AsyncClient`` is wrapped in a
                :class:`~optitrack._delivery.transport.HttpxTransport`.
            clock: The event loop's clock.
        """
        if isinstance(transport, httpx.AsyncClient):
            transport = HttpxTransport(transport)
        self._transport = transport
        self._now = clock

    def nudge(self) -> None:
        """End every backoff now: each waiting part makes its next attempt at once."""
        self._nudge.set()
        self._nudge = anyio.Event()
        self._next_probe()

    def close(self) -> None:
        """The client is closing: each waiting part makes one more attempt at once, even
        while the breaker is open (the close deadline bounds what follows)."""
        self._closing = True
        self.nudge()

    def _next_probe(self) -> None:
        self._probe_turn.set()
        self._probe_turn = anyio.Event()

    async def _take_probe_turn(self) -> bool:
        """While the breaker is open, wait until this part may probe.

        Returns:
            Whether the attempt to come is the probe (then it must call
            :meth:`_probe_ended`).
        """
        while self._breaker_open and not self._closing:
            if self._probing:
                delay = math.inf
            else:
                delay = self._probe_at - self._now()
                if delay <= 0:
                    self._probing = True
                    return True
            with anyio.move_on_after(delay):
                await self._probe_turn.wait()
        return False

    def _probe_ended(self) -> None:
        self._probing = False
        self._probe_at = self._now() + self._retry.probe_interval
        self._next_probe()

    async def send(self, part: Part) -> Outcome:
        """Send one part until it is delivered or given up on, or must be split.

        Args:
            part: The part; its body, key and attempt count persist across calls.

        Returns:
            ``None`` when delivered; the reason it was dropped; or, after a 400 or 413
            on more than one item, the two halves to send instead.
        """
        retry = self._retry
        body = await self._body(part)
        endpoint = part.ctx.endpoint
        refused = self._refused_size.get(endpoint)
        if refused is not None and len(body) >= refused and len(part.items) > 1:
            # As large as a body the endpoint refused: halves, without asking again.
            return part.split(charge=False)
        while True:
            if part.started is None:
                part.started = self._now()
            pause = self._resume_at.get(part.ctx.endpoint, -math.inf) - self._now()
            if pause > 0:
                await anyio.sleep(pause)
            probe = await self._take_probe_turn()
            part.attempts += 1
            headers = self._headers(part)
            outage = self._breaker_open  # known down: a failure says nothing of this batch
            started = self._now()
            try:
                status, error, retry_after = await self._attempt(part, body, headers, started)
            finally:
                if probe:
                    self._probe_ended()
            duration = self._now() - started
            count = len(part.items)

            if status is not None and 200 <= status < 300:
                self._on_success()
                learned = self._refused_size.get(endpoint)
                if learned is not None and len(body) >= learned:
                    del self._refused_size[endpoint]  # the limit was raised
                self._log_event(part, headers, body, duration, "delivered", status)
                return None
            if status == 413:
                # Too large: later bodies for the endpoint are kept under this size.
                # Halving for size is not charged to the split budget, so an event that
                # fits alone is delivered; only one refused alone is dropped.
                learned = self._refused_size.get(endpoint, len(body))
                self._refused_size[endpoint] = min(len(body), learned)
                if count > 1:
                    self._log_event(part, headers, body, duration, "split", status)
                    return part.split(charge=False)
            if status == 400 and count > 1 and part.splits[0] > 0:
                self._log_event(part, headers, body, duration, "split", status)
                return part.split()
            if status is not None and not is_retryable_status(status):
                self._log_event(part, headers, body, duration, "dropped", status)
                self._log_dropped(status, count, error)
                return f"http_{status}"

            self._on_failure()
            if not outage:
                part.charged += 1
            elapsed = self._now() - part.started
            wait = retry.backoff(part.attempts)
            if self._breaker_open:
                wait = min(wait, retry.probe_interval)
            if retry_after is not None:
                wait = max(wait, min(retry_after, retry.retry_after_max))
                endpoint = part.ctx.endpoint
                resume = self._resume_at.get(endpoint, -math.inf)
                self._resume_at[endpoint] = max(resume, self._now() + wait)
            if part.charged >= retry.attempts or elapsed + wait >= retry.timeout:
                self._log_event(part, headers, body, duration, "dropped", status, error)
                logger.error(
                    "Gave up on %d event(s) after %d attempt(s) over %.1f s (last: %s).",
                    count,
                    part.attempts,
                    elapsed,
                    status if status is not None else error,
                )
                return Reason.RETRIES_EXHAUSTED
            self._log_event(part, headers, body, duration, "retry", status, error)
            self._throttled.warning(
                "retry",
                "Events API attempt failed (%s); retrying %d event(s) in %.2f s.",
                status if status is not None else error,
                count,
                wait,
            )
            # Back off, but go at once when the endpoint answers again or at close.
            with anyio.move_on_after(wait):
                await self._nudge.wait()

    async def _body(self, part: Part) -> bytes:
        if part.body is None:
            body = part.ctx.body(part.items)
            if self._gzip:
                if len(body) >= GZIP_IN_THREAD_BYTES:
                    body = await anyio.to_thread.run_sync(_gzip, body)
                else:
                    body = _gzip(body)
            part.body = body
        return part.body

    def _headers(self, part: Part) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"optitrack/{__version__}",
            IDEMPOTENCY_HEADER: part.key,
            ATTEMPT_HEADER: str(part.attempts),
        }
        if self._gzip:
            headers["Content-Encoding"] = "gzip"
        return headers

    async def _attempt(
        self, part: Part, body: bytes, headers: dict[str, str], started: float
    ) -> tuple[int | None, str | None, float | None]:
        """One request, and at most one 307/308 redirect of it, within the attempt's time
        limit from ``started`` (the loop's clock).

        Returns (status, error or response excerpt, Retry-After). A status counts as soon
        as the status line is in: the body is read only up to :data:`RESPONSE_READ_CAP`
        bytes (for the DEBUG log), and a longer or slower one is cut off by closing the
        connection, never waited for.
        """
        self.requests += 1
        if part.attempts > 1:
            self.retries += 1
        self.bytes_sent += len(body)
        url = part.ctx.endpoint
        timeouts = self._timeouts
        status, error, retry_after, location = await self._post(url, body, headers, timeouts)
        if status in (307, 308):
            target = _redirect_target(url, location)
            if target is None:
                return status, f"redirect to {location!r} not followed", None
            self.requests += 1
            self.bytes_sent += len(body)
            # The attempt's time limit covers both requests: what is left of it.
            rest = replace(timeouts, total=max(started + timeouts.total - self._now(), 0.0))
            status, error, retry_after, location = await self._post(target, body, headers, rest)
            if status in (307, 308):
                return status, "redirected twice: not followed", None
        return status, error, retry_after

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeouts: Timeouts
    ) -> tuple[int | None, str | None, float | None, str | None]:
        """One POST: (status, error or excerpt, Retry-After, Location)."""
        assert self._transport is not None
        try:
            # The transport keeps to the time limit (Timeouts.total): no cancel scope of
            # our own around it.
            answer = await self._transport.post(url, body, headers, timeouts)
        except httpx.TimeoutException:
            return None, "timeout", None, None
        except httpx.HTTPError as exc:
            return None, type(exc).__name__, None, None
        except Exception as exc:
            # Not a network failure (a closed or misconfigured http_client, a bug below
            # us): a failed attempt all the same, and never the worker's end.
            self._throttled.log(
                logging.ERROR,
                "unexpected",
                "Sending to the Events API raised %r; counted as a failed attempt.",
                exc,
            )
            return None, type(exc).__name__, None, None
        status = answer.status
        retry_after = None
        if is_retryable_status(status):
            retry_after = parse_retry_after(answer.headers.get("retry-after"))
        text = None
        if status >= 300:
            text = answer.body.decode("utf-8", "replace")
        return status, text, retry_after, answer.headers.get("location")

    def _log_dropped(self, status: int, count: int, answer: str | None) -> None:
        # The answer's body may echo the events: DEBUG only, and capped.
        if 300 <= status < 400:
            why = "a redirect; only 307 and 308 to an http(s) URL are followed, once"
        else:
            why = httpx.codes.get_reason_phrase(status) or "refused"
        self._throttled.warning(
            f"http_{status}",
            "Events API answered %d (%s): dropped %d event(s).",
            status,
            why,
            count,
        )
        if answer:
            logger.debug("Events API answer %d, body: %r", status, answer[:RESPONSE_LOG_CAP])

    def _on_success(self) -> None:
        self._failures = 0
        if self._breaker_open:
            self._breaker_open = False
            if self._on_breaker is not None:
                self._on_breaker(False)
            self.nudge()
            logger.warning("Events API answers again: resuming at full speed.")

    def _on_failure(self) -> None:
        self._failures += 1
        if not self._breaker_open and self._failures >= self._retry.breaker_threshold:
            self._breaker_open = True
            self._probe_at = self._now() + self._retry.probe_interval
            if self._on_breaker is not None:
                self._on_breaker(True)
            logger.warning(
                "Events API failed %d times in a row: probing with one request at a time.",
                self._failures,
            )

    def _log_event(
        self,
        part: Part,
        headers: dict[str, str],
        body: bytes,
        duration: float,
        outcome: str,
        status: int | None,
        error: str | None = None,
    ) -> None:
        if self._notifications.has_listeners(NotificationType.LOG_EVENT):
            self._notifications.send(
                NotificationType.LOG_EVENT,
                LogEventNotification(
                    url=part.ctx.endpoint,
                    headers=MappingProxyType(headers),
                    body=body,
                    event_count=len(part.items),
                    attempt=part.attempts,
                    outcome=outcome,
                    status=status,
                    error=error if status is None else None,
                    duration=duration,
                ),
            )


def _redirect_target(url: str, location: str | None) -> str | None:
    """Where a 307/308 from ``url`` leads, resolved; ``None`` unless http(s)."""
    if not location:
        return None
    try:
        target = httpx.URL(url).join(location)
    except (httpx.InvalidURL, ValueError):
        return None
    if target.scheme not in ("http", "https") or not target.host:
        return None
    return str(target)


def _gzip(body: bytes) -> bytes:
    # mtime=0: the same body always compresses to the same bytes.
    return gzip.compress(body, compresslevel=6, mtime=0)
