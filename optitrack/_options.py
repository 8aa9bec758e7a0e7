"""Decide options: what a call's options and the client's defaults ask for, read once.

Owns: reading options (an unknown one is reported and ignored, as Optimizely's SDK does)
and caching what each valid set asks for. Must not touch: deciding.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from ._user import DecideOption

__all__ = ["Choices", "DecideOptions"]


@dataclass(frozen=True, slots=True)
class Choices:
    """What a set of decide options asks for, worked out once per call."""

    send_impressions: bool = True
    with_reasons: bool = False
    with_variables: bool = True
    enabled_only: bool = False
    use_profiles: bool = True

    @classmethod
    def of(cls, options: Collection[DecideOption]) -> Choices:
        return cls(
            send_impressions=DecideOption.DISABLE_DECISION_EVENT not in options,
            with_reasons=DecideOption.INCLUDE_REASONS in options,
            with_variables=DecideOption.EXCLUDE_VARIABLES not in options,
            enabled_only=DecideOption.ENABLED_FLAGS_ONLY in options,
            use_profiles=DecideOption.IGNORE_USER_PROFILE_SERVICE not in options,
        )


class DecideOptions:
    """The client's default decide options, and what a call's options ask for.

    Args:
        defaults: The options added to every ``decide``.
        report: Called with a message for an unknown option (it logs, or raises when
            the client is strict).
    """

    def __init__(
        self, defaults: Iterable[DecideOption | str], report: Callable[[str], None]
    ) -> None:
        self._report = report
        self._cache: dict[frozenset[Any], Choices] = {}
        self.default_options = defaults

    @property
    def default_options(self) -> frozenset[DecideOption]:
        """The options added to every ``decide``."""
        return self._defaults

    @default_options.setter
    def default_options(self, options: Iterable[DecideOption | str]) -> None:
        self._defaults = frozenset(DecideOption(o) for o in options)
        #: What the defaults alone ask for.
        self.defaults = Choices.of(self._defaults)
        self._cache.clear()

    def read(self, options: Iterable[DecideOption | str]) -> Choices:
        """What the default options and a call's ``options`` ask for."""
        options = tuple(options)  # an iterator is read once, here
        key: frozenset[Any] | None = None
        try:
            key = frozenset(options)
        except TypeError:  # something unhashable: invalid, reported below
            pass
        else:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        chosen = set(self._defaults)
        valid = True
        for option in options:
            try:
                chosen.add(DecideOption(option))
            except ValueError:
                # As Optimizely's SDK: an unknown option is ignored, the others apply.
                self._report(f"Unknown decide option {option!r}: ignored.")
                valid = False
        choices = Choices.of(chosen)
        if valid and key is not None and len(self._cache) < 64:
            self._cache[key] = choices  # only valid sets: a bad one logs each time
        return choices
