"""Feature variables: their types, and their typed values for a decided variation.

A variation's value is used when the variation's ``featureEnabled`` is true and it sets
the variable; otherwise the variable's default. ``boolean`` is ``value == "true"``,
``integer`` is ``int(value)``, ``double`` is ``float(value)``, ``json`` is
``json.loads(value)``, anything else stays as it is, as optimizely-sdk 5.7.0 casts them.

Owns: typing and casting variable values. Must not touch: deciding (:mod:`.engine`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._logging import logger
from .datafile import Variable, Variation

__all__ = ["cast", "raw_value", "variable_type"]


def variable_type(variable: Variable) -> str:
    """A variable's type as the typed getters check it (``json`` for a JSON string)."""
    # Datafiles declare JSON variables as strings with subType json.
    if variable.type == "string" and variable.sub_type == "json":
        return "json"
    return variable.type


def cast(value: Any, kind: str) -> Any:
    """A raw variable value cast to its type; ``None`` (logged) when it does not convert."""
    try:
        if kind == "boolean":
            return value == "true"
        if kind == "integer":
            return int(value)
        if kind == "double":
            return float(value)
        if kind == "json":
            return json.loads(value)
    except Exception:  # anything a bad value raises, as optimizely-sdk's bare except
        logger.error("Unable to cast value %r to %s. Returning None.", value, kind)
        return None
    return value


def raw_value(
    variable: Variable,
    variation: Variation | None,
    values: Mapping[str, Mapping[str, Any]],
) -> Any:
    """A variable's raw value for a decided variation.

    Args:
        variable: The variable.
        variation: The decided variation, or ``None``.
        values: Variation id, then variable id, to value (across the whole datafile, as
            Optimizely looks them up).

    Returns:
        The raw value; ``None`` (logged) when the variation is not in the datafile.
    """
    if variation is None or not variation.feature_enabled:
        return variable.default_value
    usages = values.get(variation.id)
    if usages is None:
        logger.error('Variation with ID "%s" is not in the datafile.', variation.id)
        return None
    return usages.get(variable.id, variable.default_value)
