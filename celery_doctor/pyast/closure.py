"""The closure of the prefilter (pyast.prefilter): deferred files that name a decorator factory, a task class or a
model of the parsed files are parsed too, until nothing new comes in.

A task can be `@my_task` with `my_task = shared_task(...)` defined in another module, or a class deriving from the
project's own Task subclass; a model can derive from the project's own base model. Such a file may hold none of
the prefilter's tokens, but the task discovery (facts.source_tasks) and the model index (checks/source_orm.py)
read every parsed file, so it must be parsed.
"""
from __future__ import annotations

import ast

from ..parts.source import SourceFile, parse_source
from .expr import dotted_name
from .lazy import index_module
from .prefilter import MODEL_BASES, aliased_names, referenced_bases

FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)


def _classes(tree: ast.Module, aliases: bool = True) -> list[tuple[str, frozenset, bool]]:
    """(name, the words of its bases, sets __tablename__ in its body) for every class of the module; with
    `aliases`, a base imported under another name (`from m import Base as B`) counts by both names."""
    found = []
    imports, definitions = index_module(tree)
    renamed = {alias.asname: alias.name.split(".")[-1] for node in imports for alias in node.names
               if aliases and alias.asname}
    for node in definitions:
        if isinstance(node, ast.ClassDef):
            words = frozenset(part for base in node.bases for part in dotted_name(base).split(".") if part)
            words |= {renamed[word] for word in words if word in renamed}
            table = any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__tablename__"
                                                          for t in s.targets) for s in node.body)
            found.append((node.name, words, table))
    return found


def _factory_names(source: SourceFile) -> set[str]:
    """Module-level names bound by a statement whose text mentions `task` or `partial`: every decorator factory
    (a superset)."""
    found: set[str] = set()
    lines = None
    for stmt in source.tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            names = [t.id for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
                     if isinstance(t, ast.Name)]
        elif isinstance(stmt, FuncNode):
            names = [stmt.name]
        else:
            continue
        if not names:
            continue
        lines = lines if lines is not None else source.text.splitlines()
        text = "\n".join(lines[stmt.lineno - 1:stmt.end_lineno or stmt.lineno])
        if "task" in text or "partial" in text:
            found.update(names)
    return found


def defines_model(tree: ast.Module) -> bool:
    """A class on an ORM model base (by the last part of its name: checks/source_orm.py Orm._is_model, without
    following the project's own classes) or with __tablename__ in its body: the file must be parsed."""
    return any(table or words & MODEL_BASES for _, words, table in _classes(tree, aliases=False))


def _wanted(factories: set[str], classes: list[tuple[str, frozenset, bool]]) -> tuple[set[str], set[str]]:
    """(factory names and the wanted classes, the wanted classes): the classes deriving (by name, through the
    classes seen) from a task or model base."""
    wanted = set(factories)
    derived: set[str] = set()
    grown = True
    while grown:
        before = len(wanted)
        derived |= {name for name, words, table in classes if table or words & MODEL_BASES or words & wanted}
        wanted |= derived
        grown = len(wanted) > before
    return wanted, derived


def close_over_names(files: list[SourceFile]) -> list[SourceFile]:
    """The files, with the deferred ones that refer to a factory, task class or model of the parsed ones parsed."""
    # per deferred file: the words of its bases and decorators, and the names it imports under another name (a
    # class imported as `B` and derived from as `class C(B)`: is_task_class follows it, so the file is parsed)
    deferred = {i: (referenced_bases(f.text), aliased_names(f.text)) for i, f in enumerate(files) if f.deferred}
    factories: set[str] = set()
    classes: list[tuple[str, frozenset, bool]] = []
    added = [f for f in files if f.tree is not None]
    while True:
        for source in added:
            factories |= _factory_names(source)
            classes += _classes(source.tree)
        wanted, derived = _wanted(factories, classes)
        hits = [i for i, (words, aliased) in deferred.items() if words & wanted or aliased & derived]
        if not hits:
            return files
        added = []
        for i in hits:
            del deferred[i]
            files[i] = parse_source(files[i].path, files[i].text)
            if files[i].tree is not None:
                added.append(files[i])
