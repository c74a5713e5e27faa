"""Project-wide queries over calls: every call, the literal delays the code asks for, add_periodic_task calls."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Optional

from ..model import Location
from ..parts.source import SourceFile, SourceTree
from .expr import _segment, keyword, last_name, literal_seconds, now_plus_seconds
from .lazy import nodes_of
from .project import project

DELAY_METHODS = ("apply_async", "retry", "send_task", "signature", "s", "set", "si", "apply_async_on_commit")


def calls(tree: SourceTree) -> Iterator[tuple[SourceFile, ast.Call]]:
    for source in tree.parsed():
        for node in nodes_of(source.tree, ast.Call):  # ast.walk's order, walked once per tree
            yield source, node


@dataclass(frozen=True)
class Delay:
    """A literal delay the code asks for: countdown/eta on a publish, or a retry countdown."""

    kind: str  # "countdown", "eta", "retry countdown", "default_retry_delay"
    seconds: float
    location: Location
    code: str


def literal_delays(tree: Optional[SourceTree]) -> list[Delay]:
    """Literal countdowns/ETAs of publishes and retries, and the default_retry_delay of the tree's tasks (found by
    the one task discovery, facts.source_tasks: decorators, decorator factories, base classes, Task classes)."""
    if tree is None:
        return []
    found: list[Delay] = []
    for source, call in calls(tree):
        method = last_name(call)
        if method in DELAY_METHODS:
            countdown = literal_seconds(keyword(call, "countdown"))
            if countdown is not None:
                kind = "retry countdown" if method == "retry" else "countdown"
                found.append(Delay(kind, countdown, Location(source.path, call.lineno), _segment(source, call)))
            eta = now_plus_seconds(keyword(call, "eta"))
            if eta is not None:
                found.append(Delay("eta", eta, Location(source.path, call.lineno), _segment(source, call)))
    for task in project(tree).tasks:
        delay = literal_seconds(task.option("default_retry_delay"))
        if delay is not None:
            found.append(Delay("default_retry_delay", delay, task.location, f"{task.label}: default_retry_delay"))
    found.sort(key=lambda d: (-d.seconds, d.location.path, d.location.line or 0))
    return found


def periodic_task_locations(tree: Optional[SourceTree]) -> list[tuple[Location, Optional[str], str]]:
    """Every `add_periodic_task(...)` call: (location, the entry's literal `name=` or None, the signature's text).

    For checks that see the resulting beat entry in the app's configuration and want to point at the code."""
    proj = project(tree)
    if proj is None:
        return []
    found = []
    for module in proj.modules_mentioning("add_periodic_task"):
        for node in nodes_of(module.tree, ast.Call):
            if last_name(node) == "add_periodic_task":
                name = keyword(node, "name")
                sig = node.args[1] if len(node.args) > 1 else keyword(node, "sig")
                found.append((Location(module.path, node.lineno),
                              name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else None,
                              _segment(module.file, sig) if sig is not None else ""))
    return found
