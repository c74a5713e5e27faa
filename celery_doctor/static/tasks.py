"""Stand-in tasks: the source's tasks (facts.source_tasks: decorators, decorator factories, base classes),
registered on the bare app with the options their decorators set, under the names Celery gives them."""
from __future__ import annotations

import ast
import builtins
import keyword
import re
import warnings
from dataclasses import dataclass
from typing import Any, Optional

from ..model import Location
from ..pyast.project import project
from .modules import Modules, module_name, namespace_attribute
from .values import Evaluator, Unresolved, dotted

# Decorator options that are plain attributes of the task class (Celery's _task_from_fun sets them as they are).
TASK_OPTIONS = frozenset({
    "acks_late", "reject_on_worker_lost", "retry_on_worker_lost", "acks_on_failure_or_timeout", "acks_on_failure",
    "acks_on_timeout", "time_limit", "soft_time_limit", "max_retries", "default_retry_delay", "autoretry_for",
    "dont_autoretry_for", "retry_backoff", "retry_backoff_max", "retry_jitter", "retry_kwargs", "serializer",
    "ignore_result", "store_errors_even_if_ignored", "track_started", "queue", "exchange", "routing_key",
    "priority", "expires", "rate_limit", "delivery_mode",
})
EXCEPTION_OPTIONS = ("autoretry_for", "dont_autoretry_for")


@dataclass(frozen=True)
class StandIn:
    name: str
    location: Location
    options: dict
    label: str = ""  # the function's name in the source


def _exception(node: ast.AST) -> type:
    """The class an exception name stands for: the builtin itself, else a class of that name (Celery reports
    autoretry_for by the classes' __name__)."""
    name = dotted(node).split(".")[-1] or "UnknownError"
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return type(name, (Exception,), {})


def _exceptions(node: ast.AST) -> tuple:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return tuple(_exception(item) for item in items)


def stand_ins(tree, modules: Modules, skip_receivers: frozenset = frozenset()) -> tuple[list[StandIn], list]:
    """The tasks to register, and (what, why) for the options that could not be read."""
    proj = project(tree)
    out: list[StandIn] = []
    notes: list[tuple[str, str]] = []
    for task in (proj.tasks if proj else ()):
        if task.cls is not None or _receiver(task.decorator) in skip_receivers:
            continue  # a Task class is registered only by app.register_task; another app's tasks are not ours
        where = Location(task.module.path, task.first_line)
        names = modules.module(module_name(task.module.path))
        evaluate = Evaluator(names.value if names else _nothing, namespace_attribute)
        options: dict = {}
        for key, node in task.options.items():
            if key not in TASK_OPTIONS and key != "name":
                continue
            try:
                options[key] = _exceptions(node) if key in EXCEPTION_OPTIONS else evaluate(node)
            except Unresolved as exc:
                notes.append((f"task option {key} ({task.label}, {where})", f"not read statically: {exc}"))
        name = options.pop("name", None)
        if not isinstance(name, str):
            name = f"{module_name(task.module.path)}.{task.node.name}".lstrip(".")
        out.append(StandIn(name, where, options, task.node.name))
    return out, notes


def _receiver(decorator: Optional[ast.AST]) -> str:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = dotted(target) if target is not None else ""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _nothing(name: str) -> Any:
    raise Unresolved(f"{name}: its module could not be read")


def register(app: Any, tasks: list[StandIn]) -> dict[str, Location]:
    """Register the stand-ins on `app` (not shared with other apps); their locations by task name.

    Finalizing the app first gives it Celery's built-in tasks, and the shared tasks of every module this process
    imported (connect_on_app_finalize): those are not the project's and are dropped."""
    app.finalize(auto=True)
    for name in [n for n in app.tasks if not str(n).startswith("celery.")]:
        app.tasks.unregister(name)
    locations = {}
    for stand_in in tasks:
        if stand_in.name in locations:
            continue  # two functions under one name: the first is kept (as the first import would register it)

        def run(*args: Any, **kwargs: Any) -> None:
            return None

        # Celery compiles a signature stub from the function's name (utils.functional.head_from_fun): it must be an
        # identifier, whatever the task's name (`name="export-products"`); the name itself is given explicitly.
        short = re.sub(r"\W", "_", stand_in.name.rsplit(".", 1)[-1]) or "task"
        run.__name__ = run.__qualname__ = short if short.isidentifier() and not keyword.iskeyword(short) else f"_{short}"
        run.__module__ = stand_in.name.rsplit(".", 1)[0] if "." in stand_in.name else "__main__"
        with warnings.catch_warnings():
            # `queue=` on a task warns (deprecated in 5.x): the project's own decorator would warn, not our stand-in
            warnings.simplefilter("ignore")
            try:
                app.task(name=stand_in.name, shared=False, lazy=False, **stand_in.options)(run)
            except Exception:  # noqa: BLE001 - an option Celery refuses: the task without its options
                app.task(name=stand_in.name, shared=False, lazy=False)(run)
        locations.setdefault(stand_in.name, stand_in.location)
    return locations
