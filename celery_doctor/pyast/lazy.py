"""The Project's view of deferred files (pyast.prefilter): named like the others, parsed only when a check looks
one of their names up (a helper function, a base class, a constant, an import), and then indexed exactly."""
from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional

from ..parts.source import SourceTree
from .prefilter import defined_names

FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)
_DEF_TYPES = frozenset((*FuncNode, ast.ClassDef))
_IMPORT_TYPES = frozenset((ast.Import, ast.ImportFrom))


def all_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node under `tree`, in ast.walk's order (breadth first, fields in order), walked once and kept on the
    tree object: the closure, the Project index and the project-wide call queries share it."""
    cached = getattr(tree, "_celery_doctor_nodes", None)
    if cached is not None:
        return cached
    node_type = ast.AST
    nodes = [tree]
    append = nodes.append
    for node in nodes:  # the list grows while it is read: breadth first
        for name in node._fields:
            value = getattr(node, name, None)
            if value.__class__ is list:
                for item in value:
                    if isinstance(item, node_type):
                        append(item)
            elif isinstance(value, node_type):
                append(value)
    tree._celery_doctor_nodes = nodes
    return nodes


def nodes_of(tree: ast.AST, node_type: type) -> list[ast.AST]:
    """The nodes of exactly this type under `tree`, in ast.walk's order: all_nodes sorted by type once per tree."""
    by_type = getattr(tree, "_celery_doctor_types", None)
    if by_type is None:
        by_type = {}
        for node in all_nodes(tree):
            kind = node.__class__
            bucket = by_type.get(kind)
            if bucket is None:
                bucket = by_type[kind] = []
            bucket.append(node)
        tree._celery_doctor_types = by_type
    return by_type.get(node_type, [])


def index_module(tree: ast.Module) -> tuple[list[ast.AST], list[ast.AST]]:
    """(imports, definitions) of a module, in ast.walk order; definitions are functions and classes.

    Both are statements, so only statements are walked (their blocks: body, handlers, orelse, finalbody, cases),
    in ast.walk's order: a statement is as deep as in the whole walk, and each block is read in field order. A
    file parsed only for its imports (Project.imports_of) costs a fraction of a whole walk."""
    cached = getattr(tree, "_celery_doctor_index", None)
    if cached is not None:
        return cached
    imports: list[ast.AST] = []
    defs: list[ast.AST] = []
    nodes = [tree]
    extend = nodes.extend
    for node in nodes:  # the list grows while it is read: breadth first
        kind = node.__class__
        if kind in _DEF_TYPES:
            defs.append(node)
        elif kind in _IMPORT_TYPES:
            imports.append(node)
        blocks = _BLOCKS.get(kind)
        if blocks is None:
            blocks = _BLOCKS[kind] = tuple(name for name in kind._fields if name in _BLOCK_FIELDS)
        for name in blocks:
            value = getattr(node, name)
            if value.__class__ is list:  # a block; `body` of a Lambda or an IfExp is an expression, never reached
                extend(value)
    tree._celery_doctor_index = (imports, defs)
    return imports, defs


_BLOCK_FIELDS = frozenset(("body", "handlers", "orelse", "finalbody", "cases"))
_BLOCKS: dict[type, tuple[str, ...]] = {}  # statement class -> its fields that hold statements, in field order


class DeferredModules:
    """Deferred files by path: their Module (whose tree is parsed on first use), their imports (parsed without
    keeping the tree), and an index of the names they may define."""

    def __init__(self, tree: SourceTree, names: dict[str, tuple[str, bool]], make: Callable[..., Any]):
        self.tree = tree
        self.paths = names  # path -> (dotted module name, is_package)
        self.make = make  # (file, name, is_package, loader) -> Module
        self._modules: dict[str, Any] = {}
        self._imports: dict[str, Optional[list]] = {}
        self._may_define: Optional[dict[str, list[str]]] = None

    def module(self, path: str):
        """The module of a deferred file (not parsed yet), or None when the path is not a deferred file."""
        if path not in self.paths:
            return None
        if path not in self._modules:
            self._modules[path] = self.make(self.tree.file(path), *self.paths[path], self.tree.load)
        return self._modules[path]

    def imports(self, path: str) -> Optional[list]:
        """The import statements of a deferred file (None when it does not parse); the tree is not kept."""
        if path not in self._imports:
            source = self.tree.load(path, keep=False)
            self._imports[path] = index_module(source.tree)[0] if source is not None else None
        return self._imports[path]

    def parses(self, path: str) -> bool:
        return self.imports(path) is not None

    def index(self, path: str) -> tuple[list, list]:
        """(imports, definitions) of a deferred file, parsed and kept: definitions are returned to checks."""
        source = self.tree.load(path)
        return index_module(source.tree) if source is not None else ([], [])

    def candidates(self, name: str) -> list[str]:
        """Deferred files whose text may define a function or class `name` (a superset, in file order)."""
        return self._names().get(name, [])

    def may_define(self, path: str, name: str) -> bool:
        """False when the deferred file's text cannot define a function or class `name` (then it need not be
        parsed to look for one); True for a file that is not deferred."""
        return path not in self.paths or path in self._names().get(name, ())

    def _names(self) -> dict[str, list[str]]:
        if self._may_define is None:
            self._may_define = {}
            for path in self.paths:
                source = self.tree.file(path)
                for word in defined_names(source.text if source is not None else ""):
                    self._may_define.setdefault(word, []).append(path)
        return self._may_define


class ModulesByName(Mapping):
    """Dotted module name -> Module, for parsed and deferred files alike (the first file of a name wins)."""

    def __init__(self, paths: dict[str, str], module_at: Callable[[str], Any], exists: Callable[[str], bool]):
        self._paths = paths
        self._module_at = module_at
        self._exists = exists  # a module of a file that does not parse is not a module (as before the prefilter)

    def __getitem__(self, name: str):
        path = self._paths[name]
        if not self._exists(path):
            raise KeyError(name)
        return self._module_at(path)

    def __contains__(self, name: object) -> bool:
        return name in self._paths and self._exists(self._paths[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


class PerModule(dict):
    """path -> a per-module value (constants, imported names, ...): computed on first use for deferred files."""

    def __init__(self, compute: Callable[[str], Any], deferred: Mapping):
        super().__init__()
        self._compute = compute
        self._deferred = deferred

    def __missing__(self, path: str):
        if path not in self._deferred:
            raise KeyError(path)
        value = self[path] = self._compute(path)
        return value

    def get(self, path, default=None):
        if path in self:
            return super().__getitem__(path)
        return self.__missing__(path) if path in self._deferred else default


def forget_walks(tree: ast.AST) -> None:
    """Drop what all_nodes, nodes_of and index_module keep on the tree: the list of its nodes holds the tree itself,
    a reference cycle that would keep a tree that is set aside alive while the cyclic collector is paused."""
    for name in ("_celery_doctor_nodes", "_celery_doctor_types", "_celery_doctor_index"):
        tree.__dict__.pop(name, None)
