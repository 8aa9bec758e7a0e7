"""User profile services: where sticky bucketing is kept, and reading and writing them.

Two protocols, because a call that cannot await cannot use an async service:

* :class:`UserProfileService` (``async lookup``, ``async save``) is what the async calls
  use: ``decide``, ``decide_for_keys``, ``decide_all``, ``activate``,
  ``is_feature_enabled`` and ``get_enabled_features``.
* :class:`SyncUserProfileService` (``lookup_nowait``, ``save_nowait``) is what the sync
  calls use: ``get_variation``, ``get_feature_variable*`` and
  ``get_all_feature_variables``. A service that is not also a
  :class:`SyncUserProfileService` is not used by those calls: they decide as if there
  were no profile.

:class:`InMemoryUserProfileService` is both.

Owns: the protocols, the in-memory service, and :class:`ProfileStore`, which reads and
writes a service around a decision (failures logged, never raised). Must not touch:
deciding (it hands :class:`~optitrack._decisions.UserProfile` records to the caller).
"""

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from ._decisions import UserProfile
from ._logging import logger

__all__ = [
    "InMemoryUserProfileService",
    "ProfileStore",
    "SyncUserProfileService",
    "UserProfileService",
]


@runtime_checkable
class UserProfileService(Protocol):
    """Stores which variation each user got, so that bucketing stays sticky.

    Profiles have Optimizely's shape:
    ``{"user_id": "u", "experiment_bucket_map": {"<experiment id>": {"variation_id": "<id>"}}}``.
    Both methods are awaited; an exception from either is logged and the decision goes on
    without the profile. The sync calls use a service only when it is also a
    :class:`SyncUserProfileService`.
    """

    async def lookup(self, user_id: str) -> Mapping[str, Any] | None:
        """Return the user's stored profile, or ``None``.

        Args:
            user_id: The user's id.
        """

    async def save(self, profile: Mapping[str, Any]) -> None:
        """Store a profile.

        Args:
            profile: The profile, as described above.
        """


@runtime_checkable
class SyncUserProfileService(Protocol):
    """A user profile service the sync calls can use: ``lookup`` and ``save`` that never wait.

    ``get_variation``, ``get_feature_variable*`` and ``get_all_feature_variables`` use the
    client's service only when it has these two methods as well (checked once, when the
    client is made). An exception from either is logged and the decision goes on without
    the profile.
    """

    def lookup_nowait(self, user_id: str) -> Mapping[str, Any] | None:
        """Return the user's stored profile, or ``None``, without waiting.

        Args:
            user_id: The user's id.
        """

    def save_nowait(self, profile: Mapping[str, Any]) -> None:
        """Store a profile without waiting.

        Args:
            profile: The profile.
        """


@dataclass
class InMemoryUserProfileService:
    """A user profile service in a dict, bounded, oldest profiles evicted first.

    It is both a :class:`UserProfileService` and a :class:`SyncUserProfileService`.

    Args:
        max_profiles: How many profiles to keep at most.
    """

    max_profiles: int = 100_000
    _profiles: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, repr=False)

    async def lookup(self, user_id: str) -> Mapping[str, Any] | None:
        """Return the user's stored profile, or ``None``.

        Args:
            user_id: The user's id.

        Returns:
            A read-only view of the profile.
        """
        return self.lookup_nowait(user_id)

    async def save(self, profile: Mapping[str, Any]) -> None:
        """Store a profile (a copy of it).

        Args:
            profile: The profile.
        """
        self.save_nowait(profile)

    def lookup_nowait(self, user_id: str) -> Mapping[str, Any] | None:
        """:meth:`lookup`, for the sync decision calls.

        Args:
            user_id: The user's id.

        Returns:
            A read-only view of the profile, or ``None``.
        """
        profile = self._profiles.get(user_id)
        if profile is None:
            return None
        self._profiles.move_to_end(user_id)
        return MappingProxyType(profile)

    def save_nowait(self, profile: Mapping[str, Any]) -> None:
        """:meth:`save`, for the sync decision calls.

        Args:
            profile: The profile.
        """
        user_id = profile["user_id"]
        self._profiles[user_id] = {
            "user_id": user_id,
            "experiment_bucket_map": {
                k: dict(v) for k, v in dict(profile.get("experiment_bucket_map", {})).items()
            },
        }
        self._profiles.move_to_end(user_id)
        while len(self._profiles) > self.max_profiles:
            self._profiles.popitem(last=False)

    def __len__(self) -> int:
        return len(self._profiles)


class ProfileStore:
    """Reads a user's profile before a decision and saves it after, when it changed.

    Args:
        service: The client's user profile service, or ``None``.

    Attributes:
        service: The service (``None`` for none).
        sync_service: The same service when it is a :class:`SyncUserProfileService`, for
            the sync calls; else ``None``.
    """

    __slots__ = ("service", "sync_service")

    def __init__(self, service: UserProfileService | None) -> None:
        self.service = service
        self.sync_service: SyncUserProfileService | None = (
            service if isinstance(service, SyncUserProfileService) else None
        )

    async def load(self, user_id: str) -> UserProfile | None:
        """The user's profile (empty when none or unreadable); ``None`` without a service."""
        if self.service is None:
            return None
        try:
            stored = await self.service.lookup(user_id)
        except Exception:
            # The user id and the traceback (which may hold it) only at DEBUG.
            logger.error("The user profile service failed to look up a user's profile.")
            logger.debug("Failed for user %r.", user_id, exc_info=True)
            stored = None
        return UserProfile.from_lookup(user_id, stored)

    async def save(self, profile: UserProfile | None) -> None:
        """Save a profile a decision changed (failures are logged)."""
        if self.service is None or profile is None or not profile.changed:
            return
        try:
            await self.service.save(profile.to_dict())
        except Exception:
            # The user id and the traceback (which may hold it) only at DEBUG.
            logger.error("The user profile service failed to save a user's profile.")
            logger.debug("Failed for user %r.", profile.user_id, exc_info=True)

    def load_nowait(self, user_id: str) -> UserProfile | None:
        """:meth:`load` for the sync calls: ``None`` without a sync service."""
        if self.sync_service is None:
            return None
        try:
            stored = self.sync_service.lookup_nowait(user_id)
        except Exception:
            # The user id and the traceback (which may hold it) only at DEBUG.
            logger.error("The user profile service failed to look up a user's profile.")
            logger.debug("Failed for user %r.", user_id, exc_info=True)
            stored = None
        return UserProfile.from_lookup(user_id, stored)

    def save_nowait(self, profile: UserProfile | None) -> None:
        """:meth:`save` for the sync calls."""
        if self.sync_service is None or profile is None or not profile.changed:
            return
        try:
            self.sync_service.save_nowait(profile.to_dict())
        except Exception:
            # The user id and the traceback (which may hold it) only at DEBUG.
            logger.error("The user profile service failed to save a user's profile.")
            logger.debug("Failed for user %r.", profile.user_id, exc_info=True)
