"""Running a plain script or worker so that SIGTERM and SIGINT drain its clients.

Owns :func:`run`: an event loop (anyio's), a signal receiver, and on the first signal a
graceful close of the clients running on that loop before ``main`` is cancelled. Must
not touch: how a client drains (the processor does), or anything of the frameworks,
which drain through their lifespan.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio

from ._delivery.processor import running_processors
from ._exceptions import unwrap_single_group
from ._logging import logger

__all__ = ["run"]

T = TypeVar("T")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(
    main: Callable[..., Awaitable[T]],
    *args: Any,
    backend: str = "asyncio",
    signals: Iterable[signal.Signals] = _STOP_SIGNALS,
) -> T | None:
    """Run ``main(*args)`` on an event loop, turning SIGTERM and SIGINT into a drain.

    On the first of ``signals``, every client running on this loop stops intake and
    delivers what it holds within its ``close_timeout``, as leaving ``async with`` does;
    requests in flight are waited for, not cut off, so no batch is sent twice. Then
    ``main`` is cancelled, and its ``async with`` blocks exit. Later signals are logged
    and ignored. Call it from the main thread (signals are delivered there).

    Args:
        main: The async function to run.
        *args: Its positional arguments.
        backend: ``"asyncio"`` or ``"trio"``.
        signals: The signals that stop ``main``.

    Returns:
        What ``main`` returned, or ``None`` when a signal stopped it.

    Raises:
        ValueError: ``backend`` is not one anyio runs.
        RuntimeError: Not called from the main thread.

    What ``main`` raises comes out of ``run`` as itself, not in an exception group.
    """
    if backend not in ("asyncio", "trio"):
        raise ValueError(f"backend ({backend!r}) must be 'asyncio' or 'trio'")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("optitrack.run() must be called from the main thread")
    wanted = tuple(signals)
    return anyio.run(_run, main, args, wanted, backend=backend)


async def _run(
    main: Callable[..., Awaitable[T]], args: tuple[Any, ...], signals: tuple[signal.Signals, ...]
) -> T | None:
    result: T | None = None
    with anyio.open_signal_receiver(*signals) as receiver, unwrap_single_group():
        async with anyio.create_task_group() as task_group:
            main_scope = anyio.CancelScope()

            async def stop_on_signal() -> None:
                async for signum in receiver:
                    if main_scope.cancel_called:
                        logger.info(
                            "%s received again: still stopping.", signal.Signals(signum).name
                        )
                        continue
                    logger.info(
                        "%s received: draining, then stopping.", signal.Signals(signum).name
                    )
                    await _drain_clients()
                    main_scope.cancel()

            task_group.start_soon(stop_on_signal)
            with main_scope:
                result = await main(*args)
            task_group.cancel_scope.cancel()
    return result


async def _drain_clients() -> None:
    # Close gracefully first: a cancellation would cut requests off mid-flight, and the
    # drain would resend them (the collector would see their events twice).
    processors = running_processors(threading.get_ident())
    for processor in processors:
        processor.close()
    for processor in processors:
        await processor.wait_stopped()
