"""Collects the source part of a snapshot (celery_doctor.parts.source): finds and reads the project's Python files."""
from __future__ import annotations

import contextlib
import gc
import io
import os
import tokenize
from typing import Iterable, Iterator, Optional

from ..parts.source import SourceFile, SourceTree, parse_source, suppressions
from ..pyast.closure import close_over_names
from ..pyast.prefilter import relevance
from .refine import set_aside
from .syntax import SyntaxCheck

SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "__pycache__",
             "site-packages", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs"}
MAX_FILES = 20000  # the text of every file is kept (about 35 MB per million lines)
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


def _decode(data: bytes) -> str:
    """The text as Python reads it: the PEP 263 coding cookie (or a UTF-8 BOM), else UTF-8. Raises
    UnicodeDecodeError/SyntaxError/LookupError when Python could not read it either."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def _read(path: str) -> tuple[str, Optional[bytes], Optional[str], Optional[str]]:
    """(display path, bytes, text, error): the bytes and text of a file, or why it could not be read."""
    display = _display_path(path)
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return display, None, None, f"larger than {MAX_FILE_BYTES} bytes, not read"
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return display, None, None, f"unreadable: {exc.strerror or exc}"
    try:
        return display, data, _decode(data), None
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        return display, data, None, f"not readable as Python source text: {_decode_error(exc)}"


def _decode_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid {exc.encoding} (byte {exc.start})"
    return str(getattr(exc, "msg", None) or exc)


def read_source_file(path: str) -> SourceFile:
    """One file, read and parsed (or with the reason it could not be)."""
    display, _, text, error = _read(path)
    if text is None:
        return SourceFile(display, "", None, error)
    return parse_source(display, text)


def _source_file(path: str, prefilter: bool) -> tuple[SourceFile, Optional[str]]:
    """One file of a tree as deferred text, and how much it matters (pyast.prefilter.relevance: "core" files are
    parsed, "model" files if they define a model class); without the prefilter every file is "core"."""
    display, data, text, error = _read(path)
    if text is None:
        return SourceFile(display, "", None, error), None
    return SourceFile(display, text, None, None, suppressions(text), deferred=True), \
        relevance(data) if prefilter else "core"


@contextlib.contextmanager
def syntax_trees_kept():
    """The cyclic garbage collector paused while files are parsed, and what was parsed frozen afterwards.

    A syntax tree holds no reference cycle, yet every node is a container the collector tracks: with a million
    nodes alive, each full collection walks them all again, and parsing a large tree triggered dozens (a third
    of the lint's time). Frozen (gc.freeze), the trees are never walked again; they live as long as the snapshot,
    and diagnose unfreezes the heap when its run ends (thaw_heap), so that `serve` frees each scan's cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def thaw_heap() -> None:
    """Undo syntax_trees_kept's freeze once the snapshot is done with (a no-op when nothing was frozen)."""
    gc.unfreeze()


def collect_source(roots: Iterable[str], prefilter: Optional[bool] = None) -> SourceTree:
    """The Python files under `roots`. With the prefilter (the default; CELERY_DOCTOR_SOURCE_PREFILTER=0 turns it
    off, for the benchmark's and the tests' comparisons) only the files a check may need are parsed; the others
    are only checked for syntax (by worker processes on a large tree), so that a file Python could not read
    either is listed under Not checked."""
    if prefilter is None:
        prefilter = os.environ.get("CELERY_DOCTOR_SOURCE_PREFILTER", "1") != "0"
    with syntax_trees_kept():
        return _collect(tuple(os.path.abspath(r) for r in roots), prefilter)


def _collect(roots: tuple[str, ...], prefilter: bool) -> SourceTree:
    seen: set[str] = set()
    files: list[SourceFile] = []
    kinds: list[Optional[str]] = []
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
            source, kind = _source_file(path, prefilter)
            files.append(source)
            kinds.append(kind)
    check = SyntaxCheck([f for f, k in zip(files, kinds) if f.deferred and k != "core"],
                        {f.path for f, k in zip(files, kinds) if k == "model"})
    parse = _parse_refined if prefilter else parse_source
    files = [parse(f.path, f.text) if k == "core" else f for f, k in zip(files, kinds)]
    models = check.models()
    files = close_over_names([parse_source(f.path, f.text) if f.deferred and f.path in models else f for f in files])
    tree = SourceTree(tuple(_display_path(r) for r in roots), tuple(files), truncated,
                      f"more than {MAX_FILES} Python files; the first {MAX_FILES} were read" if truncated else None)
    tree.later(check.errors)
    return tree


def _parse_refined(path: str, text: str) -> SourceFile:
    """A "core" file parsed, or deferred again when only its strings and comments made it one (refine)."""
    return set_aside(parse_source(path, text))


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
