"""Log inputs: files, globs, gzip (by its magic bytes, whatever the name) and standard input, read as lines in
constant memory.

Bytes are read in 1 MiB chunks and split at newlines; a line longer than MAX_LINE keeps its first MAX_LINE
characters and the rest is skipped (a message body dumped on one line, or a file with no newline at all, cannot
fill memory). Text is UTF-8; undecodable bytes become U+FFFD.

Rotated files of one log (`worker.log.2.gz`, `worker.log.1`, `worker.log`, or `worker.log-20240501`) are one
*family*: the engine reads them oldest first as one stream, so a task received before a rotation and finished
after it is not taken for a lost one.
"""
from __future__ import annotations

import glob
import gzip
import os
import re
import sys
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Sequence

CHUNK = 1 << 20
MAX_LINE = 64 * 1024
STDIN = "-"
_GLOB_CHARS = re.compile(r"[*?\[]")
_NUMBERED = re.compile(r"^(?P<base>.+?)\.(?P<n>\d{1,4})(?:\.gz)?$")
_DATED = re.compile(r"^(?P<base>.+?)[-._](?P<date>\d{8}(?:[-_T]?\d{2,6})?)(?:\.gz)?$")


class InputError(Exception):
    """A path that names nothing readable (a usage error: one line, exit 2)."""


@dataclass(frozen=True)
class Input:
    name: str  # as shown in the report: the path (relative as given), or "-"
    path: Optional[str]  # None for standard input
    family: str  # rotated siblings share it: their directory and base name
    order: tuple  # sorts a family oldest first
    mtime: float = 0.0


def _family(path: str) -> tuple[str, tuple]:
    directory, base = os.path.split(os.path.abspath(path))
    numbered = _NUMBERED.match(base)
    if numbered:
        return os.path.join(directory, numbered.group("base")), (1, -int(numbered.group("n")))
    dated = _DATED.match(base)
    if dated:
        return os.path.join(directory, dated.group("base")), (0, dated.group("date"))
    if base.endswith(".gz"):
        base = base[:-3]
    return os.path.join(directory, base), (2, 0)


def expand(paths: Sequence[str]) -> list[Input]:
    """The inputs named by `paths` (files, globs, "-"), each family oldest first. InputError for a path that
    names nothing readable: a missing file, a glob matching no file, a directory."""
    seen: set[str] = set()
    found: list[Input] = []
    for given in paths:
        if given == STDIN:
            if STDIN not in seen:
                seen.add(STDIN)
                found.append(Input(name=STDIN, path=None, family=STDIN, order=(3, 0)))
            continue
        if _GLOB_CHARS.search(given) and not os.path.exists(given):
            matches = sorted(m for m in glob.glob(given, recursive=True) if os.path.isfile(m))
            if not matches:
                raise InputError(f"no log file matches {given!r}")
        elif os.path.isdir(given):
            raise InputError(f"{given} is a directory: give log files or a glob (e.g. {os.path.join(given, '*.log')})")
        elif not os.path.exists(given):
            raise InputError(f"log file not found: {given}")
        else:
            matches = [given]
        for path in matches:
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            if not os.access(path, os.R_OK):
                raise InputError(f"log file not readable: {path}")
            family, order = _family(path)
            try:
                mtime = os.path.getmtime(path)
            except OSError:
                mtime = 0.0
            found.append(Input(name=path, path=path, family=family, order=order, mtime=mtime))
    # families in the order first given; within a family, oldest first
    first_seen: dict[str, int] = {}
    for index, item in enumerate(found):
        first_seen.setdefault(item.family, index)
    return sorted(found, key=lambda i: (first_seen[i.family], i.order, i.mtime, i.name))


class LineStats:
    """What reading one input counted: lines, lines cut at MAX_LINE, bytes."""

    __slots__ = ("bytes", "cut", "lines")

    def __init__(self) -> None:
        self.lines = 0
        self.cut = 0
        self.bytes = 0


def _open(item: Input) -> BinaryIO:
    if item.path is None:
        return sys.stdin.buffer
    raw = open(item.path, "rb")  # noqa: SIM115 - returned open: read_batches closes it
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


class _Joiner:
    """Chunks of bytes -> complete lines: what follows a chunk's last newline waits for the next chunk; a line
    longer than MAX_LINE keeps its first MAX_LINE bytes and the rest of it is dropped up to its newline."""

    def __init__(self, stats: LineStats) -> None:
        self.stats = stats
        self.carry = b""
        self.skipping = False  # the current line is longer than MAX_LINE: drop bytes until its newline

    def complete(self, data: bytes) -> Optional[bytes]:
        """The complete lines (bytes up to the last newline, without it) that `data` finishes, or None."""
        cut = data.rfind(b"\n")
        if cut < 0:
            if not self.skipping:
                self._keep(self.carry + data)
            return None
        if self.skipping:
            first_nl = data.find(b"\n")
            data = self.carry + b"\n" + data[first_nl + 1:]
            cut = data.rfind(b"\n")
            self.skipping = False
        elif self.carry:
            data = self.carry + data
            cut += len(self.carry)
        self._keep(data[cut + 1:])
        return data[:cut]

    def _keep(self, tail: bytes) -> None:
        if len(tail) > MAX_LINE:
            tail = tail[:MAX_LINE]
            self.skipping = True
            self.stats.cut += 1
        self.carry = tail


def _lines(data: bytes, stats: LineStats) -> list[str]:
    text = data.decode("utf-8", "replace")
    if "\r" in text:  # CRLF line ends (the last one's \n was cut off with the chunk's end)
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    lines = text.split("\n")
    if len(text) > MAX_LINE and max(map(len, lines)) > MAX_LINE:
        stats.cut += sum(1 for line in lines if len(line) > MAX_LINE)
        lines = [line if len(line) <= MAX_LINE else line[:MAX_LINE] for line in lines]
    stats.lines += len(lines)
    return lines


def read_batches(item: Input, stats: LineStats, chunk: int = CHUNK) -> Iterator[list[str]]:
    """Lists of lines (without their newline) of one input, in order, in memory bounded by `chunk` and
    MAX_LINE. Raises OSError (and gzip's errors) to the caller."""
    stream = _open(item)
    read = (getattr(stream, "read1", None) if item.path is None else None) or stream.read
    joiner = _Joiner(stats)
    try:
        while True:
            data = read(chunk)
            if not data:
                break
            stats.bytes += len(data)
            complete = joiner.complete(data)
            if complete is not None:
                yield _lines(complete, stats)
        if joiner.carry:
            yield _lines(joiner.carry, stats)
    finally:
        if item.path is not None:
            stream.close()
