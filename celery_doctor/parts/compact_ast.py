"""Syntax trees kept in less than half the memory: every node as a slotted object that answers as its `ast` class.

The source checks keep the trees of the files they read for the whole run, and a CPython `ast` node costs about
300 bytes: each has its own `__dict__` (a dict of six or seven keys). `compact` copies a tree into objects of
slotted classes, one per node class, in about 45% of the memory. They are `ast` nodes to every reader:

- `node.__class__` is the `ast` class (a class attribute), so `isinstance(node, ast.Call)` holds (isinstance
  consults `__class__` when the type itself does not match), and so do `ast.walk`, `ast.iter_child_nodes`,
  `ast.unparse`, `ast.literal_eval`, `ast.get_source_segment` and class patterns in `match`;
- the fields and the position attributes are slots, with `_fields`, `_attributes` and `__match_args__` copied;
- `type(node)` is the slotted class: code that dispatches on the class reads `node.__class__` instead.

Operator and context nodes (`ast.Load`, `ast.Add`, ...) are shared singletons in CPython and are kept as they are.
A module node keeps a `__dict__` (pyast.lazy caches its walks on it). Line numbers are shared int objects (a tree
holds two per node, and CPython makes a new int for every line number above 256).

The copy of one node class is a function generated from its fields (as `dataclasses` generates `__init__`): plain
attribute stores on slots are several times faster than a generic loop, and the copy costs less than the parse.
"""
from __future__ import annotations

import _ast
import ast
from typing import Callable, Optional

__all__ = ["CompactNode", "compact"]

_SINGLETONS = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
_LINES = ("lineno", "end_lineno")
_COLUMNS = ("col_offset", "end_col_offset")


class CompactNode:
    """The base of every compact node class (`type(node)`); `node.__class__` is the `ast` class it stands for."""

    __slots__ = ()


_copiers: dict[type, Callable] = {}  # ast class -> the function that copies one node of it (and its children)


def compact(tree: ast.AST) -> ast.AST:
    """A copy of the tree in compact nodes (the original is left as it is). Raises RecursionError on a tree nested
    deeper than the interpreter's recursion limit allows."""
    if isinstance(tree, CompactNode):
        return tree
    copier = (_copiers or _build_copiers()).get(tree.__class__)
    return copier(tree) if copier is not None else tree


def _node_classes() -> list[type]:
    return [value for value in vars(_ast).values()
            if isinstance(value, type) and issubclass(value, ast.AST) and not issubclass(value, _SINGLETONS)
            and value is not ast.AST]


def _build_copiers() -> dict[type, Callable]:
    lines: dict[int, int] = {}
    for real in _node_classes():
        _copiers[real] = _copier(real, lines)
    return _copiers


def _compact_class(real: type, names: tuple[str, ...], attributes: tuple[str, ...]) -> type:
    namespace = {
        "__slots__": names + (("__dict__",) if real is ast.Module else ()),
        "__class__": real, "_fields": real._fields, "_attributes": attributes,
        "__match_args__": getattr(real, "__match_args__", ()), "__module__": __name__,
    }
    for name, value in vars(real).items():  # deprecated aliases such as Constant.s and .n (ast.get_docstring reads .s)
        if isinstance(value, property) and name not in names:
            namespace[name] = value
    return type(real.__name__, (CompactNode,), namespace)


def _copier(real: type, lines: dict[int, int]) -> Callable:
    attributes = tuple(getattr(real, "_attributes", ()))
    names = tuple(real._fields) + attributes
    body = ["def copy(node):", "    values = node.__dict__", "    new = NEW(CLS)"]
    for name in names:
        if name in _LINES:
            body += [f"    value = values.get({name!r})",
                     f"    new.{name} = LINES.setdefault(value, value) if value is not None and value > 256 else value"]
        elif name in _COLUMNS:
            body.append(f"    new.{name} = values.get({name!r})")
        else:
            body += [f"    value = values.get({name!r})",
                     "    kind = value.__class__",
                     "    if kind is list:",
                     "        value = [COPY[item.__class__](item) if item.__class__ in COPY else item for item in value]",
                     "    elif kind in COPY:",
                     "        value = COPY[kind](value)",
                     f"    new.{name} = value"]
    body.append("    return new")
    namespace: dict[str, Optional[object]] = {"NEW": object.__new__, "CLS": _compact_class(real, names, attributes),
                                              "LINES": lines, "COPY": _copiers}
    exec("\n".join(body), namespace)  # code generated from the ast module's own field names, nothing else
    return namespace["copy"]
