"""The faults the stand-ins (Events API, datafile CDN) can inject, and the plan that arms them.

Owns the fault types (:class:`Fault`, :class:`Respond`, :class:`Delay`, :class:`Hang`,
:class:`Reset`, :class:`When`), :class:`SimulatedReset`, and :class:`FaultPlan`: which
fault the next request gets (the script, the persistent fault, the rules).

It must not touch requests, responses or counters: applying a fault to a request is
:mod:`._applying`'s job, turning :class:`SimulatedReset` into a TCP reset the server's
(:mod:`._server`). It imports nothing else of this package.
"""

# No ``from __future__ import annotations``: these classes say they are from
# ``optitrack.testing`` (see ``__init__``), and typing.get_type_hints (pydantic, docs
# tools) would look the names of string annotations up there, where they are not.

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass

import httpx

__all__ = [
    "Delay",
    "Fault",
    "FaultPlan",
    "Hang",
    "Reset",
    "Respond",
    "SimulatedReset",
    "When",
]


@dataclass(frozen=True)
class Fault:
    """Base of the faults the stand-in can inject.

    The faults are :class:`Respond`, :class:`Delay`, :class:`Hang` and :class:`Reset`:
    frozen dataclasses, so comparable and hashable.
    """


@dataclass(frozen=True)
class Respond(Fault):
    """Answer with this status instead of the usual one.

    A non-2xx status answers at once: the body is neither validated nor counted. A 2xx
    status processes the request as usual (an invalid body still gets ``400``) and, when
    accepted, answers with this status and body instead of ``204``.

    Args:
        status: The HTTP status, 200 to 599.
        body: The response body; ``None`` for a short JSON reason on errors and no body
            otherwise. A ``str`` is sent as UTF-8.
        retry_after: The ``Retry-After`` header (seconds, or an HTTP date), if any.
        headers: More response headers, as ``(name, value)`` pairs.

    Raises:
        ValueError: The status is outside 200..599.
    """

    status: int
    _: KW_ONLY
    body: bytes | str | None = None
    retry_after: str | int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"status ({self.status}) must be between 200 and 599")


@dataclass(frozen=True)
class Delay(Fault):
    """Wait, then go on: as usual, or with another fault.

    Args:
        seconds: How long to wait before answering, in seconds.
        then: The fault to apply after the wait; ``None`` to process the request as usual.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """

    seconds: float
    then: Fault | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds ({self.seconds}) must be a finite number >= 0")


@dataclass(frozen=True)
class Hang(Fault):
    """Never answer: read the request, then wait until the client disconnects.

    Through :func:`serve`, the connection stays open until the client gives up or the
    server stops, so the client's read timeout fires. In-process through
    :class:`httpx.ASGITransport`, which has no timeouts, the request waits until the
    caller's cancel scope (e.g. :func:`anyio.fail_after`) cancels it.
    """


@dataclass(frozen=True)
class Reset(Fault):
    """Abort the connection with a TCP reset (RST) instead of answering.

    Through :func:`serve`, the socket is closed with ``SO_LINGER`` set to 0, and the client
    sees a connection reset (an :class:`httpx.TransportError`). The app itself raises
    :class:`SimulatedReset`, an :class:`httpx.ReadError`: in-process through
    :class:`httpx.ASGITransport`, that is what the client sees. Other ASGI servers (e.g.
    uvicorn) answer ``500`` instead.
    """


@dataclass(frozen=True)
class When:
    """A fault for every request that matches a predicate.

    Example: ``When(lambda body: b"poison" in body, Respond(400))`` rejects each batch
    that carries the marker, to exercise the client's bisection of a poisoned batch. For
    :class:`DatafileAPI`, whose requests have no body, the predicate gets the path:
    ``When(lambda path: b"/KEY.json" in path, Respond(503))``.

    Args:
        predicate: Called with the request body (after ``Content-Encoding`` decoding) by
            :class:`EventsAPI`, with the request path (UTF-8) by :class:`DatafileAPI`;
            returns whether the fault applies. It runs in the server's event loop.
        fault: The fault to apply.
    """

    predicate: Callable[[bytes], bool]
    fault: Fault


class SimulatedReset(httpx.ReadError):
    """Raised by :class:`EventsAPI` and :class:`DatafileAPI` for a :class:`Reset` fault.

    :func:`serve` turns it into a real TCP reset. Through :class:`httpx.ASGITransport` the
    client gets it as is: being an :class:`httpx.ReadError`, it is a transport error, as a
    real reset would be.

    Args:
        message: What happened.
    """

    def __init__(self, message: str = "connection reset by the Events API stand-in") -> None:
        super().__init__(message)


class FaultPlan:
    """The faults armed on one app, thread-safe.

    A request takes the next scripted fault, or else the persistent one, before its body is
    looked at; then the rules, first match wins, on its decoded body.

    Args:
        faults: The initial script, one fault per request, in order.
        rules: The initial rules.
    """

    __slots__ = ("_lock", "_persistent", "_rules", "_script")

    def __init__(self, faults: Iterable[Fault], rules: Iterable[When]) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque(faults)
        self._persistent: Fault | None = None
        self._rules: list[When] = list(rules)

    def inject(self, faults: Iterable[Fault]) -> None:
        """Append faults to the script.

        Args:
            faults: The faults, one per request, in order.
        """
        with self._lock:
            self._script.extend(faults)

    def fail_all(self, fault: Fault) -> None:
        """Set the persistent fault, for every request once the script is used up.

        Args:
            fault: The fault.
        """
        with self._lock:
            self._persistent = fault

    def fail_when(self, rule: When) -> None:
        """Append a rule.

        Args:
            rule: The rule.
        """
        with self._lock:
            self._rules.append(rule)

    def heal(self) -> None:
        """Remove every fault: the rest of the script, the persistent fault and the rules."""
        with self._lock:
            self._script.clear()
            self._persistent = None
            self._rules.clear()

    @property
    def pending(self) -> int:
        """How many scripted faults are not used yet."""
        with self._lock:
            return len(self._script)

    def take(self) -> Fault | None:
        """Use up the next scripted fault for a request.

        Returns:
            The next scripted fault, or else the persistent one; ``None`` for neither.
        """
        with self._lock:
            return self._script.popleft() if self._script else self._persistent

    def rules(self) -> list[When]:
        """Return the rules, in order.

        Returns:
            A copy: the caller runs their predicates without holding the lock.
        """
        with self._lock:
            return list(self._rules)
