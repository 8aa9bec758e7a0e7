"""The public surface: everything in __all__ exists, is public, and is sorted."""

from __future__ import annotations

import inspect

import optitrack
import optitrack.testing


def test_all_is_sorted_and_complete() -> None:
    exported = optitrack.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(optitrack, name), name


def test_exported_members_say_they_are_from_the_package() -> None:
    for name in optitrack.__all__:
        member = getattr(optitrack, name)
        module = getattr(member, "__module__", "optitrack")
        assert module.startswith("optitrack"), name


def test_public_names_have_docstrings() -> None:
    for module in (optitrack, optitrack.testing):
        for name in module.__all__:
            member = getattr(module, name)
            if inspect.isclass(member) or inspect.isfunction(member):
                assert member.__doc__, f"{module.__name__}.{name} has no docstring"
