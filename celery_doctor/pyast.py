"""Small, shared AST helpers for checks that read source: names, literals, task functions, delays."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Optional

from .collectors.source import SourceFile, SourceTree
from .model import Location

TASK_DECORATORS = {"task", "shared_task", "periodic_task"}
_TIMEDELTA_UNITS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1,
                    "milliseconds": 0.001, "microseconds": 0.000001}


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


def literal_seconds(node: Optional[ast.AST]) -> Optional[float]:
    """A duration written as a literal: 30, 60 * 60, timedelta(hours=2), 2 * timedelta(minutes=5)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = literal_seconds(node.operand)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp):
        left, right = literal_seconds(node.left), literal_seconds(node.right)
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
    if isinstance(node, ast.Call) and last_name(node) == "timedelta":
        total = 0.0
        units = list(_TIMEDELTA_UNITS)
        positional = ["days", "seconds", "microseconds", "milliseconds", "minutes", "hours", "weeks"]
        for index, arg in enumerate(node.args):
            value = literal_seconds(arg)
            if value is None or index >= len(positional):
                return None
            total += value * _TIMEDELTA_UNITS[positional[index]]
        for kw in node.keywords:
            value = literal_seconds(kw.value)
            if kw.arg not in units or value is None:
                return None
            total += value * _TIMEDELTA_UNITS[kw.arg]
        return total
    return None


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
        if name.endswith("datetime.now") or name == "now" and not node.args:
            return not node.args and keyword(node, "tz") is None
    return False


def decorator_is_task(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = dotted_name(target)
    return bool(name) and name.split(".")[-1] in TASK_DECORATORS


def task_decorator(func: ast.AST) -> Optional[ast.expr]:
    for decorator in getattr(func, "decorator_list", ()):
        if decorator_is_task(decorator):
            return decorator
    return None


@dataclass(frozen=True)
class TaskFunction:
    file: SourceFile
    node: ast.FunctionDef | ast.AsyncFunctionDef
    decorator: ast.expr

    @property
    def location(self) -> Location:
        return Location(self.file.path, self.node.lineno)

    def option(self, name: str) -> Optional[ast.expr]:
        return keyword(self.decorator, name) if isinstance(self.decorator, ast.Call) else None


def task_functions(tree: SourceTree) -> Iterator[TaskFunction]:
    for source in tree.parsed():
        for node in ast.walk(source.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                decorator = task_decorator(node)
                if decorator is not None:
                    yield TaskFunction(source, node, decorator)


def calls(tree: SourceTree) -> Iterator[tuple[SourceFile, ast.Call]]:
    for source in tree.parsed():
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Call):
                yield source, node


@dataclass(frozen=True)
class Delay:
    """A literal delay the code asks for: countdown/eta on a publish, or a retry countdown."""

    kind: str  # "countdown", "eta", "retry countdown", "default_retry_delay"
    seconds: float
    location: Location
    code: str


def _segment(source: SourceFile, node: ast.AST) -> str:
    text = ast.get_source_segment(source.text, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:97] + "..."


def literal_delays(tree: Optional[SourceTree]) -> list[Delay]:
    if tree is None:
        return []
    found: list[Delay] = []
    for source, call in calls(tree):
        method = last_name(call)
        if method in ("apply_async", "retry", "send_task", "signature", "s", "set", "si", "apply_async_on_commit"):
            countdown = literal_seconds(keyword(call, "countdown"))
            if countdown is not None:
                kind = "retry countdown" if method == "retry" else "countdown"
                found.append(Delay(kind, countdown, Location(source.path, call.lineno), _segment(source, call)))
            eta = now_plus_seconds(keyword(call, "eta"))
            if eta is not None:
                found.append(Delay("eta", eta, Location(source.path, call.lineno), _segment(source, call)))
    for task in task_functions(tree):
        delay = literal_seconds(task.option("default_retry_delay"))
        if delay is not None:
            found.append(Delay("default_retry_delay", delay, task.location, f"{task.node.name}: default_retry_delay"))
    found.sort(key=lambda d: (-d.seconds, d.location.path, d.location.line or 0))
    return found
