"""Every live data source of a scan in one place, and how a scan gathers them.

A `DataSource` names a live snapshot part, the broker transports it applies to, the collector that gathers it
(`collect(ctx: CollectContext) -> Part`, see celery_doctor/collectors/__init__.py for the rules a collector
follows) and, for a broker, the `trace` searcher that looks for one task on it. `DATA_SOURCES` lists them in the
order they are reported; `gather_live` runs the applicable ones concurrently under the run's deadline.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from .collectors import CollectContext
from .collectors.rabbitmq import collect_rabbitmq
from .collectors.workers import collect_workers
from .masking import scrub
from .model import COLLECTOR_CRASH, Part, Snapshot
from .trace_rabbitmq import trace_search as trace_rabbitmq
from .trace_types import Searcher

__all__ = ["DATA_SOURCES", "LOGS", "RABBITMQ", "REDIS", "WORKERS", "DataSource", "broker_source", "gather_live",
           "import_before_threads", "wanted_parts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """One live part of a snapshot and where it comes from."""

    name: str  # the snapshot part it fills ("redis", "rabbitmq", "workers")
    collect: Callable[[CollectContext], Part]
    transports: tuple[str, ...]  # the broker transports it applies to; on any other it is not applicable
    broker: bool = False  # the part is the broker itself (one per transport)
    trace: Optional[Searcher] = None  # a broker's search for one task id (`celery-doctor trace`)
    trace_after_scan: bool = False  # the search reads the scan's part (True) or the broker itself, meanwhile
    local: bool = False  # reads local files (logs), whatever the broker: no network, gathered by scan only

    def not_applicable(self, transport: Optional[str]) -> Optional[str]:
        """Why this source does not apply to a broker of this transport, or None when it does."""
        if self.local or transport in self.transports:
            return None
        if self.broker:
            return f"the broker is {transport or 'not configured'}, not {self.transports[0]}"
        return (f"{self.name} are only inspected over {' or '.join(self.transports)} brokers, "
                f"not {transport or 'none'}")


# -- Redis: imported on first use ---------------------------------------------------------------------
# The Redis collector and trace search import redis-py (about 0.15 s), which `lint` never needs.
# `import_before_threads` imports them in the calling thread before any collector or search thread starts.

def _redis_collector() -> Callable[[CollectContext], Part]:
    from .collectors.redis import collect_redis

    return collect_redis


def _redis_searcher() -> Searcher:
    from .trace_redis import trace_search

    return trace_search


def collect_redis(ctx: CollectContext) -> Part:
    """The Redis collector (celery_doctor.collectors.redis.collect_redis)."""
    return _redis_collector()(ctx)


def trace_redis(ctx: CollectContext, task_id: str, snapshot: Snapshot):
    """The Redis trace search (celery_doctor.trace_redis.trace_search)."""
    return _redis_searcher()(ctx, task_id, snapshot)


trace_redis.__name__ = "trace_search"  # trace names a search that failed or did not answer by its function's name


def collect_logs(ctx: CollectContext) -> Part:
    """The logs part of `scan --logs` (celery_doctor.logs.collect.collect_logs; imported on first use)."""
    from .logs.collect import collect_logs as collect

    return collect(ctx)


# -- the registry -------------------------------------------------------------------------------------
# Searchers that read the broker themselves run at the same time as the scan; those that read what the scan
# gathered (RabbitMQ shows message headers only to --peek, which the collector does) run after it.
REDIS = DataSource("redis", collect_redis, ("redis",), broker=True, trace=trace_redis)
RABBITMQ = DataSource("rabbitmq", collect_rabbitmq, ("rabbitmq",), broker=True, trace=trace_rabbitmq,
                      trace_after_scan=True)
WORKERS = DataSource("workers", collect_workers, ("redis", "rabbitmq"))
LOGS = DataSource("logs", collect_logs, (), local=True)  # --logs: not applicable when none are given
DATA_SOURCES: tuple[DataSource, ...] = (REDIS, RABBITMQ, WORKERS, LOGS)


def broker_source(transport: Optional[str]) -> Optional[DataSource]:
    """The source that reads a broker of this transport, or None when no source reads it."""
    return next((s for s in DATA_SOURCES if s.broker and transport in s.transports), None)


def wanted_parts(transport: Optional[str], sources: Iterable[DataSource] = DATA_SOURCES) -> dict[str, Part]:
    """Which live parts apply to this transport; the others are marked not applicable now."""
    decided: dict[str, Part] = {}
    for source in sources:
        reason = source.not_applicable(transport)
        if reason:
            decided[source.name] = Part.not_applicable(reason)
    return decided


def import_before_threads(transport: Optional[str], trace: bool = False) -> None:
    """Import the client libraries (and the Redis modules loaded on first use) once, here, before the collector
    (and, with `trace`, search) threads start: two threads importing redis-py 8 at the same time can hit Python's
    module-lock deadlock detection (seen: `_DeadlockError ... redis.observability.attributes` made the worker
    broadcast fail)."""
    libraries = ("redis", "redis.client", "kombu.transport.redis") if transport == "redis" else ("amqp", "pika")
    loaders: list[Callable[[], object]] = [lambda name=name: importlib.import_module(name) for name in libraries]
    if transport == "redis":
        loaders += [_redis_collector, _redis_searcher] if trace else [_redis_collector]
    for load in loaders:
        try:
            load()
        except Exception:  # noqa: BLE001 - a collector (or search) reports a missing library itself
            pass


def gather_live(ctx: CollectContext, transport: Optional[str],
                sources: Iterable[DataSource] = DATA_SOURCES) -> dict[str, Part]:
    """Run every applicable live source's collector concurrently; return a Part for every live part.

    A collector that raises is recorded as unavailable (COLLECTOR_CRASH); one that has not returned when the
    deadline passes is recorded as unavailable too, and its (daemon) thread is abandoned."""
    sources = tuple(sources)
    parts = wanted_parts(transport, sources)
    results: dict[str, Part] = {}
    threads: dict[str, threading.Thread] = {}

    def run(source: DataSource) -> None:
        try:
            results[source.name] = source.collect(ctx)
        except BaseException as exc:  # noqa: BLE001 - a crashing collector is a reason, not a crash
            results[source.name] = Part.unavailable(scrub(f"{COLLECTOR_CRASH} {type(exc).__name__}: {exc}"))

    import_before_threads(transport)
    for source in sources:
        if source.name in parts:
            continue
        thread = threading.Thread(target=run, args=(source,), name=f"collect-{source.name}", daemon=True)
        threads[source.name] = thread
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
