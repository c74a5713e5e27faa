"""The logs part of a snapshot: what worker, beat and kernel logs said about lost tasks.

Pure, frozen data: no I/O. The log engine (celery_doctor.logs) reads the files once, streaming, and fills it
with one `Signature` per kind of trouble and place (a worker, a host, a log file) and a bounded timeline; the
checks in checks/logs.py read it. `example()` builds a realistic state for tests and docs.

Nothing here holds a message body, a task's arguments or a raw log line: only task names and ids, worker,
process and host names, counts, times and a few numbers read from the lines (limits, pids, signals). Values
are untrusted text (task names come from whoever can publish): reporters print them through safe_text.

Times are epoch seconds. A log time without a zone (Celery's default `%(asctime)s`) is read as UTC; `naive`
says when that happened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from ..model import TimelineEvent

__all__ = ["KINDS", "LogSource", "LogsState", "Signature", "example", "example_signature", "example_source"]

# The signature kinds the engine recognises (one check each in checks/logs.py).
POOL_PROCESS_KILLED = "pool-process-killed"
OOM_KILL = "oom-kill"
HARD_TIME_LIMIT = "hard-time-limit"
SOFT_TIME_LIMIT = "soft-time-limit"
UNREGISTERED = "unregistered-task"
REJECTED_MESSAGE = "rejected-message"
REVOKED_DISCARDED = "revoked-discarded"
ACK_TIMEOUT = "ack-timeout"
CONNECTION_LOST = "connection-lost"
MISSED_HEARTBEAT = "missed-heartbeat"
CLOCK_DRIFT = "clock-drift"
STOPPED_WITH_TASKS = "stopped-with-tasks"
RETRIES_EXHAUSTED = "retries-exhausted"
BEAT_DUPLICATE = "beat-duplicate"
NEVER_FINISHED = "never-finished"

KINDS: tuple[str, ...] = (POOL_PROCESS_KILLED, OOM_KILL, HARD_TIME_LIMIT, SOFT_TIME_LIMIT, UNREGISTERED,
                          REJECTED_MESSAGE, REVOKED_DISCARDED, ACK_TIMEOUT, CONNECTION_LOST, MISSED_HEARTBEAT,
                          CLOCK_DRIFT, STOPPED_WITH_TASKS, RETRIES_EXHAUSTED, BEAT_DUPLICATE, NEVER_FINISHED)


@dataclass(frozen=True)
class LogSource:
    """One input as read: a file (rotated siblings are separate sources of one stream), or standard input."""

    name: str  # the path as given ("-" for standard input)
    formats: tuple[str, ...] = ()  # what its lines were: celery, celery-custom, json, journald, docker-json, cri, ...
    lines: int = 0
    records: int = 0  # log records (a traceback and the lines a record continues on are one record)
    first: Optional[float] = None
    last: Optional[float] = None
    error: Optional[str] = None  # could not be read (or only partly): why
    cut_lines: int = 0  # lines longer than the engine keeps (their rest was skipped)


@dataclass(frozen=True)
class Signature:
    """One kind of trouble at one place: how often, when, and which tasks (bounded samples)."""

    kind: str  # one of KINDS
    where: str  # a worker node name (celery@host), a host, a container or a log file
    count: int  # occurrences (kills, discards, sends, ...)
    first: Optional[float] = None
    last: Optional[float] = None
    tasks: tuple[tuple[str, str], ...] = ()  # (task name, task id) samples, in order seen (bounded)
    tasks_total: int = 0  # tasks involved, including those beyond the sample
    names: tuple[tuple[str, int], ...] = ()  # task name -> how many (most first, bounded)
    details: Mapping[str, Any] = field(default_factory=dict)  # kind-specific numbers and labels
    sources: tuple[str, ...] = ()  # log inputs it was read from

    @property
    def task_ids(self) -> tuple[str, ...]:
        return tuple(task_id for _, task_id in self.tasks)


@dataclass(frozen=True)
class LogsState:
    """Every signature found, the timeline of the incident, and what was read."""

    sources: tuple[LogSource, ...]
    signatures: tuple[Signature, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()  # in time order, merged and bounded
    timeline_omitted: int = 0  # events dropped from the middle of a very long timeline
    lines: int = 0
    records: int = 0
    tasks_received: int = 0
    tasks_finished: int = 0
    workers: tuple[str, ...] = ()  # node names seen starting (`celery@host ready.`)
    naive_times: bool = False  # some times had no zone and were read as UTC
    notes: tuple[str, ...] = ()  # what could not be read, or only partly (bounded ledgers, cut lines)
    elapsed_s: float = 0.0

    def of(self, kind: str) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if s.kind == kind)

    @property
    def first(self) -> Optional[float]:
        times = [s.first for s in self.sources if s.first is not None]
        return min(times) if times else None

    @property
    def last(self) -> Optional[float]:
        times = [s.last for s in self.sources if s.last is not None]
        return max(times) if times else None


EXAMPLE_T0 = 1714557600.0  # 2024-05-01 10:00:00 UTC
EXAMPLE_TASK = "proj.tasks.charge"


def example_source(name: str = "/var/log/celery/worker1.log", **overrides: Any) -> LogSource:
    """A worker log in Celery's default format, an hour long, 12,000 lines. Keywords replace fields."""
    values: dict[str, Any] = dict(name=name, formats=("celery",), lines=12000, records=11800, first=EXAMPLE_T0,
                                  last=EXAMPLE_T0 + 3600)
    values.update(overrides)
    return LogSource(**values)


def example_signature(kind: str = POOL_PROCESS_KILLED, where: str = "celery@worker1", **overrides: Any) -> Signature:
    """One pool process of celery@worker1 killed by SIGKILL while it ran proj.tasks.charge. Keywords replace
    fields (`kind=...` for another kind; its `details` then need the keys that kind's check reads)."""
    values: dict[str, Any] = dict(
        kind=kind, where=where, count=1, first=EXAMPLE_T0 + 600, last=EXAMPLE_T0 + 600,
        tasks=((EXAMPLE_TASK, "3f2c9a4e-0001"),), tasks_total=1, names=((EXAMPLE_TASK, 1),),
        details={"signals": {"signal 9 (SIGKILL)": 1}, "pids": (4321,), "processes": ("ForkPoolWorker-3",),
                 "worker_lost_errors": 1, "after_time_limit": 0, "oom": 0, "candidates": 1},
        sources=("/var/log/celery/worker1.log",))
    values.update(overrides)
    return Signature(**values)


def example(signatures: Optional[Iterable[Signature]] = None, **overrides: Any) -> LogsState:
    """A LogsState for tests and docs: one worker log read, an hour of a quiet worker (celery@worker1 started,
    received and finished 5,900 tasks). No signature unless given (`signatures=[example_signature()]`), so no
    logs check fires on it. Keywords replace LogsState fields."""
    values: dict[str, Any] = dict(
        sources=(example_source(),), signatures=tuple(signatures or ()),
        timeline=(TimelineEvent(at=EXAMPLE_T0, where="celery@worker1", what="worker started (ready)",
                                kind="worker-ready"),),
        lines=12000, records=11800, tasks_received=5900, tasks_finished=5900, workers=("celery@worker1",),
        naive_times=True, notes=(), elapsed_s=0.05)
    values.update(overrides)
    return LogsState(**values)
