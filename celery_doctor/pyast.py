"""Small, shared AST helpers for checks that read source: names, literals, task functions, delays."""
from __future__ import annotations

import ast
import os
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

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


def literal_seconds(node: Optional[ast.AST], resolve: Optional[Callable[[ast.Name], Optional[ast.AST]]] = None) -> Optional[float]:
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
    if isinstance(node, ast.Call) and last_name(node) == "timedelta":
        total = 0.0
        units = list(_TIMEDELTA_UNITS)
        positional = ["days", "seconds", "microseconds", "milliseconds", "minutes", "hours", "weeks"]
        for index, arg in enumerate(node.args):
            value = literal_seconds(arg, resolve)
            if value is None or index >= len(positional):
                return None
            total += value * _TIMEDELTA_UNITS[positional[index]]
        for kw in node.keywords:
            value = literal_seconds(kw.value, resolve)
            if kw.arg not in units or value is None:
                return None
            total += value * _TIMEDELTA_UNITS[kw.arg]
        return total
    if isinstance(node, ast.Call) and last_name(node) == "total_seconds" and isinstance(node.func, ast.Attribute) and not node.args:
        return literal_seconds(node.func.value, resolve)
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


# ---------------------------------------------------------------------------------------------------------------
# Project-wide analysis for the source checks: modules, imports, constants, tasks, signal handlers.
# Everything below is static: files are only parsed, never imported or executed.
# ---------------------------------------------------------------------------------------------------------------

PUBLISH_METHODS = {"delay", "apply_async", "send_task"}
SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
BROAD_EXCEPTIONS = {"Exception", "BaseException"}
FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)
NON_CELERY_TASK_MODULES = {"asyncio", "luigi", "prefect", "dramatiq", "huey", "rq", "invoke", "trio", "anyio"}


def walk_scope(nodes: Iterable[ast.AST] | ast.AST) -> Iterator[ast.AST]:
    """Every node under `nodes` that runs in the same scope: nested functions, lambdas and classes are not entered."""
    if isinstance(nodes, ast.AST):
        stack = [nodes]
    else:
        stack = [n for n in nodes if not isinstance(n, SCOPE_NODES)]
    stack.reverse()
    while stack:
        node = stack.pop()
        yield node
        children = [c for c in ast.iter_child_nodes(node) if not isinstance(c, SCOPE_NODES)]
        stack.extend(reversed(children))


def scope_body(func: ast.AST) -> list[ast.AST]:
    """The statements of a function (or module/class) without its decorators, arguments or nested scopes."""
    return list(getattr(func, "body", []))


def in_order(nodes: Iterable[ast.AST]) -> list[ast.AST]:
    return sorted(nodes, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))


def is_publish(call: ast.AST) -> bool:
    """`x.delay(...)`, `x.apply_async(...)`, `app.send_task(...)` (the *_on_commit variants are not publishes now)."""
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in PUBLISH_METHODS


def publishes(nodes: Iterable[ast.AST] | ast.AST) -> list[ast.Call]:
    return in_order(n for n in walk_scope(nodes) if is_publish(n))


def receiver(call: ast.Call) -> str:
    """`a.b` for a call `a.b.method(...)`; '' when the receiver is not a plain name chain."""
    return dotted_name(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def exception_names(node: Optional[ast.expr]) -> list[str]:
    """Last names of the exception classes an `except` clause names (['*'] for a bare except)."""
    if node is None:
        return ["*"]
    items = node.elts if isinstance(node, ast.Tuple) else [node]
    names = []
    for item in items:
        name = dotted_name(item)
        names.append(name.split(".")[-1] if name else "?")
    return names


def is_broad_handler(handler: ast.ExceptHandler, also: Iterable[str] = ()) -> bool:
    names = set(exception_names(handler.type))
    return bool(names & ({"*"} | BROAD_EXCEPTIONS | set(also)))


def reraises_or_retries(statements: Iterable[ast.AST]) -> bool:
    """A handler body that raises, retries or re-publishes the work does not swallow it."""
    for node in walk_scope(list(statements)):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            name = last_name(node)
            if name in ("retry", "apply_async_on_commit", "delay_on_commit", "_exit", "exit") or is_publish(node):
                return True
    return False


LOGGING_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log", "print",
                 "capture_exception", "capture_message", "captureException", "captureMessage", "incr", "increment"}


def _is_logging_call(call: ast.Call) -> bool:
    name = call_name(call)
    head = name.split(".")[0].lower() if name else ""
    return last_name(call) in LOGGING_CALLS or "log" in head or head in ("sentry_sdk", "sentry", "statsd", "metrics")


def only_logs(statements: Iterable[ast.stmt]) -> bool:
    """A handler that does nothing but log, count, pass, continue, return, or set local variables."""
    for stmt in statements:
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            value = stmt.value
            if all(isinstance(t, ast.Name) for t in targets) and not any(
                    isinstance(n, ast.Call) and not _is_logging_call(n) and last_name(n) not in ("str", "repr", "format")
                    for n in ast.walk(value or ast.Constant(None))):
                continue
            return False
        if isinstance(stmt, (ast.Pass, ast.Continue, ast.Break)):
            continue
        if isinstance(stmt, ast.Return):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _is_logging_call(stmt.value):
            continue
        return False
    return True


def names_in(node: ast.AST) -> set[str]:
    """Every Name and attribute name mentioned under node."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
    return found


def segment(source: SourceFile, node: ast.AST, limit: int = 100) -> str:
    return _segment(source, node) if limit == 100 else (" ".join((ast.get_source_segment(source.text, node) or "").split()))[:limit]


@dataclass(frozen=True)
class Module:
    file: SourceFile
    name: str  # dotted module name, from the package layout found in the tree
    is_package: bool

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def tree(self) -> ast.Module:
        return self.file.tree


@dataclass(frozen=True)
class Task:
    """A task defined in the source: a decorated function, or the `run` of a Task subclass."""

    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef
    decorator: Optional[ast.expr]
    cls: Optional[ast.ClassDef]
    options: dict  # option name -> ast.expr: decorator keywords over base-class attributes
    option_origin: dict  # option name -> "decorator" or the base class name
    name: str  # the registered name: explicit name=, or module.function as Celery derives it

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
        return self.options.get(name)

    @property
    def body(self) -> list[ast.stmt]:
        return self.node.body

    @property
    def bound(self) -> bool:
        value = self.options.get("bind")
        return self.cls is not None or (isinstance(value, ast.Constant) and value.value is True)


def _module_names(files: list[SourceFile]) -> dict[str, tuple[str, bool]]:
    """path -> (dotted module name, is_package), using `__init__.py` files present in the tree."""
    real = {}
    for f in files:
        real[f.path] = os.path.abspath(f.path)
    packages = {os.path.dirname(p) for p in real.values() if os.path.basename(p) == "__init__.py"}
    out = {}
    for path, absolute in real.items():
        directory = os.path.dirname(absolute)
        base = os.path.splitext(os.path.basename(absolute))[0]
        is_package = base == "__init__"
        parts = [] if is_package else [base]
        while directory in packages:
            parts.append(os.path.basename(directory))
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
        out[path] = (".".join(reversed(parts)), is_package)
    return out


@dataclass(frozen=True)
class Scope:
    func: Optional[ast.AST]  # None for the module body
    body: list
    nodes: list  # every node of the scope, nested functions/classes/lambdas excluded

    def calls(self) -> Iterator[ast.Call]:
        return (n for n in self.nodes if isinstance(n, ast.Call))


class Project:
    """An index of a SourceTree built once per tree (cached): modules, constants, defs, tasks, handlers."""

    def __init__(self, tree: SourceTree):
        self.tree = tree
        names = _module_names([f for f in tree.parsed()])
        self.modules: list[Module] = [Module(f, *names[f.path]) for f in tree.parsed()]
        self.by_path = {m.path: m for m in self.modules}
        self.by_name: dict[str, Module] = {}
        for module in self.modules:
            self.by_name.setdefault(module.name, module)
        self.functions: dict[str, list[tuple[Module, ast.AST]]] = {}
        self.classes: dict[str, list[tuple[Module, ast.ClassDef]]] = {}
        self.constants: dict[str, dict[str, ast.expr]] = {}
        self.imported_names: dict[str, dict[str, tuple[str, str]]] = {}  # path -> local name -> (module, name)
        self._imports: dict[str, list[ast.AST]] = {}
        self._defs: dict[str, list[ast.AST]] = {}
        for module in self.modules:
            consts: dict[str, ast.expr] = {}
            for stmt in module.tree.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    consts[stmt.targets[0].id] = stmt.value
                elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    consts[stmt.target.id] = stmt.value
            self.constants[module.path] = consts
            imports: list[ast.AST] = []
            defs: list[ast.AST] = []
            for node in ast.walk(module.tree):
                if isinstance(node, FuncNode):
                    self.functions.setdefault(node.name, []).append((module, node))
                    defs.append(node)
                elif isinstance(node, ast.ClassDef):
                    self.classes.setdefault(node.name, []).append((module, node))
                    defs.append(node)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    imports.append(node)
            self._imports[module.path] = imports
            self._defs[module.path] = defs
            self.imported_names[module.path] = self._imported_names(module)
        self._task_classes: dict[int, bool] = {}
        self._scopes: dict[str, list[Scope]] = {}
        self.tasks: list[Task] = self._tasks()

    # ----- scopes --------------------------------------------------------------------------------------------
    def scopes(self, module: Module) -> list["Scope"]:
        """The module's scopes (module body, then every function), each with its own nodes walked once."""
        cached = self._scopes.get(module.path)
        if cached is None:
            cached = [Scope(None, module.tree.body, list(walk_scope(module.tree.body)))]
            for node in ast.walk(module.tree):
                if isinstance(node, FuncNode):
                    cached.append(Scope(node, node.body, list(walk_scope(node.body))))
            self._scopes[module.path] = cached
        return cached

    def modules_mentioning(self, *words: str) -> list[Module]:
        """Modules whose text contains any of `words` (a cheap filter before walking trees)."""
        return [m for m in self.modules if any(w in m.file.text for w in words)]

    # ----- imports -------------------------------------------------------------------------------------------
    def _absolute(self, module: Module, level: int, name: Optional[str]) -> str:
        if not level:
            return name or ""
        parts = module.name.split(".") if module.name else []
        if not module.is_package:
            parts = parts[:-1]
        if level > 1:
            parts = parts[: len(parts) - (level - 1)] if level - 1 <= len(parts) else []
        if name:
            parts.append(name)
        return ".".join(p for p in parts if p)

    def _imported_names(self, module: Module) -> dict[str, tuple[str, str]]:
        out = {}
        for node in self._imports[module.path]:
            if isinstance(node, ast.ImportFrom):
                base = self._absolute(module, node.level, node.module)
                for alias in node.names:
                    out[alias.asname or alias.name] = (base, alias.name)
        return out

    def imports_of(self, module: Module) -> set[str]:
        """Modules of this tree that `module` imports (anywhere in the file, lazily or not)."""
        found = set()
        for node in self._imports[module.path]:
            candidates = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    candidates += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(module, node.level, node.module)
                parts = base.split(".") if base else []
                candidates += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
                candidates += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
            for candidate in candidates:
                if candidate in self.by_name and candidate != module.name:
                    found.add(candidate)
        return found

    def worker_modules(self) -> dict[str, str]:
        """Modules the worker imports: those defining tasks or the Celery app, and what they import (transitively).

        Returns module path -> why (the importing chain, shortest first)."""
        reasons: dict[str, str] = {}
        queue: list[Module] = []
        task_paths = {t.module.path for t in self.tasks}
        for module in self.modules:
            why = ""
            if module.path in task_paths:
                why = "defines tasks"
            elif ("Celery(" in module.file.text or "autodiscover_tasks" in module.file.text) and any(
                    isinstance(n, ast.Call) and last_name(n) in ("Celery", "autodiscover_tasks") for n in ast.walk(module.tree)):
                why = "creates or configures the Celery app"
            if why:
                reasons[module.path] = why
                queue.append(module)
        while queue:
            module = queue.pop(0)
            for name in sorted(self.imports_of(module)):
                target = self.by_name[name]
                if target.path not in reasons:
                    reasons[target.path] = f"imported by {module.path}"
                    queue.append(target)
        return reasons

    # ----- constants ---------------------------------------------------------------------------------------------
    def resolve(self, module: Module, node: Optional[ast.AST], depth: int = 0) -> Optional[ast.AST]:
        """Follow a Name to the module-level constant it is bound to (also across `from x import NAME`)."""
        while isinstance(node, ast.Name) and depth < 5:
            depth += 1
            consts = self.constants.get(module.path, {})
            if node.id in consts:
                node = consts[node.id]
                continue
            imported = self.imported_names.get(module.path, {}).get(node.id)
            if imported and imported[0] in self.by_name:
                target = self.by_name[imported[0]]
                value = self.constants.get(target.path, {}).get(imported[1])
                if value is None:
                    return None
                module, node = target, value
                continue
            return None
        return node

    def seconds(self, module: Module, node: Optional[ast.AST]) -> Optional[float]:
        """literal_seconds, following names bound to module constants (LOCK_EXPIRE = 60 * 10)."""
        budget = [20]

        def follow(name: ast.Name) -> Optional[ast.AST]:
            budget[0] -= 1
            return self.resolve(module, name) if budget[0] > 0 else None

        return literal_seconds(node, follow)

    def constant(self, module: Module, node: Optional[ast.AST]):
        node = self.resolve(module, node)
        if isinstance(node, ast.Constant):
            return node.value
        return _MISSING

    # ----- definitions -------------------------------------------------------------------------------------------
    def _lookup(self, table: dict, name: str, prefer: Optional[Module]):
        """A definition by name as seen from `prefer`: its own module, then what it imports, then a unique match."""
        found = table.get(name) or []
        if prefer is not None:
            for module, node in found:
                if module.path == prefer.path:
                    return module, node
            imported = self.imported_names.get(prefer.path, {}).get(name)
            if imported:
                source_module, original = imported
                for module, node in table.get(original) or []:
                    if module.name == source_module:
                        return module, node
        return found[0] if len(found) == 1 else None

    def function(self, name: str, prefer: Optional[Module] = None) -> Optional[tuple[Module, ast.AST]]:
        return self._lookup(self.functions, name, prefer)

    def cls(self, name: str, prefer: Optional[Module] = None) -> Optional[tuple[Module, ast.ClassDef]]:
        return self._lookup(self.classes, name, prefer)

    def class_chain(self, name: str, prefer: Optional[Module] = None) -> list[tuple[Module, ast.ClassDef]]:
        """The class and its base classes that are defined in this tree (most derived first)."""
        chain: list[tuple[Module, ast.ClassDef]] = []
        pending = [(name, prefer)]
        while pending and len(chain) < 10:
            cname, where = pending.pop(0)
            found = self.cls(cname, where)
            if not found or any(found[1] is c for _, c in chain):
                continue
            chain.append(found)
            for base in found[1].bases:
                base_name = dotted_name(base).split(".")[-1]
                if base_name:
                    pending.append((base_name, found[0]))
        return chain

    def _celery_task_base(self, base: ast.expr, module: Module) -> bool:
        name = dotted_name(base)
        if name == "Task":
            imported = self.imported_names.get(module.path, {}).get("Task")
            return bool(imported and imported[0].split(".")[0] == "celery")
        parts = name.split(".")
        return len(parts) > 1 and parts[-1] == "Task" and parts[0] not in NON_CELERY_TASK_MODULES

    def is_task_class(self, node: ast.ClassDef, module: Module) -> bool:
        """A class deriving from Celery's Task (directly, or through classes of this tree)."""
        key = id(node)
        if key in self._task_classes:
            return self._task_classes[key]
        seen: set[int] = set()
        pending = [(node, module)]
        result = False
        while pending and not result:
            cls, where = pending.pop()
            if id(cls) in seen:
                continue
            seen.add(id(cls))
            for base in cls.bases:
                if self._celery_task_base(base, where):
                    result = True
                    break
                name = dotted_name(base).split(".")[-1]
                found = self.cls(name, where) if name else None
                if found and found[1] is not cls:
                    pending.append((found[1], found[0]))
        self._task_classes[key] = result
        return result

    @staticmethod
    def class_attributes(node: ast.ClassDef) -> dict[str, ast.expr]:
        out = {}
        for stmt in node.body:
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                out[stmt.target.id] = stmt.value
        return out

    # ----- tasks -------------------------------------------------------------------------------------------------
    def _tasks(self) -> list[Task]:
        tasks = []
        for module in self.modules:
            for node in self._defs[module.path]:
                if isinstance(node, FuncNode):
                    decorator = task_decorator(node)
                    if decorator is None:
                        continue
                    options: dict = {}
                    origin: dict = {}
                    base = keyword(decorator, "base") if isinstance(decorator, ast.Call) else None
                    base_name = dotted_name(base).split(".")[-1] if base is not None else ""
                    if base_name:
                        for bmodule, bclass in reversed(self.class_chain(base_name, module)):
                            for key, value in self.class_attributes(bclass).items():
                                options[key] = value
                                origin[key] = f"base class {bclass.name}"
                    if isinstance(decorator, ast.Call):
                        for kw in decorator.keywords:
                            if kw.arg:
                                options[kw.arg] = kw.value
                                origin[kw.arg] = "decorator"
                    tasks.append(Task(module, node, decorator, None, options, origin,
                                      self._task_name(module, node.name, options.get("name"))))
                elif isinstance(node, ast.ClassDef) and self.is_task_class(node, module):
                    run = next((s for s in node.body if isinstance(s, FuncNode) and s.name == "run"), None)
                    if run is None:
                        continue
                    options, origin = {}, {}
                    for bmodule, bclass in reversed(self.class_chain(node.name, module)):
                        for key, value in self.class_attributes(bclass).items():
                            options[key] = value
                            origin[key] = f"class {bclass.name}"
                    tasks.append(Task(module, run, None, node, options, origin,
                                      self._task_name(module, node.name, options.get("name"))))
        return tasks

    def _task_name(self, module: Module, func_name: str, explicit: Optional[ast.expr]) -> str:
        value = self.constant(module, explicit) if explicit is not None else _MISSING
        if isinstance(value, str):
            return value
        return f"{module.name}.{func_name}" if module.name else func_name

    def task_for(self, module: Module, node: ast.AST) -> Optional[Task]:
        for task in self.tasks:
            if task.module.path == module.path and task.node is node:
                return task
        return None

    def tasks_named(self, name: str) -> list[Task]:
        """Tasks whose function (or class) is called `name` in the source."""
        return [t for t in self.tasks if (t.cls.name if t.cls else t.node.name) == name]

    # ----- signals -----------------------------------------------------------------------------------------------
    def signal_handlers(self, *signals: str) -> list[tuple[Module, ast.AST]]:
        """Functions connected to one of `signals` (`@worker_process_init.connect` or `sig.connect(fn)`)."""
        wanted = set(signals)
        found = []
        for module in self.modules_mentioning(*signals):
            for node in ast.walk(module.tree):
                if isinstance(node, FuncNode):
                    for decorator in node.decorator_list:
                        target = decorator.func if isinstance(decorator, ast.Call) else decorator
                        name = dotted_name(target)
                        parts = name.split(".")
                        if len(parts) >= 2 and parts[-1] == "connect" and parts[-2] in wanted:
                            found.append((module, node))
                        elif parts and parts[-1] == "receiver" and isinstance(decorator, ast.Call) and decorator.args \
                                and dotted_name(decorator.args[0]).split(".")[-1] in wanted:
                            found.append((module, node))
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect":
                    if dotted_name(node.func.value).split(".")[-1] in wanted and node.args:
                        fname = dotted_name(node.args[0]).split(".")[-1]
                        fn = self.function(fname, module) if fname else None
                        if fn:
                            found.append(fn)
        return found


MISSING = _MISSING = object()
_PROJECTS: dict[int, tuple[weakref.ref, Project]] = {}


def project(tree: Optional[SourceTree]) -> Optional[Project]:
    """The cached Project index of a SourceTree (built on first use)."""
    if tree is None:
        return None
    cached = _PROJECTS.get(id(tree))
    if cached and cached[0]() is tree:
        return cached[1]
    built = Project(tree)
    for key in [k for k, (ref, _) in _PROJECTS.items() if ref() is None]:
        del _PROJECTS[key]
    _PROJECTS[id(tree)] = (weakref.ref(tree), built)
    return built


def assigned_from(func: ast.AST, predicate: Callable[[ast.expr], bool]) -> dict[str, int]:
    """Names bound in a function's own scope to an expression matching `predicate` -> line of the binding."""
    bound: dict[str, int] = {}
    for node in walk_scope(scope_body(func)):
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets, value = [node.target], node.iter
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None and predicate(item.context_expr):
                    for name in ast.walk(item.optional_vars):
                        if isinstance(name, ast.Name):
                            bound[name.id] = node.lineno
            continue
        if value is None or not predicate(value):
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                bound[target.id] = node.lineno
            elif isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
                bound[target.elts[0].id] = node.lineno  # obj, created = X.objects.get_or_create(...)
    return bound


def periodic_task_locations(tree: Optional[SourceTree]) -> list[tuple[Location, Optional[str], str]]:
    """Every `add_periodic_task(...)` call: (location, the entry's literal `name=` or None, the signature's text).

    For checks that see the resulting beat entry in the app's configuration and want to point at the code."""
    proj = project(tree)
    if proj is None:
        return []
    found = []
    for module in proj.modules_mentioning("add_periodic_task"):
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and last_name(node) == "add_periodic_task":
                name = keyword(node, "name")
                sig = node.args[1] if len(node.args) > 1 else keyword(node, "sig")
                found.append((Location(module.path, node.lineno),
                              name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else None,
                              _segment(module.file, sig) if sig is not None else ""))
    return found
