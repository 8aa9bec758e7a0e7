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

import logging
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from ._decisions import Experiment, Holdout, ProjectConfig, Variation
from ._delivery import BatchContext
from ._events_fast import FastConversions, kept
from ._logging import Throttled
from ._uuid import new_uuid
from ._values import (
    MAX_TAG_DEPTH,
    NOT_UNICODE,
    InvalidInputError,
    InvalidTagsError,
    attribute_value_json,
    encode_tags,
    not_unicode,
    revenue_of,
    value_of,
)
from ._version import __version__

__all__ = [
    "CLIENT_NAME",
    "MAX_TAG_DEPTH",
    "EventFactory",
    "InvalidInputError",
    "InvalidTagsError",
    "batch_context",
    "encode_tags",
]


CLIENT_NAME = "optitrack"
_CACHEABLE_TYPES = frozenset({str, int, bool})


#: ``(flag_key, rule, decided variation, rule_type)`` -> the variation an impression names
#: (see :meth:`~optitrack._decisions.DecisionEngine.impression_variation`).
ImpressionVariation = Callable[
    [str, Experiment | Holdout | None, Variation | None, str], Variation | None
]


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


class EventFactory(FastConversions):
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
        self._attributes_cache: dict[tuple[Any, ...], str] = {}
        if config.bot_filtering is None:
            self._bot_filtering = ""
        else:
            self._bot_filtering = (
                '{"entity_id":"$opt_bot_filtering","key":"$opt_bot_filtering",'
                '"type":"custom","value":%s}' % ("true" if config.bot_filtering else "false")
            )
        self._no_attributes = "[" + self._bot_filtering + "]"
        self._bot_suffix = "," + self._bot_filtering if self._bot_filtering else ""
        self._fast_caches()

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

        Raises:
            InvalidInputError: A string value is not valid Unicode.
        """
        if not attributes:
            return self._no_attributes
        # Attribute sets recur (a plan, a country, an app version): render each once.
        # The key is the pairs, then the values' exact types, so that 1, 1.0 and True
        # never share an entry. Only sets of str, int and bool values are kept (0.0 and
        # -0.0 are equal keys; a subclass may have an equality of its own): a key with
        # the same types as a kept one is such a set too, so a look-up checks nothing.
        try:
            key = (*attributes.items(), *map(type, attributes.values()))
            cached = self._attributes_cache.get(key)
        except TypeError:  # an unhashable value (a list): it is dropped anyway
            cacheable = False
        else:
            if cached is not None:
                return cached
            cacheable = _CACHEABLE_TYPES.issuperset(key[len(attributes) :])
        parts: list[str] = []
        heads = self._attribute_heads
        for name, value in attributes.items():
            value_json = attribute_value_json(value)
            if value_json is None or not isinstance(name, str):
                continue
            if "\\ud" in value_json and not_unicode(value):
                raise InvalidInputError("attributes", f"value of {name!r:.60} {NOT_UNICODE}")
            head = heads[name] if name in heads else self._attribute_head(name)
            if head is None:
                # Logged at every call that passes it, as Optimizely does, within the
                # anti-flood limit; so a set with one is never cached.
                self._unknown_attributes.log(
                    logging.ERROR, name, "Attribute %r is not in datafile.", name
                )
                cacheable = False
                continue
            parts.append(head + value_json + "}")
        if self._bot_filtering:
            parts.append(self._bot_filtering)
        text = "[" + ",".join(parts) + "]"
        if cacheable:
            kept(self._attributes_cache, key, text)
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
            InvalidInputError: The user id or an attribute is not valid Unicode.
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
        visitor = _json_str(user_id)
        if "\\ud" in visitor and not_unicode(user_id):
            raise InvalidInputError("user_id", NOT_UNICODE)
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

        Raises:
            InvalidInputError: The user id is not valid Unicode.
        """
        return self.visitor_impression(
            user_id,
            attributes_json,
            self.impression_fragment(flag_key, rule, variation, rule_type, enabled),
        )

    def impression_fragment(
        self,
        flag_key: str,
        rule: Experiment | Holdout | None,
        variation: Variation | None,
        rule_type: str,
        enabled: bool,
    ) -> str:
        """Everything of an impression but its visitor, timestamp and uuid, built once.

        Args:
            flag_key: The flag key; ``""`` for Activate.
            rule: The experiment or rule that decided, or ``None`` when none matched.
            variation: The variation, or ``None``.
            rule_type: ``experiment``, ``feature-test``, ``rollout`` or ``holdout``.
            enabled: The variation's ``featureEnabled`` (always true for Activate).

        Returns:
            The text :meth:`visitor_impression` completes.
        """
        # By identity: entities are frozen pydantic models, slow to hash by value. The
        # cache holds them, so their ids cannot be reused while they are keys.
        cached = self._impression_fragments.get(
            (flag_key, id(rule), id(variation), rule_type, enabled)
        )
        if cached is not None and cached[0] is rule and cached[1] is variation:
            return cached[2]
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

    @staticmethod
    def visitor_impression(user_id: str, attributes_json: str, fragment: str) -> bytes:
        """One impression as a visitor: a user, their attributes and a fragment, now.

        Args:
            user_id: The user id (the visitor id; never the bucketing id).
            attributes_json: The user's attributes, rendered by :meth:`attributes_json`.
            fragment: The decision's :meth:`impression_fragment`.

        Returns:
            The visitor as JSON bytes.

        Raises:
            InvalidInputError: The user id is not valid Unicode.
        """
        visitor = _json_str(user_id)
        if "\\ud" in visitor and not_unicode(user_id):
            raise InvalidInputError("user_id", NOT_UNICODE)
        text = (
            f'{{"visitor_id":{visitor},"attributes":{attributes_json},{fragment},'
            f'"timestamp":{time.time_ns() // 1_000_000},"uuid":"{new_uuid()}"}}]}}]}}'
        )
        return text.encode("ascii")
