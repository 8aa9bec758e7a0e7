"""Calls into a running event loop from other threads, on asyncio or Trio.

Owns: the two backends' thread-safe entry points (asyncio's ``call_soon_threadsafe`` and
``run_coroutine_threadsafe``, Trio's token). Must not touch: what is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LoopCalls"]


class LoopCalls:
    """Calls into the running event loop from other threads, on asyncio or Trio.

    Made on the loop's thread; its methods are for the other threads.
    """

    def __init__(self) -> None:
        try:
            import asyncio

            self._asyncio: Any = asyncio.get_running_loop()
            self.call_soon: Callable[[Callable[[], object]], object] = (
                self._asyncio.call_soon_threadsafe
            )
        except RuntimeError:  # not asyncio: the other backend anyio runs on is Trio
            import trio

            self._asyncio = None
            self._trio = trio.lowlevel.current_trio_token()
            self.call_soon = self._trio.run_sync_soon

    def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run the async ``func`` on the loop; wait for and return its result."""
        if self._asyncio is not None:
            import asyncio

            return asyncio.run_coroutine_threadsafe(func(*args), self._asyncio).result()
        import trio

        return trio.from_thread.run(func, *args, trio_token=self._trio)
