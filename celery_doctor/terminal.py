"""What the output stream is: its width for the text layouts, and whether to colour it.

A terminal gets its own width (from the terminal itself, not from a guessed `COLUMNS`); anything else (a pipe,
a file, CI logs) gets a stable layout of `PIPE_WIDTH` columns. Colour follows `--color auto|always|never` and
the `NO_COLOR` convention (https://no-color.org): `auto` colours only a terminal, and only without NO_COLOR.
"""
from __future__ import annotations

import os
from typing import IO, Optional

PIPE_WIDTH = 120
MIN_WIDTH = 40


def is_terminal(stream: Optional[IO]) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def text_width(stream: Optional[IO]) -> int:
    """Columns to lay text out in: the terminal's, or PIPE_WIDTH when the stream is not a terminal."""
    if not is_terminal(stream):
        return PIPE_WIDTH
    try:
        columns = os.get_terminal_size(stream.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return PIPE_WIDTH
    return max(MIN_WIDTH, columns or PIPE_WIDTH)


def use_color(stream: Optional[IO], choice: str = "auto") -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return is_terminal(stream) and not os.environ.get("NO_COLOR")
