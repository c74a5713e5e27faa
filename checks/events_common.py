"""Helpers shared by the event checks (checks/events_*.py): the events part, how task ids and names read, the
note on open tasks dropped from the ledger, and what the app's acks did to a started task."""
from __future__ import annotations

from typing import Iterable, Optional

from celery_doctor.model import Snapshot
from celery_doctor.parts.events import EventsState, TaskRecord

from ._util import plural, preview

NEEDS = ("events",)
WATCH = "celery-doctor watch --app proj --duration 300"
IDS_SHOWN = 8


def events_of(snapshot: Snapshot) -> EventsState:
    return snapshot.get("events")


def ids_text(tasks: Iterable[TaskRecord], limit: int = IDS_SHOWN) -> str:
    ids = [t.id for t in tasks]
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def names_text(tasks: Iterable[TaskRecord]) -> str:
    return preview((t.name or "(name unknown)") for t in tasks)


def by_name(tasks: Iterable[TaskRecord]) -> dict[str, list[TaskRecord]]:
    out: dict[str, list[TaskRecord]] = {}
    for task in tasks:
        out.setdefault(task.name or "(name unknown)", []).append(task)
    return out


def dropped_line(state: EventsState) -> Optional[str]:
    if not state.open_dropped:
        return None
    return (f"{plural(state.open_dropped, 'more open task')} were dropped from the ledger (limit "
            f"{state.max_open:,} open entries, the oldest dropped first): they are not counted here")


def acks_fate(snapshot: Snapshot, task_name: Optional[str]) -> Optional[str]:
    """What the whole worker's death did to a started task's message, from the app's settings (when loaded)."""
    config = snapshot.config
    if config is None:
        return None
    from celery_doctor.facts.acks import task_acks

    info = config.tasks.get(task_name or "") if task_name else None
    if info is None:
        late = bool(config.value("task_acks_late"))
    else:
        late = task_acks(config, info).acks_late
    if not late:
        return ("acks are early (task_acks_late=False): its message was acknowledged when it started, so the broker "
                "has nothing to deliver again: the task is lost")
    how = ("on Redis after the visibility timeout" if snapshot.get("events").transport == "redis"
           else "at once on RabbitMQ, when the worker's connection closed")
    return (f"acks_late: its message stays unacknowledged and is delivered again ({how}); it did not come back "
            "within the watch")
