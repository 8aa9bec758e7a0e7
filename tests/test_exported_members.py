"""The public surface: everything in __all__ exists, is public, and is sorted."""

from __future__ import annotations

import inspect
import typing

import optitrack
import optitrack.testing


def test_all_is_sorted_and_complete() -> None:
    exported = optitrack.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(optitrack, name), name


def test_exported_members_say_they_are_from_the_package() -> None:
    # As httpx does: a private module's name never leaks into reprs, tracebacks or docs.
    for name in optitrack.__all__:
        member = getattr(optitrack, name)
        if name == "__version__":
            continue
        assert member.__module__ == "optitrack", (name, member.__module__)


def test_nothing_private_is_exported() -> None:
    for name in optitrack.__all__:
        assert not name.startswith("_") or name == "__version__", name


def test_public_names_have_docstrings() -> None:
    for module in (optitrack, optitrack.testing):
        for name in module.__all__:
            member = getattr(module, name)
            if inspect.isclass(member) or inspect.isfunction(member):
                assert member.__doc__, f"{module.__name__}.{name} has no docstring"


def test_type_hints_of_public_classes_resolve_from_the_package() -> None:
    # __module__ is "optitrack": the hints must resolve there (pydantic and docs tools
    # read them), so the modules that define these classes evaluate their annotations.
    for name in optitrack.__all__:
        member = getattr(optitrack, name)
        if inspect.isclass(member):
            typing.get_type_hints(member)
