"""AST helpers for single expressions: names, keywords, literal durations, datetimes, source text."""
from __future__ import annotations

import ast
from typing import Callable, Optional

from ..parts.source import SourceFile

_TIMEDELTA_UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1,
                    "milliseconds": 0.001, "microseconds": 0.000001}
_TIMEDELTA_POSITIONAL = ["days", "seconds", "microseconds", "milliseconds", "minutes", "hours", "weeks"]

Resolver = Optional[Callable[[ast.Name], Optional[ast.AST]]]


def dotted_name(node: ast.AST) -> str:
    """`a.b.c` for Name/Attribute chains, '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    if isinstance(node, ast.Call):
        inner = dotted_name(node.func)
        if inner:
            parts.append(inner + "()")
            return ".".join(reversed(parts))
    return ""


def call_name(call: ast.Call) -> str:
    return dotted_name(call.func)


def last_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def keyword(call: ast.Call, name: str) -> Optional[ast.expr]:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def literal_seconds(node: Optional[ast.AST], resolve: Resolver = None) -> Optional[float]:
    """A duration written as a literal: 30, 60 * 60, timedelta(hours=2), 2 * timedelta(minutes=5).

    With `resolve`, names are followed to the expression they are bound to (module constants)."""
    if node is None:
        return None
    if isinstance(node, ast.Name) and resolve is not None:
        target = resolve(node)
        return literal_seconds(target, resolve) if target is not None and target is not node else None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = literal_seconds(node.operand, resolve)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp):
        return _binop_seconds(node, resolve)
    if isinstance(node, ast.Call) and last_name(node) == "timedelta":
        return _timedelta_seconds(node, resolve)
    if isinstance(node, ast.Call) and last_name(node) == "total_seconds" and isinstance(node.func, ast.Attribute) \
            and not node.args:
        return literal_seconds(node.func.value, resolve)
    return None


def _binop_seconds(node: ast.BinOp, resolve: Resolver) -> Optional[float]:
    left, right = literal_seconds(node.left, resolve), literal_seconds(node.right, resolve)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Mult):
        return left * right
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Div) and right:
        return left / right
    return None


def _timedelta_seconds(node: ast.Call, resolve: Resolver) -> Optional[float]:
    total = 0.0
    for index, arg in enumerate(node.args):
        value = literal_seconds(arg, resolve)
        if value is None or index >= len(_TIMEDELTA_POSITIONAL):
            return None
        total += value * _TIMEDELTA_UNITS[_TIMEDELTA_POSITIONAL[index]]
    for kw in node.keywords:
        value = literal_seconds(kw.value, resolve)
        if kw.arg not in _TIMEDELTA_UNITS or value is None:
            return None
        total += value * _TIMEDELTA_UNITS[kw.arg]
    return total


def now_plus_seconds(node: Optional[ast.AST]) -> Optional[float]:
    """For `now() + timedelta(...)` style ETAs: the literal offset in seconds."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        for side, other in ((node.left, node.right), (node.right, node.left)):
            if isinstance(side, ast.Call) and last_name(side) in ("now", "utcnow", "today"):
                return literal_seconds(other)
    return None


def is_naive_now(node: Optional[ast.AST]) -> bool:
    """`datetime.now()` without tz, or `datetime.utcnow()`, possibly plus a timedelta."""
    if isinstance(node, ast.BinOp):
        return is_naive_now(node.left) or is_naive_now(node.right)
    if isinstance(node, ast.Call):
        name = call_name(node)
        if name.endswith("utcnow"):
            return True
        if name.endswith("datetime.now") or (name == "now" and not node.args):
            return not node.args and keyword(node, "tz") is None
    return False


def names_in(node: ast.AST) -> set[str]:
    """Every Name and attribute name mentioned under node."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
    return found


def _segment(source: SourceFile, node: ast.AST) -> str:
    text = ast.get_source_segment(source.text, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:97] + "..."


def segment(source: SourceFile, node: ast.AST, limit: int = 100) -> str:
    return _segment(source, node) if limit == 100 else (" ".join((ast.get_source_segment(source.text, node) or "").split()))[:limit]
