"""The ledger: per task id, what happened and where; per worker, online, heart-beating, offline.

Bounded however long a watch runs:
- a task that finishes quietly (succeeded once, on one worker) is summarised (a count per final state) and
  dropped; its id stays in a bounded table of recently finished ids, so a second run of it is still seen;
- finished tasks worth reporting (failed, revoked, rejected, ran twice, ran past their time limit) are kept
  up to `max_notable`, the oldest dropped first and counted;
- open entries (sent, received, started) are kept up to `max_open`; beyond that the oldest is dropped and
  counted ("dropped N"); workers up to `max_workers`; each task's history up to MAX_STEPS steps.

Times are the watcher's clock when the event arrived (`t`), so a skewed producer or worker clock does not
matter. Events come from several connections, so a task's `task-sent` can arrive just after the worker's
`task-received`: a `sent` step arriving within SENT_SKEW seconds of worker steps is placed before them.
"""
from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..parts.events import ALIVE, FINAL_STATES, TASK_STATES, EventsState, Liveness, Step, TaskRecord, WorkerRecord

MAX_STEPS = 24  # per task: the first HEAD and the latest MAX_STEPS - HEAD steps are kept
HEAD = 4
SENT_SKEW = 2.0
MAX_KINDS = 200  # distinct event types counted (custom events can have any name)
RECENT_FINISHED = 20000
MAX_QUEUES = 1000  # queues whose consumers are learned from the events


@dataclass
class _Task:
    id: str
    name: Optional[str] = None
    steps: list = field(default_factory=list)
    steps_dropped: int = 0
    queue: Optional[str] = None
    routing_key: Optional[str] = None
    exchange: Optional[str] = None
    eta: Optional[str] = None
    expires: Optional[str] = None
    retries: Optional[int] = None
    runtime: Optional[float] = None
    exception: Optional[str] = None
    requeue: Optional[bool] = None
    revoke: Optional[str] = None

    def add(self, step: Step) -> None:
        if step.state == "sent" and self.steps:
            index = len(self.steps)
            while (index > 0 and self.steps[index - 1].state not in ("sent", "retried", "requeued")
                   and self.steps[index - 1].t >= step.t - SENT_SKEW):
                index -= 1
            self.steps.insert(index, step)
        else:
            self.steps.append(step)
        if len(self.steps) > MAX_STEPS:
            del self.steps[HEAD]
            self.steps_dropped += 1

    def frozen(self) -> TaskRecord:
        return TaskRecord(id=self.id, name=self.name, steps=tuple(self.steps), queue=self.queue,
                          routing_key=self.routing_key, exchange=self.exchange, eta=self.eta, expires=self.expires,
                          retries=self.retries, runtime=self.runtime, exception=self.exception, requeue=self.requeue,
                          revoke=self.revoke, steps_dropped=self.steps_dropped)

    @property
    def state(self) -> str:
        return self.steps[-1].state if self.steps else "sent"


@dataclass
class _Worker:
    hostname: str
    first_seen: float
    last_seen: float
    heartbeats: int = 0
    last_heartbeat: Optional[float] = None
    freq: float = 2.0
    online_at: Optional[float] = None
    offline_at: Optional[float] = None
    restarted_at: list = field(default_factory=list)
    pid: Optional[int] = None
    active: Optional[int] = None
    processed_first: Optional[int] = None
    processed_last: Optional[int] = None
    sw_ver: Optional[str] = None
    task_events: int = 0

    def frozen(self, liveness: Liveness) -> WorkerRecord:
        return WorkerRecord(hostname=self.hostname, first_seen=self.first_seen, last_seen=self.last_seen,
                            heartbeats=self.heartbeats, last_heartbeat=self.last_heartbeat, freq=self.freq,
                            online_at=self.online_at, offline_at=self.offline_at,
                            restarted_at=tuple(self.restarted_at[-20:]), pid=self.pid, active=self.active,
                            processed_first=self.processed_first, processed_last=self.processed_last,
                            sw_ver=self.sw_ver, task_events=self.task_events, liveness=liveness)


def _maybe_twice(steps: list) -> bool:
    """Cheap pre-test for a redelivery (the exact one is TaskRecord.redeliveries)."""
    runs = [s for s in steps if s.state in ("received", "started")]
    if len(runs) < 2:
        return False
    return len(runs) > 2 or runs[0].state == runs[1].state or runs[0].node != runs[1].node


def _revoke_text(event: Mapping[str, Any]) -> str:
    if event.get("expired"):
        return "expired"
    if event.get("terminated"):
        signum = event.get("signum")
        return f"terminated (signal {signum})" if signum is not None else "terminated"
    return "revoked"


class Ledger:
    def __init__(self, max_open: int = 10000, max_notable: int = 1000, max_workers: int = 2000,
                 time_limits: Optional[Mapping[str, float]] = None, default_time_limit: Optional[float] = None,
                 recent_finished: int = RECENT_FINISHED) -> None:
        self.max_open = max(1, int(max_open))
        self.max_notable = max(1, int(max_notable))
        self.max_workers = max(1, int(max_workers))
        self.recent_cap = max(1, int(recent_finished))
        self.time_limits = dict(time_limits or {})
        self.default_time_limit = default_time_limit
        self.open: "OrderedDict[str, _Task]" = OrderedDict()
        self.notable: "OrderedDict[str, _Task]" = OrderedDict()
        self.recent: "OrderedDict[str, tuple]" = OrderedDict()  # id -> (name, steps) of quietly finished tasks
        self.finished: Counter = Counter()
        self.workers: dict[str, _Worker] = {}
        self.kinds: Counter = Counter()
        self.events = 0
        self.malformed = 0
        self.undecoded = 0
        self.undecoded_types: list[str] = []
        self.open_dropped = 0
        self.notable_dropped = 0
        self.workers_dropped = 0
        self.suspicious: deque = deque(maxlen=50)  # (t, task id, why): the live view's latest
        self._flagged: "OrderedDict[str, None]" = OrderedDict()
        self.consumers: dict[str, list[str]] = {}  # queue (from task-sent) -> workers that received from it

    # -- input -----------------------------------------------------------------------------------------
    def note_undecoded(self, content_type: str) -> None:
        self.undecoded += 1
        if content_type not in self.undecoded_types and len(self.undecoded_types) < 10:
            self.undecoded_types.append(content_type)

    def apply(self, event: Mapping[str, Any], t: float) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            self.malformed += 1
            return
        self.events += 1
        if kind in self.kinds or len(self.kinds) < MAX_KINDS:
            self.kinds[kind] += 1
        else:
            self.kinds["(other)"] += 1
        if kind.startswith("worker-"):
            self._worker_event(kind, event, t)
        elif kind.startswith("task-"):
            self._task_event(kind[5:], event, t)

    # -- workers -----------------------------------------------------------------------------------------
    def _worker(self, hostname: str, t: float) -> Optional[_Worker]:
        worker = self.workers.get(hostname)
        if worker is None:
            if len(self.workers) >= self.max_workers:
                self.workers_dropped += 1
                return None
            worker = self.workers[hostname] = _Worker(hostname, t, t)
        worker.last_seen = max(worker.last_seen, t)
        return worker

    def _worker_event(self, kind: str, event: Mapping[str, Any], t: float) -> None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str) or not hostname:
            self.malformed += 1
            return
        worker = self._worker(hostname, t)
        if worker is None:
            return
        _note_process(worker, event, t)
        _WORKER_EVENTS.get(kind, _other_worker_event)(worker, event, t)

    # -- tasks -------------------------------------------------------------------------------------------
    def _entry(self, task_id: str, t: float) -> _Task:
        entry = self.open.get(task_id)
        if entry is not None:
            return entry
        entry = self.notable.pop(task_id, None)
        if entry is None:
            summary = self.recent.pop(task_id, None)
            entry = _Task(task_id)
            if summary is not None:  # finished quietly before: it is back (a redelivery, a retry)
                entry.name, steps = summary
                entry.steps = list(steps)
                self.finished[steps[-1].state] -= 1
        self.open[task_id] = entry
        if len(self.open) > self.max_open:
            self.open.popitem(last=False)
            self.open_dropped += 1
        return entry

    def _task_event(self, state: str, event: Mapping[str, Any], t: float) -> None:
        task_id = event.get("uuid")
        if not isinstance(task_id, str) or not task_id:
            self.malformed += 1
            return
        if state == "rejected" and event.get("requeue") is True:
            state = "requeued"
        if state not in TASK_STATES:
            return
        node = event.get("hostname") if isinstance(event.get("hostname"), str) else "?"
        if state != "sent":
            self._count_task_event(node, t)
        entry = self._entry(task_id, t)
        entry.add(Step(state, node, t, event.get("pid") if isinstance(event.get("pid"), int) else None))
        _copy_task_fields(entry, event)
        copy_state_fields = _STATE_FIELDS.get(state)
        if copy_state_fields is not None:
            copy_state_fields(entry, event)
        self._after_step(entry, state, t)

    def _count_task_event(self, node: str, t: float) -> None:
        worker = self._worker(node, t)
        if worker is not None:
            worker.task_events += 1

    def _after_step(self, entry: _Task, state: str, t: float) -> None:
        """What a new step may reveal: the queue's consumers, a second run, the end of the task."""
        if entry.queue and state in ("sent", "received"):
            self._consumed(entry)
        if state in ("received", "started") and _maybe_twice(entry.steps) and entry.frozen().ran_twice:
            self._flag(t, entry.id, "ran twice")
        if state in FINAL_STATES:
            self._finish(entry, entry.frozen(), t)

    def _consumed(self, entry: _Task) -> None:
        workers = [s.node for s in entry.steps if s.state in ("received", "started")]
        if not workers or not entry.queue:
            return
        seen = self.consumers.get(entry.queue)
        if seen is None:
            if len(self.consumers) >= MAX_QUEUES:
                return
            seen = self.consumers[entry.queue] = []
        for node in workers:
            if node not in seen and len(seen) < 50:
                seen.append(node)

    def _notable_reason(self, entry: _Task, record: TaskRecord) -> Optional[str]:
        if record.state in ("failed", "revoked", "rejected"):
            return record.state
        if record.ran_twice:
            return "ran twice"
        limit = self.time_limits.get(entry.name or "", self.default_time_limit)
        if limit and entry.runtime is not None and entry.runtime > limit:
            return "ran past its time limit"
        return None

    def _finish(self, entry: _Task, record: TaskRecord, t: float) -> None:
        self.open.pop(entry.id, None)
        reason = self._notable_reason(entry, record)
        if reason is None:
            self.finished[record.state] += 1
            self.recent[entry.id] = (entry.name, tuple(entry.steps[-6:]))
            if len(self.recent) > self.recent_cap:
                self.recent.popitem(last=False)
            return
        self._flag(t, entry.id, reason)
        self.notable[entry.id] = entry
        if len(self.notable) > self.max_notable:
            self.notable.popitem(last=False)
            self.notable_dropped += 1

    def _flag(self, t: float, task_id: str, why: str) -> None:
        key = f"{task_id}|{why}"
        if key in self._flagged:
            return
        self._flagged[key] = None
        if len(self._flagged) > 1000:
            self._flagged.popitem(last=False)
        self.suspicious.append((t, task_id, why))

    # -- questions -----------------------------------------------------------------------------------
    def silent_workers(self, now: float) -> list[_Worker]:
        out = []
        for worker in self.workers.values():
            heart_beating = worker.offline_at is None and worker.last_heartbeat is not None
            if heart_beating and now >= worker.last_heartbeat + worker.freq * 2:
                out.append(worker)
        return out

    def never_received(self, now: float, bound: float) -> list[_Task]:
        """Open tasks sent more than `bound` seconds ago that no worker said it received."""
        out = []
        for entry in self.open.values():
            if entry.steps and all(s.state == "sent" for s in entry.steps) and now - entry.steps[0].t > bound:
                out.append(entry)
        return out

    def counts(self) -> dict[str, int]:
        """Tasks by current state: open ones from the ledger, finished ones from the summary too."""
        counts: Counter = Counter()
        for entry in self.open.values():
            counts[entry.state] += 1
        for entry in self.notable.values():
            counts[entry.state] += 1
        for state, number in self.finished.items():
            counts[state] += number
        return {state: counts[state] for state in TASK_STATES if counts.get(state)}

    def state(self, *, transport: str, source: str, started_at: float, ended_at: float, bound_s: float,
              liveness: Optional[Mapping[str, Liveness]] = None, **extra: Any) -> EventsState:
        liveness = liveness or {}
        tasks = [entry.frozen() for entry in self.open.values()] + [entry.frozen() for entry in self.notable.values()]
        workers = tuple(w.frozen(liveness.get(w.hostname) or Liveness(ALIVE))
                        for w in sorted(self.workers.values(), key=lambda w: w.hostname))
        return EventsState(
            transport=transport, source=source, started_at=started_at, ended_at=ended_at, bound_s=bound_s,
            events=self.events, undecoded=self.undecoded, undecoded_types=tuple(self.undecoded_types),
            malformed=self.malformed, kinds=dict(self.kinds), tasks=tuple(tasks),
            finished={k: v for k, v in self.finished.items() if v > 0}, open_dropped=self.open_dropped,
            max_open=self.max_open, notable_dropped=self.notable_dropped, workers=workers,
            workers_dropped=self.workers_dropped, time_limits=dict(self.time_limits),
            default_time_limit=self.default_time_limit,
            consumers={q: tuple(ws) for q, ws in sorted(self.consumers.items())}, **extra)


# -- what each worker event says (Ledger._worker_event) ----------------------------------------------------

def _note_process(worker: _Worker, event: Mapping[str, Any], t: float) -> None:
    """The fields every worker event carries: its process id (a new one is a restart), heartbeat frequency, version."""
    pid = event.get("pid")
    if isinstance(pid, int):
        if worker.pid is not None and pid != worker.pid:
            worker.restarted_at.append(t)  # a new process under the same name
        worker.pid = pid
    freq = event.get("freq")
    if isinstance(freq, float) and 0.1 <= freq <= 3600:
        worker.freq = freq
    if isinstance(event.get("sw_ver"), str):
        worker.sw_ver = event["sw_ver"]


def _went_offline(worker: _Worker, event: Mapping[str, Any], t: float) -> None:
    worker.offline_at = t


def _came_online(worker: _Worker, event: Mapping[str, Any], t: float) -> None:
    # seen before and gone offline or heart-beating: it came back (a worker first seen here has neither)
    came_back = worker.offline_at is not None or worker.heartbeats
    if came_back and (not worker.restarted_at or worker.restarted_at[-1] != t):
        worker.restarted_at.append(t)
    worker.online_at = t
    _heartbeat(worker, event, t)


def _heartbeat(worker: _Worker, event: Mapping[str, Any], t: float) -> None:
    worker.offline_at = None
    worker.heartbeats += 1
    worker.last_heartbeat = t
    if isinstance(event.get("active"), int):
        worker.active = event["active"]
    processed = event.get("processed")
    if isinstance(processed, int):
        if worker.processed_first is None or (worker.processed_last is not None and processed < worker.processed_last):
            worker.processed_first = processed  # first seen, or a restart counted from 0 again
        worker.processed_last = processed


def _other_worker_event(worker: _Worker, event: Mapping[str, Any], t: float) -> None:
    worker.offline_at = None  # any other event from it (a custom worker-* one): it is not offline


_WORKER_EVENTS = {"worker-offline": _went_offline, "worker-online": _came_online, "worker-heartbeat": _heartbeat}


# -- what each task event says (Ledger._task_event) ----------------------------------------------------------

def _copy_task_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    """The fields any task event may carry: its name, eta, expires, retries."""
    if isinstance(event.get("name"), str):
        entry.name = event["name"]
    if isinstance(event.get("eta"), str):
        entry.eta = event["eta"]
    if isinstance(event.get("expires"), str):
        entry.expires = event["expires"]
    if isinstance(event.get("retries"), int):
        entry.retries = event["retries"]


def _sent_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    """task-sent says where the producer routed the task."""
    for key in ("queue", "routing_key", "exchange"):
        if isinstance(event.get(key), str):
            setattr(entry, key, event[key])


def _succeeded_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    if isinstance(event.get("runtime"), float):
        entry.runtime = event["runtime"]


def _exception_field(entry: _Task, event: Mapping[str, Any]) -> None:
    if isinstance(event.get("exception"), str):
        entry.exception = event["exception"]


def _requeued_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    entry.requeue = True


def _rejected_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    entry.requeue = False


def _revoked_fields(entry: _Task, event: Mapping[str, Any]) -> None:
    entry.revoke = _revoke_text(event)


# task state -> the fields only that state's event carries
_STATE_FIELDS = {"sent": _sent_fields, "succeeded": _succeeded_fields, "failed": _exception_field,
                 "retried": _exception_field, "requeued": _requeued_fields, "rejected": _rejected_fields,
                 "revoked": _revoked_fields}
