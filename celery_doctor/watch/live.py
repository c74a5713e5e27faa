"""What a running watch shows on stderr: a live view on a terminal, plain periodic lines otherwise.

Both are built from `Frame` (a plain summary the engine makes every refresh) by `frame_lines`, a pure function:
every value goes through safe_text.printable (task names, task ids and hostnames are whatever a producer or a
worker sent) and every line is cut to the width (the terminal's, or 120 for a pipe), so nothing a worker names
itself can move the cursor, clear the screen or wrap a line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import IO, Optional

from ..parts.events import TASK_STATES, clock
from ..safe_text import printable
from ..terminal import MIN_WIDTH, is_terminal, text_width

ELLIPSIS = "…"
WORKERS_SHOWN = 8
SUSPICIOUS_SHOWN = 8


@dataclass
class WorkerLine:
    hostname: str
    status: str  # alive / silent / offline / dead / connected / ambiguous / unknown
    last_heartbeat_age: Optional[float]  # seconds since its last heartbeat
    active: Optional[int] = None


@dataclass
class Frame:
    now: float
    elapsed: float
    duration: Optional[float]  # None: until Ctrl-C
    events: int
    rate: float  # events per second, recently
    counts: dict = field(default_factory=dict)  # state -> tasks
    workers: list = field(default_factory=list)  # WorkerLine
    suspicious: list = field(default_factory=list)  # (t, task id, why), newest last
    dropped: int = 0  # open entries dropped at the ledger's limit
    behind: int = 0  # messages dropped because the ledger fell behind
    source: str = ""
    task_events: bool = True  # any task event seen


def fit(text: str, width: int) -> str:
    """One line of at most `width` columns: printable, cut with an ellipsis."""
    text = printable(text)
    width = max(1, width)
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def _elapsed(frame: Frame) -> str:
    done = f"{frame.elapsed:.0f} s"
    return f"{done} of {frame.duration:g} s" if frame.duration else f"{done} (Ctrl-C to stop and report)"


def _counts(frame: Frame) -> str:
    parts = [f"{frame.counts[s]:,} {s}" for s in TASK_STATES if frame.counts.get(s)]
    return ", ".join(parts) if parts else "none yet"


def frame_lines(frame: Frame, width: int) -> list[str]:
    """The live view, line by line, each at most `width` columns."""
    width = max(MIN_WIDTH, width)
    lines = [f"celery-doctor watch · {_elapsed(frame)} · {frame.events:,} events ({frame.rate:.0f}/s)",
             f"tasks: {_counts(frame)}"]
    if frame.dropped or frame.behind:
        lines.append(f"dropped: {frame.dropped:,} open tasks over the ledger's limit, {frame.behind:,} events while "
                     "behind")
    if not frame.task_events and frame.events:
        lines.append("no task events yet: workers need -E (worker_send_task_events), producers task_send_sent_event")
    alive = sum(1 for w in frame.workers if w.status == "alive")
    lines.append(f"workers: {len(frame.workers)} seen, {alive} alive")
    order = {"dead": 0, "ambiguous": 1, "unknown": 2, "silent": 3, "connected": 4, "offline": 5, "alive": 6}
    shown = sorted(frame.workers, key=lambda w: (order.get(w.status, 9), w.hostname))[:WORKERS_SHOWN]
    name_width = max(12, min(40, width - 40))
    for worker in shown:
        age = "never" if worker.last_heartbeat_age is None else f"{worker.last_heartbeat_age:.0f} s ago"
        active = "" if worker.active is None else f" · {worker.active} active"
        lines.append(f"  {fit(worker.hostname, name_width):<{name_width}} {worker.status:<9} last heartbeat "
                     f"{age}{active}")
    if len(frame.workers) > len(shown):
        lines.append(f"  … {len(frame.workers) - len(shown)} more")
    if frame.suspicious:
        lines.append(f"suspicious ({len(frame.suspicious)}):")
        for t, task_id, why in frame.suspicious[-SUSPICIOUS_SHOWN:]:
            lines.append(f"  {task_id} {why} · {clock(t)}")
    return [fit(line, width) for line in lines]


def summary_line(frame: Frame) -> str:
    alive = sum(1 for w in frame.workers if w.status == "alive")
    silent = sum(1 for w in frame.workers if w.status not in ("alive", "offline"))
    return (f"watch {frame.elapsed:.0f} s: {frame.events:,} events ({frame.rate:.0f}/s); tasks {_counts(frame)}; "
            f"workers {alive} alive, {silent} silent; {len(frame.suspicious)} suspicious")


class View:
    def update(self, frame: Frame) -> None:  # pragma: no cover - interface
        pass

    def close(self, frame: Optional[Frame]) -> None:  # pragma: no cover - interface
        pass


class NoView(View):
    pass


class PlainView(View):
    """Periodic lines for a pipe or a log file: a summary every `interval` seconds, and each suspicious id once."""

    def __init__(self, stream: IO[str], interval: float = 10.0, width: Optional[int] = None) -> None:
        self.stream = stream
        self.interval = interval
        self.width = width or text_width(stream)
        self._last = 0.0
        self._seen: set = set()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(fit(text, self.width) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def update(self, frame: Frame) -> None:
        for t, task_id, why in frame.suspicious:
            key = (task_id, why)
            if key not in self._seen and len(self._seen) < 10000:
                self._seen.add(key)
                self._write(f"celery-doctor: {clock(t)} suspicious: {task_id} {why}")
        if time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self._write("celery-doctor: " + summary_line(frame))

    def close(self, frame: Optional[Frame]) -> None:
        if frame is not None:
            self._write("celery-doctor: " + summary_line(frame) + " (end)")


class LiveView(View):
    """rich Live on a terminal, redrawn at most every `refresh` seconds; left in place at the end."""

    def __init__(self, stream: IO[str], refresh: float = 0.5) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False, markup=False, emoji=False, soft_wrap=False)
        self.live = Live(console=self.console, auto_refresh=False, transient=False, redirect_stdout=False,
                         redirect_stderr=False)
        self.refresh = refresh
        self._last = 0.0
        self._started = False

    def _renderable(self, frame: Frame):
        from rich.text import Text

        width = max(MIN_WIDTH, self.console.size.width)
        text = Text(no_wrap=True, overflow="crop")
        for index, line in enumerate(frame_lines(frame, width)):
            if index:
                text.append("\n")
            text.append(line, style="bold" if index == 0 else "")
        return text

    def update(self, frame: Frame) -> None:
        if time.monotonic() - self._last < self.refresh:
            return
        self._last = time.monotonic()
        if not self._started:
            self.live.start()
            self._started = True
        self.live.update(self._renderable(frame), refresh=True)

    def close(self, frame: Optional[Frame]) -> None:
        if not self._started:
            return
        if frame is not None:
            self.live.update(self._renderable(frame), refresh=True)
        self.live.stop()


def make_view(stream: Optional[IO[str]], live: Optional[bool] = None, interval: float = 10.0) -> View:
    """A LiveView when `stream` is a terminal (or live=True), PlainView otherwise, NoView without a stream."""
    if stream is None:
        return NoView()
    if live is None:
        live = is_terminal(stream)
    return LiveView(stream) if live else PlainView(stream, interval)
