"""Optimizely's calls from before ``decide``, on the client: one thin method each.

``activate``, ``get_variation``, forced variations, ``is_feature_enabled``,
``get_enabled_features`` and the feature variable getters, as Optimizely's SDKs name
them. Each forwards to the decider, which makes every decision call the same way.

Owns: these public signatures and their documentation. Must not touch: deciding, which
is the decider's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._decider import Decider
from ._optimizely_config import OptimizelyConfig, optimizely_config_of

__all__ = ["ClassicCalls", "SyncCalls"]


class SyncCalls:
    """The calls of Optimizely's SDKs from before ``decide`` that never wait.

    Shared by :class:`Client` and :class:`SyncClient`.
    """

    _decider: Decider

    def get_variation(
        self, experiment_key: str, user_id: str, attributes: Mapping[str, Any] | None = None
    ) -> str | None:
        """The variation a user gets in an experiment; sends nothing.

        Being sync, it uses the user profile service only when it is also a
        :class:`SyncUserProfileService` (the in-memory one is).

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.
            attributes: The user's attributes, for audiences.

        Returns:
            The variation's key, or ``None``.

        Raises:
            DecisionError: Invalid input and the client is strict.
        """
        return self._decider.get_variation(experiment_key, user_id, attributes)

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
        return self._decider.engine.set_forced_variation(experiment_key, user_id, variation_key)

    def get_forced_variation(self, experiment_key: str, user_id: str) -> str | None:
        """The variation a user was forced into with :meth:`set_forced_variation`.

        Args:
            experiment_key: The experiment's key.
            user_id: The user's id.

        Returns:
            The variation's key, or ``None``.
        """
        return self._decider.engine.get_forced_variation(experiment_key, user_id)

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
        return self._decider.variable(feature_key, variable_key, user_id, attributes, None)

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
        value = self._variable(feature_key, variable_key, user_id, attributes, "string")
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
        value = self._variable(feature_key, variable_key, user_id, attributes, "integer")
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
        value = self._variable(feature_key, variable_key, user_id, attributes, "double")
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
        value = self._variable(feature_key, variable_key, user_id, attributes, "boolean")
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
        return self._variable(feature_key, variable_key, user_id, attributes, "json")

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
        return self._decider.all_variables(feature_key, user_id, attributes)

    def get_optimizely_config(self) -> OptimizelyConfig | None:
        """The project as Optimizely's SDKs describe it (``OptimizelyConfig``).

        Equal to what optimizely-sdk 5.7.0's ``get_optimizely_config()`` returns for the
        same datafile: revision, SDK and environment keys, attributes, audiences,
        events, experiments and flags with their variables and rules, and the datafile
        text. Built once per datafile.

        Returns:
            The config, or ``None`` while the client has no datafile.
        """
        if not self._decider.ready:
            return None
        return optimizely_config_of(self._decider.config)

    def _variable(
        self,
        feature_key: str,
        variable_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        kind: str,
    ) -> Any:
        return self._decider.variable(feature_key, variable_key, user_id, attributes, kind)


class ClassicCalls(SyncCalls):
    """The calls of Optimizely's SDKs from before ``decide`` (a part of :class:`Client`)."""

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
        return await self._decider.activate(experiment_key, user_id, attributes)

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
        return await self._decider.is_feature_enabled(feature_key, user_id, attributes)

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
            for flag in self._decider.config.datafile.feature_flags
            if await self.is_feature_enabled(flag.key, user_id, attributes)
        ]
