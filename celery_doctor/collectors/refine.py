"""The prefilter again, on the parsed tree: a "core" file (pyast.prefilter) that passed only through words in its
strings, comments or docstrings is set aside again, unparsed, like the files that never passed.

The bytes-level test cannot tell code from text: in a large tree most "core" files pass through a word in a
docstring, a comment or a string (a lexer's keyword list, a URL in documentation), and their syntax trees were
most of the lint's memory. Once a file is parsed, its strings and comments are known: `needed` runs the same
test (pyast.prefilter.core_words) on the bytes with every string and comment blanked, except for the tokens the
checks also read from strings (dict keys such as "ATOMIC_REQUESTS", "countdown", "queue", serializer settings),
which are still looked for in the whole text. A file is kept too when it defines an ORM model (as for the
"model" files) or holds a broker URL with a password (static/secrets.py's own test, per file).

A file set aside is parsed again only if a check looks one of its names up (as any deferred file); the findings
are the same with and without the prefilter (tests/test_source_scale.py).
"""
from __future__ import annotations

import ast
import re
from typing import Optional

from ..parts.source import SourceFile
from ..pyast.closure import defines_model
from ..pyast.lazy import forget_walks, nodes_of
from ..pyast.prefilter import core_words
from ..static.secrets import file_literal_urls

_COMMENT = re.compile(rb"#[^\r\n]*")
_NEWLINE = re.compile(rb"\n")
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")
_STRINGS = (str, bytes)


def needed(source: SourceFile) -> bool:
    """True when a check may need this parsed file's tree (see the module docstring)."""
    text = source.text.encode()
    return core_words(code_bytes(source.tree, text), text) or defines_model(source.tree) \
        or any(True for _ in file_literal_urls(source))


def set_aside(source: SourceFile) -> SourceFile:
    """The parsed file again when a check may need it, else the file deferred: its tree dropped, with the walks
    `needed` cached on it (they hold the tree in a reference cycle; a kept tree keeps them for the checks)."""
    if source.tree is None or needed(source):
        return source
    forget_walks(source.tree)
    return SourceFile(source.path, source.text, None, None, source.suppressions, deferred=True)


def code_bytes(tree: ast.Module, text: bytes) -> bytes:
    """The UTF-8 text with every string literal and comment blanked (an f-string is kept whole: its expressions
    are code)."""
    starts = _line_starts(text)
    code = bytearray(text)
    no_strings = bytearray(text)  # also without f-strings: a `#` left in it starts a comment
    inside_fstrings: set[int] = set()
    for node in nodes_of(tree, ast.JoinedStr):
        if id(node) not in inside_fstrings:
            inside_fstrings.update(id(inner) for inner in ast.walk(node))
            _blank(no_strings, _span(node, starts))
    for node in nodes_of(tree, ast.Constant):
        if isinstance(node.value, _STRINGS) and id(node) not in inside_fstrings:
            span = _span(node, starts)
            _blank(code, span)
            _blank(no_strings, span)
    if b"#" in no_strings:
        for match in _COMMENT.finditer(no_strings):
            _blank(code, (match.start(), match.end()))
    return bytes(code)


def _line_starts(text: bytes) -> list[int]:
    """The offset of every line as the parser counts lines (`\\r\\n`, `\\r` or `\\n` ends one)."""
    if b"\r" not in text:
        return [0, *(m.end() for m in _NEWLINE.finditer(text))]
    return [0, *(m.end() for m in _ANY_NEWLINE.finditer(text))]


def _span(node: ast.AST, starts: list[int]) -> Optional[tuple[int, int]]:
    end_line = getattr(node, "end_lineno", None)
    if end_line is None:
        return None
    return starts[node.lineno - 1] + node.col_offset, starts[end_line - 1] + node.end_col_offset


def _blank(buffer: bytearray, span: Optional[tuple[int, int]]) -> None:
    if span is not None and span[1] > span[0]:
        buffer[span[0]:span[1]] = b" " * (span[1] - span[0])
