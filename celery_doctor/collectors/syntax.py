"""Syntax checks of the files the source collector does not parse (pyast.prefilter): a file Python could not
read either (syntax newer than this Python, a null byte) is listed under Not checked, never skipped silently.
The same pass tells which files holding only ORM model base names define a model class (those are parsed).

On a large tree the files are parsed by worker processes (the other cores, at most two), while the main process
parses the files the checks need and runs the checks; the workers send back only paths and reasons, never a
tree.
"""
from __future__ import annotations

import ast
import multiprocessing
import os
from typing import Optional

from ..parts.source import NESTED_TOO_DEEPLY, SourceFile
from ..pyast.closure import defines_model

PARALLEL_MIN_BYTES = 2 * 1024 * 1024  # below this, parsing in this process costs less than starting workers
CHUNK_FILES = 16


def parse_error(source: SourceFile) -> tuple[Optional[str], Optional[ast.Module]]:
    """(why the text does not parse, as parts.source.parse_source words it, or None; the tree)."""
    try:
        return None, ast.parse(source.text, filename=source.path)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}", None
    except ValueError as exc:
        return f"not parseable: {exc}", None
    except RecursionError:
        return NESTED_TOO_DEEPLY, None


def _check(chunk: list[tuple[SourceFile, bool]]) -> tuple[list[tuple[str, str]], list[str]]:
    """(errors, paths of the files asked about that define a model class) for a chunk of (file, ask)."""
    errors, models = [], []
    for source, ask in chunk:
        error, tree = parse_error(source)
        if error:
            errors.append((source.path, error))
        elif ask and defines_model(tree):
            models.append(source.path)
    return errors, models


def _workers() -> int:
    """Processes for the syntax check: the cores this process may use, less the one it parses and checks on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(2, cores - 1))


def _chunks(items: list) -> list[list]:
    return [items[i:i + CHUNK_FILES] for i in range(0, len(items), CHUNK_FILES)]


class SyntaxCheck:
    """The check of the deferred files, started at once: `models()` waits for the model answers only, `errors()`
    for everything."""

    def __init__(self, files: list[SourceFile], ask: set[str]):
        items = [(f, f.path in ask) for f in files]
        first = [item for item in items if item[1]]
        rest = [item for item in items if not item[1]]
        self._pool = None
        if sum(len(f.text) for f in files) < PARALLEL_MIN_BYTES or _workers() < 1:
            self._done = [_check(first), _check(rest)]
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self._pool = multiprocessing.get_context(method).Pool(_workers())
        self._pending = [self._pool.map_async(_check, _chunks(first)), self._pool.map_async(_check, _chunks(rest))]
        self._pool.close()
        self._done = [None, None]

    def _part(self, index: int) -> tuple[list, list]:
        if self._done[index] is None:
            try:
                results = self._pending[index].get()
            except BaseException:
                self._pool.terminate()
                raise
            self._done[index] = ([e for r in results for e in r[0]], [m for r in results for m in r[1]])
            if all(d is not None for d in self._done):
                self._pool.join()
        return self._done[index]

    def models(self) -> set[str]:
        return set(self._part(0)[1])

    def errors(self) -> list[tuple[str, str]]:
        return self._part(0)[0] + self._part(1)[0]
