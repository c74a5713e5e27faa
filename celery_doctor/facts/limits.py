"""A task's time limits as the prefork pool enforces them (seconds; None for no limit).

A per-task `time_limit=0` is not "no limit" under the prefork pool: the worker's Request passes
`time_limit or task.time_limit` (celery/worker/request.py, Request.execute_using_pool), and billiard's
Pool.apply_async then does `soft_timeout = soft_timeout or self.soft_timeout` and `timeout = timeout or self.timeout`
(billiard/pool.py, Pool.apply_async), where the pool's own limits are the worker's `task_soft_time_limit` /
`task_time_limit` (celery/worker/components.py, Pool.create: `timeout=w.time_limit, soft_timeout=w.soft_time_limit`).
So 0 (or None) falls back to the global setting, and a global 0 (or None) is no limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from ..settings import as_seconds

if TYPE_CHECKING:
    from ..parts.config import AppConfig, TaskInfo


@dataclass(frozen=True)
class TimeLimits:
    soft: Optional[float]
    hard: Optional[float]

    @property
    def longest(self) -> Optional[float]:
        """How long a run may last as far as the limits tell: the hard limit, else the soft one."""
        return self.hard or self.soft


def effective_limit(per_task: Any, pool_default: Any) -> Optional[float]:
    """`per_task or pool_default` in seconds, as billiard applies it; None when that is no limit."""
    return as_seconds(per_task) or as_seconds(pool_default) or None


def task_time_limits(config: "AppConfig", task: "TaskInfo") -> TimeLimits:
    return TimeLimits(
        soft=effective_limit(task.soft_time_limit, config.value("task_soft_time_limit")),
        hard=effective_limit(task.time_limit, config.value("task_time_limit")),
    )


def global_time_limits(config: "AppConfig") -> TimeLimits:
    """The worker's own limits (task_soft_time_limit / task_time_limit): what a task without its own gets."""
    return TimeLimits(soft=effective_limit(None, config.value("task_soft_time_limit")),
                      hard=effective_limit(None, config.value("task_time_limit")))
