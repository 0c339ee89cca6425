"""Types a component's settings may be annotated with, and reading an annotation without running it.

A component declares its settings as keyword-only parameters (:mod:`lvas.registry`); their
annotations type them. Besides the plain types (``int``, ``float``, ``bool``, ``str``, ``None``,
``list[...]``, ``Literal[...]``, ``X | Y``) a setting may use the constrained ones below, e.g.::

    def __init__(self, channels: int, text_channels: int, *, layers: PositiveInt = 4): ...

Annotations are read as text (the index stores them so) and turned into types by :func:`parse`,
which walks their syntax tree and never evaluates code.
"""

from __future__ import annotations

import ast
from typing import Annotated, Any, Literal, Optional, Sequence, Union

from lvas import catalogue as _catalogue


class Check:
    """A constraint on a setting's value: ``ok(value)``, and what was expected (for the message: a
    text, or a function of the refused value that says why it is refused)."""

    def __init__(self, ok, expected: str) -> None:
        self.ok, self.expected = ok, expected


PositiveInt = Annotated[int, Check(lambda v: v > 0, "a positive integer")]
NonNegativeInt = Annotated[int, Check(lambda v: v >= 0, "an integer >= 0")]
PositiveFloat = Annotated[float, Check(lambda v: v > 0, "a positive number")]
NonNegativeFloat = Annotated[float, Check(lambda v: v >= 0, "a number >= 0")]
Fraction = Annotated[float, Check(lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")]
Stages = Annotated[list[int], Check(lambda v: all(1 <= s <= 5 for s in v) and len(set(v)) == len(v),
                                    "distinct stage numbers in 1..5")]
Milestones = Annotated[list[int], Check(lambda v: all(m > 0 for m in v) and list(v) == sorted(set(v)),
                                        "increasing positive epoch numbers")]
MetricName = Annotated[str, Check(lambda v: v in _catalogue.METRICS, "a metric of lvas.catalogue (AP, oIoU, mIoU, "
                                                                    "P@0.5 .. P@0.9, J, F, JF, ...)")]
# integers a config may hold: a value beyond this is a typo, not a setting (torch and numpy overflow)
MAX_INT = 2**62

NAMES: dict[str, Any] = {
    "int": int, "float": float, "bool": bool, "str": str, "None": type(None), "list": list, "dict": dict,
    "tuple": list, "Sequence": list, "Literal": Literal, "Optional": Optional, "Union": Union, "Any": Any,
    "PositiveInt": PositiveInt, "NonNegativeInt": NonNegativeInt, "PositiveFloat": PositiveFloat,
    "NonNegativeFloat": NonNegativeFloat, "Fraction": Fraction, "Stages": Stages, "Milestones": Milestones,
    "MetricName": MetricName,
}


def parse(text: str) -> Any:
    """The type an annotation text names; ``Any`` for what it cannot read (no check then)."""
    try:
        return _node(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, KeyError, TypeError):
        return Any


def _node(n: ast.AST) -> Any:
    if isinstance(n, ast.Constant):
        if n.value is None:
            return type(None)
        if isinstance(n.value, str):  # a quoted annotation
            return parse(n.value)
        raise ValueError(n.value)
    if isinstance(n, ast.Name):
        return NAMES[n.id]
    if isinstance(n, ast.Attribute):  # typing.Literal, lvas.settings.PositiveInt
        return NAMES[n.attr]
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
        return Union[_node(n.left), _node(n.right)]
    if isinstance(n, ast.Subscript):
        base = _node(n.value)
        args = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
        if base is Literal:
            return Literal[tuple(ast.literal_eval(a) for a in args)]
        items = [_node(a) for a in args]
        if base is list:
            return list[items[0]]
        if base is dict:
            return dict
        if base is Optional:
            return Optional[items[0]]
        if base is Union:
            return Union[tuple(items)]
    raise ValueError(ast.dump(n))


__all__ = ["Check", "PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "Fraction", "Stages",
           "Milestones", "MetricName", "parse", "Sequence"]
