"""A module's top-level names, evaluated statically in the order they are bound.

Modules are named as Python names them with the project's directory on sys.path: the file's directory and its
parents while they hold an `__init__.py`. A module is looked up in the source tree first, then as a file under
the working directory (a settings module outside --source), parsed here, never imported.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..parts.source import SourceFile, SourceTree
from .values import Evaluator, Namespace, Opaque, Unresolved

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_IMPORT_DEPTH = 40  # modules being read at once (a chain of imports): deeper ones are not followed


def module_name(path: str) -> str:
    """`proj.tasks` for proj/tasks.py when proj/ is a package (the names Celery gives tasks when imported)."""
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    base = os.path.splitext(os.path.basename(absolute))[0]
    parts = [] if base == "__init__" else [base]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        parts.append(os.path.basename(directory))
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return ".".join(reversed(parts))


@dataclass
class Binding:
    value: Any  # the value, or an Unresolved (the reason)
    line: int
    env: dict = field(default_factory=dict)  # environment variables read for it -> the default used
    key_lines: dict = field(default_factory=dict)  # for a dict literal: key -> the line of that key
    path: Optional[str] = None  # the file it is written in, when not the module's own (a star import)


class Lazy:
    """A name imported from another module of the project, read only when something uses it (most imports of a
    task module never are): `resolve()` gives the Binding it stands for."""

    def __init__(self, resolve) -> None:
        self._resolve = resolve
        self._binding: Optional[Binding] = None

    def resolve(self) -> Binding:
        if self._binding is None:
            self._binding = Binding(Unresolved("an import that refers back to itself"), 0)
            self._binding = self._resolve()
        return self._binding


def settled(binding: Binding) -> Binding:
    """The binding a name finally stands for, through lazy imports."""
    for _ in range(20):
        if not isinstance(binding.value, Lazy):
            return binding
        binding = binding.value.resolve()
    return Binding(Unresolved("a chain of imports too long to follow"), binding.line)


def settle(value: Any) -> Any:
    """A value with its lazy import resolved (an Unresolved stays one: the caller raises it)."""
    return settled(Binding(value, 0)).value if isinstance(value, Lazy) else value


@dataclass
class ModuleNames:
    """One module's names: name -> Binding, in the order they were bound."""

    name: str
    path: str  # as shown in reports
    names: dict = field(default_factory=dict)
    tree: Optional[ast.Module] = None

    def value(self, name: str) -> Any:
        binding = self.names.get(name)
        if binding is None:
            return builtin(name, self.path)
        value = settle(binding.value)
        if isinstance(value, Unresolved):
            raise value
        return value

    def as_namespace(self) -> Namespace:
        return Namespace(f"module {self.name}", {k: b.value for k, b in self.names.items()}, self.path,
                         {k: (b.path or self.path, b.line) for k, b in self.names.items()},
                         {k: b.env for k, b in self.names.items() if b.env})


def parsed(tree: Optional[SourceTree], source: SourceFile) -> Optional[SourceFile]:
    """The file with its syntax tree: a file the source collector read without parsing it (nothing in it for the
    source checks) is parsed now, by the tree when it can (SourceTree.load keeps it), else here."""
    if source.tree is not None:
        return source
    load = getattr(tree, "load", None)
    if load is not None:
        return load(source.path)
    if source.error:
        return None
    from ..parts.source import parse_source

    again = parse_source(source.path, source.text)
    return again if again.tree is not None else None


class Modules:
    """The project's modules by dotted name, evaluated on first use (cycles are cut, not followed)."""

    def __init__(self, tree: Optional[SourceTree], cwd: str) -> None:
        self.cwd = cwd
        self.tree = tree
        self.files: dict[str, SourceFile] = {}
        for source in (tree.files if tree else ()):
            self.files.setdefault(module_name(source.path), source)
        self.loaded: dict[str, ModuleNames] = {}
        self.loading: set[str] = set()
        self.django_settings: Optional[str] = None  # the module `from django.conf import settings` stands for

    def find(self, name: str) -> Optional[SourceFile]:
        found = self.files.get(name)
        if found is not None:
            return parsed(self.tree, found)
        if not name:
            return None
        base = os.path.join(self.cwd, *name.split("."))
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(path) and os.path.getsize(path) <= MAX_FILE_BYTES:
                from ..collectors.source import read_source_file

                source = read_source_file(path)
                if source.tree is not None:
                    self.files[name] = source
                    return source
        return None

    def module(self, name: str) -> Optional[ModuleNames]:
        if name in self.loaded:
            return self.loaded[name]
        source = self.find(name)
        if source is None or name in self.loading or len(self.loading) >= MAX_IMPORT_DEPTH:
            return None
        self.loading.add(name)
        try:
            names = ModuleNames(name, source.path, tree=source.tree)
            names.names["__name__"] = Binding(name, 0)
            _Reader(self, names, source).run(source.tree.body)
        finally:
            self.loading.discard(name)
        self.loaded[name] = names
        return names

    def absolute(self, current: str, is_package: bool, level: int, name: Optional[str]) -> str:
        if not level:
            return name or ""
        parts = current.split(".") if current else []
        if not is_package:
            parts = parts[:-1]
        if level > 1:
            parts = parts[: max(len(parts) - (level - 1), 0)]
        return ".".join([*parts, *([name] if name else [])])


class _Reader:
    """Runs through a module's (or a class body's) statements, binding names to evaluated values."""

    def __init__(self, modules: Modules, names: ModuleNames, source: SourceFile) -> None:
        self.modules = modules
        self.names = names
        self.source = source
        self.is_package = os.path.basename(source.path) == "__init__.py"

    def lookup(self, name: str) -> Any:
        return self.names.value(name)

    def attribute(self, value: Any, attr: str) -> Any:
        return namespace_attribute(value, attr)

    def evaluator(self) -> Evaluator:
        return Evaluator(self.lookup, self.attribute)

    def bind(self, name: str, node: Optional[ast.AST], line: int) -> None:
        evaluate = self.evaluator()
        try:
            value: Any = evaluate(node)
        except Unresolved as exc:
            value = exc
        self.names.names[name] = Binding(value, line, dict(evaluate.env), _key_lines(node), self.names.path)

    def run(self, body: list) -> None:
        for stmt in body:
            handler = getattr(self, "_" + type(stmt).__name__, None)
            if handler is not None:
                handler(stmt)

    # ----- statements -----------------------------------------------------------------------------------------
    def _Assign(self, stmt: ast.Assign) -> None:
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                self.bind(target.id, stmt.value, stmt.lineno)
            elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
                self._set_item(target, stmt.value, stmt.lineno)
            else:
                for name in _target_names(target):
                    self.names.names[name] = Binding(Unresolved(f"{name} is bound by unpacking"), stmt.lineno)

    def _AnnAssign(self, stmt: ast.AnnAssign) -> None:
        if isinstance(stmt.target, ast.Name) and stmt.value is not None:
            self.bind(stmt.target.id, stmt.value, stmt.lineno)

    def _AugAssign(self, stmt: ast.AugAssign) -> None:
        if isinstance(stmt.target, ast.Name):
            self.bind(stmt.target.id, ast.BinOp(left=ast.Name(stmt.target.id, ast.Load()), op=stmt.op,
                                                 right=stmt.value), stmt.lineno)

    def _set_item(self, target: ast.Subscript, value: ast.AST, line: int) -> None:
        binding = self.names.names.get(target.value.id)
        if binding is not None:
            binding.value = settle(binding.value)
        if binding is None or not isinstance(binding.value, dict):
            return
        evaluate = self.evaluator()
        try:
            binding.value[evaluate(target.slice)] = evaluate(value)
            binding.env.update(evaluate.env)
        except Unresolved as exc:
            binding.value = Unresolved(f"{target.value.id}[...] at line {line}: {exc}")
        except TypeError:
            binding.value = Unresolved(f"{target.value.id}[...] at line {line}: an unhashable key")

    def _Expr(self, stmt: ast.Expr) -> None:
        call = stmt.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "update" \
                and isinstance(call.func.value, ast.Name):
            binding = self.names.names.get(call.func.value.id)
            if binding is not None:
                binding.value = settle(binding.value)
            if binding is not None and isinstance(binding.value, dict):
                evaluate = self.evaluator()
                try:
                    args, kwargs = evaluate._args(call)
                    binding.value.update(*args, **kwargs)
                except (Unresolved, TypeError, ValueError) as exc:
                    binding.value = Unresolved(f"{call.func.value.id}.update(...) at line {stmt.lineno}: {exc}")

    def _module_binding(self, name: str, line: int) -> Binding:
        found = self.modules.module(name)
        return Binding(found.as_namespace() if found else Opaque(f"the module {name}"), line)

    def _Import(self, stmt: ast.Import) -> None:
        for alias in stmt.names:
            name = alias.name if alias.asname else alias.name.split(".")[0]
            if alias.asname or name == alias.name:
                self.names.names[alias.asname or name] = Binding(
                    Lazy(lambda n=name, line=stmt.lineno: self._module_binding(n, line)), stmt.lineno)
            else:
                self.names.names[name] = Binding(Opaque(f"the module {name}"), stmt.lineno)

    def _imported(self, base: str, name: str, line: int) -> Binding:
        if (base, name) == ("django.conf", "settings") and self.modules.django_settings:
            found = self.modules.module(self.modules.django_settings)  # Django's settings object: its upper-case names
            if found is not None:
                return Binding(Namespace(f"the Django settings {found.name}", {
                    k: v for k, v in found.as_namespace().values.items() if k.isupper()}, found.path), line)
        source = self.modules.module(base) if base != self.names.name else None
        if source is not None and name in source.names:
            return settled(source.names[name])
        submodule = self.modules.module(f"{base}.{name}") if base else None
        return Binding(submodule.as_namespace() if submodule else Opaque(f"{name}, imported from {base}"), line)

    def _ImportFrom(self, stmt: ast.ImportFrom) -> None:
        base = self.modules.absolute(self.names.name, self.is_package, stmt.level, stmt.module)
        for alias in stmt.names:
            if alias.name == "*":  # the names are needed now: the module is read now
                source = self.modules.module(base) if base != self.names.name else None
                for key, binding in (source.names.items() if source is not None else ()):
                    if not key.startswith("_"):
                        self.names.names[key] = binding
                continue
            self.names.names[alias.asname or alias.name] = Binding(
                Lazy(lambda n=alias.name, line=stmt.lineno: self._imported(base, n, line)), stmt.lineno)

    def _ClassDef(self, stmt: ast.ClassDef) -> None:
        inner = ModuleNames(f"{self.names.name}.{stmt.name}", self.names.path)
        reader = _Reader(self.modules, inner, self.source)
        outer = self.lookup

        def lookup(name: str) -> Any:
            return reader_lookup(inner, name, outer)

        reader.lookup = lookup  # type: ignore[method-assign]
        reader.run(stmt.body)
        value = Namespace(f"class {stmt.name}", {k: b.value for k, b in inner.names.items()}, self.names.path,
                          {k: (b.path or self.names.path, b.line) for k, b in inner.names.items()},
                          {k: b.env for k, b in inner.names.items() if b.env})
        self.names.names[stmt.name] = Binding(value, stmt.lineno)

    def _FunctionDef(self, stmt: ast.FunctionDef) -> None:
        self.names.names[stmt.name] = Binding(Opaque(f"the function {stmt.name}"), stmt.lineno)

    _AsyncFunctionDef = _FunctionDef

    def _If(self, stmt: ast.If) -> None:
        evaluate = self.evaluator()
        try:
            branch = stmt.body if evaluate(stmt.test) else stmt.orelse
        except Unresolved as exc:
            for node in [*stmt.body, *stmt.orelse]:
                for name in _bound_names(node):
                    self.names.names[name] = Binding(
                        Unresolved(f"{name} is set under a condition at line {stmt.lineno} ({exc})"), node.lineno)
            return
        self.run(branch)

    def _Try(self, stmt: ast.Try) -> None:
        self.run(stmt.body)  # the path where nothing raises (e.g. `from .local import *` when it exists)
        self.run(stmt.orelse)
        self.run(stmt.finalbody)


def namespace_attribute(value: Any, attr: str) -> Any:
    """`value.attr` for a module, class or settings object of the project read here; else Unresolved."""
    if isinstance(value, Namespace):
        found = settle(value.values.get(attr, Unresolved(f"{value.label} has no {attr}")))
        if isinstance(found, Opaque):
            raise Unresolved(f"{attr} is {found.what}")
        if isinstance(found, Unresolved):
            raise found
        return found
    if isinstance(value, Opaque):
        raise Unresolved(f"{attr} of {value.what}")
    raise Unresolved(f"the attribute {attr}")


def builtin(name: str, path: str) -> Any:
    """A builtin class (exception classes: autoretry_for=(ConnectionError,)), else Unresolved."""
    import builtins

    if isinstance(getattr(builtins, name, None), type):
        return getattr(builtins, name)
    raise Unresolved(f"{name} is not defined at module level in {path}")


def reader_lookup(inner: ModuleNames, name: str, outer) -> Any:
    if name not in inner.names:
        return outer(name)
    return inner.value(name)


def _target_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _bound_names(stmt: ast.AST) -> list[str]:
    if isinstance(stmt, ast.Assign):
        return [n for t in stmt.targets if isinstance(t, ast.Name) for n in _target_names(t)]
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _key_lines(node: Optional[ast.AST]) -> dict:
    if not isinstance(node, ast.Dict):
        return {}
    return {k.value: k.lineno for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
