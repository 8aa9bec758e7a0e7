"""The track fast path: the common conversion, flattened, with its own caches.

Nearly every ``track`` is the same kind of call: a known event key, an ASCII user id, a
few attributes of known keys with plain values, and flat tags. :class:`FastConversions`
turns that call into the visitor's bytes in one function, with the JSON of recurring
pieces kept (whole sets of string attributes, each (key, string value) pair, tag keys);
any other call is declined (``None``) and taken the general way
(:meth:`optitrack._events.EventFactory.conversion`), which checks everything and says
what is wrong. The bytes are the same whichever way an event goes: the tests compare them
on generated inputs.

Owns: that path and its caches. Must not touch: the general way, the format's other
parts (:mod:`optitrack._events`).
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from ._uuid import new_uuid
from ._values import MAX_SAFE_NUMBER

__all__ = ["FastConversions", "kept"]


def kept(cache: dict[Any, str], key: Any, text: str) -> str:
    """Keep ``text`` in a cache of rendered JSON, bounded (its keys come from users)."""
    if len(cache) >= 4096:
        cache.clear()
    cache[key] = text
    return text


class FastConversions:
    """The common conversion (a part of the event factory, whose fragments it reads)."""

    _event_heads: dict[str, str]
    _attribute_heads: dict[str, str | None]
    _no_attributes: str
    _bot_suffix: str

    def _fast_caches(self) -> None:
        # (attribute key, string value) -> ',{...}': the rendered attributes.
        self._string_parts: dict[tuple[str, str], str] = {}
        # (pair, ...) -> '[...]': whole sets of string-valued attributes, rendered.
        self._string_sets: dict[tuple[tuple[str, str], ...], str] = {}
        # (tag key, string value) -> ',"key":"value"', and tag key -> ',"key":'.
        self._tag_parts: dict[tuple[str, str], str] = {}
        self._tag_keys: dict[str, str] = {}

    def _small_attributes(self, items: tuple[tuple[Any, Any], ...]) -> str | None:
        """A few attributes rendered pair by pair for :meth:`fast_conversion`, or
        ``None`` when they are not all known keys with plain values."""
        # Each (key, string value) pair's JSON is kept: plans, countries, versions recur.
        parts = self._string_parts
        text = ""
        strings = True
        for item in items:
            name, value = item
            kind = type(value)
            if kind is str:
                part = parts.get(item)
                if part is None:
                    attribute_head = self._attribute_heads.get(name)
                    if attribute_head is None or not value.isascii():
                        return None  # unknown (logged), not seen yet, or non-ASCII
                    part = kept(parts, item, "," + attribute_head + _json_str(value) + "}")
                text += part
                continue
            attribute_head = self._attribute_heads.get(name)
            if attribute_head is None:
                return None
            strings = False
            if kind is bool:
                text += "," + attribute_head + ("true}" if value else "false}")
            elif kind is int and -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER:
                text += "," + attribute_head + int.__repr__(value) + "}"
            else:
                return None
        text = "[" + text[1:] + self._bot_suffix + "]"
        if strings:
            kept(self._string_sets, items, text)
        return text

    def fast_conversion(
        self,
        event_key: Any,
        user_id: Any,
        attributes: Any,
        tags: Any,
        attributes_json: str | None = None,
        timestamp: int | None = None,
    ) -> bytes | None:
        """:meth:`conversion` for the common call, or ``None`` when the call is not one.

        The common call: a known event key, an ASCII user id, plain dicts of known
        attributes with plain values, and flat tags of ASCII strings, integers, booleans
        and finite floats. Anything else returns ``None``, for
        :meth:`conversion` to take it the general way (and refuse it when it must): so
        the bytes are the same whichever way an event goes, and this path needs no error
        handling. Flattened on purpose: it runs for nearly every ``track``.
        """
        if type(event_key) is not str or type(user_id) is not str or not user_id.isascii():
            return None
        head = self._event_heads.get(event_key)
        if head is None:
            return None
        if attributes_json is not None:
            pass  # a user context's, rendered once
        elif attributes is None or (type(attributes) is dict and not attributes):
            attributes_json = self._no_attributes
        elif type(attributes) is dict and len(attributes) <= 4:
            # Sets of string values recur whole (a plan and a country): each is kept.
            # Only exact strings are, and a str never equals another type, so a set with
            # another value never finds a kept one: it is rendered pair by pair.
            items = tuple(attributes.items())
            try:
                attributes_json = self._string_sets.get(items)
            except TypeError:
                return None  # an unhashable value: refused the general way
            if attributes_json is None:
                attributes_json = self._small_attributes(items)
                if attributes_json is None:
                    return None
        else:
            return None
        if tags is None:
            extra = ""
        elif type(tags) is dict:
            # Flat tags, written as the general way's encoder writes them: each (key,
            # string value) pair's JSON is kept, like the attributes' parts; numbers are
            # written by their own repr, as that encoder does.
            parts = self._tag_parts
            text = ""
            try:
                for item in tags.items():
                    name, value = item
                    kind = type(value)
                    if kind is str:
                        part = parts.get(item)
                        if part is None:
                            if type(name) is not str or not (name.isascii() and value.isascii()):
                                return None  # not a str key; non-ASCII is checked the general way
                            part = kept(parts, item, "," + _json_str(name) + ":" + _json_str(value))
                        text += part
                        continue
                    key = self._tag_keys.get(name)
                    if key is None:
                        if type(name) is not str or not name.isascii():
                            return None
                        key = kept(self._tag_keys, name, "," + _json_str(name) + ":")
                    if kind is int:
                        text += key + int.__repr__(value)  # ValueError past 4300 digits
                    elif kind is bool:
                        text += key + ("true" if value else "false")
                    elif kind is float and value - value == 0.0:  # finite: not NaN, not inf
                        text += key + float.__repr__(value)
                    else:
                        return None  # None (cleaned for some keys), containers, others
            except ValueError:
                return None  # an integer too long to write: refused the general way
            # A tag that is None has been declined above: absent reads as None here.
            revenue = tags.get("revenue")
            extra = f',"revenue":{revenue}' if type(revenue) is int else ""
            value = tags.get("value")
            if value is not None:
                kind = type(value)
                if kind is float or (kind is int and -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER):
                    extra += ',"value":' + float.__repr__(float(value))
                elif kind is not bool:
                    return None  # a numeric string, a huge integer: value_of knows them
            extra = f'{extra},"tags":{{{text[1:]}}}'
        else:
            return None
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        text = (
            f'{{"visitor_id":{_json_str(user_id)},"attributes":{attributes_json},"snapshots":'
            f'[{{"events":[{{{head},"timestamp":{timestamp},"uuid":"{new_uuid()}"{extra}}}]}}]}}'
        )
        return text.encode("ascii")
