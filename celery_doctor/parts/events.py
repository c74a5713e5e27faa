"""The events part of a snapshot: what Celery's event stream showed while `celery-doctor watch` listened.

Pure, frozen data: no I/O. The watch engine (celery_doctor.watch) fills it from a ledger of the events it
received, live or replayed from a recording; the checks in checks/events.py read it. `example()` builds a
realistic, quiet state (nothing in it makes an events check fire) for tests and docs.

Times are epoch seconds on the watching machine's clock, taken when an event arrived (never the sender's
clock: producers and workers may be skewed).

What the event names and fields are (celery 5.7: celery/events/event.py, celery/worker/request.py,
celery/worker/strategy.py, celery/app/amqp.py, celery/worker/heartbeat.py):
- task-sent (producer, only with `task_send_sent_event`): uuid, name, retries, eta, expires, queue, exchange,
  routing_key, root_id, parent_id (args/kwargs reprs too: never kept);
- task-received (worker, with `worker_send_task_events` / `-E`): uuid, name, retries, eta, expires;
- task-started (pid of the worker's main process), task-succeeded (runtime), task-failed (exception),
  task-retried (exception), task-rejected (requeue), task-revoked (terminated, signum, expired);
- worker-online, worker-heartbeat (every `freq` seconds, 2 by default: active, processed), worker-offline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

__all__ = [
    "FINAL_STATES",
    "HEARTBEAT_EXPIRE_WINDOW",
    "TASK_STATES",
    "EnableEvents",
    "EventsState",
    "Liveness",
    "QueueProbe",
    "Step",
    "TaskRecord",
    "WorkerRecord",
    "example",
    "example_task",
    "example_worker",
]

# Ledger states, in the order a task goes through them. `requeued` is task-rejected with requeue=True (the
# message goes back to its queue: not an end); `cancelled` (task-cancelled, Celery 5.x) is kept too.
TASK_STATES = ("sent", "received", "started", "succeeded", "failed", "retried", "requeued", "rejected", "revoked",
               "cancelled")
FINAL_STATES = frozenset({"succeeded", "failed", "rejected", "revoked"})
# celery/events/state.py: a worker is alive while now < last heartbeat + freq * 200 / 100.
HEARTBEAT_EXPIRE_WINDOW = 200

def clock(t: float) -> str:
    """A time of day in UTC, as reports show event times (a replay reads the same on any machine)."""
    import time as _time

    return _time.strftime("%H:%M:%SZ", _time.gmtime(t))


# Liveness verdicts of a worker.
ALIVE = "alive"  # heart-beating
OFFLINE = "offline"  # said goodbye (worker-offline: a warm or cold shutdown)
DEAD = "dead"  # silent, and its broker connections went away (killed: SIGKILL, OOM, host lost)
CONNECTED = "connected"  # silent, its broker connections still open: busy (solo pool in a long task) or blocked
AMBIGUOUS = "ambiguous"  # silent; connections went away, but the evidence cannot tell which silent worker's
UNKNOWN = "unknown"  # silent; the broker's connections could not be read


@dataclass(frozen=True)
class Step:
    """One event of a task: its state, the node that sent it, when it arrived."""

    state: str
    node: str  # worker hostname (celery@host); for `sent`, the producer's (gen1234@host)
    t: float
    pid: Optional[int] = None  # the sender's main process id


@dataclass(frozen=True)
class TaskRecord:
    """What the event stream said about one task id (argument and result values are never kept)."""

    id: str
    name: Optional[str]
    steps: tuple[Step, ...]  # in arrival order (bounded: the first and the latest are kept)
    queue: Optional[str] = None  # from task-sent: where the producer routed it
    routing_key: Optional[str] = None
    exchange: Optional[str] = None
    eta: Optional[str] = None
    expires: Optional[str] = None
    retries: Optional[int] = None
    runtime: Optional[float] = None  # task-succeeded
    exception: Optional[str] = None  # task-failed / task-retried (masked, shortened)
    requeue: Optional[bool] = None  # task-rejected (False: dropped, True: state `requeued`)
    revoke: Optional[str] = None  # task-revoked: "expired", "terminated (signal N)" or "revoked"
    steps_dropped: int = 0

    @property
    def state(self) -> str:
        return self.steps[-1].state if self.steps else "sent"

    def of(self, state: str) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.state == state)

    @property
    def sent(self) -> Optional[Step]:
        found = self.of("sent")
        return found[0] if found else None

    @property
    def started(self) -> tuple[Step, ...]:
        return self.of("started")

    @property
    def finished(self) -> Optional[Step]:
        for step in reversed(self.steps):
            if step.state in FINAL_STATES:
                return step
        return None

    @property
    def workers(self) -> tuple[str, ...]:
        """Workers that received or started it, in order of first appearance."""
        seen: list[str] = []
        for step in self.steps:
            if step.state in ("received", "started") and step.node not in seen:
                seen.append(step.node)
        return tuple(seen)

    @property
    def last_worker_step(self) -> Optional[Step]:
        for step in reversed(self.steps):
            if step.state != "sent":
                return step
        return None

    def redeliveries(self) -> tuple[tuple[Step, Step], ...]:
        """(earlier step, step again) for each time the same delivery reached a worker again: started a second
        time, or received/started on another worker, with no task-retried, task-rejected (requeue) or
        task-cancelled between (those send it again on purpose)."""
        out = []
        run: list[Step] = []  # received/started steps of the current delivery
        for step in self.steps:
            if step.state in ("retried", "requeued", "cancelled"):
                run = []  # it is sent again on purpose
                continue
            if step.state not in ("received", "started"):
                continue
            earlier = next((s for s in run if s.node != step.node), None)
            if earlier is None and step.state == "started":
                earlier = next((s for s in run if s.state == "started"), None)
            if earlier is None and step.state == "received":
                earlier = next((s for s in run if s.state == "received"), None)
            if earlier is not None:
                out.append((earlier, step))
                run = []  # this step starts the new delivery
            run.append(step)
        return tuple(out)

    @property
    def ran_twice(self) -> bool:
        return bool(self.redeliveries())

    @property
    def open(self) -> bool:
        return self.state not in FINAL_STATES


@dataclass(frozen=True)
class Liveness:
    """Whether a worker is still there, and the evidence for it."""

    verdict: str  # ALIVE, OFFLINE, DEAD, CONNECTED, AMBIGUOUS, UNKNOWN
    since: Optional[float] = None  # when it went silent or offline
    evidence: tuple[str, ...] = ()
    certain: bool = True  # False: a likely reading, not a single-out (e.g. a connection closed later on)
    others: tuple[str, ...] = ()  # AMBIGUOUS: the other silent workers the evidence cannot tell it apart from


@dataclass(frozen=True)
class WorkerRecord:
    hostname: str
    first_seen: float
    last_seen: float
    heartbeats: int = 0
    last_heartbeat: Optional[float] = None
    freq: float = 2.0
    online_at: Optional[float] = None
    offline_at: Optional[float] = None
    restarted_at: tuple[float, ...] = ()  # a new pid, or worker-online after it was seen (a restart)
    pid: Optional[int] = None
    active: Optional[int] = None  # from the last heartbeat: tasks it was running
    processed_first: Optional[int] = None  # `processed` of the first heartbeat seen, and of the last
    processed_last: Optional[int] = None
    sw_ver: Optional[str] = None
    task_events: int = 0  # task events it sent during the watch
    liveness: Liveness = field(default_factory=lambda: Liveness(ALIVE))

    @property
    def expires(self) -> Optional[float]:
        """When it counts as silent (celery/events/state.py: heartbeat_expires)."""
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat + self.freq * (HEARTBEAT_EXPIRE_WINDOW / 100.0)

    @property
    def processed_during(self) -> Optional[int]:
        if self.processed_first is None or self.processed_last is None:
            return None
        return max(0, self.processed_last - self.processed_first)


@dataclass(frozen=True)
class QueueProbe:
    """A queue of tasks that were sent and never received, read at the end of the watch (read-only)."""

    name: str
    depth: Optional[int] = None  # messages waiting now
    consumers: Optional[int] = None  # RabbitMQ: consumers of the queue; Redis: None (not per queue)
    how: str = ""  # "LLEN over the 4 priority lists" / "management API"
    error: Optional[str] = None


@dataclass(frozen=True)
class EnableEvents:
    """What --enable-events did to the workers (celery control enable_events / disable_events)."""

    enabled_at: Optional[float] = None
    disabled_at: Optional[float] = None
    error: Optional[str] = None
    undo_error: Optional[str] = None


@dataclass(frozen=True)
class EventsState:
    transport: str  # redis / rabbitmq
    source: str  # how the events were read (channel pattern, queue and exchange), or the recording replayed
    started_at: float
    ended_at: float
    bound_s: float  # a task sent and not received within this many seconds is reported
    events: int = 0  # events decoded
    undecoded: int = 0  # messages not decoded (a content type other than JSON: never unpickled)
    undecoded_types: tuple[str, ...] = ()
    malformed: int = 0  # JSON that was not an event
    kinds: Mapping[str, int] = field(default_factory=dict)  # event type -> count
    tasks: tuple[TaskRecord, ...] = ()  # open tasks at the end, and finished ones worth reporting
    finished: Mapping[str, int] = field(default_factory=dict)  # final state -> tasks summarised and dropped
    open_dropped: int = 0  # open entries dropped from the ledger (the oldest first) at the limit
    max_open: int = 10000
    notable_dropped: int = 0  # finished tasks worth reporting that did not fit
    workers: tuple[WorkerRecord, ...] = ()
    workers_dropped: int = 0
    queues: tuple[QueueProbe, ...] = ()
    consumers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # queue -> workers seen taking from it
    time_limits: Mapping[str, float] = field(default_factory=dict)  # task name -> hard time limit (seconds)
    default_time_limit: Optional[float] = None  # task_time_limit of the app, when known
    notes: tuple[str, ...] = ()  # what could not be observed, and why
    enable_events: Optional[EnableEvents] = None
    replayed_from: Optional[str] = None
    live_probe: str = ""  # how busy and dead workers were told apart (CLIENT LIST / management API)

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    @property
    def task_events(self) -> int:
        return sum(n for kind, n in self.kinds.items() if kind.startswith("task-") and kind != "task-sent")

    @property
    def sent_events(self) -> int:
        return self.kinds.get("task-sent", 0)

    @property
    def heartbeats(self) -> int:
        return self.kinds.get("worker-heartbeat", 0)

    def worker(self, hostname: str) -> Optional[WorkerRecord]:
        for worker in self.workers:
            if worker.hostname == hostname:
                return worker
        return None

    def time_limit(self, task_name: Optional[str]) -> Optional[float]:
        if task_name and task_name in self.time_limits:
            return self.time_limits[task_name]
        return self.default_time_limit


# -- examples (tests and docs) -------------------------------------------------------------------------
T0 = 1_800_000_000.0  # an arbitrary, fixed epoch: examples are deterministic


def example_task(id: str = "3f2c9a4e-0001", name: str = "proj.tasks.work", worker: str = "celery@worker1",
                 sent: Optional[float] = T0 + 1.0, **overrides: Any) -> TaskRecord:
    """A task sent to the `celery` queue and run to success on `worker` within a second. Keywords replace
    TaskRecord fields (`steps=` for another history)."""
    steps = []
    if sent is not None:
        steps.append(Step("sent", "gen4242@app1", sent, 4242))
        start = sent
    else:
        start = T0 + 1.0
    steps += [Step("received", worker, start + 0.01, 1001), Step("started", worker, start + 0.02, 1001),
              Step("succeeded", worker, start + 0.5, 1001)]
    values: dict[str, Any] = dict(id=id, name=name, steps=tuple(steps), queue="celery" if sent is not None else None,
                                  routing_key="celery" if sent is not None else None,
                                  exchange="" if sent is not None else None, retries=0, runtime=0.48)
    values.update(overrides)
    return TaskRecord(**values)


def example_worker(hostname: str = "celery@worker1", **overrides: Any) -> WorkerRecord:
    """A prefork worker heart-beating every 2 s for the whole example watch (T0 to T0 + 60), idle at the end,
    with task events on. Keywords replace WorkerRecord fields."""
    values: dict[str, Any] = dict(hostname=hostname, first_seen=T0 + 0.5, last_seen=T0 + 59.5, heartbeats=30,
                                  last_heartbeat=T0 + 59.5, freq=2.0, pid=1001, active=0, processed_first=120,
                                  processed_last=130, sw_ver="5.7.0", task_events=30,
                                  liveness=Liveness(ALIVE))
    values.update(overrides)
    return WorkerRecord(**values)


def example(**overrides: Any) -> EventsState:
    """A quiet 60-second watch of a Redis broker: two workers heart-beating, ten tasks sent and run to success
    (summarised and dropped from the ledger), nothing open. Keywords replace EventsState fields."""
    values: dict[str, Any] = dict(
        transport="redis", source="redis pub/sub: PSUBSCRIBE /0.celeryev/* (db 0)", started_at=T0,
        ended_at=T0 + 60.0, bound_s=30.0, events=100,
        kinds={"task-sent": 10, "task-received": 10, "task-started": 10, "task-succeeded": 10,
               "worker-heartbeat": 60},
        tasks=(), finished={"succeeded": 10},
        workers=(example_worker("celery@worker1"), example_worker("celery@worker2", pid=1002)),
        live_probe="CLIENT LIST every 2 s (connections of silent workers)")
    values.update(overrides)
    return EventsState(**values)
