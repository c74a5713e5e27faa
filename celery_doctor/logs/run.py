"""`celery-doctor logs PATH...` end to end, and what scan --logs adds to a report.

The logs command reads only logs: its snapshot holds the logs part and nothing else, and only the checks whose
needs are all logs run (a check needing the configuration or a broker has nothing to read here, so it is not
listed as skipped). The report is the same model as scan's: ranked findings, check statuses, "Not checked"
(what could not be read), plus the incident's timeline.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from ..masking import scrub
from ..model import Part, Report, Snapshot, Target, TimelineEvent
from ..parts.logs import LogsState
from ..ranking import rank
from ..registry import Registry, load_registry
from ..runner import run_checks
from . import scan_paths
from .formats import format_time

LOGS_ONLY = frozenset({"logs"})


def logs_registry(registry: Registry) -> Registry:
    """The checks that read logs and nothing else."""
    return Registry(checks=[c for c in registry.checks if c.needs and set(c.needs) <= LOGS_ONLY],
                    errors=list(registry.errors))


def inputs_line(state: LogsState, prefix: str = "logs: ") -> str:
    """What was read, in words: `logs: 2 files, 120,345 lines, 2024-05-01 10:00:00 to 11:02:13 UTC`."""
    files = len(state.sources)
    text = f"{prefix}{files} file{'s' if files != 1 else ''}"
    if files == 1:
        text = f"{prefix}{state.sources[0].name}"
    text += f", {state.lines:,} lines"
    first, last = state.first, state.last
    if first is not None and last is not None:
        a, b = format_time(first), format_time(last)
        text += f", {a} to {b[11:] if a[:10] == b[:10] else b} UTC"
    return scrub(text)


def not_checked(state: LogsState) -> tuple[tuple[str, str], ...]:
    return tuple(("logs (partly read)", scrub(note)) for note in state.notes)


def timeline_of(state: Optional[LogsState]) -> tuple[tuple[TimelineEvent, ...], int]:
    if state is None:
        return (), 0
    events = tuple(TimelineEvent(at=e.at, where=scrub(e.where), what=scrub(e.what), kind=e.kind, count=e.count,
                                 until=e.until, important=e.important) for e in state.timeline)
    return events, state.timeline_omitted


def report_extras(snapshot: Snapshot) -> dict[str, Any]:
    """The Report fields a gathered logs part fills in (scan --logs, logs): timeline, inputs."""
    state = snapshot.get("logs")
    if state is None:
        return {}
    timeline, omitted = timeline_of(state)
    return {"timeline": timeline, "timeline_omitted": omitted,
            "inputs": inputs_line(state, prefix="" if snapshot.mode == "logs" else "logs: ")}


def diagnose_logs(paths: Sequence[str], select: Sequence[str] = (), ignore: Sequence[str] = (),
                  registry: Optional[Registry] = None) -> tuple[Report, Registry]:
    """Read the logs (InputError for a path that names nothing readable) and report on them."""
    import datetime as dt

    from .. import __version__

    started = time.time()
    state = scan_paths(paths)
    registry = logs_registry(registry or load_registry())
    snapshot = Snapshot(target=Target(app=None, broker=None, transport=None),
                        parts={"logs": Part.gathered(state)}, mode="logs", now=time.time())
    result = run_checks(registry, snapshot, select, ignore)
    report = Report(
        tool_version=__version__,
        target=snapshot.target,
        mode="logs",
        started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.time() - started, 2),
        findings=rank(result.findings),
        checks=tuple(result.results),
        not_checked=not_checked(state),
        suppressed=result.suppressed,
        **report_extras(snapshot),
    )
    return report, registry
