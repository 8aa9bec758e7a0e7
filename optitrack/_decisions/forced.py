"""Forced variations: users put into a variation at run time, as Optimizely keeps them.

``set_forced_variation`` stores user id, then experiment id, to variation id; a later
decision of that experiment for that user returns the variation before anything else but
the experiment's status. They live for the client's lifetime and survive a new datafile
(looked up again by key in the datafile in use).

Owns: that map. Must not touch: deciding (:mod:`.experiments`).
"""

from __future__ import annotations

from .._logging import logger
from .datafile import Variation
from .project import ProjectConfig

__all__ = ["ForcedVariations"]


class ForcedVariations:
    """User id to experiment id to variation id, as in Optimizely's decision service."""

    __slots__ = ("by_user",)

    def __init__(self) -> None:
        self.by_user: dict[str, dict[str, str]] = {}

    def set(
        self,
        config: ProjectConfig,
        experiment_key: str,
        user_id: str,
        variation_key: str | None,
    ) -> bool:
        """Force a user into a variation of an experiment (or clear it with ``None``).

        Args:
            config: The project config to look the keys up in.
            experiment_key: The experiment key (Optimizely's look-up: the last with it).
            user_id: The user id.
            variation_key: The variation key, or ``None`` to remove the forced variation.

        Returns:
            Whether it was set (or cleared): ``False`` for an unknown experiment or
            variation, or an empty or non-``str`` key.
        """
        if not isinstance(experiment_key, str) or not experiment_key:
            logger.error('Provided "experiment_key" is in an invalid format.')
            return False
        if not isinstance(user_id, str):
            logger.error('Provided "user_id" is in an invalid format.')
            return False
        experiment = config.experiments_by_key.get(experiment_key)
        if experiment is None:
            logger.error("Experiment key %r is not in datafile.", experiment_key)
            return False
        if variation_key is None:
            forced = self.by_user.get(user_id)
            if forced is not None:
                forced.pop(experiment.id, None)
            return True
        if not isinstance(variation_key, str) or not variation_key:
            logger.debug("Variation key is invalid.")
            return False
        variation = config.variations_by_key.get(experiment_key, {}).get(variation_key)
        if variation is None:
            logger.error("Variation key %r is not in datafile.", variation_key)
            return False
        self.by_user.setdefault(user_id, {})[experiment.id] = variation.id
        logger.debug(
            'Set variation "%s" for experiment "%s" and user "%s" in the forced variation map.',
            variation.id,
            experiment.id,
            user_id,
        )
        return True

    def get(self, config: ProjectConfig, experiment_key: str, user_id: str) -> str | None:
        """The variation key a user is forced into for an experiment.

        Args:
            config: The project config to look the keys up in.
            experiment_key: The experiment key.
            user_id: The user id.

        Returns:
            The forced variation's key, or ``None``.
        """
        if not isinstance(experiment_key, str) or not isinstance(user_id, str):
            return None
        variation = self.variation(config, experiment_key, user_id, None)
        return variation.key if variation is not None else None

    def variation(
        self,
        config: ProjectConfig,
        experiment_key: str,
        user_id: str,
        reasons: list[str] | None,
    ) -> Variation | None:
        """The variation a user is forced into, noted in ``reasons``; ``None`` for none."""
        forced = self.by_user.get(user_id)
        if not forced:
            return None
        experiment = config.experiments_by_key.get(experiment_key)
        if experiment is None:
            return None
        variation_id = forced.get(experiment.id)
        if variation_id is None:
            return None
        by_id = config.variations_by_id.get(experiment_key)
        variation = by_id.get(variation_id) if by_id else None
        if variation is None:
            logger.error("Variation ID %r is not in datafile.", variation_id)
            return None
        if reasons is not None:
            reasons.append(
                f'Variation "{variation.key}" is mapped to experiment "{experiment_key}" and '
                f'user "{user_id}" in the forced variation map'
            )
        return variation
