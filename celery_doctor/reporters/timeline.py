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


def render_timeline(out, report: Report) -> None:
    """Print the timeline section with the text report's writer (nothing when the report has none)."""
    events = report.timeline
    if not events:
        return
    picked, left_out = select(events)
    left_out += report.timeline_omitted
    days = {_day(e.at) for e in events if e.at is not None}
    places = sorted({e.where for e in events})
    with_day = len(days) > 1
    heading = "Timeline (UTC" + (f", {next(iter(days))}" if len(days) == 1 else "")
    heading += f"; {len(events) + report.timeline_omitted} event{'s' if len(events) != 1 else ''}"
    if len(places) == 1:
        heading += f" on {places[0]})"
    else:
        heading += f" on {len(places)} workers or hosts)"
    out.line(heading, style="bold", hang=5)
    where_width = min(max((len(p) for p in places), default=0), WHERE_MAX)
    gaps = _gaps(events, picked)
    trailing = len(events) - 1 - max((i for i, e in enumerate(events) if id(e) in {id(p) for p in picked}), default=-1)
    for position, event in enumerate(picked):
        if position in gaps:
            out.line(f"… {gaps[position]} more event{'s' if gaps[position] != 1 else ''} …", indent=2, hang=3,
                     style="dim")
        stamp = _clock(event.at, with_day)
        until = ""
        if event.until is not None and event.at is not None:
            until = f" (until {_clock(event.until, with_day)})"
        where = "" if len(places) == 1 else f"{event.where:<{where_width}}  "
        style = "red" if event.important else ""
        out.line(f"{where}{event.what}{until}", indent=2, hang=3, first=f"{stamp}  ", style=style)
    if trailing > 0:
        out.line(f"… {trailing} more event{'s' if trailing != 1 else ''} …", indent=2, hang=3, style="dim")
    if left_out:
        out.line(f"({left_out} event{'s' if left_out != 1 else ''} not shown: --format json lists the timeline)",
                 indent=2, hang=3)
    out.line()
