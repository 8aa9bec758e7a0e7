"""JSON values as the Events API gets them: event tags, attribute values, and refusals.

Optimizely's SDKs send tags as given (but for a few cleaned ``None`` keys), attribute
values only when they are strings, booleans or safe finite numbers, and a top-level
``revenue`` and ``value`` beside the tags. This module encodes them exactly so, and
refuses what the Events API would not take: NaN and other non-JSON values, strings that
are not valid Unicode, tags nested too deep.

Owns: those values' JSON text and the errors that refuse them. Must not touch: the
shape of events (``_events``).
"""

from __future__ import annotations

import decimal
import json
import math
import numbers
from collections.abc import Mapping
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

__all__ = [
    "MAX_SAFE_NUMBER",
    "MAX_TAG_DEPTH",
    "NOT_UNICODE",
    "InvalidInputError",
    "InvalidTagsError",
    "attribute_value_json",
    "encode_tags",
    "not_unicode",
    "revenue_of",
    "value_of",
]

MAX_SAFE_NUMBER = 2**53
_CLEANED_KEYS = frozenset({"revenue", "value", "tags", "decisions"})

#: How deep event tags may nest, the tags object itself being level 1. The Events API
#: refuses documents nested much deeper (its stand-in at 200 levels, the whole body).
MAX_TAG_DEPTH = 100


class InvalidTagsError(ValueError):
    """Event tags that cannot be sent as valid JSON (NaN, a ``datetime``, a cycle...)."""


class InvalidInputError(ValueError):
    """A user id or attribute that cannot be sent as it is (not valid Unicode).

    Args:
        argument: The argument at fault (``user_id`` or ``attributes``).
        problem: What is wrong with it.
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}")
        self.argument = argument
        self.problem = problem


NOT_UNICODE = "holds a surrogate code point: not valid Unicode, so not sendable as JSON text"


def not_unicode(text: str) -> bool:
    # Lone or paired surrogates (U+D800..U+DFFF) are not Unicode scalar values: UTF-8
    # has no encoding for them, and a JSON parser would read an escaped pair as another,
    # single character.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _holds_non_unicode(value: Any) -> bool:
    # Any string in value, keys included, at any depth (deep values were checked for depth).
    if isinstance(value, str):
        return not_unicode(value)
    if isinstance(value, Mapping):
        return any(_holds_non_unicode(k) or _holds_non_unicode(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_non_unicode(v) for v in value)
    return False


def _too_deep(value: Any, room: int) -> bool:
    # Whether containers nest more than ``room`` levels deep in value.
    if isinstance(value, Mapping):
        return room <= 0 or any(_too_deep(v, room - 1) for v in value.values())
    if isinstance(value, list | tuple):
        return room <= 0 or any(_too_deep(v, room - 1) for v in value)
    return False


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | decimal.Decimal):
        return float(value)
    raise TypeError(f"a {type(value).__name__} is not JSON")  # never the value: it is logged


# The C encoder itself, made once: JSONEncoder.encode() makes one per call. No markers:
# a cycle ends in RecursionError, which refuses the tags like any other bad value.
_encode_tags_c = c_make_encoder(None, _json_default, _json_str, None, ":", ",", False, False, False)


def _to_json(value: Any) -> str:
    return "".join(_encode_tags_c(value, 0))


def _clean(value: Any) -> Any:
    # Optimizely's SDK drops, at any depth, a key named revenue, value, tags or decisions
    # whose value is None (its payload goes through an object_pairs_hook that does so).
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not (v is None and k in _CLEANED_KEYS)}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def encode_tags(tags: Mapping[str, Any]) -> str:
    """Serialize event tags to compact JSON as Optimizely sends them.

    Args:
        tags: The caller's event tags.

    Returns:
        The JSON text.

    Raises:
        InvalidTagsError: A value is NaN or infinite, is not JSON-serializable, or the
            tags hold a reference cycle.
    """
    if type(tags) is not dict:
        tags = dict(tags)
    try:
        text = _to_json(tags)
        if "null" in text:  # rare: only then can there be a None to clean
            text = _to_json(_clean(_json_roundtrip(tags)))
    except ValueError as exc:
        message = str(exc)
        if "Out of range float" in message:
            message = "NaN and Infinity are not valid JSON"
        raise InvalidTagsError(f"event tags are not valid JSON: {message}") from exc
    except (TypeError, RecursionError) as exc:
        raise InvalidTagsError(f"event tags are not valid JSON: {exc}") from exc
    # Both checks are rare: only nesting, or a \\ud... escape in the text, can need them.
    if text.count("{") + text.count("[") > MAX_TAG_DEPTH and _too_deep(tags, MAX_TAG_DEPTH):
        raise InvalidTagsError(f"event tags nest deeper than {MAX_TAG_DEPTH} levels")
    if "\\" in text and "\\ud" in text and _holds_non_unicode(tags):
        raise InvalidTagsError(f"event tags: a string {NOT_UNICODE}")
    return text


def _json_roundtrip(tags: dict[str, Any]) -> Any:
    # Normalize to plain dicts and lists (mappings, tuples, numeric types) before cleaning.
    return json.loads(_to_json(tags)) if _has_non_plain(tags) else tags


def _has_non_plain(value: Any) -> bool:
    if type(value) is dict:
        return any(_has_non_plain(v) for v in value.values())
    if type(value) is list:
        return any(_has_non_plain(v) for v in value)
    return not (value is None or type(value) in (str, int, float, bool))


def revenue_of(tags: Mapping[str, Any]) -> int | None:
    """The top-level ``revenue``: ``tags["revenue"]`` when it is an integer (not a bool)."""
    raw = tags.get("revenue")
    if type(raw) is int:
        return raw
    if raw is None or type(raw) in (float, str, bool):
        return None
    if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
        return int(raw)
    return None


def value_of(tags: Mapping[str, Any]) -> float | None:
    """The top-level ``value``: ``tags["value"]`` as a finite float, when it parses as one."""
    raw = tags.get("value")
    if raw is None:
        return None
    kind = type(raw)
    if (
        kind is not float
        and kind is not int
        and kind is not str
        and (isinstance(raw, bool) or not isinstance(raw, numbers.Integral | float | str))
    ):
        return None
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def attribute_value_json(value: Any) -> str | None:
    # The value as JSON when Optimizely would send it: str, bool, or a finite number of
    # absolute value at most 2**53. None means "drop silently".
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value) if -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER else None
    if kind is float:
        if math.isfinite(value) and -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER:
            return float.__repr__(value)
        return None
    # Subclasses and other numeric types (IntEnum, numpy scalars...), the slow way.
    if isinstance(value, str):
        return _json_str(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return attribute_value_json(int(value))
    if isinstance(value, float):
        return attribute_value_json(float(value))
    return None
