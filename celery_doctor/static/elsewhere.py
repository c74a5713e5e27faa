"""Configuration the static reader does not apply but names under Not checked: the app configured inside a function
of its module, or by another module that imports it (whether and when that code runs is not known statically)."""
from __future__ import annotations

import ast
import os
import re
from typing import Optional

from ..parts.source import SourceTree
from .apps import FoundApp, steps_of
from .modules import Modules, module_name, parsed


def configured_in_functions(found: FoundApp) -> list:
    """(what, why) for functions of the app's module that configure it: when (and whether) they run is not known."""
    notes = []
    for node in found.file.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for step in steps_of(node.body, found.variable):
                notes.append((f"app configured in function {node.name}() ({found.path}:{step.line})",
                              "not read statically: whether and when the function runs is not known"))
    return notes


_RELATIVE_IMPORT = re.compile(r"\bfrom[\s\\]*\.")


def _may_import_from(path: str, text: str, home: str) -> bool:
    """False when the file holds no `from ... import` of the module `home` (a file parsed for nothing is kept, on a
    large tree by the hundred): an absolute one names home's last part; a relative one (`from .`) stays inside the
    file's own top-level package."""
    if home.rsplit(".", 1)[-1] in text:
        return True
    return bool(_RELATIVE_IMPORT.search(text)) and module_name(path).split(".")[0] == home.split(".")[0]


def configured_elsewhere(found: FoundApp, tree: Optional[SourceTree], modules: Modules) -> list:
    """(what, why) for other modules that import the app and configure it (`from proj.celery import app`, then
    `app.conf.x = ...`): that happens only if and when the module is imported, which is not known here."""
    home = module_name(found.path)
    notes = []
    for listed in (tree.files if tree else ()):
        if listed.path == found.path or ".conf" not in listed.text or found.variable not in listed.text or \
                not _may_import_from(listed.path, listed.text, home):
            continue
        source = parsed(tree, listed)
        if source is None:
            continue
        name = module_name(source.path)
        package = os.path.basename(source.path) == "__init__.py"
        for stmt in source.tree.body:
            if isinstance(stmt, ast.ImportFrom) and modules.absolute(name, package, stmt.level, stmt.module) == home:
                for alias in stmt.names:
                    if alias.name == found.variable:
                        notes += [(f"app configured in {source.path}:{step.line}", "not read statically: the "
                                   "module configures the app when it is imported, which is not known here")
                                  for step in steps_of(source.tree.body, alias.asname or alias.name)]
    return notes
