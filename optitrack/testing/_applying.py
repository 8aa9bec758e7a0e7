"""Faults applied to requests, the same way by every stand-in app.

Owns :func:`apply_fault` (wait, answer, hang up or reset one request, as a fault says) and
:class:`FaultControls`, the public methods that arm an app's faults (``inject``,
``fail_all``, ``fail_when``, ``heal``, ``pending_faults``), which :class:`EventsAPI` and
:class:`DatafileAPI` both inherit.

It must not touch what an app records or serves: a fault that ends a request is reported
through the app's callback, which records it, and a 2xx :class:`Respond` is handed back for
the app to answer with. It imports :mod:`._asgi` and :mod:`._faults` only.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._asgi import ASGIReceive, ASGISend, respond
from ._faults import Delay, Fault, FaultPlan, Hang, Reset, Respond, SimulatedReset, When

__all__ = ["FaultControls", "apply_fault"]


async def apply_fault(
    fault: Fault,
    receive: ASGIReceive,
    send: ASGISend,
    record: Callable[[int | None], None],
    *,
    reset_message: str | None = None,
) -> tuple[bool, Respond | None]:
    """Apply a fault to a request whose body was read to its end.

    A :class:`Delay` waits, then goes on with its ``then``; a non-2xx :class:`Respond`
    answers; a :class:`Hang` waits until the client goes away; a :class:`Reset` raises.
    ``record`` is called before the request is answered, hung or reset.

    Args:
        fault: The fault.
        receive: The ASGI receive callable.
        send: The ASGI send callable.
        record: Records the request, with the status answered (``None`` for a hang or a
            reset); not called when the app is to go on.
        reset_message: The message of the :class:`SimulatedReset`; its default if ``None``.

    Returns:
        Whether the fault answered the request (or hung up on it), so the app must not;
        and a 2xx :class:`Respond` to answer with instead of the app's usual answer, if
        the app serves the request (``None`` otherwise).

    Raises:
        SimulatedReset: The fault is, or ends in, a :class:`Reset`.
        TypeError: The fault is of no known type.
    """
    step: Fault | None = fault
    while isinstance(step, Delay):
        await anyio.sleep(step.seconds)
        step = step.then
    if step is None:
        return False, None
    if isinstance(step, Respond):
        if 200 <= step.status < 300:
            return False, step
        record(step.status)
        await respond(send, step)
        return True, None
    if not isinstance(step, Hang | Reset):
        raise TypeError(f"unknown fault: {step!r}")
    record(None)
    if isinstance(step, Reset):
        raise SimulatedReset() if reset_message is None else SimulatedReset(reset_message)
    while (await receive())["type"] != "http.disconnect":
        pass
    return True, None


class FaultControls:
    """The methods that arm a stand-in app's faults; the app sets ``self._faults``."""

    __slots__ = ()

    _faults: FaultPlan

    def inject(self, *faults: Fault) -> None:
        """Append faults to the script: each one is used by one request, in order.

        Args:
            *faults: The faults.
        """
        self._faults.inject(faults)

    def fail_all(self, fault: Fault) -> None:
        """Apply a fault to every request once the script is used up, until :meth:`heal`.

        Args:
            fault: The fault, e.g. ``Respond(503)`` for an endpoint that is down.
        """
        self._faults.fail_all(fault)

    def fail_when(self, predicate: Callable[[bytes], bool], fault: Fault) -> None:
        """Apply a fault to every request that matches, until :meth:`heal`.

        Args:
            predicate: Called with what the app matches rules on (see :class:`When`): a
                request's decoded body for :class:`EventsAPI`, its path (UTF-8) for
                :class:`DatafileAPI`; returns whether the fault applies.
            fault: The fault, e.g. ``Respond(400)``.
        """
        self._faults.fail_when(When(predicate, fault))

    def heal(self) -> None:
        """Remove every fault: the rest of the script, the persistent fault and the rules."""
        self._faults.heal()

    @property
    def pending_faults(self) -> int:
        """How many scripted faults are not used yet."""
        return self._faults.pending
