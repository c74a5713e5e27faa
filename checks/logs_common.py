"""Helpers shared by the log checks (checks/logs_*.py): how a signature's place, time, tasks and details read."""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Optional

from celery_doctor.model import Snapshot
from celery_doctor.parts import logs as P

NEEDS = ("logs",)
SHOWN_IDS = 10
WORKERS_GUIDE = "https://docs.celeryq.dev/en/stable/userguide/workers.html"
TASKS_GUIDE = "https://docs.celeryq.dev/en/stable/userguide/tasks.html"


def time_text(epoch: Optional[float]) -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def span(sig: P.Signature) -> str:
    if sig.first is None:
        return "time not in the log"
    if sig.last is None or sig.last - sig.first < 1:
        return f"at {time_text(sig.first)} UTC"
    return f"from {time_text(sig.first)} to {time_text(sig.last)} UTC"


def seen(sig: P.Signature, what: str) -> str:
    logs = ", ".join(sig.sources[:3]) + (f" and {len(sig.sources) - 3} more" if len(sig.sources) > 3 else "")
    return f"{what} {span(sig)}" + (f" (read in {logs})" if logs else "")


def names_text(pairs: Iterable[tuple[str, int]], limit: int = 8) -> str:
    pairs = list(pairs)
    shown = [f"{name} ×{count}" if count > 1 else name for name, count in pairs[:limit]]
    if len(pairs) > limit:
        shown.append(f"{len(pairs) - limit} more names")
    return ", ".join(shown)


def task_lines(sig: P.Signature, label: str = "tasks") -> list[str]:
    lines = []
    if sig.names:
        lines.append(f"{label}: {names_text(sig.names)}")
    ids = sig.task_ids
    if ids:
        more = sig.tasks_total - min(len(ids), SHOWN_IDS)
        shown = ", ".join(ids[:SHOWN_IDS])
        lines.append(f"task ids (for `celery-doctor trace`): {shown}" + (f" and {more} more" if more > 0 else ""))
    return lines


def table(values: Any) -> str:
    if not values:
        return "?"
    if isinstance(values, dict):
        return ", ".join(f"{k} ×{v}" if v > 1 else str(k) for k, v in values.items())
    return ", ".join(str(v) for v in values)


def logs_of(snapshot: Snapshot) -> P.LogsState:
    return snapshot.get("logs")


def worker_subject(sig: P.Signature) -> str:
    return f"worker:{sig.where}"
