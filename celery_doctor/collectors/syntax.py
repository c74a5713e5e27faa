"""Syntax checks of the files the source collector does not parse (pyast.prefilter): a file Python could not
read either (syntax newer than this Python, a null byte) is listed under Not checked, never skipped silently.

On a large tree the files are parsed by worker processes (the other cores, at most two), while the main process parses the
files the checks need and runs the checks; the workers send back only the errors (path, reason), never a tree.
"""
from __future__ import annotations

import ast
import multiprocessing
import os
from typing import Callable, Optional

from ..parts.source import SourceFile

PARALLEL_MIN_BYTES = 2 * 1024 * 1024  # below this, parsing in this process costs less than starting workers
CHUNK_FILES = 16


def parse_error(source: SourceFile) -> Optional[str]:
    """Why the text does not parse (as parts.source.parse_source words it), or None."""
    try:
        ast.parse(source.text, filename=source.path)
    except SyntaxError as exc:
        return f"syntax error at line {exc.lineno}: {exc.msg}"
    except ValueError as exc:
        return f"not parseable: {exc}"
    return None


def _errors(chunk: list[SourceFile]) -> list[tuple[str, str]]:
    out = []
    for source in chunk:
        error = parse_error(source)
        if error:
            out.append((source.path, error))
    return out


def _workers() -> int:
    """Processes for the syntax check: the cores this process may use, less the one it parses and checks on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(2, cores - 1))


def syntax_check(files: list[SourceFile]) -> Callable[[], list[tuple[str, str]]]:
    """Start checking the files; returns a function that waits for the result: (path, reason) of those that do
    not parse."""
    if not files:
        return list
    size = sum(len(f.text) for f in files)
    if size < PARALLEL_MIN_BYTES or _workers() < 1:
        errors = _errors(files)
        return lambda: errors
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(_workers())
    chunks = [files[i:i + CHUNK_FILES] for i in range(0, len(files), CHUNK_FILES)]
    result = pool.map_async(_errors, chunks)
    pool.close()
    done: list = []

    def wait() -> list[tuple[str, str]]:
        if not done:
            try:
                done.append([error for chunk in result.get() for error in chunk])
            finally:
                pool.join()
        return done[0]

    return wait
