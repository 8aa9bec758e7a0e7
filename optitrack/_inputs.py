"""Checking what a decision call was given, as Optimizely's SDK checks it.

Owns: the checks and their messages (logged; raised as :class:`DecisionError` when the
client is strict). Must not touch: deciding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._decisions import Experiment, FeatureFlag, ProjectConfig
from ._exceptions import DecisionError
from ._logging import logger

__all__ = ["Inputs"]


class Inputs:
    """Checks a decision call's keys, user id and attributes against the datafile.

    Args:
        config: The project config in use (the decider replaces it on a new datafile).
        strict: Raise instead of logging.
    """

    def __init__(self, config: ProjectConfig, strict: bool) -> None:
        self.config = config
        self._strict = strict

    def invalid(self, message: str) -> None:
        """Log a caller's mistake; raise :class:`DecisionError` when strict."""
        logger.error("%s", message)
        if self._strict:
            raise DecisionError(message)

    def _user_ok(self, user_id: Any, attributes: Any) -> bool:
        if not isinstance(user_id, str):
            self.invalid('Provided "user_id" is in an invalid format.')
            return False
        if not (attributes is None or type(attributes) is dict or isinstance(attributes, Mapping)):
            self.invalid("Provided attributes are in an invalid format.")
            return False
        return True

    def experiment(self, experiment_key: Any, user_id: Any, attributes: Any) -> Experiment | None:
        """The experiment a call names, or ``None`` (logged) for invalid input."""
        if not isinstance(experiment_key, str) or not experiment_key:
            self.invalid('Provided "experiment_key" is in an invalid format.')
            return None
        if not isinstance(user_id, str):
            self.invalid('Provided "user_id" is in an invalid format.')
            return None
        experiment = self.config.experiments_by_key.get(experiment_key)
        if experiment is None:
            logger.info(
                'Experiment key "%s" is invalid. Not activating user "%s".', experiment_key, user_id
            )
            if self._strict:
                raise DecisionError(f'Experiment key "{experiment_key}" is not in the datafile.')
            return None
        if not self._user_ok(user_id, attributes):
            return None
        return experiment

    def flag(self, feature_key: Any, user_id: Any, attributes: Any) -> FeatureFlag | None:
        """The flag a call names, or ``None`` (logged) for invalid input."""
        if not isinstance(feature_key, str) or not feature_key:
            self.invalid('Provided "feature_key" is in an invalid format.')
            return None
        if not self._user_ok(user_id, attributes):
            return None
        flag = self.config.flags_by_key.get(feature_key)
        if flag is None:
            self.invalid(f'Feature "{feature_key}" is not in datafile.')
        return flag
