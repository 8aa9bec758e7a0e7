"""Audience trees: an experiment's audiences and each audience's conditions, compiled.

An experiment's audience tree (``audienceConditions``, else ``audienceIds``) has audience
ids at its leaves; each audience's own tree has conditions at its leaves (compiled by
:mod:`.conditions`). Both are evaluated with three-valued logic (see :mod:`.conditions`),
the way optimizely-sdk 5.7.0's ``condition_tree_evaluator.py`` and ``audience.py`` do:

* ``["and", ...]`` is false if any operand is false, else unknown if any is unknown, else
  true; ``["or", ...]`` is true if any operand is true, else unknown if any is unknown,
  else false; ``["not", x, ...]`` negates its first operand only and keeps unknown (no
  operand: unknown). A list whose first item is not an operator is an OR of all items.
* Audiences are decoded the way that SDK decodes them: every JSON object becomes the
  index of a condition, so a condition whose ``value`` is an object compares against
  that index. Where that SDK raises (an empty list inside a tree, a leaf that is neither
  an audience id nor a condition), the result here is unknown instead.

Owns: the tree operators, decoding an audience's conditions as that SDK decodes them, and
compiling audiences and experiments' audience trees. Must not touch: a leaf condition's
semantics (:mod:`.conditions`), the datafile's indexes (:mod:`.project`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from .._logging import logger
from .conditions import Evaluator, compile_condition, is_strict, mark_strict, unknown
from .datafile import Audience, TypedAudience

__all__ = ["compile_audience", "compile_audience_conditions", "decode_conditions"]

_OPERATORS: Final = ("and", "or", "not")


def _compile_tree(tree: Any, leaf: Callable[[Any], Evaluator]) -> Evaluator:
    if not isinstance(tree, list | tuple):
        return leaf(tree)
    if not tree:  # optimizely-sdk raises IndexError on an empty list inside a tree
        return unknown
    head = tree[0]
    if isinstance(head, str) and head in _OPERATORS:
        operator, operands = head, tree[1:]
    else:
        operator, operands = "or", tree
    if operator == "not":
        # Only the first operand counts; the others are never evaluated.
        return _not(_compile_tree(operands[0], leaf)) if operands else unknown
    children = tuple(_compile_tree(operand, leaf) for operand in operands)
    if len(children) == 1 and is_strict(children[0]):
        return children[0]
    if operator == "and":
        return _and(children)
    return _or(children)


def _not(child: Evaluator) -> Evaluator:
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        result = child(attributes, segments)
        return None if result is None else not result

    return mark_strict(evaluate)


def _and(children: tuple[Evaluator, ...]) -> Evaluator:
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        unknown = False
        for child in children:
            result = child(attributes, segments)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return mark_strict(evaluate)


def _or(children: tuple[Evaluator, ...]) -> Evaluator:
    def evaluate(attributes: Mapping[str, Any], segments: Collection[str] | None) -> Any:
        unknown = False
        for child in children:
            result = child(attributes, segments)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return mark_strict(evaluate)


class _ConditionDecoder:
    # Mirrors optimizely-sdk: every JSON object becomes the index of its condition.
    def __init__(self) -> None:
        self.conditions: list[list[Any]] = []

    def object_hook(self, obj: dict[str, Any]) -> int:
        self.conditions.append(
            [obj.get("name"), obj.get("value"), obj.get("type"), obj.get("match")]
        )
        return len(self.conditions) - 1


def decode_conditions(text: str) -> tuple[Any, list[list[Any]]]:
    """Decode an audience's conditions the way Optimizely's SDK does.

    Args:
        text: The conditions as JSON text.

    Returns:
        The tree with every JSON object replaced by its index, and the conditions as
        ``[name, value, type, match]`` lists in that index order.

    Raises:
        ValueError: The text is not JSON.
    """
    decoder = _ConditionDecoder()
    structure = json.JSONDecoder(object_hook=decoder.object_hook).decode(text)
    return structure, decoder.conditions


def compile_audience(audience: Audience | TypedAudience) -> Evaluator:
    """Compile an audience's own condition tree.

    Args:
        audience: A legacy audience (conditions in a JSON string) or a typed one.

    Returns:
        The audience's evaluator; unknown when its conditions cannot be decoded.
    """
    try:
        text = (
            audience.conditions
            if isinstance(audience, Audience)
            else json.dumps(audience.conditions)
        )
        structure, conditions = decode_conditions(text)
    except (TypeError, ValueError):
        logger.warning("Audience %r has conditions that cannot be decoded.", audience.id)
        return unknown
    compiled: dict[int, Evaluator] = {}

    def leaf(index: Any) -> Evaluator:
        # Only an index (bool included, as list indexing allows) names a condition.
        if not isinstance(index, int) or not -len(conditions) <= index < len(conditions):
            return unknown
        if index not in compiled:
            compiled[index] = compile_condition(conditions[index])
        return compiled[index]

    return _compile_tree(structure, leaf)


def compile_audience_conditions(
    conditions: Any, audiences: Mapping[str, Evaluator]
) -> Evaluator | None:
    """Compile an experiment's (or rule's, or holdout's) audience tree.

    Args:
        conditions: ``audienceConditions`` when present, else the list of ``audienceIds``.
        audiences: Compiled audiences by id (see :func:`compile_audience`).

    Returns:
        ``None`` when everyone qualifies (no conditions or an empty list), else the
        evaluator. An audience id that is not in ``audiences`` is unknown.
    """
    if conditions is None or (isinstance(conditions, list | tuple) and not conditions):
        return None

    def leaf(audience_id: Any) -> Evaluator:
        try:
            return audiences.get(audience_id) or unknown
        except TypeError:  # an unhashable leaf, on which optimizely-sdk raises
            return unknown

    return _compile_tree(conditions, leaf)
