"""Recordings of a watch: JSON lines, replayable into the same report (`celery-doctor watch --replay FILE`).

The first line is a header: `{"celery_doctor_watch": 1, ...}` (the target, masked; the bound; what the app's
configuration said of time limits). Every other line is one item as the watch received it, with the time it
arrived (`t`, epoch seconds on the watching machine):

    {"t": ..., "event": {...}}        one event, cleaned: argument, result and traceback fields dropped,
                                      strings shortened and masked (no message bodies)
    {"t": ..., "undecoded": "..."}    a message in another content type (counted, never loaded)
    {"t": ..., "malformed": 1}        JSON that was not an event
    {"t": ..., "clients": [...]}      Redis CLIENT LIST rows of the watched db (id, addr, name, db, flags, psub,
                                      sub, cmd); the next polls as changes:
    {"t": ..., "clients_diff": {"add": [rows new or changed], "del": [ids gone]}}, or
    {"t": ..., "clients_error": "..."}
    {"t": ..., "mailbox": {...}}      RabbitMQ: a worker's mailbox queue, as the management API showed it
    {"t": ..., "queue": {...}}        a queue's depth and consumers at the end
    {"t": ..., "note": "..."}         something that could not be observed
    {"t": ..., "enable_events": {...}}
    {"t": ..., "end": {}}             the end of the watch

Everything is what the report is computed from, so a replay gives the same report. Unknown item kinds are
skipped (a newer recording read by an older celery-doctor), and lines that cannot be read are counted.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import IO, Any, Iterator, Optional

from ..masking import scrub

FORMAT = 1
MAX_LINE = 4 << 20


class RecordingError(Exception):
    """A file that is not a celery-doctor watch recording (a usage error)."""


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


class Recorder:
    def __init__(self, path: str, header: dict) -> None:
        try:
            self._file: Optional[IO[str]] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - close() closes it
        except OSError as exc:
            raise RecordingError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.path = path
        self._last_flush = time.monotonic()
        self._write({"celery_doctor_watch": FORMAT, **_masked(header)})

    def _write(self, item: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(item, ensure_ascii=True, separators=(",", ":")) + "\n")
        if time.monotonic() - self._last_flush > 1.0:
            self._file.flush()
            self._last_flush = time.monotonic()

    def item(self, t: float, kind: str, payload: Any) -> None:
        self._write({"t": round(t, 6), kind: _masked(payload) if kind != "event" else payload})

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None


@dataclass
class Recording:
    path: str
    header: dict
    bad_lines: int = 0


def read(path: str) -> "tuple[dict, Iterator[tuple[float, str, Any]], Recording]":
    """(header, items, recording): items are (t, kind, payload) in file order, read lazily (bounded memory)."""
    try:
        handle = open(path, "r", encoding="utf-8", errors="replace")  # noqa: SIM115 - items() closes it
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    first = handle.readline(MAX_LINE)
    try:
        header = json.loads(first)
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("celery_doctor_watch") != FORMAT:
        handle.close()
        raise RecordingError(f"{path} is not a celery-doctor watch recording (its first line is not the header)")
    recording = Recording(path=path, header=header)

    def items() -> Iterator[tuple[float, str, Any]]:
        with handle:
            while True:
                line = handle.readline(MAX_LINE)
                if not line:
                    return
                if not line.endswith("\n") and len(line) >= MAX_LINE:
                    recording.bad_lines += 1
                    while line and not line.endswith("\n"):  # skip the rest of an oversized line
                        line = handle.readline(MAX_LINE)
                    continue
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except (ValueError, RecursionError):
                    recording.bad_lines += 1
                    continue
                t = item.get("t") if isinstance(item, dict) else None
                if not isinstance(t, (int, float)) or isinstance(t, bool) or t != t:
                    recording.bad_lines += 1
                    continue
                kinds = [k for k in item if k != "t"]
                if len(kinds) != 1:
                    recording.bad_lines += 1
                    continue
                yield float(t), kinds[0], item[kinds[0]]

    return header, items(), recording
