"""Untrusted text stays text: the one place where values enter a human-readable report.

Task names, queue names, message headers and worker names come from whoever can write to the broker, and
checks build findings (subject, evidence, even titles and fixes) from them; library error messages quote
them too. So every string a reporter prints is untrusted:

- `printable` makes a value terminal-safe and keeps it on its line: C0/C1 control characters (escape
  sequences, carriage returns, newlines, BEL), DEL, bidi controls (U+202A-U+202E, U+2066-U+2069, ...),
  zero-width and other format characters (category Cf), line/paragraph separators and lone surrogates are
  shown escaped, as Python writes them (`\\x1b`, `\\n`, `\\u202e`).
- `sanitized` applies `printable` to every string of a report, trace result or finding (dataclasses, tuples,
  lists and dicts, walked deeply), so a reporter cannot forget a field. The text and markdown reporters take
  their input through it; JSON and SARIF keep the exact values and let the JSON encoder escape them
  (`ensure_ascii`, so non-ASCII controls are written as `\\uXXXX` too).
- `md_text` and `md_code` insert a value into markdown: HTML-escaped (`<`, `>`, `&`) and markdown-escaped
  (emphasis, links, code, tables, headings, lists), or as a code span whose fence is longer than any run of
  backticks inside it.

Backslashes are not doubled: a value holding a literal `\\x1b` reads the same as one holding ESC, but neither
can do anything to a terminal or a renderer.
"""
from __future__ import annotations

import dataclasses
import enum
import re
import unicodedata
from typing import TypeVar

T = TypeVar("T")

# Cc: C0 and C1 controls and DEL; Cf: format characters (bidi controls, zero-width characters, soft hyphen,
# BOM, tags); Zl/Zp: U+2028/U+2029 (line breaks for some renderers); Cs: lone surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_unsafe_char(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def printable(value: object, keep_newlines: bool = False) -> str:
    """The value as one terminal-safe line (or lines, with keep_newlines): unsafe characters escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():  # the common case: nothing to do
        return text
    out = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
        elif (ch < " " or ch == "\x7f") or (ch > "\x7e" and is_unsafe_char(ch)):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def printable_block(value: object) -> str:
    """Several lines of text (a runbook, a log record with a traceback): each line made printable."""
    return printable(value, keep_newlines=True)


def sanitized(obj: T) -> T:
    """A copy of obj with `printable` applied to every string in it (enums and numbers kept as they are)."""
    if isinstance(obj, enum.Enum) or obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        return printable(obj)  # type: ignore[return-value]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: sanitized(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple):
        items = [sanitized(item) for item in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)  # type: ignore[return-value]
    if isinstance(obj, list):
        return [sanitized(item) for item in obj]  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {sanitized(k): sanitized(v) for k, v in obj.items()}  # type: ignore[return-value]
    return obj


# ------------------------------------------------------------------------------------------ markdown

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Inline markdown that a value could open or close: code, emphasis, strikethrough, links/images, tables,
# math (GitHub), and the backslash itself. An underscore inside a word (task_acks_late) cannot open or close
# emphasis in CommonMark, so only the others are escaped.
_MD_INLINE = re.compile(r"[\\`*\[\]|~$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# Block syntax that only matters where the value starts (it may follow a list marker): headings, list items,
# setext underlines and ordered list numbers.
_MD_LEADING = re.compile(r"^(\s*)([#+=-]|\d+(?=[.)]))")


def md_text(value: object) -> str:
    """A value as literal markdown text: no HTML, no emphasis, links, code, table cells or block syntax."""
    text = printable(value)
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(0), text)
    text = "".join(_HTML.get(ch, ch) for ch in text)
    match = _MD_LEADING.match(text)
    if match:
        lead, token = match.group(1), match.group(2)
        if token.isdigit():  # 1. / 1) starts an ordered list: escape the delimiter after the number
            rest = text[match.end():]
            text = f"{lead}{token}\\{rest}"
        else:
            text = f"{lead}\\{token}{text[match.end():]}"
    return text


def md_code(value: object, table: bool = False) -> str:
    """A value as a markdown code span (literal whatever it holds); `table=True` inside a table cell."""
    text = printable(value)
    if not text:
        return "` `"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip()):
        text = f" {text} "
    if table:
        text = text.replace("|", "\\|")  # GFM splits cells on '|' even inside code spans
    return f"{fence}{text}{fence}"
