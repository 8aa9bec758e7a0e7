"""Building user events as compact JSON bytes, once, at the call.

Each conversion or impression becomes one ``visitors[]`` entry of the Events API (the
shape ``_wire.py`` models), serialized to compact ASCII JSON the moment it is tracked.
Serializing at the call rejects bad values there (never NaN or a ``datetime`` in a
batch), gives exact byte accounting for the queue, and lets the sender join bytes instead
of re-encoding.

This is the hot path of ``track``: plain Python, JSON fragments cached per event and
attribute key, no pydantic. The wire models in ``_wire.py`` describe the same shape and
the tests hold the two together.

Owns: the Events API's format (visitors, and the batch context that frames them). Must
not touch: deciding, queueing or sending.
"""

from __future__ import annotations

import decimal
import json
import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from ._decisions import Experiment, Holdout, ProjectConfig, Variation
from ._delivery import BatchContext
from ._logging import Throttled
from ._uuid import new_uuid
from ._version import __version__

__all__ = [
    "CLIENT_NAME",
    "EventFactory",
    "InvalidTagsError",
    "batch_context",
]


CLIENT_NAME = "optitrack"
_MAX_SAFE_NUMBER = 2**53
_CLEANED_KEYS = frozenset({"revenue", "value", "tags", "decisions"})
_CACHEABLE_TYPES = frozenset({str, int, bool})

#: ``(flag_key, rule, decided variation, rule_type)`` -> the variation an impression names
#: (see :meth:`~optitrack._decisions.DecisionEngine.impression_variation`).
ImpressionVariation = Callable[
    [str, Experiment | Holdout | None, Variation | None, str], Variation | None
]


class InvalidTagsError(ValueError):
    """Event tags that cannot be sent as valid JSON (NaN, a ``datetime``, a cycle...)."""


#: The body's closing bytes, after the last visitor.
_BODY_SUFFIX = b"]}"


def batch_context(
    *,
    account_id: str,
    project_id: str,
    revision: str,
    anonymize_ip: bool,
    endpoint: str,
) -> BatchContext:
    """What events must share to travel in one request to the Events API.

    The Events API's envelope: the request body up to the opening of ``visitors``, and
    its close. Two contexts are equal when account, project, revision, ``anonymize_ip``
    and endpoint are, since all of them are in the prefix or the endpoint.

    Args:
        account_id: The datafile's account id.
        project_id: The datafile's project id.
        revision: The datafile's revision.
        anonymize_ip: Whether the Events API should anonymize the visitor's IP.
        endpoint: The Events API endpoint the events go to.

    Returns:
        The batch context for :mod:`optitrack._delivery`.
    """
    prefix = (
        '{"account_id":%s,"project_id":%s,"revision":%s,"client_name":%s,'
        '"client_version":%s,"anonymize_ip":%s,"enrich_decisions":true,"visitors":['
        % (
            _json_str(account_id),
            _json_str(project_id),
            _json_str(revision),
            _json_str(CLIENT_NAME),
            _json_str(__version__),
            "true" if anonymize_ip else "false",
        )
    ).encode("ascii")
    return BatchContext(endpoint, prefix, _BODY_SUFFIX)


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | decimal.Decimal):
        return float(value)
    raise TypeError(f"a {type(value).__name__} is not JSON ({value!r:.60})")


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


def _attribute_value_json(value: Any) -> str | None:
    # The value as JSON when Optimizely would send it: str, bool, or a finite number of
    # absolute value at most 2**53. None means "drop silently".
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value) if -_MAX_SAFE_NUMBER <= value <= _MAX_SAFE_NUMBER else None
    if kind is float:
        if math.isfinite(value) and -_MAX_SAFE_NUMBER <= value <= _MAX_SAFE_NUMBER:
            return float.__repr__(value)
        return None
    # Subclasses and other numeric types (IntEnum, numpy scalars...), the slow way.
    if isinstance(value, str):
        return _json_str(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return _attribute_value_json(int(value))
    if isinstance(value, float):
        return _attribute_value_json(float(value))
    return None


class EventFactory:
    """Turns track and decision calls into serialized ``visitors[]`` entries.

    One factory serves one :class:`ProjectConfig` and endpoint; it caches the JSON
    fragments that repeat (an event's ids, an attribute's entity id and key).

    Args:
        config: The project config.
        endpoint: The Events API endpoint the events go to.
    """

    def __init__(
        self,
        config: ProjectConfig,
        endpoint: str,
        impression_variation: ImpressionVariation | None = None,
    ) -> None:
        self.config = config
        self._impression_variation = impression_variation
        self.context = batch_context(
            account_id=config.account_id,
            project_id=config.project_id,
            revision=config.revision,
            anonymize_ip=config.anonymize_ip,
            endpoint=endpoint,
        )
        self._event_heads: dict[str, str] = {
            key: '"entity_id":%s,"key":%s' % (_json_str(event.id), _json_str(key))
            for key, event in config.events_by_key.items()
        }
        # attribute key -> '{"entity_id":..,"key":..,"type":"custom","value":' or None
        self._attribute_heads: dict[str, str | None] = {}
        self._unknown_attributes = Throttled()
        self._impression_fragments: dict[
            tuple[str, int, int, str, bool],
            tuple[Experiment | Holdout | None, Variation | None, str],
        ] = {}
        self._attributes_cache: dict[tuple[tuple[Any, ...], tuple[type, ...]], str] = {}
        if config.bot_filtering is None:
            self._bot_filtering = ""
        else:
            self._bot_filtering = (
                '{"entity_id":"$opt_bot_filtering","key":"$opt_bot_filtering",'
                '"type":"custom","value":%s}' % ("true" if config.bot_filtering else "false")
            )
        self._no_attributes = "[" + self._bot_filtering + "]"

    def _impression_fragment(
        self,
        flag_key: str,
        rule: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: str,
        enabled: bool,
    ) -> str:
        # Everything of an impression but the visitor, the timestamp and the uuid: the
        # same for every user who gets this decision, so it is built once.
        decided = variation
        if self._impression_variation is not None:
            variation = self._impression_variation(flag_key, rule, variation, rule_type)
        experiment_id = rule.id if rule is not None else ""
        # Only an experiment's layer is its campaign; a holdout's campaign is itself.
        layer_id = rule.layer_id if isinstance(rule, Experiment) else ""
        campaign_id = layer_id or experiment_id
        variation_id = variation.id if variation is not None else ""
        fragment = (
            '"snapshots":[{"decisions":[{"campaign_id":%s,"experiment_id":%s,'
            '"variation_id":%s,"metadata":{"flag_key":%s,"rule_key":%s,"rule_type":%s,'
            '"variation_key":%s,"enabled":%s}}],"events":[{"entity_id":%s,'
            '"key":"campaign_activated"'
            % (
                _json_str(campaign_id),
                _json_str(experiment_id),
                _json_str(variation_id)
                if variation_id.isascii() and variation_id.isdigit()
                else "null",
                _json_str(flag_key),
                _json_str(rule.key if rule is not None else ""),
                _json_str(rule_type),
                _json_str(variation.key if variation is not None else ""),
                "true" if enabled else "false",
                _json_str(campaign_id),
            )
        )
        if len(self._impression_fragments) < 10_000:  # bounded: flag keys may be anything
            key = (flag_key, id(rule), id(decided), rule_type, enabled)
            self._impression_fragments[key] = (rule, decided, fragment)
        return fragment

    def _attribute_head(self, key: str) -> str | None:
        entity_id = self.config.attribute_entity_id(key)
        head = None
        if entity_id is not None:
            head = '{"entity_id":%s,"key":%s,"type":"custom","value":' % (
                _json_str(entity_id),
                _json_str(key),
            )
        if len(self._attribute_heads) < 10_000:  # bounded: keys may come from users
            self._attribute_heads[key] = head
        return head

    def attributes_json(self, attributes: Mapping[str, Any] | None) -> str:
        """The visitor's ``attributes`` array as JSON, filtered as Track filters them.

        Args:
            attributes: The user's attributes, or ``None``.

        Returns:
            The JSON array text.
        """
        if not attributes:
            return self._no_attributes
        # Attribute sets recur (a plan, a country, an app version): render each once.
        # The key carries the values' types, so that 1, 1.0 and True never share an
        # entry; sets with a float are not cached (0.0 and -0.0 are equal keys), nor
        # with a subclass (a float's, or a type whose equality is its own).
        types = tuple(map(type, attributes.values()))
        cacheable = _CACHEABLE_TYPES.issuperset(types)
        if cacheable:
            try:
                key = (tuple(attributes.items()), types)
                cached = self._attributes_cache.get(key)
            except TypeError:  # an unhashable value (a list): it is dropped anyway
                cacheable = False
            else:
                if cached is not None:
                    return cached
        parts: list[str] = []
        heads = self._attribute_heads
        for name, value in attributes.items():
            value_json = _attribute_value_json(value)
            if value_json is None or not isinstance(name, str):
                continue
            head = heads[name] if name in heads else self._attribute_head(name)
            if head is None:
                # Logged at every call that passes it, as Optimizely does, within the
                # anti-flood limit; so a set with one is never cached.
                self._unknown_attributes.log(
                    logging.ERROR, name, 'Attribute "%s" is not in datafile.', name
                )
                cacheable = False
                continue
            parts.append(head + value_json + "}")
        if self._bot_filtering:
            parts.append(self._bot_filtering)
        text = "[" + ",".join(parts) + "]"
        if cacheable:
            if len(self._attributes_cache) >= 4096:  # bounded: values come from users
                self._attributes_cache.clear()
            self._attributes_cache[key] = text
        return text

    def conversion(
        self,
        event_key: str,
        user_id: str,
        attributes: Mapping[str, Any] | None,
        tags: Mapping[str, Any] | None,
        attributes_json: str | None = None,
        *,
        timestamp: int | None = None,
    ) -> bytes | None:
        """Serialize one conversion as a visitor.

        Args:
            event_key: The event key.
            user_id: The user id (the visitor id).
            attributes: The user's attributes (datafile and ``$opt_`` keys, valid values).
            tags: The event tags, or ``None``.
            attributes_json: ``attributes`` already rendered by :meth:`attributes_json`
                (a user context keeps it), or ``None``.
            timestamp: When the event happened, in milliseconds since the epoch
                (checked by the caller); ``None`` for now.

        Returns:
            The visitor as JSON bytes, or ``None`` when the event key is not in the
            datafile.

        Raises:
            InvalidTagsError: The tags cannot be sent as valid JSON.
        """
        head = self._event_heads.get(event_key)
        if head is None:
            return None
        extra = ""
        if tags is not None:
            tags_json = encode_tags(tags)
            if "revenue" in tags:
                revenue = revenue_of(tags)
                if revenue is not None:
                    extra = f',"revenue":{revenue}'  # an int, exactly (revenue_of)
            if "value" in tags:
                value = value_of(tags)
                if value is not None:
                    extra += ',"value":' + float.__repr__(value)
            extra = f'{extra},"tags":{tags_json}'
        # f-strings: a %-format with a %d costs twice as much, and this runs per event.
        visitor = _json_str(user_id)
        attributes_json = attributes_json or self.attributes_json(attributes)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        text = (
            f'{{"visitor_id":{visitor},"attributes":{attributes_json},"snapshots":[{{"events":'
            f'[{{{head},"timestamp":{timestamp},"uuid":"{new_uuid()}"{extra}}}]}}]}}'
        )
        return text.encode("ascii")

    def impression(
        self,
        user_id: str,
        attributes_json: str,
        flag_key: str,
        rule: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: str,
        enabled: bool,
    ) -> bytes:
        """Serialize one impression (a ``campaign_activated`` decision event) as a visitor.

        Args:
            user_id: The user id (the visitor id; never the bucketing id).
            attributes_json: The user's attributes, rendered by :meth:`attributes_json`.
            flag_key: The flag key; ``""`` for Activate.
            rule: The experiment or rule that decided, or ``None`` when none matched.
            variation: The variation, or ``None``.
            rule_type: ``experiment``, ``feature-test``, ``rollout`` or ``holdout``.
            enabled: The variation's ``featureEnabled`` (always true for Activate).

        Returns:
            The visitor as JSON bytes.
        """
        # By identity: entities are frozen pydantic models, slow to hash by value. The
        # cache holds them, so their ids cannot be reused while they are keys.
        cached = self._impression_fragments.get(
            (flag_key, id(rule), id(variation), rule_type, enabled)
        )
        if cached is not None and cached[0] is rule and cached[1] is variation:
            fragment = cached[2]
        else:
            fragment = self._impression_fragment(flag_key, rule, variation, rule_type, enabled)
        visitor = _json_str(user_id)
        timestamp = time.time_ns() // 1_000_000
        text = (
            f'{{"visitor_id":{visitor},"attributes":{attributes_json},{fragment},'
            f'"timestamp":{timestamp},"uuid":"{new_uuid()}"}}]}}]}}'
        )
        return text.encode("ascii")
