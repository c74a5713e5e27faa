"""The source part of a snapshot: the project's Python files, parsed once (nothing is imported or executed).

Pure data and pure parsing of text already read: no I/O here. The collector (celery_doctor.collectors.source)
walks the directories and reads the files.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional

__all__ = ["IGNORE_COMMENT", "SourceFile", "SourceTree", "example", "parse_source", "suppressions"]

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


def parse_source(path: str, text: str) -> SourceFile:
    """A SourceFile from text already read: parsed, or with the syntax error that stopped the parse."""
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        return SourceFile(path, text, None, f"syntax error at line {line}: {getattr(exc, 'msg', exc)}")
    return SourceFile(path, text, tree, None, suppressions(text))


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
