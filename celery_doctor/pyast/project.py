"""The project index for the source checks: modules, imports, constants, definitions, classes, signal handlers.

Built once per SourceTree (cached by `project`). Everything is static: files are only parsed, never imported or
executed. The tasks of the tree are found by celery_doctor.facts.source_tasks (Project.tasks).
"""
from __future__ import annotations

import ast
import os
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from ..parts.source import SourceFile, SourceTree
from .expr import dotted_name, last_name, literal_seconds
from .lazy import DeferredModules, ModulesByName, PerModule, all_nodes, index_module, nodes_of
from .lineage import Lineage
from .scope import PUBLISH_METHODS, FuncNode, walk_scope

if TYPE_CHECKING:
    from ..facts.source_tasks import Task

TASK_BASES = frozenset({"Task"})  # the last part of every base _celery_task_base accepts
NON_CELERY_TASK_MODULES = {"asyncio", "luigi", "prefect", "dramatiq", "huey", "rq", "invoke", "trio", "anyio"}


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
class DeferredModule(Module):
    """A module of a deferred file (pyast.prefilter): `file` holds its text; the tree is parsed on first use."""

    loader: Callable = field(default=None, compare=False, repr=False)  # SourceTree.load

    @property
    def tree(self) -> ast.Module:
        source = self.loader(self.path)
        return source.tree if source is not None else None


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
        # Deferred files (pyast.prefilter) are named and looked up like the others, but parsed only on demand.
        known = [f for f in tree.files if f.tree is not None or f.deferred]
        names = _module_names(known)
        self.modules: list[Module] = [Module(f, *names[f.path]) for f in tree.parsed()]
        self.by_path = {m.path: m for m in self.modules}
        self._deferred = DeferredModules(tree, {f.path: names[f.path] for f in known if f.deferred}, DeferredModule)
        self._paths_named: dict[str, list[str]] = {}  # dotted name -> paths, in file order
        for f in known:
            self._paths_named.setdefault(names[f.path][0], []).append(f.path)
        self.by_name = ModulesByName({name: paths[0] for name, paths in self._paths_named.items()}, self._module_at,
                                     lambda path: path in self.by_path or self._deferred.parses(path))
        self.functions: dict[str, list[tuple[Module, ast.AST]]] = {}
        self.classes: dict[str, list[tuple[Module, ast.ClassDef]]] = {}
        self.constants = PerModule(self._deferred_constants, self._deferred.paths)
        # path -> local name -> (module, name)
        self.imported_names = PerModule(self._deferred_imported_names, self._deferred.paths)
        self._imports = PerModule(lambda path: self._deferred.imports(path) or [], self._deferred.paths)
        self._defs = PerModule(lambda path: self._deferred.index(path)[1], self._deferred.paths)
        for module in self.modules:
            self.constants[module.path] = _module_constants(module)
            self._index_definitions(module)
            self.imported_names[module.path] = self._imported_names(module)
        self._task_classes: dict[int, bool] = {}
        self._scopes: dict[str, list[Scope]] = {}

    def _module_at(self, path: str) -> Optional[Module]:
        return self.by_path.get(path) or self._deferred.module(path)

    def _deferred_constants(self, path: str) -> dict:
        module = self._deferred.module(path)
        return _module_constants(module) if module.tree is not None else {}

    def _deferred_imported_names(self, path: str) -> dict:
        return self._imported_names(self._deferred.module(path))

    def _index_definitions(self, module: Module) -> None:
        imports, defs = index_module(module.tree)
        for node in defs:
            table = self.classes if isinstance(node, ast.ClassDef) else self.functions
            table.setdefault(node.name, []).append((module, node))
        self._imports[module.path] = imports
        self._defs[module.path] = defs

    def definitions(self, module: Module) -> list[ast.AST]:
        """Every function and class defined in the module, nested ones included, in ast.walk order."""
        return self._defs[module.path]

    @property
    def lineage(self) -> Lineage:
        """Which class names may lead to a given base (pyast.lineage): lookups of the others are skipped."""
        return self.tree.memo("lineage", lambda: Lineage(f.text for f in self.tree.files))

    @cached_property
    def tasks(self) -> list["Task"]:
        """The tasks defined in the tree: the one discovery every check uses (facts.source_tasks)."""
        from ..facts.source_tasks import discover_tasks

        return discover_tasks(self)

    # ----- scopes --------------------------------------------------------------------------------------------
    def scopes(self, module: Module) -> list["Scope"]:
        """The module's scopes (module body, then every function), each with its own nodes walked once."""
        cached = self._scopes.get(module.path)
        if cached is None:
            cached = [Scope(None, module.tree.body, walk_scope(module.tree.body))]
            for node in self.definitions(module):  # ast.walk order
                if isinstance(node, FuncNode):
                    cached.append(Scope(node, node.body, walk_scope(node.body)))
            self._scopes[module.path] = cached
        return cached

    def modules_mentioning(self, *words: str) -> list[Module]:
        """Modules whose text contains any of `words` (a cheap filter before walking trees)."""
        return [m for m in self.modules if any(w in m.file.text for w in words)]

    @cached_property
    def publishing_paths(self) -> frozenset[str]:
        """Paths of the modules whose text names a publish method (scope.PUBLISH_METHODS): no other module holds a
        publish, so a check about publishes need not walk the others."""
        return frozenset(m.path for m in self.modules_mentioning(*PUBLISH_METHODS))

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
                    last_name(n) in ("Celery", "autodiscover_tasks") for n in nodes_of(module.tree, ast.Call)):
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
        """A definition by name as seen from `prefer`: its own module, then what it imports, then a unique match
        in the tree. Deferred files are parsed only as far as the answer needs."""
        kind = ast.ClassDef if table is self.classes else FuncNode
        if prefer is not None:
            own = _named_in(self.definitions(prefer), kind, name)
            if own is not None:
                return prefer, own
            imported = self.imported_names.get(prefer.path, {}).get(name)
            if imported:
                source_module, original = imported
                for path in self._paths_named.get(source_module, ()):
                    if not self._deferred.may_define(path, original):
                        continue  # a deferred file whose text defines no such name: not parsed for nothing
                    module = self._module_at(path)
                    node = _named_in(self.definitions(module), kind, original) if module is not None else None
                    if node is not None:
                        return module, node
        found = list(table.get(name) or [])
        for path in self._deferred.candidates(name):
            if len(found) > 1:
                break
            module = self._deferred.module(path)
            if module is not None:
                found += [(module, n) for n in self.definitions(module) if isinstance(n, kind) and n.name == name]
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
                found = self.cls(name, where) if name in self.lineage.derived(TASK_BASES) else None
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
    def task_for(self, module: Module, node: ast.AST) -> Optional["Task"]:
        for task in self.tasks:
            if task.module.path == module.path and task.node is node:
                return task
        return None

    def tasks_named(self, name: str) -> list["Task"]:
        """Tasks whose function (or class) is called `name` in the source."""
        return [t for t in self.tasks if (t.cls.name if t.cls else t.node.name) == name]

    # ----- signals -----------------------------------------------------------------------------------------------
    def signal_handlers(self, *signals: str) -> list[tuple[Module, ast.AST]]:
        """Functions connected to one of `signals` (`@worker_process_init.connect` or `sig.connect(fn)`)."""
        wanted = set(signals)
        found = []
        for module in self.modules_mentioning(*signals):
            for node in all_nodes(module.tree):
                if isinstance(node, FuncNode):
                    found += [(module, node) for d in node.decorator_list if _connects(d, wanted)]
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect":
                    fn = self._connected_function(node, wanted, module)
                    if fn:
                        found.append(fn)
        return found

    def _connected_function(self, call: ast.Call, wanted: set[str], module: Module):
        """The function of this tree a `signal.connect(fn)` call connects, for one of the wanted signals."""
        if dotted_name(call.func.value).split(".")[-1] in wanted and call.args:
            fname = dotted_name(call.args[0]).split(".")[-1]
            return self.function(fname, module) if fname else None
        return None


def _connects(decorator: ast.expr, wanted: set[str]) -> bool:
    """`@signal.connect` / `@signal.connect(...)`, or Django's `@receiver(signal)`, for one of the wanted signals."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    parts = dotted_name(target).split(".")
    if len(parts) >= 2 and parts[-1] == "connect" and parts[-2] in wanted:
        return True
    return parts[-1] == "receiver" and isinstance(decorator, ast.Call) and bool(decorator.args) \
        and dotted_name(decorator.args[0]).split(".")[-1] in wanted


def _named_in(definitions: list, kind, name: str):
    return next((n for n in definitions if isinstance(n, kind) and n.name == name), None)


def _module_constants(module: Module) -> dict[str, ast.expr]:
    """Names bound once at module level (`NAME = expr`, `NAME: T = expr`) -> their expression."""
    consts: dict[str, ast.expr] = {}
    for stmt in module.tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            consts[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            consts[stmt.target.id] = stmt.value
    return consts


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

