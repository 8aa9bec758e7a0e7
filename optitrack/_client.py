"""The client: ``await client.track(...)`` and the resource that owns delivery."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import httpx

from ._decide import (
    DecideOption,
    Decision,
    DecisionContext,
    ForcedDecision,
    UserProfileService,
)
from ._decisions import (
    DecisionEngine,
    Experiment,
    FeatureFlag,
    Holdout,
    ProjectConfig,
    RuleType,
    UserInput,
    UserProfile,
    Variation,
    VariationDecision,
    load_datafile,
)
from ._events import EventFactory, InvalidTagsError
from ._exceptions import ClientStateError, DecisionError, TrackError, unwrap_single_group
from ._logging import logger
from ._notifications import (
    DecisionNotification,
    NotificationCenter,
    NotificationType,
    TrackNotification,
)
from ._processor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_OVERFLOW_TIMEOUT,
    BatchOptions,
    BatchProcessor,
    Overflow,
)
from ._results import ACCEPTED, FlushResult, Reason, Statistics, TrackResult
from ._retry import RetryPolicy

__all__ = ["Client", "UserContext"]

DatafileSource = str | bytes | os.PathLike[str] | Mapping[str, Any] | ProjectConfig

_NEW, _RUNNING, _CLOSED = "new", "running", "closed"
_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})
# Enum members as module constants: the hot paths compare them, and a module global is
# several times cheaper to read than a class attribute of an enum.
_FEATURE_TEST, _HOLDOUT, _ROLLOUT = RuleType.FEATURE_TEST, RuleType.HOLDOUT, RuleType.ROLLOUT
_DECISION = NotificationType.DECISION


@dataclass(frozen=True, slots=True)
class _Choices:
    """What a set of decide options asks for, worked out once per call."""

    send_impressions: bool = True
    with_reasons: bool = False
    with_variables: bool = True
    enabled_only: bool = False
    use_profiles: bool = True

    @classmethod
    def of(cls, options: Collection[DecideOption]) -> _Choices:
        return cls(
            send_impressions=DecideOption.DISABLE_DECISION_EVENT not in options,
            with_reasons=DecideOption.INCLUDE_REASONS in options,
            with_variables=DecideOption.EXCLUDE_VARIABLES not in options,
            enabled_only=DecideOption.ENABLED_FLAGS_ONLY in options,
            use_profiles=DecideOption.IGNORE_USER_PROFILE_SERVICE not in options,
        )


_PLAIN = _Choices()


def _check_endpoint(endpoint: str) -> str:
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"event_endpoint ({endpoint!r}) is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"event_endpoint ({endpoint!r}) must be an http or https URL with a host, "
            "e.g. http://127.0.0.1:8765/v1/events"
        )
    return endpoint


class Client:
    """An Optimizely client for async code: track conversions, deliver them in batches.

    Use it as an ``async with`` resource. Entering starts the background batch
    processor in the client's own task group; leaving (or :meth:`aclose`) stops intake
    and sends what is queued within ``close_timeout``::

        async with optitrack.Client(datafile) as client:
            await client.track("purchase", "user-1", {"plan": "pro"}, {"revenue": 4200})

    Args:
        datafile: The project datafile: JSON text or bytes, a path (a string that is
            not JSON names a file), a mapping, or a
            :class:`ProjectConfig` already loaded.
        event_endpoint: Where events go. Defaults to the Optimizely Events API of the
            datafile's region (EU or US).
        batch_size: Events per request at most.
        max_batch_bytes: Request body bytes at most (the Events API accepts 3.5 MB).
        flush_interval: Seconds a batch may wait for more events after its first one.
        max_queue_size: Queued events at most.
        max_queue_bytes: Queued serialized bytes at most.
        max_event_bytes: A single serialized event's bytes at most; larger ones are
            refused at the call (``event_too_large``).
        overflow: What to do with a full queue: ``"drop_newest"`` (refuse the new event),
            ``"drop_oldest"`` (evict the oldest) or ``"block"`` (wait up to
            ``overflow_timeout`` for room, then refuse).
        overflow_timeout: Seconds ``track`` may wait for room with ``overflow="block"``.
        max_in_flight: Requests in flight at once.
        gzip: Compress request bodies (``Content-Encoding: gzip``). Off by default: the
            Optimizely Events API does not document support for it.
        close_timeout: Seconds the drain on close may take, at most.
        retry: The retry policy.
        http_client: An ``httpx.AsyncClient`` to send with; the client does not close it.
            By default the client makes and closes its own.
        strict: Raise :class:`TrackError` (and :class:`DecisionError`) instead of
            returning a refusal: for tests and development.
        user_profile_service: Where sticky bucketing is kept (see
            :class:`UserProfileService`); none by default.
        default_decide_options: Options added to every ``decide``.

    Raises:
        DatafileError: The datafile is invalid (the message says what and where).
        ValueError: An option is out of range or contradicts another, or
            ``event_endpoint`` is not an http(s) URL.
    """

    def __init__(
        self,
        datafile: DatafileSource,
        *,
        event_endpoint: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        overflow_timeout: float = DEFAULT_OVERFLOW_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        gzip: bool = False,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        strict: bool = False,
        user_profile_service: UserProfileService | None = None,
        default_decide_options: Iterable[DecideOption | str] = (),
    ) -> None:
        self._config = datafile if isinstance(datafile, ProjectConfig) else load_datafile(datafile)
        self._options = BatchOptions(
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            max_event_bytes=max_event_bytes,
            overflow=Overflow(overflow),
            overflow_timeout=overflow_timeout,
            max_in_flight=max_in_flight,
            gzip=gzip,
            close_timeout=close_timeout,
            retry=retry if retry is not None else RetryPolicy(),
        )
        self._endpoint_given = event_endpoint
        self.event_endpoint = _check_endpoint(event_endpoint or self._config.default_event_endpoint)
        self._engine = DecisionEngine(self._config)
        self._factory = EventFactory(
            self._config, self.event_endpoint, self._engine.impression_variation
        )
        self._context = self._factory.context
        self._http = http_client
        self.notification_center = NotificationCenter()
        self._processor = BatchProcessor(self._options, self.notification_center)
        self._block = self._options.overflow is Overflow.BLOCK
        self._strict = strict
        self._profiles = user_profile_service
        self._choices_cache: dict[frozenset[Any], _Choices] = {}
        self.default_decide_options = default_decide_options
        self._state = _NEW
        self._stack: AsyncExitStack | None = None

    @property
    def default_decide_options(self) -> frozenset[DecideOption]:
        """The options added to every ``decide``."""
        return self._default_options

    @default_decide_options.setter
    def default_decide_options(self, options: Iterable[DecideOption | str]) -> None:
        self._default_options = frozenset(DecideOption(o) for o in options)
        self._default_choices = _Choices.of(self._default_options)
        self._choices_cache.clear()
        # decide() has nothing to await without options, profiles or a queue to wait on.
        self._plain = not self._default_options and self._profiles is None and not self._block

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != _NEW:
            raise ClientStateError(f"a client can be entered once (this one is {self._state})")
        async with AsyncExitStack() as stack:
            http = self._http
            if http is None:
                connections = self._options.max_in_flight + 1
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        limits=httpx.Limits(
                            max_connections=connections, max_keepalive_connections=connections
                        ),
                        timeout=self._options.retry.attempt_timeout,
                    )
                )
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self._processor.run, http)
            self._stack = stack.pop_all()
        self._state = _RUNNING
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        self._processor.close()
        self._state = _CLOSED
        with unwrap_single_group():
            return await self._stack.__aexit__(exc_type, exc, tb)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop intake, send what is queued, and wait for it, within ``timeout`` seconds.

        Calls made after it are refused (``closed``). What is still queued or in flight at
        the deadline is counted as dropped (``shutdown``) and logged. Leaving
        ``async with`` does the same with ``close_timeout``.

        Args:
            timeout: The deadline in seconds from now; defaults to ``close_timeout``.
        """
        if self._state == _NEW:
            self._state = _CLOSED
            return
        self._processor.close(timeout)
        await self._processor.wait_stopped()
        self._state = _CLOSED

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything tracked so far, and wait until it is delivered or given up on.

        Args:
            timeout: The longest wait in seconds; ``None`` waits as long as the retry
                policy allows.

        Returns:
            What became of the events tracked before the call.

        Raises:
            ClientStateError: The client was never entered.
        """
        if self._state == _NEW:
            raise ClientStateError("flush() needs a running client: use `async with client:`")
        return await self._processor.flush(timeout)

    def statistics(self) -> Statistics:
        """A snapshot of the delivery ledger: accepted, delivered, dropped, pending..."""
        return self._processor.statistics()

    @property
    def config(self) -> ProjectConfig:
        """The project config the client decides and tracks with."""
        return self._config

    def update_datafile(self, datafile: DatafileSource) -> None:
        """Decide and track with a new datafile from now on: a new revision of the project.

        For a long-running app, which fetches the datafile as Optimizely's SDKs poll it
        and hands each new revision over. The new datafile is validated first: a bad one
        raises and the current one stays. Events already queued go out with the revision
        they were made with (a batch never mixes revisions); forced variations set on the
        client are kept. The event endpoint follows the new datafile's region, unless
        ``event_endpoint`` was given to the client.

        Args:
            datafile: The new datafile (as for :class:`Client`).

        Raises:
            DatafileError: The datafile is invalid; nothing changed.
        """
        config = datafile if isinstance(datafile, ProjectConfig) else load_datafile(datafile)
        if self._endpoint_given is None:
            self.event_endpoint = config.default_event_endpoint
        self._engine.update_config(config)
        self._config = config
        self._factory = EventFactory(config, self.event_endpoint, self._engine.impression_variation)
        self._context = self._factory.context

    # -- track -----------------------------------------------------------------------

    async def track(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
        event_tags: Mapping[str, Any] | None = None,
    ) -> TrackResult:
        """Record a conversion of ``event_key`` for ``user_id``.

        Validates against the datafile, serializes the event and queues it: no I/O, a
        few microseconds. It never sends an impression: a conversion counts in an
        experiment only for a user who got one earlier (activate, is_feature_enabled,
        decide).

        Args:
            event_key: The key of an event of the datafile.
            user_id: The user's id (``""`` is allowed).
            attributes: User attributes, for results segmentation. Values that are not
                strings, booleans or finite numbers are left out; keys that are neither
                datafile attributes nor ``$opt_`` reserved ones are left out and logged.
            event_tags: Tags sent as given; an integer ``revenue`` (minor units) and a
                numeric ``value`` are also sent as the event's metrics.

        Returns:
            Whether the event was accepted and, when not, why. With
            ``overflow="block"``, the call may wait up to ``overflow_timeout`` for room.

        Raises:
            TrackError: The event was refused and the client is strict.
            ClientStateError: The client was never entered.
        """
        data = self._conversion(event_key, user_id, attributes, event_tags)
        if type(data) is not bytes:
            return data  # type: ignore[return-value]
        if self._block:
            return await self._submit_blocking(data, event_key, user_id, attributes, event_tags)
        result = self._submit(data, event_key, user_id, attributes, event_tags)
        if self._processor.turn():
            # Let the worker (and the network) have a turn now and then, so that a tight
            # loop of track calls cannot starve delivery.
            await anyio.lowlevel.checkpoint()
        return result

    def track_nowait(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
        event_tags: Mapping[str, Any] | None = None,
    ) -> TrackResult:
        """Like :meth:`track`, from sync code: never waits, even with ``overflow="block"``.

        Args:
            event_key: The key of an event of the datafile.
            user_id: The user's id.
            attributes: User attributes.
            event_tags: Event tags.

        Returns:
            Whether the event was accepted and, when not, why.

        Raises:
            TrackError: The event was refused and the client is strict.
            ClientStateError: The client was never entered.
        """
        data = self._conversion(event_key, user_id, attributes, event_tags)
        if type(data) is not bytes:
            return data  # type: ignore[return-value]
        return self._submit(data, event_key, user_id, attributes, event_tags)

    def _submit(
        self,
        data: bytes,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> TrackResult:
        return self._submitted(
            self._processor.put_nowait(self._context, data),
            event_key,
            user_id,
            attributes,
            event_tags,
        )

    async def _submit_blocking(
        self,
        data: bytes,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> TrackResult:
        reason = await self._processor.put(self._context, data)
        return self._submitted(reason, event_key, user_id, attributes, event_tags)

    def _submitted(
        self,
        reason: Reason | None,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        event_tags: Mapping[str, Any] | None,
    ) -> TrackResult:
        if reason is not None:
            return self._refused(
                reason, f"event {event_key!r} refused: {reason.value}", counted=True
            )
        if self.notification_center.has_listeners(NotificationType.TRACK):
            self.notification_center.send(
                NotificationType.TRACK,
                TrackNotification(event_key, user_id, attributes, event_tags),
            )
        return ACCEPTED

    def _conversion(
        self,
        event_key: Any,
        user_id: Any,
        attributes: Any,
        event_tags: Any,
        attributes_json: str | None = None,
    ) -> bytes | TrackResult:
        if self._state != _RUNNING:
            if self._state == _NEW:
                raise ClientStateError("track() needs a running client: use `async with client:`")
            return self._refused(Reason.CLOSED, "the client is closed")
        if not isinstance(event_key, str) or not event_key:
            return self._invalid("event_key", f"must be a non-empty str, not {event_key!r:.60}")
        if not isinstance(user_id, str):
            return self._invalid("user_id", f"must be a str, not {type(user_id).__name__}")
        if not (attributes is None or type(attributes) is dict or isinstance(attributes, Mapping)):
            return self._invalid(
                "attributes", f"must be a mapping, not {type(attributes).__name__}"
            )
        if not (event_tags is None or type(event_tags) is dict or isinstance(event_tags, Mapping)):
            return self._invalid(
                "event_tags", f"must be a mapping, not {type(event_tags).__name__}"
            )
        try:
            data = self._factory.conversion(
                event_key, user_id, attributes, event_tags, attributes_json
            )
        except InvalidTagsError as exc:
            return self._refused(
                Reason.INVALID_TAGS, f"event {event_key!r} not tracked: {exc}", key=event_key
            )
        if data is None:
            return self._refused(
                Reason.UNKNOWN_EVENT, f'Event "{event_key}" is not in datafile.', key=event_key
            )
        return data

    def _invalid(self, argument: str, problem: str) -> TrackResult:
        return self._refused(
            Reason.INVALID_INPUT, f"track() refused: {argument} {problem}", key=argument
        )

    def _refused(
        self, reason: Reason, message: str, *, counted: bool = False, key: str = ""
    ) -> TrackResult:
        if not counted:
            self._processor.refuse(reason, message, key)
        if self._strict:
            raise TrackError(reason, message)
        return TrackResult(accepted=False, reason=reason, message=message)

    # -- decisions -------------------------------------------------------------------

    async def activate(
        self, experiment_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> str | None:
        """Bucket a user into an experiment and send the impression that makes it count.

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.
            attributes: The user's attributes, for audiences and the impression.

        Returns:
            The variation's key, or ``None`` when the user is in no variation (not
            running, not in the audience, not in the traffic). No impression then.

        Raises:
            DecisionError: Invalid input and the client is strict.
            ClientStateError: The client was never entered.
        """
        self._require_started("activate")
        experiment = self._experiment_input(experiment_key, user_id, attributes)
        if experiment is None:
            return None
        user = UserInput(user_id, attributes or {})
        profile = await self._load_profile(user_id) if self._profiles is not None else None
        decision = self._engine.activate(experiment, user, profile, include_reasons=False)
        if profile is not None:
            await self._save_profile(profile)
        self._notify_variation(experiment, user_id, attributes, decision)
        if decision.variation is None:
            logger.info('Not activating user "%s".', user_id)
            return None
        data = self._impression(
            user_id,
            self._factory.attributes_json(attributes),
            "",
            experiment,
            decision.variation,
            RuleType.EXPERIMENT,
            True,
        )
        await self._enqueue([data])
        return decision.variation.key

    def get_variation(
        self, experiment_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> str | None:
        """The variation a user gets in an experiment; sends nothing.

        Being sync, it uses the user profile service only when the service has the sync
        twins ``lookup_nowait`` and ``save_nowait`` (the in-memory one has).

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.
            attributes: The user's attributes, for audiences.

        Returns:
            The variation's key, or ``None``.

        Raises:
            DecisionError: Invalid input and the client is strict.
        """
        experiment = self._experiment_input(experiment_key, user_id, attributes)
        if experiment is None:
            return None
        user = UserInput(user_id, attributes or {})
        profile = self._load_profile_nowait(user_id)
        decision = self._engine.get_variation(experiment, user, profile, include_reasons=False)
        self._save_profile_nowait(profile)
        self._notify_variation(experiment, user_id, attributes, decision)
        return decision.variation_key

    def set_forced_variation(
        self, experiment_key: str, user_id: str, variation_key: str | None
    ) -> bool:
        """Force a user into a variation of an experiment, for this client's lifetime.

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.
            variation_key: The variation's key; ``None`` removes the forced variation.

        Returns:
            Whether it was set (``False`` for an unknown experiment or variation).
        """
        return self._engine.set_forced_variation(experiment_key, user_id, variation_key)

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation a user was forced into with :meth:`set_forced_variation`.

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.

        Returns:
            The variation's key, or ``None``.
        """
        return self._engine.get_forced_variation(experiment_key, user_id)

    async def is_feature_enabled(
        self, feature_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether a flag is on for a user; sends the impression the decision calls for.

        An impression is sent when an experiment rule decided; for a rollout rule, or when
        no rule did, only when the datafile's ``sendFlagDecisions`` is true.

        Args:
            feature_key: The flag's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            Whether the flag is enabled for the user (``False`` on invalid input).

        Raises:
            DecisionError: Invalid input and the client is strict.
            ClientStateError: The client was never entered.
        """
        self._require_started("is_feature_enabled")
        flag = self._flag_input(feature_key, user_id, attributes)
        if flag is None:
            return False
        profile = await self._load_profile(user_id) if self._profiles is not None else None
        decision = self._engine.decide_flag(
            flag, UserInput(user_id, attributes or {}), {}, profile, include_reasons=False
        )
        if profile is not None:
            await self._save_profile(profile)
        source = decision.rule_type
        variation = decision.variation
        # Optimizely's SDK asks here for a featureEnabled that is true itself, not just
        # truthy (a holdout's variation excepted); datafiles hold booleans anyway.
        enabled = variation is not None and (
            variation.feature_enabled if source is _HOLDOUT else variation.feature_enabled_is_true
        )
        impressions: list[bytes] = []
        if (
            (source is RuleType.ROLLOUT or decision.variation is None)
            and self._config.send_flag_decisions
        ) or (source is RuleType.FEATURE_TEST and decision.variation and decision.experiment):
            attributes_json = self._factory.attributes_json(attributes)
            self._flag_impression(
                impressions, user_id, attributes_json, flag.key, decision, enabled
            )
        if impressions:
            await self._enqueue(impressions)
        if self.notification_center.has_listeners(NotificationType.DECISION):
            source_info = {}
            if source is RuleType.FEATURE_TEST and decision.experiment is not None:
                source_info = {
                    "experiment_key": decision.rule_key,
                    "variation_key": decision.variation_key,
                }
            self._notify_decision(
                "feature",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": enabled,
                    "source": str(source),
                    "source_info": source_info,
                },
            )
        return enabled

    async def get_enabled_features(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> list[str]:
        """The keys of the flags enabled for a user, each decided as by is_feature_enabled.

        Args:
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The enabled flags' keys, in datafile order.
        """
        return [
            flag.key
            for flag in self._config.datafile.feature_flags
            if await self.is_feature_enabled(flag.key, user_id, attributes)
        ]

    def get_feature_variable(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """A flag variable's value for a user, typed by the variable's type.

        The variation's value when the user's variation is enabled and sets it, else the
        variable's default. Sends nothing; uses the user profile service as
        :meth:`get_variation` does.

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The value, or ``None`` for an unknown flag or variable, or a value that does
            not convert to the variable's type.
        """
        return self._feature_variable(feature_key, variable_key, user_id, attributes, None)

    def get_feature_variable_string(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> str | None:
        """A ``string`` variable's value (``None`` if the variable is of another type).

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The value, or ``None``.
        """
        value = self._feature_variable(feature_key, variable_key, user_id, attributes, "string")
        return value if isinstance(value, str) else None

    def get_feature_variable_integer(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> int | None:
        """An ``integer`` variable's value (``None`` if the variable is of another type).

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The value, or ``None``.
        """
        value = self._feature_variable(feature_key, variable_key, user_id, attributes, "integer")
        return value if isinstance(value, int) else None

    def get_feature_variable_double(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> float | None:
        """A ``double`` variable's value (``None`` if the variable is of another type).

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The value, or ``None``.
        """
        value = self._feature_variable(feature_key, variable_key, user_id, attributes, "double")
        return value if isinstance(value, float) else None

    def get_feature_variable_boolean(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> bool | None:
        """A ``boolean`` variable's value (``None`` if the variable is of another type).

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The value, or ``None``.
        """
        value = self._feature_variable(feature_key, variable_key, user_id, attributes, "boolean")
        return value if isinstance(value, bool) else None

    def get_feature_variable_json(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """A ``json`` variable's value, parsed (``None`` if the variable is of another type).

        Args:
            feature_key: The flag's key.
            variable_key: The variable's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            The parsed value, or ``None``.
        """
        return self._feature_variable(feature_key, variable_key, user_id, attributes, "json")

    def get_all_feature_variables(
        self, feature_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Every variable of a flag for a user, typed.

        Args:
            feature_key: The flag's key.
            user_id: The user's id.
            attributes: The user's attributes.

        Returns:
            Variable key to value, or ``None`` for an unknown flag or invalid input.
        """
        flag = self._flag_input(feature_key, user_id, attributes)
        if flag is None:
            return None
        profile = self._load_profile_nowait(user_id)
        decision = self._engine.decide_flag(
            flag, UserInput(user_id, attributes or {}), {}, profile, include_reasons=False
        )
        self._save_profile_nowait(profile)
        values = self._engine.all_variables(flag, decision.variation)
        if self.notification_center.has_listeners(NotificationType.DECISION):
            self._notify_decision(
                "all-feature-variables",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": decision.enabled,
                    "variable_values": values,
                    "source": str(decision.rule_type),
                    "source_info": self._source_info(decision),
                },
            )
        return values

    def _feature_variable(
        self,
        feature_key: Any,
        variable_key: Any,
        user_id: Any,
        attributes: Any,
        expected: str | None,
    ) -> Any:
        if not isinstance(variable_key, str) or not variable_key:
            return self._invalid_decision('Provided "variable_key" is in an invalid format.')
        flag = self._flag_input(feature_key, user_id, attributes)
        if flag is None:
            return None
        kind = self._engine.variable_type(flag, variable_key)
        if kind is None:
            logger.error('Variable with key "%s" not found in the datafile.', variable_key)
            return None
        if expected is not None and kind != expected:
            logger.warning(
                'Requested variable type "%s", but variable is of type "%s". '
                "Use correct API to retrieve value. Returning None.",
                expected,
                kind,
            )
            return None
        profile = self._load_profile_nowait(user_id)
        decision = self._engine.decide_flag(
            flag, UserInput(user_id, attributes or {}), {}, profile, include_reasons=False
        )
        self._save_profile_nowait(profile)
        value = self._engine.variable_value(flag, variable_key, decision.variation)
        if self.notification_center.has_listeners(NotificationType.DECISION):
            self._notify_decision(
                "feature-variable",
                user_id,
                attributes,
                {
                    "feature_key": feature_key,
                    "feature_enabled": decision.enabled,
                    "source": str(decision.rule_type),
                    "variable_key": variable_key,
                    "variable_value": value,
                    "variable_type": kind,
                    "source_info": self._source_info(decision),
                },
            )
        return value

    def _choices(self, options: Iterable[DecideOption | str] | None) -> _Choices:
        """What the client's default options and a call's ``options`` ask for."""
        if not options:
            return self._default_choices
        options = tuple(options)  # an iterator is read once, here
        key: frozenset[Any] | None = None
        try:
            key = frozenset(options)
        except TypeError:  # something unhashable: invalid, reported below
            pass
        else:
            cached = self._choices_cache.get(key)
            if cached is not None:
                return cached
        chosen = set(self._default_options)
        valid = True
        for option in options:
            try:
                chosen.add(DecideOption(option))
            except ValueError:
                # As Optimizely's SDK: an unknown option is ignored, the others apply.
                self._invalid_decision(f"Unknown decide option {option!r}: ignored.")
                valid = False
        choices = _Choices.of(chosen)
        if valid and key is not None and len(self._choices_cache) < 64:
            self._choices_cache[key] = choices  # only valid sets: a bad one logs each time
        return choices

    async def _decide(
        self,
        user: UserContext,
        keys: Sequence[str] | None,
        options: Iterable[DecideOption | str] | None,
    ) -> dict[str, Decision]:
        """Decide flags for a user: ``keys`` (``None`` for every flag of the datafile)."""
        self._require_started("decide")
        choices = self._choices(options)
        flags = self._config.flags_by_key
        wanted = [f.key for f in self._config.datafile.feature_flags] if keys is None else keys
        user_input = UserInput(user.user_id, user._attributes, user._segments)
        profile = await self._load_profile(user.user_id) if choices.use_profiles else None
        decisions: dict[str, Decision] = {}
        impressions: list[bytes] = []
        for key in wanted:
            flag = flags.get(key) if isinstance(key, str) else None
            if flag is None:
                decisions[key] = Decision(None, False, _NO_VARIABLES, None, key, user)
                continue
            result = self._flag_decision(user, user_input, flag, profile, choices, impressions)
            if result.enabled or not choices.enabled_only:
                decisions[key] = result
        if impressions:
            await self._enqueue(impressions)
        if profile is not None and profile.changed:
            await self._save_profile(profile)
        return decisions

    async def _decide_one(
        self, user: UserContext, key: str, options: Iterable[DecideOption | str] | None
    ) -> Decision:
        """:meth:`UserContext.decide` with options or a user profile service."""
        self._require_started("decide")
        choices = self._choices(options)
        flag = self._config.flags_by_key.get(key)
        if flag is None:
            return self._unknown_flag(user, key)
        profile = await self._load_profile(user.user_id) if choices.use_profiles else None
        user_input = UserInput(user.user_id, user._attributes, user._segments)
        impressions: list[bytes] = []
        result = self._flag_decision(user, user_input, flag, profile, choices, impressions)
        if impressions:
            await self._enqueue(impressions)
        if profile is not None and profile.changed:
            await self._save_profile(profile)
        return result

    def _decide_now(self, user: UserContext, key: str) -> Decision:
        """:meth:`UserContext.decide` without options, profiles or waiting for room.

        Nothing to await: the impressions are queued (or refused) at once.
        """
        if self._state == _NEW:
            self._require_started("decide")
        flag = self._config.flags_by_key.get(key)
        if flag is None:
            return self._unknown_flag(user, key)
        user_input = UserInput(user.user_id, user._attributes, user._segments)
        impressions: list[bytes] = []
        result = self._flag_decision(user, user_input, flag, None, _PLAIN, impressions)
        if impressions:
            self._enqueue_nowait(impressions)
        return result

    def _unknown_flag(self, user: UserContext, key: str) -> Decision:
        reason = f'No flag was found for key "{key}".'
        logger.error("No feature flag was found for key '%s'.", key)
        if self._strict:
            raise DecisionError(reason)
        return Decision(None, False, _NO_VARIABLES, None, key, user, (reason,))

    def _flag_decision(
        self,
        user: UserContext,
        user_input: UserInput,
        flag: FeatureFlag,
        profile: UserProfile | None,
        choices: _Choices,
        impressions: list[bytes],
    ) -> Decision:
        """Decide a flag for a user; the impressions it calls for go on ``impressions``."""
        decision = self._engine.decide_flag(
            flag, user_input, user._forced, profile, include_reasons=choices.with_reasons
        )
        enabled = decision.enabled
        variation = decision.variation
        dispatched = False
        if choices.send_impressions:
            rule_type = decision.rule_type
            side = decision.holdout
            if side is not None and rule_type is not _HOLDOUT:
                dispatched = self._flag_impression(
                    impressions, user.user_id, user._json(), flag.key, side, side.enabled
                )
            if (
                rule_type is _FEATURE_TEST
                or rule_type is _HOLDOUT
                or (self._config.send_flag_decisions)
            ):
                impressions.append(
                    self._factory.impression(
                        user.user_id,
                        user._json(),
                        flag.key,
                        decision.experiment,
                        variation,
                        rule_type or _ROLLOUT,
                        enabled,
                    )
                )
                dispatched = True
        variables: Mapping[str, Any] = _NO_VARIABLES
        if flag.variables and choices.with_variables:
            variables = MappingProxyType(self._engine.all_variables(flag, variation))
        result = Decision(
            variation.key if variation is not None else None,
            enabled,
            variables,
            decision.rule_key,
            flag.key,
            user,
            decision.reasons if choices.with_reasons else (),
        )
        if self.notification_center.has_listeners(_DECISION):
            self._notify_decision(
                "flag",
                user.user_id,
                user._attributes,
                {
                    "flag_key": flag.key,
                    "enabled": enabled,
                    "variables": dict(variables),
                    "variation_key": result.variation_key,
                    "rule_key": result.rule_key,
                    "reasons": list(result.reasons),
                    "decision_event_dispatched": dispatched,
                    "experiment_id": decision.experiment.id if decision.experiment else None,
                    "variation_id": variation.id if variation else None,
                },
            )
        return result

    def _flag_impression(
        self,
        impressions: list[bytes],
        user_id: str,
        attributes_json: str,
        flag_key: str,
        decision: VariationDecision,
        enabled: bool,
    ) -> bool:
        impressions.append(
            self._impression(
                user_id,
                attributes_json,
                flag_key,
                decision.experiment,
                decision.variation,
                decision.rule_type or RuleType.ROLLOUT,
                enabled,
            )
        )
        return True

    def _impression(
        self,
        user_id: str,
        attributes_json: str,
        flag_key: str,
        rule: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: RuleType,
        enabled: bool,
    ) -> bytes:
        """An impression, serialized.

        Without a rule (a flag-level forced decision, or nothing decided), the campaign,
        experiment and rule are empty, as Optimizely's SDK sends them.
        """
        return self._factory.impression(
            user_id, attributes_json, flag_key, rule, variation, rule_type, enabled
        )

    def _enqueue_nowait(self, impressions: list[bytes]) -> None:
        """Queue impressions (refusals are counted and logged by the processor)."""
        if self._state != _RUNNING:
            for _ in impressions:
                self._processor.refuse(Reason.CLOSED, "Impression not sent: the client is closed.")
            return
        for data in impressions:
            self._processor.put_nowait(self._context, data)

    async def _enqueue(self, impressions: list[bytes]) -> None:
        """Queue impressions, waiting for room when the overflow policy is BLOCK."""
        if self._state != _RUNNING or not self._block:
            self._enqueue_nowait(impressions)
            if self._processor.turn():
                await anyio.lowlevel.checkpoint()  # as in track
            return
        for data in impressions:
            await self._processor.put(self._context, data)

    def _load_profile_nowait(self, user_id: str) -> UserProfile | None:
        # Sync calls can use a service only through its optional sync twins.
        lookup = getattr(self._profiles, "lookup_nowait", None)
        if lookup is None:
            return None
        try:
            stored = lookup(user_id)
        except Exception:
            logger.exception('The user profile service failed to look up user "%s".', user_id)
            stored = None
        return UserProfile.from_lookup(user_id, stored)

    def _save_profile_nowait(self, profile: UserProfile | None) -> None:
        save = getattr(self._profiles, "save_nowait", None)
        if save is None or profile is None or not profile.changed:
            return
        try:
            save(profile.to_dict())
        except Exception:
            logger.exception('The user profile service failed to save user "%s".', profile.user_id)

    async def _load_profile(self, user_id: str) -> UserProfile | None:
        if self._profiles is None:
            return None
        try:
            stored = await self._profiles.lookup(user_id)
        except Exception:
            logger.exception('The user profile service failed to look up user "%s".', user_id)
            stored = None
        return UserProfile.from_lookup(user_id, stored)

    async def _save_profile(self, profile: UserProfile | None) -> None:
        if self._profiles is None or profile is None or not profile.changed:
            return
        try:
            await self._profiles.save(profile.to_dict())
        except Exception:
            logger.exception('The user profile service failed to save user "%s".', profile.user_id)

    def _require_started(self, method: str) -> None:
        if self._state == _NEW:
            raise ClientStateError(f"{method}() needs a running client: use `async with client:`")

    def _invalid_decision(self, message: str) -> None:
        logger.error("%s", message)
        if self._strict:
            raise DecisionError(message)

    def _user_input_ok(self, user_id: Any, attributes: Any) -> bool:
        if not isinstance(user_id, str):
            self._invalid_decision('Provided "user_id" is in an invalid format.')
            return False
        if attributes is not None and not isinstance(attributes, Mapping):
            self._invalid_decision("Provided attributes are in an invalid format.")
            return False
        return True

    def _experiment_input(
        self, experiment_key: Any, user_id: Any, attributes: Any
    ) -> Experiment | None:
        if not isinstance(experiment_key, str) or not experiment_key:
            self._invalid_decision('Provided "experiment_key" is in an invalid format.')
            return None
        if not isinstance(user_id, str):
            self._invalid_decision('Provided "user_id" is in an invalid format.')
            return None
        experiment = self._engine.experiment_by_key(experiment_key)
        if experiment is None:
            logger.info(
                'Experiment key "%s" is invalid. Not activating user "%s".', experiment_key, user_id
            )
            if self._strict:
                raise DecisionError(f'Experiment key "{experiment_key}" is not in the datafile.')
            return None
        if not self._user_input_ok(user_id, attributes):
            return None
        return experiment

    def _flag_input(self, feature_key: Any, user_id: Any, attributes: Any) -> FeatureFlag | None:
        if not isinstance(feature_key, str) or not feature_key:
            self._invalid_decision('Provided "feature_key" is in an invalid format.')
            return None
        if not self._user_input_ok(user_id, attributes):
            return None
        flag = self._config.flags_by_key.get(feature_key)
        if flag is None:
            self._invalid_decision(f'Feature "{feature_key}" is not in datafile.')
        return flag

    @staticmethod
    def _source_info(decision: VariationDecision) -> dict[str, Any]:
        if decision.rule_type in (RuleType.FEATURE_TEST, RuleType.HOLDOUT):
            return {"experiment_key": decision.rule_key, "variation_key": decision.variation_key}
        return {}

    def _notify_variation(
        self,
        experiment: Experiment,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        decision: VariationDecision,
    ) -> None:
        if self.notification_center.has_listeners(NotificationType.DECISION):
            kind = (
                "feature-test"
                if experiment.id in self._config.flags_by_experiment_id
                else "ab-test"
            )
            self._notify_decision(
                kind,
                user_id,
                attributes,
                {"experiment_key": experiment.key, "variation_key": decision.variation_key},
            )

    def _notify_decision(
        self,
        kind: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        info: Mapping[str, Any],
    ) -> None:
        self.notification_center.send(
            NotificationType.DECISION,
            DecisionNotification(kind, user_id, MappingProxyType(dict(attributes or {})), info),
        )

    # -- users -----------------------------------------------------------------------

    def create_user_context(
        self, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> UserContext:
        """A user, to track events and make decisions for.

        Args:
            user_id: The user's id.
            attributes: The user's attributes (copied).

        Returns:
            The user context.

        Raises:
            TypeError: ``user_id`` is not a str or ``attributes`` is not a mapping.
        """
        if not isinstance(user_id, str):
            raise TypeError(f"user_id must be a str, not {type(user_id).__name__}")
        if attributes is not None and not isinstance(attributes, Mapping):
            raise TypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        return UserContext(self, user_id, attributes)


class UserContext:
    """One user: their id and attributes, to track events and make decisions for.

    Made by :meth:`Client.create_user_context`.

    Attributes:
        user_id: The user's id.
    """

    # A context is made per request: slots make it cheaper to build and to read.
    __slots__ = (
        "__weakref__",
        "_attributes",
        "_attributes_json",
        "_forced",
        "_rendered_by",
        "_segments",
        "client",
        "user_id",
    )

    def __init__(
        self, client: Client, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        self.client = client
        self.user_id = user_id
        self._attributes: dict[str, Any] = dict(attributes or {})
        self._forced: dict[tuple[str, str | None], str] = {}
        self._segments: frozenset[str] | None = None
        self._attributes_json = ""
        self._rendered_by: EventFactory | None = None

    def _json(self) -> str:
        # The attributes as they go on the wire, rendered once per set of attributes and
        # datafile (attribute ids come from the datafile).
        factory = self.client._factory
        if self._rendered_by is not factory:
            self._attributes_json = factory.attributes_json(self._attributes)
            self._rendered_by = factory
        return self._attributes_json

    @property
    def attributes(self) -> dict[str, Any]:
        """A copy of the user's attributes."""
        return dict(self._attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute.

        Args:
            key: The attribute key.
            value: Its value.
        """
        self._attributes[key] = value
        self._rendered_by = None

    async def track_event(
        self, event_key: str, event_tags: Mapping[str, Any] | None = None
    ) -> TrackResult:
        """Record a conversion for this user (see :meth:`Client.track`).

        Args:
            event_key: The key of an event of the datafile.
            event_tags: Event tags.

        Returns:
            Whether the event was accepted and, when not, why.
        """
        client = self.client
        data = client._conversion(
            event_key, self.user_id, self._attributes, event_tags, self._json()
        )
        if type(data) is not bytes:
            return data  # type: ignore[return-value]
        if client._block:
            return await client._submit_blocking(
                data, event_key, self.user_id, self._attributes, event_tags
            )
        result = client._submit(data, event_key, self.user_id, self._attributes, event_tags)
        if client._processor.turn():
            await anyio.lowlevel.checkpoint()  # as in Client.track
        return result

    async def decide(
        self, key: str, options: Iterable[DecideOption | str] | None = None
    ) -> Decision:
        """Decide one flag for this user, and send the impression the decision calls for.

        An impression is sent when an experiment rule (or a holdout) decided; for a
        rollout rule, or when no rule did, only when the datafile's ``sendFlagDecisions``
        is true; never with ``DISABLE_DECISION_EVENT``.

        Args:
            key: The flag's key.
            options: Decide options, added to the client's defaults.

        Returns:
            The decision. For an unknown flag: not enabled, no variation, and a reason.

        Raises:
            DecisionError: An unknown flag and the client is strict.
            ClientStateError: The client was never entered.
        """
        client = self.client
        if not isinstance(key, str):
            client._invalid_decision(f"Flag key must be a str, not {key!r:.60}.")
            reason = f'No flag was found for key "{key}".'
            return Decision(None, False, _NO_VARIABLES, None, key, self, (reason,))
        if options is not None or not client._plain:
            return await client._decide_one(self, key, options)
        decision = client._decide_now(self, key)
        if client._processor.turn():
            await anyio.lowlevel.checkpoint()  # as in Client.track
        return decision

    async def decide_for_keys(
        self, keys: Sequence[str], options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide several flags for this user (see :meth:`decide`).

        Args:
            keys: The flags' keys.
            options: Decide options, added to the client's defaults.

        Returns:
            Flag key to decision; with ``ENABLED_FLAGS_ONLY``, the enabled ones only.
        """
        return await self.client._decide(self, list(keys), options)

    async def decide_all(
        self, options: Iterable[DecideOption | str] | None = None
    ) -> dict[str, Decision]:
        """Decide every flag of the datafile for this user (see :meth:`decide`).

        Args:
            options: Decide options, added to the client's defaults.

        Returns:
            Flag key to decision, in datafile order.
        """
        return await self.client._decide(self, None, options)

    def set_forced_decision(self, context: DecisionContext, decision: ForcedDecision) -> bool:
        """Force a variation for a flag, or for one rule of a flag, for this user.

        Args:
            context: The flag (and rule) it applies to.
            decision: The variation to force.

        Returns:
            Always ``True``; a variation the flag does not have is ignored at decide time,
            with a reason.
        """
        self._forced[(context.flag_key, context.rule_key)] = decision.variation_key
        return True

    def get_forced_decision(self, context: DecisionContext) -> ForcedDecision | None:
        """The forced decision set for a context, or ``None``.

        Args:
            context: The flag (and rule).

        Returns:
            The forced decision, or ``None``.
        """
        variation_key = self._forced.get((context.flag_key, context.rule_key))
        return ForcedDecision(variation_key) if variation_key is not None else None

    def remove_forced_decision(self, context: DecisionContext) -> bool:
        """Remove the forced decision of a context.

        Args:
            context: The flag (and rule).

        Returns:
            Whether there was one.
        """
        return self._forced.pop((context.flag_key, context.rule_key), None) is not None

    def remove_all_forced_decisions(self) -> bool:
        """Remove every forced decision of this user.

        Returns:
            Always ``True``.
        """
        self._forced.clear()
        return True

    @property
    def qualified_segments(self) -> frozenset[str] | None:
        """The user's qualified segments, for audiences with ``qualified`` conditions."""
        return self._segments

    @qualified_segments.setter
    def qualified_segments(self, segments: Iterable[str] | None) -> None:
        self._segments = None if segments is None else frozenset(segments)

    def is_qualified_for(self, segment: str) -> bool:
        """Whether the user is in a segment.

        Args:
            segment: The segment's name.

        Returns:
            Whether it is among :attr:`qualified_segments`.
        """
        return self._segments is not None and segment in self._segments

    def __repr__(self) -> str:
        return f"UserContext(user_id={self.user_id!r}, attributes={self._attributes!r})"
