"""The incident timeline in the text report: what happened when, on which worker, in one screen.

    Timeline (UTC, 2024-05-01; 14 events on 2 workers)
      10:00:02  celery@w1  worker started (ready)
      10:04:17  celery@w1  pool process ForkPoolWorker-3 (pid 4321) died by the kernel's OOM killer:
           signal 9 (SIGKILL); lost 1 task: proj.tasks.charge[3f2c9a4e…]

At most SHOWN lines: every event when they fit, else the important ones (losses and their causes) first, in
time order, the others filling the room left; a line says how many were left out. Each line goes through the
text report's `_Writer`, so it wraps within the width and continues 5 columns in. Values are already
sanitized (the report enters format_text through `sanitized`).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from ..model import Report, TimelineEvent

SHOWN = 20
WHERE_MAX = 28  # a longer place name is shown on its own (the time column stays aligned)


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def _clock(epoch: Optional[float], with_day: bool) -> str:
    if epoch is None:
        return "--:--:--" if not with_day else "--- --:--:--"
    return time.strftime("%m-%d %H:%M:%S" if with_day else "%H:%M:%S", time.gmtime(epoch))


def select(events: Sequence[TimelineEvent], shown: int = SHOWN) -> tuple[list[TimelineEvent], int]:
    """The events to print (in time order) and how many were left out."""
    events = list(events)
    if len(events) <= shown:
        return events, 0
    important = [e for e in events if e.important]
    if len(important) >= shown:
        half = shown // 2
        chosen = important[:half] + important[-(shown - half):]
    else:
        others = [e for e in events if not e.important]
        room = shown - len(important)
        chosen = important + others[:room // 2] + others[len(others) - (room - room // 2):]
    keep = {id(e) for e in chosen}
    picked = [e for e in events if id(e) in keep]
    return picked, len(events) - len(picked)


def _gaps(events: Sequence[TimelineEvent], picked: Sequence[TimelineEvent]) -> dict[int, int]:
    """{position in picked: events left out just before it}."""
    index = {id(e): i for i, e in enumerate(events)}
    gaps, previous = {}, -1
    for position, event in enumerate(picked):
        i = index[id(event)]
        if i - previous > 1:
            gaps[position] = i - previous - 1
        previous = i
    return gaps


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _heading(report: Report, days: set[str], places: list[str]) -> str:
    heading = "Timeline (UTC" + (f", {next(iter(days))}" if len(days) == 1 else "")
    heading += f"; {_plural(len(report.timeline) + report.timeline_omitted, 'event')}"
    if len(places) == 1:
        return heading + f" on {places[0]})"
    return heading + f" on {len(places)} workers or hosts)"


def _event(out, event: TimelineEvent, with_day: bool, where_width: Optional[int]) -> None:
    """One event: its time (the first part, red when it is a loss or its cause), where, what, until when."""
    until = ""
    if event.until is not None and event.at is not None:
        until = f" (until {_clock(event.until, with_day)})"
    where = "" if where_width is None else f"{event.where:<{where_width}}  "
    out.line(f"{where}{event.what}{until}", indent=2, hang=3, first=f"{_clock(event.at, with_day)}  ",
             style="red" if event.important else "")


def render_timeline(out, report: Report) -> None:
    """Print the timeline section with the text report's writer (nothing when the report has none)."""
    events = report.timeline
    if not events:
        return
    picked, left_out = select(events)
    days = {_day(e.at) for e in events if e.at is not None}
    places = sorted({e.where for e in events})
    out.line(_heading(report, days, places), style="bold", hang=5)
    where_width = None if len(places) == 1 else min(max(len(p) for p in places), WHERE_MAX)
    gaps = _gaps(events, picked)
    for position, event in enumerate(picked):
        if position in gaps:
            out.line(f"… {_plural(gaps[position], 'more event')} …", indent=2, hang=3, style="dim")
        _event(out, event, len(days) > 1, where_width)
    shown = {id(p) for p in picked}
    trailing = len(events) - 1 - max((i for i, e in enumerate(events) if id(e) in shown), default=-1)
    if trailing > 0:
        out.line(f"… {_plural(trailing, 'more event')} …", indent=2, hang=3, style="dim")
    left_out += report.timeline_omitted
    if left_out:
        out.line(f"({_plural(left_out, 'event')} not shown: --format json lists the timeline)", indent=2, hang=3)
    out.line()
