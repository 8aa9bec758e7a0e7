"""The exceptions optitrack raises.

One root, so that ``except optitrack.OptitrackError`` catches everything the library
raises on purpose::

    OptitrackError
    ├── DatafileError (also ValueError)   a datafile that cannot be used, with where and why
    ├── TrackError (also ValueError)      a refused track call, raised in strict mode only
    ├── DecisionError (also ValueError)   a refused decision call, raised in strict mode only
    └── ClientStateError (also RuntimeError)  the client was used before ``async with``
        └── SpoolLockedError                   another process holds the client's spool

Errors from httpx and pydantic never escape: they are translated at the boundary where
they happen, and chained (``raise ... from exc``).

Owns: the exception tree. Must not touch: anything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ClientStateError",
    "DatafileError",
    "DecisionError",
    "OptitrackError",
    "SpoolLockedError",
    "TrackError",
]


class OptitrackError(Exception):
    """Root of every exception optitrack raises on purpose."""


class DatafileError(OptitrackError, ValueError):
    """A datafile that cannot be loaded.

    Attributes:
        problems: One ``"location: message"`` line per problem found, e.g.
            ``"experiments[2].trafficAllocation[1].endOfRange: must be <= 10000"``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid datafile: {self.problems[0]}"
        else:
            listed = "\n".join(f"  {p}" for p in self.problems)
            message = f"invalid datafile, {len(self.problems)} problems:\n{listed}"
        super().__init__(message)


class TrackError(OptitrackError, ValueError):
    """A track call that was refused, raised only by a client created with ``strict=True``.

    Attributes:
        reason: The machine-readable reason, as in :class:`optitrack.TrackResult`.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class DecisionError(OptitrackError, ValueError):
    """A decision call with invalid input, raised only by a client created with ``strict=True``."""


class ClientStateError(OptitrackError, RuntimeError):
    """The client was used before it was started with ``async with``.

    A closed client does not raise: its calls are refused with ``Reason.CLOSED``.
    """


class SpoolLockedError(ClientStateError):
    """Another client, in this process or another, holds the spool's lock.

    Raised when entering a client made with ``spool=``: two clients must never write one
    journal. Give each process its own spool directory, or stop the other one first.

    Attributes:
        path: The spool directory.
    """

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        super().__init__(
            f"the spool {path!r} is in use by another client ({holder}): give each process "
            "its own spool directory, or stop the other one first"
        )


@contextmanager
def unwrap_single_group() -> Iterator[None]:
    """Let an exception that a task group wrapped alone come out as itself.

    A task group wraps what the body of an ``async with`` raised in an exception group,
    even when it is the only error. Users should see their own exception, with the
    chaining (``__cause__``, ``__context__``) it had.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
        chaining = inner.__cause__, inner.__context__, inner.__suppress_context__
        try:
            raise inner
        finally:
            inner.__cause__, inner.__context__, inner.__suppress_context__ = chaining
