"""The tasks defined in the source: one discovery, used by every check that reads source (config and source
checks alike, through Project.tasks).

A task is
- a function decorated with a Celery task decorator: `@app.task`, `@app.task(bind=True)`, `@celery.task`,
  `@shared_task`, `@shared_task(...)` (any `*.task`/`task`/`shared_task`/`periodic_task`, unless the name comes
  from another task library such as invoke, prefect or huey);
- a function decorated with the project's own decorator factory: a module-level `my_task = shared_task(acks_late=
  True)` / `my_task = app.task(...)` / `my_task = functools.partial(app.task, ...)` / `my_task = app.task`, or a
  module-level function returning a task decorator made from its keyword arguments (`def my_task(*a, **kw):
  kw.setdefault("acks_late", True); return shared_task(*a, **kw)`), then `@my_task` or `@my_task(...)`, here or
  imported from another module of the tree; the factory's options apply;
- the `run` method of a class deriving from Celery's Task (directly or through classes of the tree).

Options are ast expressions, later ones winning: the base class's attributes (`base=`), then the factory's
keywords, then the decorator's own keywords, as Celery builds the task class.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..model import Location
from ..parts.source import SourceFile
from ..pyast.expr import dotted_name
from ..pyast.project import MISSING, NON_CELERY_TASK_MODULES, Module
from ..pyast.scope import FuncNode

if TYPE_CHECKING:
    from ..pyast.project import Project

TASK_DECORATORS = {"task", "shared_task", "periodic_task"}
PARTIALS = {"partial", "functools.partial"}
# What Task.option gives for an option that may be hidden in unreadable `**options`: an expression no check can
# evaluate (not a literal, not a name), so it counts as set to something unknown.
UNKNOWN_OPTION = ast.Name(id="<options passed as **kwargs>", ctx=ast.Load())
OPEN = "**"  # key of an unreadable `**expr` among a decorator's or factory's keywords


@dataclass(frozen=True)
class Task:
    """A task defined in the source: a decorated function, or the `run` of a Task subclass."""

    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    decorator: Optional[ast.expr]
    cls: Optional[ast.ClassDef]
    options: dict  # option name -> ast.expr: decorator keywords over factory keywords over base-class attributes
    option_origin: dict  # option name -> "decorator", "decorator factory <name>" or the base class name
    name: str  # the registered name: explicit name=, or module.function as Celery derives it
    # options passed as `**expr` that could not be read (`@shared_task(**RETRY_OPTIONS)` from a settings
    # call): any option may be set there, so option() of an unset name is an unknown expression, not None
    open_options: bool = False

    @property
    def file(self) -> SourceFile:
        return self.module.file

    @property
    def location(self) -> Location:
        return Location(self.module.path, self.node.lineno)

    @property
    def first_line(self) -> int:
        lines = [d.lineno for d in getattr(self.node, "decorator_list", ())] + [self.node.lineno]
        return min(lines)

    def option(self, name: str) -> Optional[ast.expr]:
        found = self.options.get(name)
        if found is None and self.open_options:
            return UNKNOWN_OPTION
        return found

    @property
    def body(self) -> list[ast.stmt]:
        return self.node.body

    @property
    def bound(self) -> bool:
        value = self.options.get("bind")
        return self.cls is not None or (isinstance(value, ast.Constant) and value.value is True)

    @property
    def label(self) -> str:
        """The function's (or the task class's) name in the source."""
        return self.cls.name if self.cls else self.node.name


@dataclass(frozen=True)
class Factory:
    """A module-level name bound to a task decorator with preset options (`my_task = shared_task(acks_late=True)`)."""

    name: str
    options: dict  # keyword -> ast.expr


def keyword_options(proj: "Project", module: Module, keywords: list[ast.keyword]) -> dict:
    """A call's keywords as options; `**{...}`, `**dict(...)` or `**NAME` bound to one of those are read, any other
    `**expr` is kept under OPEN (unknown options)."""
    found: dict = {}
    for kw in keywords:
        if kw.arg:
            found[kw.arg] = kw.value
            continue
        value = proj.resolve(module, kw.value)
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
            found.update({k.value: v for k, v in zip(value.keys, value.values) if isinstance(k.value, str)})
        elif isinstance(value, ast.Call) and dotted_name(value.func) == "dict" and not value.args and \
                all(k.arg for k in value.keywords):
            found.update({k.arg: k.value for k in value.keywords})
        else:
            found[OPEN] = kw.value
    return found


def _imported_from(proj: "Project", module: Module, name: str) -> Optional[tuple[str, str]]:
    return proj.imported_names.get(module.path, {}).get(name)


def is_celery_decorator_name(proj: "Project", module: Module, name: str) -> bool:
    """`task`, `shared_task`, `periodic_task` or `<anything>.task`..., unless it comes from another task library."""
    parts = name.split(".") if name else []
    if not parts or parts[-1] not in TASK_DECORATORS or parts[0] in NON_CELERY_TASK_MODULES:
        return False
    imported = _imported_from(proj, module, parts[0])
    return not (imported and imported[0].split(".")[0] in NON_CELERY_TASK_MODULES)


def _factory_options(proj: "Project", module: Module, value: ast.expr) -> Optional[dict]:
    """The preset options if `value` makes a task decorator factory, else None."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        return {} if is_celery_decorator_name(proj, module, dotted_name(value)) else None
    if not isinstance(value, ast.Call):
        return None
    name = dotted_name(value.func)
    if name in PARTIALS and value.args and is_celery_decorator_name(proj, module, dotted_name(value.args[0])):
        return keyword_options(proj, module, value.keywords)
    if not value.args and is_celery_decorator_name(proj, module, name):  # with a positional argument it is a task
        return keyword_options(proj, module, value.keywords)
    return None


def _preset_keywords(func: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    """Options a factory function sets on its `**kwargs` before passing them on: `kwargs.setdefault("k", v)`,
    `kwargs["k"] = v`, `kwargs.update(k=v)`."""
    kwarg = func.args.kwarg.arg if func.args.kwarg else None
    found: dict = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                dotted_name(node.func.value) == kwarg:
            if node.func.attr == "setdefault" and len(node.args) == 2 and isinstance(node.args[0], ast.Constant):
                found.setdefault(node.args[0].value, node.args[1])
            elif node.func.attr == "update":
                found.update({kw.arg: kw.value for kw in node.keywords if kw.arg})
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript) \
                and dotted_name(node.targets[0].value) == kwarg and isinstance(node.targets[0].slice, ast.Constant):
            found[node.targets[0].slice.value] = node.value
    return {k: v for k, v in found.items() if isinstance(k, str)}


def _function_factory_options(proj: "Project", module: Module, func: ast.AST) -> Optional[dict]:
    """The preset options if `func` is a decorator factory function: it returns a task decorator built from its
    own arguments (`def my_task(*args, **kw): return shared_task(*args, **kw)`)."""
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) or func.args.kwarg is None:
        return None
    for stmt in ast.walk(func):
        value = stmt.value if isinstance(stmt, ast.Return) else None
        if not isinstance(value, ast.Call) or not is_celery_decorator_name(proj, module, dotted_name(value.func)):
            continue
        if any(kw.arg is None and dotted_name(kw.value) == func.args.kwarg.arg for kw in value.keywords):
            options = _preset_keywords(func)
            passed_on = [kw for kw in value.keywords if not (kw.arg is None and dotted_name(kw.value) ==
                                                             func.args.kwarg.arg)]
            options.update(keyword_options(proj, module, passed_on))
            return options
    return None


def decorator_factories(proj: "Project") -> dict[str, dict[str, Factory]]:
    """Module path -> name -> the task decorator factories bound at module level (assigned, or functions that
    return a task decorator made from their keyword arguments)."""
    found: dict[str, dict[str, Factory]] = {}
    for module in proj.modules:
        for stmt in module.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                options = _factory_options(proj, module, stmt.value)
                name = stmt.targets[0].id
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                options = _function_factory_options(proj, module, stmt)
                name = stmt.name
            else:
                continue
            if options is not None:
                found.setdefault(module.path, {})[name] = Factory(name, options)
    return found


class _Discovery:
    def __init__(self, proj: "Project"):
        self.proj = proj
        self.factories = decorator_factories(proj)

    def factory(self, module: Module, name: str) -> Optional[Factory]:
        """The factory a decorator name refers to: defined in the module, imported by name or through its module,
        or (after a star import) the only factory of that name in the tree."""
        parts = name.split(".")
        if len(parts) > 1:
            imported = _imported_from(self.proj, module, parts[0])
            head = ".".join(([".".join(p for p in imported if p)] if imported else [parts[0]]) + parts[1:-1])
            target = self.proj.by_name.get(head)
            return self.factories.get(target.path, {}).get(parts[-1]) if target else None
        local = self.factories.get(module.path, {}).get(name)
        if local is not None:
            return local
        imported = _imported_from(self.proj, module, name)
        if imported:
            target = self.proj.by_name.get(imported[0])
            return self.factories.get(target.path, {}).get(imported[1]) if target else None
        if "import *" in module.file.text:
            same = [names[name] for names in self.factories.values() if name in names]
            return same[0] if len(same) == 1 else None
        return None

    def task_decorator(self, module: Module, node: ast.AST) -> Optional[tuple[ast.expr, Optional[Factory]]]:
        """The first decorator of a function that makes it a task, with the factory it goes through (if any)."""
        for decorator in getattr(node, "decorator_list", ()):
            name = dotted_name(decorator.func if isinstance(decorator, ast.Call) else decorator)
            if not name:
                continue
            factory = self.factory(module, name)
            if factory is not None or is_celery_decorator_name(self.proj, module, name):
                return decorator, factory
        return None

    def function_task(self, module: Module, node: ast.AST) -> Optional[Task]:
        found = self.task_decorator(module, node)
        if found is None:
            return None
        decorator, factory = found
        given: dict = {}
        given_origin: dict = {}
        if factory is not None:
            for key, value in factory.options.items():
                given[key], given_origin[key] = value, f"decorator factory {factory.name}"
        if isinstance(decorator, ast.Call):
            for key, value in keyword_options(self.proj, module, decorator.keywords).items():
                given[key], given_origin[key] = value, "decorator"
        open_options = given.pop(OPEN, None) is not None
        given_origin.pop(OPEN, None)
        base = given.get("base")
        base_name = dotted_name(base).split(".")[-1] if base is not None else ""
        options, origin = self.class_options(base_name, module, "base class {}") if base_name else ({}, {})
        options.update(given)
        origin.update(given_origin)
        name = self.task_name(module, node.name, options.get("name"))
        return Task(module, node, decorator, None, options, origin, name, open_options)

    def class_options(self, name: str, module: Module, label: str) -> tuple[dict, dict]:
        """Attributes of a class and of its bases in the tree (the most derived wins), and where each comes from."""
        options: dict = {}
        origin: dict = {}
        for _, bclass in reversed(self.proj.class_chain(name, module)):
            for key, value in self.proj.class_attributes(bclass).items():
                options[key], origin[key] = value, label.format(bclass.name)
        return options, origin

    def class_task(self, module: Module, node: ast.ClassDef) -> Optional[Task]:
        if not self.proj.is_task_class(node, module):
            return None
        run = next((s for s in node.body if isinstance(s, FuncNode) and s.name == "run"), None)
        if run is None:
            return None
        options, origin = self.class_options(node.name, module, "class {}")
        return Task(module, run, None, node, options, origin, self.task_name(module, node.name, options.get("name")))

    def task_name(self, module: Module, func_name: str, explicit: Optional[ast.expr]) -> str:
        value = self.proj.constant(module, explicit) if explicit is not None else MISSING
        if isinstance(value, str):
            return value
        return f"{module.name}.{func_name}" if module.name else func_name


def discover_tasks(proj: "Project") -> list[Task]:
    """Every task of the tree, in source order per module (the order of Project.definitions)."""
    discovery = _Discovery(proj)
    tasks = []
    for module in proj.modules:
        for node in proj.definitions(module):
            if isinstance(node, FuncNode):
                task = discovery.function_task(module, node)
            elif isinstance(node, ast.ClassDef):
                task = discovery.class_task(module, node)
            else:
                task = None
            if task is not None:
                tasks.append(task)
    return tasks
