"""Collectors gather each snapshot part once, read-only, concurrently, under one deadline.

A live collector is a function `collect(ctx: CollectContext) -> Part`. It must:
- never write, consume, ack, requeue, purge or (non-passively) declare anything on a broker;
- bound every network call by `ctx.deadline` (socket timeouts from `ctx.deadline.budget()`);
- return `Part.unavailable(reason)` (a masked, one-line reason) instead of raising.
A collector that raises anyway, or has not returned when the deadline passes, is recorded as
unavailable by `gather_live`; its thread is a daemon and is abandoned.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..deadline import Deadline
from ..masking import scrub
from ..model import COLLECTOR_CRASH, Part

# part name -> "module:function". A part is collected only when the target's transport allows it.
LIVE_COLLECTORS: Mapping[str, str] = {
    "redis": "celery_doctor.collectors.redis:collect_redis",
    "rabbitmq": "celery_doctor.collectors.rabbitmq:collect_rabbitmq",
    "workers": "celery_doctor.collectors.workers:collect_workers",
}
PART_TRANSPORT = {"redis": "redis", "rabbitmq": "rabbitmq"}
log = logging.getLogger(__name__)


@dataclass
class ScanOptions:
    deep: bool = False
    max_messages: int = 1000  # per queue, unless deep
    management_url: Optional[str] = None
    consumer_timeout: Optional[float] = None  # seconds; RabbitMQ's server setting, when the user knows it
    peek: bool = False
    progress: bool = False  # a progress display on stderr (only when attached to a terminal)
    timeout: float = 10.0


@dataclass
class CollectContext:
    app: Any  # the loaded Celery app (or a bare one for --broker)
    broker_url: Optional[str]  # raw: never copy it into a Part, a Finding or a message
    config: Any  # AppConfig
    deadline: Deadline
    options: ScanOptions = field(default_factory=ScanOptions)
    app_spec: Optional[str] = None


def _resolve(path: str) -> Callable[[CollectContext], Part]:
    module_name, func_name = path.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def wanted_parts(transport: Optional[str]) -> dict[str, Part]:
    """Which live parts apply to this transport; the others are marked not applicable now."""
    decided: dict[str, Part] = {}
    for name in LIVE_COLLECTORS:
        needed = PART_TRANSPORT.get(name)
        if needed and transport != needed:
            decided[name] = Part.not_applicable(f"the broker is {transport or 'not configured'}, not {needed}")
        elif name == "workers" and transport not in ("redis", "rabbitmq"):
            decided[name] = Part.not_applicable(f"workers are only inspected over redis or rabbitmq brokers, not {transport or 'none'}")
    return decided


def _import_before_threads(transport: Optional[str]) -> None:
    """Import the client libraries once, here: two collector threads importing redis-py 8 at the same time
    can hit Python's module-lock deadlock detection (seen: `_DeadlockError ... redis.observability.attributes`
    made the worker broadcast fail)."""
    import importlib

    for module in ("redis", "redis.client", "kombu.transport.redis") if transport == "redis" else ("amqp", "pika"):
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a collector reports a missing library itself
            pass


def gather_live(ctx: CollectContext, transport: Optional[str], collectors: Optional[Mapping[str, str]] = None) -> dict[str, Part]:
    """Run every applicable live collector concurrently; return a Part for every live part."""
    collectors = dict(collectors or LIVE_COLLECTORS)
    parts = wanted_parts(transport)
    results: dict[str, Part] = {}
    threads: dict[str, threading.Thread] = {}

    def run(name: str, path: str) -> None:
        try:
            results[name] = _resolve(path)(ctx)
        except BaseException as exc:  # noqa: BLE001 - a crashing collector is a reason, not a crash
            results[name] = Part.unavailable(scrub(f"{COLLECTOR_CRASH} {type(exc).__name__}: {exc}"))

    _import_before_threads(transport)
    for name, path in collectors.items():
        if name in parts:
            continue
        thread = threading.Thread(target=run, args=(name, path), name=f"collect-{name}", daemon=True)
        threads[name] = thread
        thread.start()
    for name, thread in threads.items():
        thread.join(ctx.deadline.remaining())
        if name in results:
            parts[name] = results[name]
        else:
            seconds = f"{ctx.deadline.seconds:.1f}".rstrip("0").rstrip(".")  # 3 -> "3", 2.0014 -> "2"
            parts[name] = Part.unavailable(f"did not answer within {seconds} s")
    for name, part in sorted(parts.items()):
        log.debug("part %s: %s%s", name, part.status.value, f" ({scrub(part.reason)})" if part.reason else "")
    return parts


def now() -> float:
    return time.time()
