"""Helpers shared by the source checks: the project index, tasks as the app registers them, wording."""
from __future__ import annotations

import ast
from typing import Any, Optional

from celery_doctor.facts.limits import effective_limit
from celery_doctor.model import Location, Snapshot
from celery_doctor.pyast import (
    MISSING,
    FuncNode,
    Module,
    Project,
    Task,
    all_nodes,
    dotted_name,
    keyword,
    last_name,
    project,
    segment,
)
from celery_doctor.settings import as_seconds, human_seconds

CELERY_DEFAULT_MAX_RETRIES = 3
CELERY_DEFAULT_RETRY_DELAY = 180.0


def project_of(snapshot: Snapshot) -> Optional[Project]:
    return project(snapshot.source)


def loc(module: Module, node: ast.AST) -> Location:
    return Location(module.path, getattr(node, "lineno", None))


def code(module: Module, node: ast.AST, limit: int = 100) -> str:
    return segment(module.file, node, limit)


def config_task(snapshot: Snapshot, task: Task) -> Any:
    """The app's TaskInfo for a task found in the source (by registered name, else by file and line)."""
    config = snapshot.config
    if config is None:
        return None
    info = config.tasks.get(task.name)
    if info is not None:
        return info
    for info in config.tasks.values():
        where = info.location
        if where and where.path == task.module.path and where.line and task.first_line <= where.line <= task.node.lineno:
            return info
    return None


def registered_name(snapshot: Snapshot, task: Task) -> str:
    info = config_task(snapshot, task)
    return info.name if info is not None else task.name


def task_subject(snapshot: Snapshot, task: Task) -> str:
    return f"task:{registered_name(snapshot, task)}"


def option_seconds(proj: Project, task: Task, name: str) -> Optional[float]:
    node = task.option(name)
    return proj.seconds(task.module, node) if node is not None else None


def option_value(proj: Project, task: Task, name: str, default: Any = None) -> Any:
    """A literal option value of the task (decorator or base class); `default` when unset, MISSING when not literal."""
    node = task.option(name)
    if node is None:
        return default
    return proj.constant(task.module, node)


def _limit(snapshot: Snapshot, proj: Project, task: Task, option: str, setting: str) -> tuple[Optional[float], str]:
    """A time limit of a task found in the source, as the prefork pool applies it (facts.limits.effective_limit:
    a per-task 0 falls back to the worker's setting), and where it comes from."""
    declared = option_seconds(proj, task, option)
    if declared:
        return declared, f"{option}={human_seconds(declared)} ({task.option_origin.get(option, 'decorator')})"
    info = config_task(snapshot, task)
    app_value = as_seconds(getattr(info, option, None)) if info is not None and declared is None else None
    if app_value:
        return app_value, f"{option}={human_seconds(app_value)} (the app's task settings)"
    config = snapshot.config
    value = effective_limit(declared, config.value(setting) if config is not None else None)
    if value is not None:
        return value, f"{setting}={human_seconds(value)}" + (f" ({option}=0 falls back to it)" if declared == 0 else "")
    return None, f"no {option}"


def time_limit(snapshot: Snapshot, proj: Project, task: Task) -> tuple[Optional[float], str]:
    """The hard time limit of a task and where it comes from."""
    return _limit(snapshot, proj, task, "time_limit", "task_time_limit")


def soft_time_limit(snapshot: Snapshot, proj: Project, task: Task) -> Optional[float]:
    return _limit(snapshot, proj, task, "soft_time_limit", "task_soft_time_limit")[0]


def option_truthy(proj: Project, task: Task, name: str) -> Optional[bool]:
    """None when the option is not set; its truth for a literal; True for an expression we cannot evaluate."""
    node = task.option(name)
    if node is None:
        return None
    value = proj.constant(task.module, node)
    return True if value is MISSING else bool(value)


def app_task_classes(proj: Project) -> list[tuple[Module, str]]:
    """The task classes the tree gives its app: `Celery(..., task_cls=AMOTask)` (a name or 'module:Class'), or
    `app.Task = AMOTask`. Every task without its own base= is built on it (celery/app/base.py Celery.Task)."""
    return proj.tree.memo("app_task_classes", lambda: _app_task_classes(proj))


def _app_task_classes(proj: Project) -> list[tuple[Module, str]]:
    found: list[tuple[Module, str]] = []
    for module in proj.modules_mentioning("task_cls", ".Task ="):
        for node in all_nodes(module.tree):
            value = None
            if isinstance(node, ast.Call) and last_name(node) == "Celery":
                value = keyword(node, "task_cls")
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "Task"
                                                      for t in node.targets):
                value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append((module, value.value.replace(":", ".").split(".")[-1]))
            elif value is not None and dotted_name(value):
                found.append((module, dotted_name(value).split(".")[-1]))
    return found


def task_class_chain(proj: Project, task: Optional[Task]) -> list[tuple[Module, ast.ClassDef]]:
    """The classes of the tree a task is built on (most derived first): its own class, its base=, else the app's
    task class; for a publish whose task is not found in the tree, the app's task class."""
    if task is not None and task.cls is not None:
        return proj.class_chain(task.cls.name, task.module)
    base = task.option("base") if task is not None else None
    if base is not None:
        return proj.class_chain(dotted_name(base).split(".")[-1], task.module)
    app_classes = app_task_classes(proj)
    if len({name for _, name in app_classes}) != 1:
        return []
    module, name = app_classes[0]
    return proj.class_chain(name, module)


def overriding_class(chain: list[tuple[Module, ast.ClassDef]], methods: set[str],
                     calling: str = "") -> Optional[ast.ClassDef]:
    """The first class of the chain that defines one of `methods` (and, when `calling` is given, calls it there:
    `def apply_async(...): transaction.on_commit(...)`)."""
    for _, cls in chain:
        for stmt in cls.body:
            if isinstance(stmt, FuncNode) and stmt.name in methods and (
                    not calling or any(isinstance(n, ast.Call) and last_name(n) == calling for n in ast.walk(stmt))):
                return cls
    return None


def published_task(proj: Project, call: ast.Call) -> Optional[Task]:
    """The task of the tree a `x.delay()` / `x.apply_async()` / `x.s()` call publishes (by x's name), if one."""
    if not isinstance(call.func, ast.Attribute):
        return None
    target = dotted_name(call.func.value).split(".")[-1]
    found = proj.tasks_named(target) if target else []
    return found[0] if len(found) == 1 else None
