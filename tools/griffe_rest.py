"""A griffe extension: optitrack's docstrings, as the API reference renders them.

The docstrings are Google style with a few reStructuredText habits, which read well in
the source and in ``help()``. mkdocstrings renders Markdown, so before it does, this
extension rewrites, in every docstring of the package:

- ``:class:`Client```, ``:meth:`~Client.track```, ``:mod:`...``` (any Sphinx role) into a
  link to the object's entry in the reference when it has one, or inline code otherwise;
- a paragraph ending in ``::`` followed by an indented block (a reST literal block) into
  the paragraph ending in ``:`` and a fenced ``python`` block;

gives attributes documented with ``#:`` comments (enum members, module constants)
those comments as their docstrings, as Sphinx's autodoc does; shows the value of a
default that names a constant (``batch_size: int = 1000``, not ``= DEFAULT_BATCH_SIZE``);
and folds a public class's private base (``Client``'s ``ClassicCalls``) into it, so the
reference shows its methods and no private name.

Used by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
Only the rendering changes: the source stays as it is.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import griffe

# The packages whose ``__all__`` the reference renders (see docs/reference/).
PUBLIC_PACKAGES = ("optitrack", "optitrack.testing")

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj):`(~?)\.?([^`]+)`")


class ReSTDocstrings(griffe.Extension):
    """optitrack's docstrings and signatures, turned into what the reference shows."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings of the whole package, once it is loaded.

        Args:
            pkg: The package loaded.
            loader: The loader, for the docstring parser of new docstrings.
            **kwargs: What else griffe passes.
        """
        if pkg.path != "optitrack":
            return
        for obj in _objects(pkg):
            if obj.is_attribute and obj.docstring is None:
                comment = _sphinx_comment(obj)
                if comment:
                    obj.docstring = griffe.Docstring(
                        comment,
                        lineno=obj.lineno,
                        parent=obj,
                        parser=loader.docstring_parser,
                        parser_options=loader.docstring_options,
                    )
        _inline_constants(pkg)
        targets = _public_targets(pkg)
        folded = _fold_private_bases(pkg, targets)
        rendered, public_of = _reference(targets, folded)
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue
            scopes = _scopes(obj, public_of)
            value = _literal_blocks(docstring.value)
            value = ROLE.sub(functools.partial(_link, scopes=scopes, rendered=rendered), value)
            if value != docstring.value:
                docstring.value = value
                docstring.__dict__.pop("parsed", None)  # a cached parse of the old text


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    # Every object defined in the package (aliases are skipped: their targets are here).
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Object):
            yield from _objects(member)


def _inline_constants(pkg: griffe.Module) -> None:
    # Defaults that name a module constant (`batch_size: int = DEFAULT_BATCH_SIZE`) show
    # its value (`= 1000`) in signatures and parameter tables, dataclass fields included
    # (griffe's dataclasses extension, which runs after this one, builds their __init__).
    def value_of(expr: str | griffe.Expr | None) -> str | griffe.Expr | None:
        if not isinstance(expr, griffe.ExprName) or not expr.name.isupper():
            return expr
        try:
            constant = pkg.modules_collection[expr.canonical_path]
            constant = constant.final_target if constant.is_alias else constant
        except (KeyError, griffe.AliasResolutionError):
            return expr
        if isinstance(constant, griffe.Attribute) and constant.value is not None:
            return constant.value
        return expr

    for obj in _objects(pkg):
        if isinstance(obj, griffe.Function):
            for parameter in obj.parameters:
                parameter.default = value_of(parameter.default)
        elif isinstance(obj, griffe.Attribute) and isinstance(obj.parent, griffe.Class):
            obj.value = value_of(obj.value)


def _sphinx_comment(obj: griffe.Object) -> str | None:
    # The ``#:`` lines right above the attribute's first line.
    if obj.lineno is None or not isinstance(obj.filepath, Path):
        return None
    try:
        lines = obj.lines_collection[obj.filepath]
    except KeyError:
        return None
    comment: list[str] = []
    index = obj.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(comment) or None


def _public_targets(pkg: griffe.Module) -> dict[str, griffe.Object]:
    # Public name ("optitrack.Client") -> the object behind it.
    targets: dict[str, griffe.Object] = {}
    for package_path in PUBLIC_PACKAGES:
        package = pkg if package_path == pkg.path else pkg.modules_collection[package_path]
        for name in package.exports or ():
            try:
                targets[f"{package_path}.{name}"] = package[str(name)].final_target
            except (KeyError, griffe.AliasResolutionError):
                continue
    return targets


def _fold_private_bases(pkg: griffe.Module, targets: dict[str, griffe.Object]) -> dict[str, str]:
    # A public class whose base is one of optitrack's classes that is not public (Client's
    # ClassicCalls, the stand-ins' FaultControls): the base's members become the class's
    # (as inherited ones), and the base is not shown, so no private name is. Returns
    # each such base's path -> the public name of (the first) class it was folded into.
    public = {target.path for target in targets.values()}
    folded: dict[str, str] = {}
    for public_name, cls in targets.items():
        if not isinstance(cls, griffe.Class):
            continue
        kept: list[str | griffe.Expr] = []
        for base in cls.bases:
            path = getattr(base, "canonical_path", str(base))
            try:
                resolved = pkg.modules_collection[path]
                resolved = resolved.final_target if resolved.is_alias else resolved
            except (KeyError, griffe.AliasResolutionError):
                kept.append(base)
                continue
            if not path.startswith("optitrack.") or resolved.path in public:
                kept.append(base)
                continue
            folded.setdefault(resolved.path, public_name)
            for name, member in resolved.all_members.items():
                if not name.startswith("_") and name not in cls.members:
                    cls.set_member(name, griffe.Alias(name, member, parent=cls, inherited=True))
        cls.bases = kept
    return folded


def _reference(
    targets: dict[str, griffe.Object], folded: dict[str, str]
) -> tuple[set[str], dict[str, str]]:
    # What the reference renders (each public name, and its members that have a
    # docstring), and the public path of each class behind a public name (and of the
    # classes they inherit from, whose methods they show).
    rendered: set[str] = set()
    public_of: dict[str, str] = dict(folded)
    for public, target in targets.items():
        rendered.add(public)
        public_of.setdefault(target.path, public)
        if not target.is_class:
            continue
        for base in _bases(target):
            public_of.setdefault(base.path, public)
        for member_name, member in target.all_members.items():
            if member_name.startswith("_"):
                continue
            try:
                documented = member.docstring is not None
            except griffe.AliasResolutionError:
                continue
            if documented:
                rendered.add(f"{public}.{member_name}")
    return rendered, public_of


def _bases(cls: griffe.Object) -> list[griffe.Class]:
    if not isinstance(cls, griffe.Class):
        return []
    try:
        return cls.mro()
    except (ValueError, griffe.AliasResolutionError):
        return []


def _scopes(obj: griffe.Object, public_of: dict[str, str]) -> list[str]:
    # Where a relative name in obj's docstring is looked up: its class (or itself, a
    # class), then the public packages.
    scopes: list[str] = []
    owner: griffe.Object | None = obj
    while owner is not None:
        if owner.is_class and owner.path in public_of:
            scopes.append(public_of[owner.path])
            break
        owner = owner.parent
    if obj.path in public_of:
        scopes.append(public_of[obj.path])
    return [*scopes, *PUBLIC_PACKAGES]


def _link(match: re.Match[str], *, scopes: list[str], rendered: set[str]) -> str:
    short, target = match.group(1) == "~", match.group(2)
    text = target.rsplit(".", 1)[-1] if short else target
    candidates = [target] if target.startswith("optitrack.") else []
    candidates += [f"{scope}.{target}" for scope in scopes]
    for candidate in candidates:
        if candidate in rendered:
            return f"[`{text}`][{candidate}]"
    return f"`{text}`"


def _literal_blocks(text: str) -> str:
    # "Paragraph::", a blank line, an indented block -> "Paragraph:" and a fence.
    if "::" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.rstrip().endswith("::") or line.strip() == "::":
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip())
        block: list[str] = []
        end = index
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            block.append(lines[end])
            end += 1
        while block and not block[-1].strip():
            block.pop()
            end -= 1
        if not any(part.strip() for part in block):
            out.append(line)
            continue
        out.append(line.rstrip()[:-1])
        code = textwrap.dedent("\n".join(block))
        margin = " " * indent
        out.append("")
        out.append(f"{margin}```python")
        out.extend(f"{margin}{part}" if part else "" for part in code.strip("\n").split("\n"))
        out.append(f"{margin}```")
        index = end
    return "\n".join(out)
