"""Finding the Celery apps of the source and the statements that configure them (in source order).

An app is a module-level `NAME = Celery(...)` (as `celery -A module` finds a module attribute). Its
configuration is what the module does to NAME at module level: `NAME.config_from_object(...)`,
`NAME.conf.update(...)`, `NAME.conf.x = ...`, `NAME.conf["x"] = ...`, `NAME.conf.beat_schedule[...] = ...`,
`NAME.conf.beat_schedule.update(...)`; and the `DJANGO_SETTINGS_MODULE` its module sets by default.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from ..parts.source import SourceFile, SourceTree
from .values import dotted


@dataclass(frozen=True)
class Step:
    """One statement configuring the app: `kind` is config_from_object, update, set, set_item, item_update or
    branch (an `if` whose branches configure the app)."""

    kind: str
    node: ast.AST  # the call, or the assigned value
    line: int
    key: Optional[str] = None  # for set: the setting; for set_item/item_update: the setting holding the dict
    item: Optional[ast.AST] = None  # for set_item: the subscript's key


@dataclass(frozen=True)
class FoundApp:
    file: SourceFile
    variable: str
    call: ast.Call
    steps: tuple[Step, ...]
    django_settings: Optional[str]  # os.environ.setdefault("DJANGO_SETTINGS_MODULE", "...") in the module

    @property
    def line(self) -> int:
        return self.call.lineno

    @property
    def path(self) -> str:
        return self.file.path


def _is_celery_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and dotted(node.func) in ("Celery", "celery.Celery")


def find_apps(tree: Optional[SourceTree]) -> list[FoundApp]:
    from .modules import parsed

    found = []
    for listed in (tree.files if tree else ()):
        source = parsed(tree, listed) if "Celery" in listed.text else None
        if source is None:
            continue
        for stmt in source.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) \
                    and _is_celery_call(stmt.value):
                name = stmt.targets[0].id
                found.append(FoundApp(source, name, stmt.value, tuple(steps_of(source.tree.body, name)),
                                      _django_settings(source.tree)))
    return found


def _conf_of(node: ast.AST, app: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "conf" and isinstance(node.value, ast.Name) \
        and node.value.id == app


def steps_of(body: list, app: str) -> list[Step]:
    """The statements of `body` configuring `app`; an `if` holding some is one "branch" step (its test decides)."""
    steps: list[Step] = []
    for stmt in body:
        if isinstance(stmt, ast.If) and (steps_of(stmt.body, app) or steps_of(stmt.orelse, app)):
            steps.append(Step("branch", stmt, stmt.lineno))
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            step = _call_step(stmt.value, app)
            if step is not None:
                steps.append(step)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            step = _assign_step(stmt.targets[0], stmt.value, app)
            if step is not None:
                steps.append(step)
    return steps


def _call_step(call: ast.Call, app: str) -> Optional[Step]:
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr == "config_from_object" and isinstance(func.value, ast.Name) and func.value.id == app:
        return Step("config_from_object", call, call.lineno)
    if func.attr == "update" and _conf_of(func.value, app):
        return Step("update", call, call.lineno)
    if func.attr == "update" and isinstance(func.value, ast.Attribute) and _conf_of(func.value.value, app):
        return Step("item_update", call, call.lineno, key=func.value.attr)
    return None


def _assign_step(target: ast.AST, value: ast.AST, app: str) -> Optional[Step]:
    if isinstance(target, ast.Attribute) and _conf_of(target.value, app):
        return Step("set", value, target.lineno, key=target.attr)
    if isinstance(target, ast.Subscript) and _conf_of(target.value, app) \
            and isinstance(target.slice, ast.Constant) and isinstance(target.slice.value, str):
        return Step("set", value, target.lineno, key=target.slice.value)
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute) \
            and _conf_of(target.value.value, app):
        return Step("set_item", value, target.lineno, key=target.value.attr, item=target.slice)
    return None


def task_calls(module: ast.Module) -> list[ast.Call]:
    """`x.task(...)(fn)` calls: tasks registered by calling the decorator, which the stand-ins do not cover."""
    return [node for node in ast.walk(module) if isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
            and dotted(node.func.func).split(".")[-1] in ("task", "shared_task")]


def _django_settings(module: ast.Module) -> Optional[str]:
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and dotted(node.func) in ("os.environ.setdefault", "environ.setdefault") \
                and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args) \
                and node.args[0].value == "DJANGO_SETTINGS_MODULE" and isinstance(node.args[1].value, str):
            return node.args[1].value
    return None


def django_settings_default(tree: Optional[SourceTree]) -> Optional[str]:
    """The DJANGO_SETTINGS_MODULE some module of the source sets by default (manage.py, wsgi.py, celery.py)."""
    from .modules import parsed

    for listed in (tree.files if tree else ()):
        source = parsed(tree, listed) if "DJANGO_SETTINGS_MODULE" in listed.text else None
        found = _django_settings(source.tree) if source is not None else None
        if found:
            return found
    return None


def choose(apps: list[FoundApp]) -> tuple[Optional[FoundApp], list[FoundApp]]:
    """The app to lint and the others: the most configured one, then the shallowest path, then by name."""
    if not apps:
        return None, []
    ranked = sorted(apps, key=lambda a: (-len(a.steps) - len(a.call.keywords), a.path.count("/"), a.path, a.line))
    return ranked[0], ranked[1:]
