"""The datafile from Optimizely, kept current: fetching, polling, the cold-start cache.

With ``Client(sdk_key=...)`` the client's task group runs :meth:`DatafileManager.run`:
a fetch of ``datafile_url_template`` at once, then one every ``update_interval``
seconds, conditional (``If-None-Match`` with the last ``ETag``, ``If-Modified-Since``
with the last ``Last-Modified``), so an unchanged datafile costs a ``304`` and no
parsing. A new datafile is validated before it is used; a bad one is logged once and
the last good one stays. Failures keep the last good datafile:

* connection errors, timeouts, ``429`` and ``5xx`` are retried with full-jitter
  exponential backoff capped at ``update_interval``; one WARNING per failure streak,
  one INFO when fetching works again;
* ``401``, ``403`` and ``404`` are logged as an ERROR that says what to check (the
  access token, the SDK key), once per streak, and polling goes on at the normal pace.

Every datafile fetched and accepted is written to ``datafile_cache`` (a temporary file,
then a rename), off the event loop; at start, when no fetch succeeded within
``datafile_timeout``, the client uses the cached one.

Owns: fetching, its schedule and failure policy, the cache file. Must not touch: what
a new datafile changes in the client (it hands a validated config to ``apply``).
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from ._decisions import ProjectConfig, load_datafile
from ._exceptions import DatafileError
from ._logging import logger
from ._version import __version__

__all__ = [
    "DEFAULT_AUTH_DATAFILE_URL_TEMPLATE",
    "DEFAULT_DATAFILE_TIMEOUT",
    "DEFAULT_DATAFILE_URL_TEMPLATE",
    "DEFAULT_UPDATE_INTERVAL",
    "DatafileManager",
    "DatafileOptions",
]

DEFAULT_DATAFILE_URL_TEMPLATE: Final = "https://cdn.optimizely.com/datafiles/{sdk_key}.json"
DEFAULT_AUTH_DATAFILE_URL_TEMPLATE: Final = (
    "https://config.optimizely.com/datafiles/auth/{sdk_key}.json"
)
DEFAULT_UPDATE_INTERVAL: Final = 300.0
DEFAULT_DATAFILE_TIMEOUT: Final = 10.0
#: The first wait after a failed fetch; each further failure doubles it, up to the
#: update interval, and a uniform draw below it is taken (full jitter).
_BACKOFF_INITIAL: Final = 1.0
_HINTS: Final = {
    401: "check datafile_access_token: the server wants a valid one",
    403: "check datafile_access_token and sdk_key: the server refuses them",
    404: "check sdk_key (and datafile_url_template): the server has no such datafile",
}


@dataclass(frozen=True, kw_only=True)
class DatafileOptions:
    """Where the datafile comes from and how often. Durations are in seconds.

    Raises:
        ValueError: A value is out of range; the message names the fix.
    """

    sdk_key: str
    url_template: str | None = None
    access_token: str | None = field(default=None, repr=False)
    update_interval: float = DEFAULT_UPDATE_INTERVAL
    timeout: float = DEFAULT_DATAFILE_TIMEOUT
    cache: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sdk_key, str) or not self.sdk_key.strip():
            raise ValueError(f"sdk_key ({self.sdk_key!r}) must be a non-empty str")
        for name in ("update_interval", "timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} ({value!r}) must be a finite number of seconds > 0")
        try:
            url = self.url
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"datafile_url_template ({self.url_template!r}) must contain {{sdk_key}} "
                f"and nothing else in braces: {exc!r}"
            ) from exc
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(
                f"datafile_url_template ({self.url_template!r}) must give an http or https "
                "URL with a host"
            )

    @property
    def url(self) -> str:
        """The datafile's URL."""
        template = self.url_template
        if template is None:
            template = (
                DEFAULT_AUTH_DATAFILE_URL_TEMPLATE
                if self.access_token
                else DEFAULT_DATAFILE_URL_TEMPLATE
            )
        return template.format(sdk_key=self.sdk_key)


class DatafileManager:
    """Fetches a project's datafile and keeps it current, in the client's task group.

    Args:
        options: Where from, how often, the cache.
        apply: Called with each new, valid datafile and where it came from
            (``"fetch"`` or ``"cache"``).
    """

    def __init__(
        self, options: DatafileOptions, apply: Callable[[ProjectConfig, str], None]
    ) -> None:
        self.options = options
        self._apply = apply
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._revision: str | None = None
        self._failures = 0  # transient failures in a row
        self._refused_status: int | None = None  # 401/403/404 streak
        self._scope: anyio.CancelScope | None = None
        self._forked = False
        #: Set once the first fetch was answered one way or another (a datafile, or a
        #: refusal that retrying soon will not change); made in :meth:`run`.
        self.answered: anyio.Event | None = None
        #: Set when :meth:`run` has returned.
        self.stopped: anyio.Event | None = None
        #: Fetches made, and datafiles applied (for statistics and tests).
        self.fetches = 0
        self.updates = 0

    def use_revision(self, revision: str) -> None:
        """Note the revision in use (a datafile given by the caller), to skip re-applying it."""
        self._revision = revision

    async def run(
        self,
        http: httpx.AsyncClient,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fetch now, then poll until :meth:`close` (or a fork, in the child)."""
        _live_managers.add(self)
        self.answered = anyio.Event()
        self.stopped = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                task_status.started()
                while not self._forked:
                    wait = await self.fetch(http)
                    await anyio.sleep(wait)
        finally:
            self.stopped.set()

    def close(self) -> None:
        """Stop polling (in a forked child, where the poller is the parent's, do nothing)."""
        if self._scope is not None and not self._forked:
            self._scope.cancel()

    def _after_fork(self) -> None:
        # The parent polls; an inherited client in a child must not.
        self._forked = True

    async def wait_first(self, ready: Callable[[], bool]) -> None:
        """At start: wait up to ``timeout`` for a fetch, then fall back on the cache."""
        assert self.answered is not None, "run() first"
        with anyio.move_on_after(self.options.timeout):
            await self.answered.wait()
        if not ready() and not self.load_cache():
            logger.warning(
                "No datafile for SDK key %r yet: track and decisions are refused "
                "(no_datafile) until one is fetched.",
                self.options.sdk_key,
            )

    def load_cache(self) -> bool:
        """Use the cached datafile, if there is a valid one. Returns whether it did."""
        path = self.options.cache
        if path is None:
            return False
        try:
            text = Path(path).read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("Cannot read the datafile cache %r: %s", os.fspath(path), exc)
            return False
        config = self._valid(text, f"the datafile cache {os.fspath(path)!r}")
        if config is None:
            return False
        logger.warning(
            "Using the cached datafile (revision %r) from %r: no fetch succeeded in time.",
            config.revision,
            os.fspath(path),
        )
        self._revision = config.revision
        self._apply(config, "cache")
        return True

    async def fetch(self, http: httpx.AsyncClient) -> float:
        """Fetch once; apply a new datafile. Returns how long to wait before the next."""
        options = self.options
        headers = {"User-Agent": f"optitrack/{__version__}", "Accept": "application/json"}
        if options.access_token:
            headers["Authorization"] = f"Bearer {options.access_token}"
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        if self._last_modified is not None:
            headers["If-Modified-Since"] = self._last_modified
        self.fetches += 1
        try:
            with anyio.fail_after(options.timeout):
                response = await http.get(options.url, headers=headers, timeout=options.timeout)
        except TimeoutError:
            return self._failed("timed out")
        except httpx.TimeoutException:
            return self._failed("timed out")
        except httpx.HTTPError as exc:
            return self._failed(type(exc).__name__)
        status = response.status_code
        if status == 304:
            return self._succeeded()
        if status == 200:
            self._etag = response.headers.get("ETag")
            self._last_modified = response.headers.get("Last-Modified")
            await self._use(response.content)
            return self._succeeded()
        if status in _HINTS:
            if self._refused_status != status:
                self._refused_status = status
                logger.error(
                    "Fetching the datafile of SDK key %r answered %d: %s.",
                    options.sdk_key,
                    status,
                    _HINTS[status],
                )
            self._recovered()
            self._answer()
            return options.update_interval
        if status == 429 or status >= 500:
            return self._failed(f"HTTP {status}")
        logger.error(
            "Fetching the datafile of SDK key %r answered %d; keeping the datafile in use.",
            options.sdk_key,
            status,
        )
        self._answer()
        return options.update_interval

    async def _use(self, content: bytes) -> None:
        config = self._valid(content, f"the datafile fetched from {self.options.url!r}")
        if config is not None:
            if self.options.cache is not None:
                await self._write_cache(content)
            if config.revision != self._revision:
                self._revision = config.revision
                self.updates += 1
                self._apply(config, "fetch")
        self._answer()

    def _valid(self, content: bytes, where: str) -> ProjectConfig | None:
        try:
            config = load_datafile(content)
        except DatafileError as exc:
            # A problem may quote a value of the datafile ("(got ...)"): what is wrong and
            # where at ERROR, the values at DEBUG.
            first = exc.problems[0].split(" (got ", 1)[0] if exc.problems else "invalid"
            logger.error(
                "Ignoring %s: %s%s.",
                where,
                first,
                f" (and {len(exc.problems) - 1} more problem(s))" if len(exc.problems) > 1 else "",
            )
            logger.debug("Ignoring %s: %s", where, exc)
            return None
        key = config.sdk_key
        if key is not None and key != self.options.sdk_key:
            logger.error(
                "Ignoring %s: it is the datafile of SDK key %r, not %r.",
                where,
                key,
                self.options.sdk_key,
            )
            return None
        return config

    async def _write_cache(self, content: bytes) -> None:
        path = self.options.cache
        assert path is not None
        try:
            await anyio.to_thread.run_sync(_write_atomically, Path(path), content)
        except OSError as exc:
            logger.warning("Cannot write the datafile cache %r: %s", os.fspath(path), exc)

    def _answer(self) -> None:
        if self.answered is not None:
            self.answered.set()

    def _succeeded(self) -> float:
        self._recovered()
        self._refused_status = None
        return self.options.update_interval

    def _recovered(self) -> None:
        if self._failures:
            logger.info(
                "Fetching the datafile works again after %d failed attempt(s).", self._failures
            )
            self._failures = 0

    def _failed(self, error: str) -> float:
        self._failures += 1
        if self._failures == 1:
            logger.warning(
                "Fetching the datafile of SDK key %r failed (%s); keeping the datafile in "
                "use and retrying with backoff.",
                self.options.sdk_key,
                error,
            )
        cap = min(self.options.update_interval, _BACKOFF_INITIAL * 2 ** (self._failures - 1))
        return random.uniform(0, cap)


_live_managers: weakref.WeakSet[DatafileManager] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for manager in list(_live_managers):
        manager._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
