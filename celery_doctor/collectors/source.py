"""Collects the source part of a snapshot (celery_doctor.parts.source): finds and reads the project's Python files."""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Optional

from ..parts.source import SourceFile, SourceTree, parse_source

SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "__pycache__",
             "site-packages", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs"}
MAX_FILES = 5000
MAX_FILE_BYTES = 2 * 1024 * 1024


def _display_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _iter_python_files(root: str) -> Iterator[str]:
    if os.path.isfile(root):
        if root.endswith(".py"):
            yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def read_source_file(path: str) -> SourceFile:
    display = _display_path(path)
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return SourceFile(display, "", None, f"larger than {MAX_FILE_BYTES} bytes, not read")
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return SourceFile(display, "", None, f"unreadable: {exc.strerror or exc}")
    return parse_source(display, text)


def collect_source(roots: Iterable[str]) -> SourceTree:
    roots = tuple(os.path.abspath(r) for r in roots)
    seen: set[str] = set()
    files = []
    truncated = False
    for root in roots:
        for path in _iter_python_files(root):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            if len(files) >= MAX_FILES:
                truncated = True
                break
            files.append(read_source_file(path))
    return SourceTree(tuple(_display_path(r) for r in roots), tuple(files), truncated)


def default_source_roots(app_module_file: Optional[str], app_spec: Optional[str]) -> list[str]:
    """The directory of the app's top-level package (or of its module, when it is a lone module)."""
    if not app_module_file:
        return []
    path = os.path.abspath(app_module_file)
    top = (app_spec or "").split(":")[0].split(".")[0]
    directory = os.path.dirname(path)
    # Walk up while the directory is a package, stopping at the top-level package named in the spec.
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        if os.path.basename(directory) == top:
            return [directory]
        parent = os.path.dirname(directory)
        if not os.path.isfile(os.path.join(parent, "__init__.py")):
            return [directory]
        directory = parent
    return [directory]
