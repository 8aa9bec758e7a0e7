"""optitrack.testing itself (its ``__init__``): one surface, whatever module is behind it."""

from __future__ import annotations

import collections.abc
import inspect
import typing

import optitrack.testing


def test_public_names_say_they_are_from_optitrack_testing() -> None:
    for name in optitrack.testing.__all__:
        member = getattr(optitrack.testing, name)
        if inspect.isclass(member) or inspect.isfunction(member):
            assert member.__module__ == "optitrack.testing", name
            typing.get_type_hints(member)  # their annotations resolve from there too
    assert collections.abc.MutableMapping.__module__ == "collections.abc"  # aliases untouched
