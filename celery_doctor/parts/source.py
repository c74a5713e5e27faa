"""The source part of a snapshot: the project's Python files, parsed once (nothing is imported or executed).

Pure data and pure parsing of text already read: no I/O here. The collector (celery_doctor.collectors.source)
walks the directories and reads the files.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from .compact_ast import compact

__all__ = ["IGNORE_COMMENT", "SourceFile", "SourceTree", "example", "parse_source", "suppressions"]

NESTED_TOO_DEEPLY = "not parseable: nested too deeply for Python's parser"
IGNORE_COMMENT = re.compile(r"#\s*celery-doctor:\s*ignore(?:\[(?P<ids>[A-Za-z0-9_,\s]*)\])?")


@dataclass(frozen=True)
class SourceFile:
    path: str  # as shown in reports: relative to the working directory where possible
    text: str
    tree: Optional[ast.Module]  # compact nodes (parts.compact_ast): isinstance(n, ast.Call) holds; type(n) is not ast.Call
    error: Optional[str] = None  # syntax error, unreadable file
    suppressions: dict = field(default_factory=dict)  # line -> frozenset of ids (empty set: all)
    deferred: bool = False  # read, not parsed: nothing the checks look for (pyast.prefilter); see SourceTree.load

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
    limit: Optional[str] = None  # why files were left out when truncated
    _loaded: dict = field(default_factory=dict, compare=False, repr=False)  # internal: files parsed on demand; memo()

    def parsed(self) -> Iterator[SourceFile]:
        """The parsed files: every file a check can report in (deferred files are not parsed, see load)."""
        return (f for f in self.files if f.tree is not None)

    def file(self, path: str) -> Optional[SourceFile]:
        index = self._loaded.get(_INDEX)
        if index is None:
            index = self._loaded[_INDEX] = {f.path: f for f in reversed(self.files)}
        return index.get(path)

    def load(self, path: str, keep: bool = True) -> Optional[SourceFile]:
        """The file parsed: a deferred file is parsed now (and kept, unless keep is False); None when it is not in
        the tree or does not parse (then not_checked lists it)."""
        source = self.file(path)
        if source is None or not source.deferred:
            return source if source is not None and source.tree is not None else None
        loaded = self._loaded.get(path)
        if loaded is None:
            loaded = parse_source(source.path, source.text, compact=keep)  # a tree not kept is not worth compacting
            if keep or loaded.tree is None:
                self._loaded[path] = loaded
        return loaded if loaded.tree is not None else None

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """A value derived from the parsed files, computed once: the parsed files never change after collection (a
        deferred file parsed on demand is not one of them)."""
        slot = (_MEMO, key)
        if slot not in self._loaded:
            self._loaded[slot] = compute()
        return self._loaded[slot]

    def later(self, errors: Callable[[], list]) -> None:
        """Errors found after the tree was built (the syntax check of deferred files runs beside the checks)."""
        self._loaded[_LATER] = errors

    def not_checked(self) -> list[tuple[str, str]]:
        """(file, why) for every file that was not analysed: unreadable, too large, undecodable, not parseable,
        and the files left out when the tree was truncated."""
        out = [(f.path, f.error) for f in self.files if f.error]
        later = dict(self._loaded[_LATER]()) if _LATER in self._loaded else {}
        later.update((f.path, f.error) for f in self._loaded.values() if isinstance(f, SourceFile) and f.error)
        known = {path for path, _ in out}
        out += sorted((path, error) for path, error in later.items() if path not in known)
        if self.truncated:
            out.append((", ".join(self.roots), f"not every file was read: {self.limit or 'too many files'}"))
        return out

    def suppressed(self, path: Optional[str], line: Optional[int], check_id: str) -> bool:
        source = self.file(path) if path else None
        return bool(source and source.suppressed(line, check_id))


_INDEX = object()
_MEMO = object()
_LATER = object()


def suppressions(text: str) -> dict:
    """Line -> the check ids a `# celery-doctor: ignore[...]` comment silences there (empty set: all)."""
    found = {}
    if "celery-doctor" not in text:
        return found
    for number, line in enumerate(text.splitlines(), 1):
        match = IGNORE_COMMENT.search(line)
        if match:
            ids = match.group("ids")
            found[number] = frozenset(i.strip().upper() for i in ids.split(",") if i.strip()) if ids else frozenset()
    return found


def parse_source(path: str, text: str, compact: bool = True) -> SourceFile:
    """A SourceFile from text already read: parsed (the tree in compact nodes, parts.compact_ast, unless `compact`
    is False), or with the syntax error that stopped the parse."""
    try:
        tree = ast.parse(text, filename=path)
    except RecursionError:  # an expression of thousands of terms: Python could not compile the file either
        return SourceFile(path, text, None, NESTED_TOO_DEEPLY, suppressions(text))
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        if line is None:  # ValueError: "source code string cannot contain null bytes"
            return SourceFile(path, text, None, f"not parseable: {exc}", suppressions(text))
        return SourceFile(path, text, None, f"syntax error at line {line}: {getattr(exc, 'msg', exc)}",
                          suppressions(text))
    return SourceFile(path, text, compact_tree(tree) if compact else tree, None, suppressions(text))


def compact_tree(tree: ast.Module) -> ast.Module:
    """The tree in compact nodes; as it is when it nests too deeply for the copy (a generated expression of
    thousands of terms): both kinds of node read the same."""
    try:
        return compact(tree)
    except RecursionError:
        return tree


def example(files: Optional[Mapping[str, str]] = None, **overrides) -> SourceTree:
    """A SourceTree for tests and docs, parsed from texts (path -> source); nothing is read from disk."""
    import textwrap

    files = files if files is not None else {"proj/tasks.py": "from celery import shared_task\n\n\n"
                                                             "@shared_task\ndef work():\n    return 1\n"}
    parsed = tuple(parse_source(path, textwrap.dedent(text).lstrip()) for path, text in files.items())
    roots = tuple(sorted({path.split("/")[0] for path in files})) or (".",)
    values = dict(roots=roots, files=parsed, truncated=False)
    values.update(overrides)
    return SourceTree(**values)
