"""The workers part of a snapshot: what the live workers consume, register, run, hold and are configured with,
from one round of control broadcasts (see celery_doctor.collectors.workers for how it is gathered).

Pure, frozen data: no I/O. The checks in checks/workers_*.py read it; `example()` builds a realistic state for
tests without a broker or a worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..settings import as_seconds

__all__ = ["COMMANDS", "CONNECTED", "GONE", "UNTOLD", "TaskRef", "WorkerInfo", "WorkerQueue", "WorkersState", "example", "example_task",
           "example_worker"]

# The control commands one round sends to every worker (celery inspect's names).
COMMANDS: tuple[str, ...] = ("ping", "active_queues", "registered", "stats", "conf", "active", "reserved",
                             "scheduled", "revoked", "report")

# Redis: what the broker shows of a silent worker's mailbox (`WorkerInfo.mailbox`), from how many clients received
# the scan's own ping (the PUBLISH reply) against how many workers answered. Redis does not say whose a
# subscription is, so a worker is singled out only when the count leaves no choice.
CONNECTED = "connected"  # every silent worker still has its mailbox subscription: connected, not answering
GONE = "gone"  # no subscription is left for any silent worker: killed (or cut off from Redis)
UNTOLD = "untold"  # some silent workers hold one and some do not: which is which cannot be told


@dataclass(frozen=True)
class TaskRef:
    """One request a worker reported (active, reserved or scheduled); arguments are not kept."""

    id: str
    name: str
    acknowledged: Optional[bool] = None
    time_start: Optional[float] = None  # epoch seconds (worker clock), active tasks only
    eta: Optional[str] = None  # scheduled tasks: ISO time
    eta_ts: Optional[float] = None
    routing_key: Optional[str] = None
    exchange: Optional[str] = None
    redelivered: bool = False
    worker_pid: Optional[int] = None


@dataclass(frozen=True)
class WorkerQueue:
    name: str
    exchange: str = ""
    exchange_type: str = ""
    routing_key: str = ""


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    known: bool  # seen on the broker (mailbox binding / pidbox queue) before the broadcast
    answered: tuple[str, ...] = ()  # commands it answered
    errors: Mapping[str, str] = field(default_factory=dict)  # command -> error text from the worker
    undecoded: Optional[str] = None  # content type of replies that were not decoded (e.g. pickle)
    queues: Optional[tuple[WorkerQueue, ...]] = None
    registered: Optional[frozenset[str]] = None
    pid: Optional[int] = None
    uptime: Optional[float] = None
    pool: Optional[str] = None  # implementation, e.g. celery.concurrency.prefork:TaskPool
    concurrency: Optional[int] = None
    prefetch_count: Optional[int] = None
    broker_transport: Optional[str] = None
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    conf: Mapping[str, Any] = field(default_factory=dict)
    active: Optional[tuple[TaskRef, ...]] = None
    reserved: Optional[tuple[TaskRef, ...]] = None
    scheduled: Optional[tuple[TaskRef, ...]] = None
    active_total: Optional[int] = None
    reserved_total: Optional[int] = None
    scheduled_total: Optional[int] = None
    revoked: Optional[int] = None  # how many revoked ids it holds
    revoked_ids: frozenset[str] = frozenset()  # the ids themselves (bounded), so trace can tell a revoked task
    celery_version: Optional[str] = None
    kombu_version: Optional[str] = None
    python_version: Optional[str] = None
    mailbox: Optional[str] = None  # Redis, silent workers: CONNECTED, GONE or UNTOLD; None when not read

    @property
    def responded(self) -> bool:
        return bool(self.answered)

    @property
    def silent(self) -> bool:
        return not self.answered

    @property
    def queue_names(self) -> frozenset[str]:
        return frozenset(q.name for q in self.queues or ())

    @property
    def visibility_timeout(self) -> Optional[float]:
        value = self.transport_options.get("visibility_timeout")
        if value is None and isinstance(self.conf.get("broker_transport_options"), Mapping):
            value = self.conf["broker_transport_options"].get("visibility_timeout")
        return as_seconds(value)

    @property
    def solo(self) -> bool:
        return bool(self.pool and "solo" in self.pool)


@dataclass(frozen=True)
class WorkersState:
    transport: str
    namespace: str  # control exchange name (celery)
    workers: tuple[WorkerInfo, ...]
    discovery: str  # how the known workers were found
    discovered: bool  # the broker could list the workers (else only replies count)
    discovery_error: Optional[str]
    wait_s: float  # how long replies were awaited at most
    elapsed_s: float
    commands: tuple[str, ...] = COMMANDS
    addressed: bool = False  # commands went to the known workers by name
    broadcast_sent: bool = True
    cleanup: str = ""
    mailbox_listeners: Optional[int] = None  # Redis: clients that received the scan's ping (PUBLISH's reply)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {w.name: w for w in self.workers})

    @property
    def answered(self) -> tuple[WorkerInfo, ...]:
        return tuple(w for w in self.workers if w.answered)

    @property
    def silent(self) -> tuple[WorkerInfo, ...]:
        return tuple(w for w in self.workers if not w.answered)

    def by_name(self, name: str) -> Optional[WorkerInfo]:
        return self._by_name.get(name)  # type: ignore[attr-defined]

    def consumers_of(self, queue: str) -> tuple[WorkerInfo, ...]:
        """Answering workers that consume `queue`."""
        return tuple(w for w in self.answered if queue in w.queue_names)

    @property
    def none_exists(self) -> bool:
        return not self.workers


# -- examples (tests and docs) -------------------------------------------------------------------------
EXAMPLE_TASK = "proj.tasks.work"
BUILTIN_TASKS = ("celery.accumulate", "celery.backend_cleanup", "celery.chain", "celery.chord", "celery.chord_unlock",
                 "celery.chunks", "celery.group", "celery.map", "celery.starmap")
# What `conf` (with defaults) reports for the kept settings of a worker started from a default app.
DEFAULT_CONF: Mapping[str, Any] = {
    "task_acks_late": False, "task_reject_on_worker_lost": None, "task_retry_on_worker_lost": False,
    "task_acks_on_failure_or_timeout": True, "task_acks_on_failure": True, "task_acks_on_timeout": True,
    "worker_prefetch_multiplier": 4, "worker_concurrency": None, "task_serializer": "json",
    "accept_content": ["json"], "result_serializer": "json", "task_time_limit": None, "task_soft_time_limit": None,
    "task_default_queue": "celery", "task_create_missing_queues": True, "worker_disable_prefetch": False,
    "worker_eta_task_limit": None, "worker_cancel_long_running_tasks_on_connection_loss": False,
    "worker_deduplicate_successful_tasks": False, "worker_state_db": None, "task_track_started": False,
    "broker_transport_options": {},
}


def example_task(name: str = EXAMPLE_TASK, id: str = "3f2c9a4e-0001", **overrides: Any) -> TaskRef:
    """A request as `inspect reserved` shows it: delivered from the `celery` queue, not acknowledged yet, never
    redelivered. Keywords replace TaskRef fields (`time_start` and `acknowledged` for an active task, `eta` and
    `eta_ts` for a scheduled one)."""
    values: dict[str, Any] = dict(id=id, name=name, acknowledged=False, routing_key="celery", exchange="")
    values.update(overrides)
    return TaskRef(**values)


def example_worker(name: str = "celery@worker1", **overrides: Any) -> WorkerInfo:
    """A prefork worker (concurrency 4) started from a default app over Redis, celery/kombu 5.7.0, that answered
    every command: it consumes `celery`, registers `proj.tasks.work` and Celery's built-in tasks, is idle (nothing
    active, reserved or scheduled) and runs with Celery's default settings. Keywords replace WorkerInfo fields
    (`answered=()` for a silent worker)."""
    values: dict[str, Any] = dict(
        name=name, known=True, answered=COMMANDS, errors={}, undecoded=None,
        queues=(WorkerQueue("celery", "celery", "direct", "celery"),),
        registered=frozenset((EXAMPLE_TASK, *BUILTIN_TASKS)), pid=4242, uptime=3600.0,
        pool="celery.concurrency.prefork:TaskPool", concurrency=4, prefetch_count=16, broker_transport="redis",
        transport_options={}, conf=dict(DEFAULT_CONF), active=(), reserved=(), scheduled=(), active_total=0,
        reserved_total=0, scheduled_total=0, revoked=0, revoked_ids=frozenset(), celery_version="5.7.0",
        kombu_version="5.7.0", python_version="3.11.7")
    values.update(overrides)
    return WorkerInfo(**values)


def example(**overrides: Any) -> WorkersState:
    """A WorkersState for tests and docs: one round over a Redis broker whose pidbox bindings named two workers,
    celery@worker1 and celery@worker2 (both `example_worker()`), that both answered every command. Nothing in it
    makes a workers check fire against a default app. Keywords replace WorkersState fields (`transport="rabbitmq"`
    and `discovery=...` for RabbitMQ; `workers=()` for a broker with no worker)."""
    values: dict[str, Any] = dict(
        transport="redis", namespace="celery",
        workers=(example_worker("celery@worker1"), example_worker("celery@worker2", pid=4243)),
        discovery="redis pidbox bindings", discovered=True, discovery_error=None, wait_s=8.7, elapsed_s=0.08,
        addressed=True, broadcast_sent=True,
        cleanup="removed the reply binding and list 9b1f2c3d4e5f.reply.celery.pidbox")
    values.update(overrides)
    return WorkersState(**values)
