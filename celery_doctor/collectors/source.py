"""The source part of a snapshot: the project's Python files, parsed once (nothing is executed)."""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "__pycache__",
             "site-packages", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs"}
MAX_FILES = 5000
MAX_FILE_BYTES = 2 * 1024 * 1024
IGNORE_COMMENT = re.compile(r"#\s*celery-doctor:\s*ignore(?:\[(?P<ids>[A-Za-z0-9_,\s]*)\])?")


@dataclass(frozen=True)
class SourceFile:
    path: str  # as shown in reports: relative to the working directory where possible
    text: str
    tree: Optional[ast.Module]
    error: Optional[str] = None  # syntax error, unreadable file
    suppressions: dict = field(default_factory=dict)  # line -> frozenset of ids (empty set: all)

    def suppressed(self, line: Optional[int], check_id: str) -> bool:
        if line is None or line not in self.suppressions:
            return False
        ids = self.suppressions[line]
        return not ids or any(check_id.startswith(prefix) for prefix in ids)


@dataclass(frozen=True)
class SourceTree:
    roots: tuple[str, ...]
    files: tuple[SourceFile, ...]
    truncated: bool = False

    def parsed(self) -> Iterator[SourceFile]:
        return (f for f in self.files if f.tree is not None)

    def file(self, path: str) -> Optional[SourceFile]:
        for f in self.files:
            if f.path == path:
                return f
        return None

    def suppressed(self, path: Optional[str], line: Optional[int], check_id: str) -> bool:
        source = self.file(path) if path else None
        return bool(source and source.suppressed(line, check_id))


def _display_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _suppressions(text: str) -> dict:
    found = {}
    if "celery-doctor" not in text:
        return found
    for number, line in enumerate(text.splitlines(), 1):
        match = IGNORE_COMMENT.search(line)
        if match:
            ids = match.group("ids")
            found[number] = frozenset(i.strip().upper() for i in ids.split(",") if i.strip()) if ids else frozenset()
    return found


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
    try:
        tree = ast.parse(text, filename=display)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        return SourceFile(display, text, None, f"syntax error at line {line}: {getattr(exc, 'msg', exc)}")
    return SourceFile(display, text, tree, None, _suppressions(text))


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
