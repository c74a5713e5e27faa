"""A task's effective acknowledgement: when the worker acks its message, and what happens to it when the task
fails, hits its hard time limit, or its pool process is killed.

Mirrors Celery 5.7: Task.bind fills every unset task attribute from its setting (`from_config`), then falls
`acks_on_failure`/`acks_on_timeout` back to `acks_on_failure_or_timeout` (else True); the worker's
Request.on_failure/on_timeout then decide (celery/worker/request.py). On older Celery versions the 5.7-only
settings do not exist: retry_on_worker_lost is False and acks_on_timeout is None (unknown) there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..parts.config import AppConfig, TaskInfo
    from .limits import TimeLimits

# What happens to the message.
ACKED_ON_RECEIPT = "acked when started"  # early ack (Request.on_accepted): gone from the broker once the task starts
ACKED = "acked"  # removed from the broker
REQUEUED = "requeued"  # rejected with requeue: delivered again
REJECTED = "rejected"  # rejected without requeue: dropped (dead-lettered on RabbitMQ if the queue has a DLX)
RETRIED = "retried"  # sent again as a retry (task_retry_on_worker_lost, Celery 5.7), bounded by max_retries

# What ends a run with the message requeued (requeued_on).
WORKER_LOST = "worker lost"  # the pool process running the task was killed (WorkerLostError)
HARD_TIME_LIMIT = "hard time limit"  # the task hit its hard time limit (TimeLimitExceeded)


@dataclass(frozen=True)
class Acks:
    task: str
    acks_late: bool
    reject_on_worker_lost: bool
    retry_on_worker_lost: bool
    acks_on_failure: bool
    acks_on_timeout: Optional[bool]  # None: the installed Celery has no task_acks_on_timeout (before 5.7)
    retry_known: bool  # the installed Celery has task_retry_on_worker_lost (5.7+)

    @property
    def on_worker_lost(self) -> str:
        """The message's fate when the pool process running the task is killed (WorkerLostError), retries left."""
        if self.retry_on_worker_lost:
            return RETRIED  # checked before acks_late: it resends even an early-acked task
        if not self.acks_late:
            return ACKED_ON_RECEIPT
        if self.reject_on_worker_lost:
            return REQUEUED
        return ACKED if self.acks_on_failure else REJECTED

    @property
    def on_failure(self) -> str:
        """The message's fate when the task raises."""
        if not self.acks_late:
            return ACKED_ON_RECEIPT
        return ACKED if self.acks_on_failure else REJECTED

    @property
    def on_timeout(self) -> Optional[str]:
        """The message's fate when the task hits its hard time limit (None: not known for this Celery version)."""
        if not self.acks_late:
            return ACKED_ON_RECEIPT
        if self.acks_on_timeout is None:
            return None
        return ACKED if self.acks_on_timeout else REQUEUED

    @property
    def lost_with_worker(self) -> bool:
        """An acks_late task whose message is acked or dropped when its pool process is killed."""
        return self.acks_late and self.on_worker_lost in (ACKED, REJECTED)


def requeued_on(acks: Acks, limits: "TimeLimits") -> tuple[str, ...]:
    """The ends of a run after which the worker rejects the task's message WITH requeue, so that the same message is
    delivered again (a loop while the cause repeats; each return counts toward a quorum queue's delivery-limit):
    WORKER_LOST with reject_on_worker_lost (unless retry_on_worker_lost resends it as a new message), HARD_TIME_LIMIT
    when the task has one and acks_on_timeout is False (Celery 5.7, which it inherits from acks_on_failure_or_timeout).

    A failure never requeues: with acks_on_failure False (or acks_on_failure_or_timeout False) Request.on_failure
    rejects the message WITHOUT requeue, which drops it (or dead-letters it), and before Celery 5.7 so did a
    timeout."""
    ends = []
    if acks.on_worker_lost == REQUEUED:
        ends.append(WORKER_LOST)
    if limits.hard and acks.on_timeout == REQUEUED:
        ends.append(HARD_TIME_LIMIT)
    return tuple(ends)


def _inherit(task_value: Any, config: "AppConfig", setting: str, default: Any) -> Any:
    """The task's own value, else the app's setting, else Celery's default (Task.bind's from_config)."""
    if task_value is not None:
        return task_value
    value = config.value(setting)
    return default if value is None else value


def _flag(task_value: Any, config: "AppConfig", setting: str, either: Any) -> Optional[bool]:
    """acks_on_failure / acks_on_timeout: own value, else its setting, else acks_on_failure_or_timeout, else True."""
    if task_value is None and not config.setting(setting).known:
        return None
    value = _inherit(task_value, config, setting, None)
    if value is None:
        value = either if either is not None else True
    return bool(value)


def task_acks(config: "AppConfig", task: "TaskInfo") -> Acks:
    either = _inherit(task.acks_on_failure_or_timeout, config, "task_acks_on_failure_or_timeout", True)
    on_failure = _flag(task.acks_on_failure, config, "task_acks_on_failure", either)
    return Acks(
        task=task.name,
        acks_late=bool(_inherit(task.acks_late, config, "task_acks_late", False)),
        reject_on_worker_lost=bool(_inherit(task.reject_on_worker_lost, config, "task_reject_on_worker_lost", False)),
        retry_on_worker_lost=bool(_inherit(task.retry_on_worker_lost, config, "task_retry_on_worker_lost", False)),
        acks_on_failure=bool(either) if on_failure is None else on_failure,
        acks_on_timeout=_flag(task.acks_on_timeout, config, "task_acks_on_timeout", either),
        retry_known=task.retry_on_worker_lost is not None or config.setting("task_retry_on_worker_lost").known,
    )


def all_task_acks(config: "AppConfig") -> list[Acks]:
    """task_acks for every user task of the app, in the order of config.tasks."""
    return [task_acks(config, task) for task in config.tasks.values()]


def global_acks(config: "AppConfig") -> Acks:
    """task_acks of a task that sets nothing itself: what the app's settings give every such task (for an app that,
    as loaded, registers no task of its own)."""
    from ..parts.config import TaskInfo

    unset = TaskInfo(name="(every task)", acks_late=None, reject_on_worker_lost=None, retry_on_worker_lost=None,
                     acks_on_failure_or_timeout=None, acks_on_failure=None, acks_on_timeout=None, time_limit=None,
                     soft_time_limit=None, max_retries=None, default_retry_delay=None, autoretry_for=(),
                     retry_backoff=None, serializer=None, ignore_result=None, queue=None, expires=None, location=None)
    return task_acks(config, unset)
