"""Waiting for what the stand-ins record, from any thread and either backend.

Owns :class:`Waiters`: the tasks blocked in an app's ``wait_until`` (:class:`EventsAPI`,
:class:`DatafileAPI`), each woken in its own event loop (asyncio or Trio) once its predicate
holds, whichever thread recorded.

It must not touch what is recorded or counted: predicates read that, under the lock the
app shares with it. It imports nothing else of this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["WaitControls", "Waiters"]


def _call_soon_threadsafe() -> Callable[[Callable[[], object]], object]:
    # anyio has no non-blocking way to run a callback in another thread's loop, and the
    # recording thread must never block on the waiting one.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    return loop.call_soon_threadsafe


class _Waiter:
    __slots__ = ("call_soon", "error", "event", "fired", "predicate", "thread")

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate
        self.event = anyio.Event()
        self.thread = threading.get_ident()
        self.call_soon = _call_soon_threadsafe()
        self.fired = False
        self.error: BaseException | None = None

    def check(self) -> None:
        try:
            done = self.predicate()
        except Exception as exc:
            self.error = exc
            done = True
        if done:
            self.fired = True
            if threading.get_ident() == self.thread:
                self.event.set()
            else:
                # RuntimeError: the waiting loop is gone, so nobody is waiting.
                with contextlib.suppress(RuntimeError):
                    self.call_soon(self.event.set)


class Waiters:
    """The tasks waiting until a predicate on an app's records holds.

    Args:
        lock: The app's lock: it records under it, and the predicates run under it.
    """

    __slots__ = ("_lock", "_waiters")

    def __init__(self, lock: contextlib.AbstractContextManager[object]) -> None:
        self._lock = lock
        self._waiters: list[_Waiter] = []

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked on each :meth:`check`.

        Args:
            predicate: Called without arguments, under the lock.

        Raises:
            Exception: Whatever ``predicate`` raised.
        """
        await anyio.lowlevel.checkpoint()
        with self._lock:
            if predicate():
                return
            waiter = _Waiter(predicate)
            self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            with self._lock:
                self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error

    def check(self) -> None:
        """Re-check the waiters not woken yet; call it under the lock, after recording."""
        for waiter in self._waiters:
            if not waiter.fired:
                waiter.check()


class WaitControls:
    """``wait_until``, for an app that records requests (a part of both stand-ins)."""

    _waiters: Waiters

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checked each time a request is recorded.

        Works on asyncio and Trio, with the server in the same event loop or in another
        thread (:func:`serve_in_thread`). Guard it with :func:`anyio.fail_after`.

        Args:
            predicate: Called without arguments, under the app's lock, in the thread that
                records; it may read this app's properties.

        Raises:
            Exception: Whatever ``predicate`` raised.
        """
        await self._waiters.wait_until(predicate)
