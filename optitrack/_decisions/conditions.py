"""Audience conditions: the leaves of audience trees, compiled once per datafile.

A condition is ``{name, type, match, value}``. Its ``type`` must be ``custom_attribute``
or ``third_party_dimension``; its ``match`` defaults to ``exact``. It evaluates to
``True``, ``False`` or ``None`` (unknown): anything unknown, a missing or ``None``
attribute, a value of the wrong type, a non-finite number or one beyond 2**53 is unknown
(``exists`` and ``qualified`` do not look at the attribute's type).

The behaviour is that of optimizely-sdk 5.7.0's ``helpers/condition.py``, down to its
quirks: ``exact`` treats ``bool`` as its own type, and semantic versions compare over the
target's parts only. Where that SDK raises (a non-ASCII digit in a version, an unhashable
name or match), the result here is unknown instead.

Compiled conditions are plain closures ``(attributes, qualified_segments) -> bool | None``;
nothing is parsed or allocated per evaluation beyond what the comparison needs.

Owns: each match type's semantics and the evaluator protocol. Must not touch: how
conditions combine into trees (:mod:`.audiences`), the datafile.
"""

from __future__ import annotations

import json
import math
import numbers
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

from .._logging import logger

__all__ = [
    "CONDITION_TYPES",
    "MATCH_TYPES",
    "Evaluator",
    "compare_semver",
    "compile_condition",
    "evaluate_condition",
    "is_finite_number",
    "is_strict",
    "mark_strict",
    "unknown",
]

#: A compiled tree or condition: ``(attributes, qualified_segments) -> True | False | None``.
Evaluator = Callable[[Mapping[str, Any], Collection[str] | None], bool | None]

#: Condition types that are evaluated; any other is unknown.
CONDITION_TYPES: Final = ("custom_attribute", "third_party_dimension")
#: Every supported ``match``.
MATCH_TYPES: Final = (
    "exact",
    "exists",
    "gt",
    "ge",
    "lt",
    "le",
    "substring",
    "semver_eq",
    "semver_gt",
    "semver_ge",
    "semver_lt",
    "semver_le",
    "qualified",
)

_MAX_NUMBER: Final = 2**53


def unknown(attributes: Mapping[str, Any], segments: Collection[str] | None) -> None:
    return None


# Evaluators known to return only True, False or None. Any other passes a leaf's raw
# comparison result (a numpy bool, say) up to the tree, whose "is True" and "is False"
# tests must then see it as optimizely-sdk's do; a lone operand of "and" or "or" can stand
# for its operator only when it is strict.
_STRICT: weakref.WeakSet[Evaluator] = weakref.WeakSet([unknown])


def mark_strict(evaluator: Evaluator) -> Evaluator:
    """Record that ``evaluator`` returns only ``True``, ``False`` or ``None``."""
    _STRICT.add(evaluator)
    return evaluator


def is_strict(evaluator: Evaluator) -> bool:
    """Whether ``evaluator`` was marked with :func:`mark_strict`."""
    return evaluator in _STRICT


# ---------------------------------------------------------------------------- value types


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:
        return True
    if kind is bool:
        return False
    return isinstance(value, numbers.Integral | float) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether a value is a usable number for audience conditions.

    Args:
        value: Any value.

    Returns:
        ``True`` for an ``int`` or ``float`` (not a ``bool``) that is neither NaN nor
        infinite and whose magnitude is at most 2**53.
    """
    if not _is_number(value):
        return False
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return False
    return not (isinstance(value, int | float) and abs(value) > _MAX_NUMBER)


def _is_exact_type(value: Any) -> bool:
    # A bool is an Integral, so it is valid here too; it is told apart by _same_type.
    return isinstance(value, str | numbers.Integral | float)


def _same_type(first: Any, second: Any) -> bool:
    if isinstance(first, str) and isinstance(second, str):
        return True
    if isinstance(first, bool) or isinstance(second, bool):
        return type(first) is type(second)
    return isinstance(first, numbers.Integral | float) and isinstance(
        second, numbers.Integral | float
    )


# ---------------------------------------------------------------------------- semver


def _is_pre_release(version: str) -> bool:
    if "-" in version:
        pre = version.find("-")
        build = version.find("+")
        return pre < build or build < 0
    return False


def _is_build(version: str) -> bool:
    if "+" in version:
        pre = version.find("-")
        build = version.find("+")
        return build < pre or pre < 0
    return False


def _split_version(version: str) -> list[str] | None:
    if " " in version:
        logger.warning("Provided attribute value is not in a valid semantic version format.")
        return None
    prefix = version
    suffix: list[str] = []
    if _is_pre_release(version) or _is_build(version):
        parts = version.split("-", 1) if _is_pre_release(version) else version.split("+", 1)
        prefix = parts[0]
        suffix = parts[1:]
    if prefix.count(".") > 2:
        logger.warning("Provided attribute value is not in a valid semantic version format.")
        return None
    core = prefix.split(".")
    for part in core:
        if not part.isdigit():
            logger.warning("Provided attribute value is not in a valid semantic version format.")
            return None
    return core + suffix


def compare_semver(target: str, user: str) -> int | None:
    """Compare a user's version with a condition's target version.

    The comparison runs over the target's parts only (a user ``"2.1.5"`` equals a target
    ``"2.1"``); a pre-release (``-``) or build (``+``) part compares as a string, and a
    pre-release is lower than the same version without one.

    Args:
        target: The condition's version.
        user: The user's version.

    Returns:
        ``-1``, ``0`` or ``1`` as the user's version is lower, equal or higher; ``None``
        when either is not a valid version (whitespace, more than two dots, an empty or
        non-numeric core part).
    """
    target_pre = _is_pre_release(target)
    user_pre = _is_pre_release(user)
    target_build = _is_build(target)
    target_parts = _split_version(target)
    if target_parts is None:
        return None
    user_parts = _split_version(user)
    if user_parts is None:
        return None
    user_len = len(user_parts)
    for index, target_part in enumerate(target_parts):
        if user_len <= index:
            return 1 if target_pre or target_build else -1
        user_part = user_parts[index]
        if not user_part.isdigit():
            if user_part < target_part:
                return 1 if target_pre and not user_pre else -1
            if user_part > target_part:
                return -1 if not target_pre and user_pre else 1
        else:
            try:
                user_number = int(user_part)
                target_number = int(target_part)
            except ValueError:  # optimizely-sdk raises here
                return None
            if user_number > target_number:
                return 1
            if user_number < target_number:
                return -1
    if user_pre and not target_pre:
        return -1
    return 0


# ---------------------------------------------------------------------------- conditions


def _describe(name: Any, value: Any, kind: Any, match: Any) -> str:
    try:
        return json.dumps({"name": name, "value": value, "type": kind, "match": match})
    except (TypeError, ValueError):
        return repr({"name": name, "value": value, "type": kind, "match": match})


def _unknown_with(message: str, *args: Any) -> Evaluator:
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> None:
        logger.warning(message, *args)
        return None

    return mark_strict(evaluate)


_UNKNOWN_VALUE = (
    "Audience condition %s has an unsupported condition value. You may need to upgrade to a "
    "newer release of the SDK."
)
_UNEXPECTED_TYPE = (
    'Audience condition %s evaluated to UNKNOWN because a value of type "%s" was passed for '
    'user attribute "%s".'
)
_INFINITE = (
    "Audience condition %s evaluated to UNKNOWN because the number value for user attribute "
    '"%s" is not in the range [-2^53, +2^53].'
)
_MISSING = (
    "Audience condition %s evaluated to UNKNOWN because no value was passed for user "
    'attribute "%s".'
)


def _exact(name: Any, value: Any, text: str) -> Evaluator:
    if not _is_exact_type(value) or (_is_number(value) and not is_finite_number(value)):
        return _attribute_required(name, text, _unknown_with(_UNKNOWN_VALUE, text))
    if isinstance(value, str):

        def evaluate_str(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
            user = attributes.get(name)
            if isinstance(user, str):
                return value == user
            if user is None:
                logger.debug(_MISSING, text, name)
            else:
                logger.warning(_UNEXPECTED_TYPE, text, type(user), name)
            return None

        return mark_strict(evaluate_str)

    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        user = attributes.get(name)
        if user is None:
            logger.debug(_MISSING, text, name)
            return None
        if not _is_exact_type(user) or not _same_type(value, user):
            logger.warning(_UNEXPECTED_TYPE, text, type(user), name)
            return None
        if _is_number(user) and not is_finite_number(user):
            logger.warning(_INFINITE, text, name)
            return None
        return value == user

    return evaluate


def _attribute_required(name: Any, text: str, then: Evaluator) -> Evaluator:
    # A missing or None attribute is unknown before anything else is looked at.
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        if attributes.get(name) is None:
            logger.debug(_MISSING, text, name)
            return None
        return then(attributes, segments)

    return mark_strict(evaluate) if is_strict(then) else evaluate


def _exists(name: Any, value: Any, text: str) -> Evaluator:
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> bool:
        return attributes.get(name) is not None

    return mark_strict(evaluate)


def _numeric(compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any, str], Evaluator]:
    def factory(name: Any, value: Any, text: str) -> Evaluator:
        if not is_finite_number(value):
            return _attribute_required(name, text, _unknown_with(_UNKNOWN_VALUE, text))

        def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
            user: Any = attributes.get(name)
            kind = type(user)
            if kind is int or kind is float:
                if -_MAX_NUMBER <= user <= _MAX_NUMBER:
                    return compare(user, value)
                # NaN, infinities and beyond 2**53 all fail the range test.
                logger.warning(_INFINITE, text, name)
                return None
            if user is None:
                logger.debug(_MISSING, text, name)
                return None
            if not _is_number(user):
                logger.warning(_UNEXPECTED_TYPE, text, type(user), name)
                return None
            if not is_finite_number(user):
                logger.warning(_INFINITE, text, name)
                return None
            return compare(user, value)

        return evaluate

    return factory


def _substring(name: Any, value: Any, text: str) -> Evaluator:
    if not isinstance(value, str):
        return _attribute_required(name, text, _unknown_with(_UNKNOWN_VALUE, text))

    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        user = attributes.get(name)
        if isinstance(user, str):
            return value in user
        if user is None:
            logger.debug(_MISSING, text, name)
        else:
            logger.warning(_UNEXPECTED_TYPE, text, type(user), name)
        return None

    return mark_strict(evaluate)


def _semver(test: Callable[[int], bool]) -> Callable[[Any, Any, str], Evaluator]:
    def factory(name: Any, value: Any, text: str) -> Evaluator:
        if not isinstance(value, str):
            return _attribute_required(name, text, _unknown_with(_UNKNOWN_VALUE, text))

        def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
            user = attributes.get(name)
            if not isinstance(user, str):
                if user is None:
                    logger.debug(_MISSING, text, name)
                else:
                    logger.warning(_UNEXPECTED_TYPE, text, type(user), name)
                return None
            result = compare_semver(value, user)
            return None if result is None else test(result)

        return mark_strict(evaluate)

    return factory


def _qualified(name: Any, value: Any, text: str) -> Evaluator:
    if not isinstance(value, str):
        return _unknown_with(_UNKNOWN_VALUE, text)

    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> bool:
        return segments is not None and value in segments

    return mark_strict(evaluate)


_FACTORIES: Final[dict[str, Callable[[Any, Any, str], Evaluator]]] = {
    "exact": _exact,
    "exists": _exists,
    "gt": _numeric(lambda user, value: user > value),
    "ge": _numeric(lambda user, value: user >= value),
    "lt": _numeric(lambda user, value: user < value),
    "le": _numeric(lambda user, value: user <= value),
    "substring": _substring,
    "semver_eq": _semver(lambda result: result == 0),
    "semver_gt": _semver(lambda result: result > 0),
    "semver_ge": _semver(lambda result: result >= 0),
    "semver_lt": _semver(lambda result: result < 0),
    "semver_le": _semver(lambda result: result <= 0),
    "qualified": _qualified,
}


def compile_condition(condition: Sequence[Any] | Mapping[str, Any]) -> Evaluator:
    """Compile one leaf condition.

    Args:
        condition: ``{"name", "value", "type", "match"}`` as in the datafile, or the
            ``[name, value, type, match]`` list it decodes to.

    Returns:
        The condition's evaluator.
    """
    if isinstance(condition, Mapping):
        name, value, kind, match = (
            condition.get("name"),
            condition.get("value"),
            condition.get("type"),
            condition.get("match"),
        )
    else:
        name, value, kind, match = condition
    text = _describe(name, value, kind, match)
    if kind not in CONDITION_TYPES:
        return _unknown_with(
            "Audience condition %s uses an unknown condition type. You may need to upgrade to "
            "a newer release of the SDK.",
            text,
        )
    if match is None:
        match = "exact"
    try:
        factory = _FACTORIES.get(match)
        if match != "qualified":  # the only match that never looks the attribute up
            hash(name)
    except TypeError:  # an unhashable match or name, on which optimizely-sdk raises
        return unknown
    if factory is None:
        return _unknown_with(
            "Audience condition %s uses an unknown match type. You may need to upgrade to a "
            "newer release of the SDK.",
            text,
        )
    return factory(name, value, text)


def evaluate_condition(
    condition: Mapping[str, Any],
    attributes: Mapping[str, Any],
    qualified_segments: Collection[str] | None = None,
) -> bool | None:
    """Evaluate one leaf condition (compiling it first; for tests and one-off use).

    Args:
        condition: ``{"name", "value", "type", "match"}`` as in the datafile.
        attributes: The user's attributes.
        qualified_segments: The user's qualified segments, for ``qualified``.

    Returns:
        ``True``, ``False``, or ``None`` for unknown.
    """
    return compile_condition(condition)(attributes, qualified_segments)


# ---------------------------------------------------------------------------- trees
