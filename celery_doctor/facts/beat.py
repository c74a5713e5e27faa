"""The period of a beat schedule in seconds: numbers, timedeltas, `schedule(run_every=...)` and crontabs."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Optional

from ..settings import human_seconds

if TYPE_CHECKING:
    from ..parts.config import AppConfig, BeatEntry

# A crontab's period is the smallest gap between consecutive due times over a representative window: due times
# from this fixed instant (a Monday, so the result does not depend on when the scan runs) over a year, which covers
# weekly, monthly and yearly fields, at most MAX_DUE_TIMES of them (dense schedules show their smallest gap within
# a few days: an hourly crontab stops after ~3 weeks), and no further once a gap of one minute, a crontab's
# smallest, is seen. A schedule that fires only in some years (29 February) is followed to its second due time.
REFERENCE = datetime(2025, 1, 6, tzinfo=timezone.utc)
WINDOW = timedelta(days=366)
MAX_DUE_TIMES = 500
MINUTE = timedelta(minutes=1)


def schedule_period(schedule: Any) -> Optional[float]:
    """Seconds between runs of a beat_schedule entry's `schedule`; None when it cannot be told (solar, custom)."""
    try:
        if hasattr(schedule, "run_every"):
            return float(schedule.run_every.total_seconds())
        if hasattr(schedule, "total_seconds"):
            return float(schedule.total_seconds())
        if isinstance(schedule, (int, float)):
            return float(schedule)
        if _is_crontab(schedule):
            return crontab_period(schedule)
    except Exception:  # noqa: BLE001 - a schedule Celery itself cannot evaluate has no known period
        return None
    return None


def _is_crontab(schedule: Any) -> bool:
    from celery.schedules import crontab

    return isinstance(schedule, crontab)


def crontab_due_times(schedule: Any, start: datetime = REFERENCE) -> list[datetime]:
    """Consecutive due times of a crontab after `start`, as Celery's beat computes them (crontab.remaining_delta and
    celery.utils.time.remaining, the code behind remaining_estimate and is_due), in UTC wall-clock time so that
    daylight-saving shifts are not mistaken for a period. The schedule itself is not modified."""
    from celery.utils.time import remaining

    clone = copy.copy(schedule)
    clone.nowfun = lambda: start  # remaining() subtracts `now` and we add it back: any fixed instant will do
    due: list[datetime] = []
    when = start
    while len(due) < MAX_DUE_TIMES:
        last, delta, now = clone.remaining_delta(when, tz=timezone.utc)
        following = now + remaining(last, delta, now)
        if following <= when:
            break  # would not advance (a crontab that never fires): stop rather than loop
        due.append(following)
        when = following
        if len(due) >= 2 and (following - start > WINDOW or following - due[-2] <= MINUTE):
            break
    return due


def crontab_period(schedule: Any) -> Optional[float]:
    """The smallest gap between consecutive due times of a crontab over the representative window, in seconds."""
    due = crontab_due_times(schedule)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(due, due[1:])]
    return min(gaps) if gaps else None


def beat_periods(config: "AppConfig") -> list[tuple["BeatEntry", Optional[float]]]:
    """Each beat entry with its period in seconds (computed by schedule_period when the config was collected)."""
    return [(entry, entry.interval_s) for entry in config.beat]


def describe_period(entry: "BeatEntry") -> str:
    """The entry's period in words, saying how a crontab's was found; '' when it is not known."""
    if not entry.interval_s:
        return ""
    every = human_seconds(entry.interval_s)
    if entry.schedule.startswith("<crontab"):
        return f"runs at most every {every} (the smallest gap between two consecutive runs of {entry.schedule})"
    return f"runs every {every}"


def entry_expires(config: "AppConfig", entry: "BeatEntry") -> tuple[Any, str]:
    """The `expires` beat's publishes of this entry carry, and where it comes from ('options', 'task', or '' for
    none). Beat calls `task.apply_async(**entry.options)` (celery/beat.py, Scheduler.apply_async); without an
    `expires` option, Celery.send_task takes the task's own `expires` attribute from its exec options
    (celery/app/task.py extract_exec_options, merged in celery/app/base.py, Celery.send_task)."""
    if entry.options.get("expires") is not None:
        return entry.options["expires"], "options"
    task = config.tasks.get(entry.task)
    if task is not None and task.expires is not None:
        return task.expires, "task"
    return None, ""


def runs_within(seconds: float, period: Optional[float]) -> Optional[int]:
    """How many runs beat publishes in `seconds` at this period (None when the period is not known)."""
    if not period or period <= 0:
        return None
    return int(seconds // period)
