"""Collectors gather each snapshot part once, read-only, concurrently, under one deadline.

A live collector is a function `collect(ctx: CollectContext) -> Part`. It must:
- never write, consume, ack, requeue, purge or (non-passively) declare anything on a broker;
- bound every network call by `ctx.deadline` (socket timeouts from `ctx.deadline.budget()`);
- return `Part.unavailable(reason)` (a masked, one-line reason) instead of raising.
A collector that raises anyway, or has not returned when the deadline passes, is recorded as
unavailable by `gather_live` (celery_doctor/sources.py, where every live data source is listed); its
thread is a daemon and is abandoned.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..broker_target import BrokerTarget
from ..deadline import Deadline
from ..options import ScanOptions


@dataclass
class CollectContext:
    app: Any  # the loaded Celery app (or a bare one for --broker)
    broker: BrokerTarget  # parsed once by the loader: .masked to show, .urls to connect, .transport
    config: Any  # AppConfig
    deadline: Deadline
    options: ScanOptions = field(default_factory=ScanOptions)
    app_spec: Optional[str] = None

    @property
    def broker_url(self) -> Optional[str]:
        """The raw URL, only to hand to kombu or redis-py: never copy it into a Part, a Finding or a message."""
        return self.broker.raw


def now() -> float:
    return time.time()
