"""The config part of a snapshot: a read-only, plain-data view of a Celery app's configuration.

Pure data: no I/O and no Celery import at module level. The collector (celery_doctor.collectors.config) fills it
from the live app once; the questions Celery answers from it (acks, time limits, routes, timeouts, beat periods)
live in celery_doctor.facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from ..model import Location
from ..settings import Setting

__all__ = ["AppConfig", "BeatEntry", "QueueInfo", "Route", "RouteRule", "Setting", "TaskInfo", "example",
           "example_task"]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    acks_late: Optional[bool]
    reject_on_worker_lost: Optional[bool]
    retry_on_worker_lost: Optional[bool]  # Celery 5.7+; None on older versions
    acks_on_failure_or_timeout: Optional[bool]
    acks_on_failure: Optional[bool]  # Celery 5.7+; None on older versions
    acks_on_timeout: Optional[bool]  # Celery 5.7+; None on older versions
    time_limit: Optional[float]
    soft_time_limit: Optional[float]
    max_retries: Optional[int]
    default_retry_delay: Optional[float]
    autoretry_for: tuple[str, ...]
    retry_backoff: Any
    serializer: Optional[str]
    ignore_result: Optional[bool]
    queue: Optional[str]
    expires: Any
    location: Optional[Location]
    options: Mapping[str, Any] = field(default_factory=dict)  # decorator options the app set explicitly


@dataclass(frozen=True)
class QueueInfo:
    name: str
    exchange: str
    exchange_type: str
    routing_key: str
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: Mapping[str, Any]
    max_priority: Optional[int]
    queue_type: str  # classic / quorum / stream, from x-queue-type or task_default_queue_type


@dataclass(frozen=True)
class Route:
    """Where Celery's own router sends a task name: resolved with the app's real router."""

    task: str
    queue: Optional[str]
    exchange: Optional[str]
    routing_key: Optional[str]
    error: Optional[str] = None


@dataclass(frozen=True)
class RouteRule:
    """One static entry of task_routes: a pattern and where it sends."""

    pattern: str
    options: Mapping[str, Any]
    is_glob: bool
    is_regex: bool

    def matches(self, task_name: str) -> bool:
        """Whether Celery's router applies this entry to `task_name` (see facts.routing.rule_matches)."""
        from ..facts.routing import rule_matches

        return rule_matches(self, task_name)


@dataclass(frozen=True)
class BeatEntry:
    name: str
    task: str
    schedule: str
    interval_s: Optional[float]  # the schedule's period in seconds (facts.beat.schedule_period), None if unknown
    options: Mapping[str, Any]
    has_top_level_expires: bool = False


@dataclass(frozen=True)
class AppConfig:
    """A read-only, plain-data view of a Celery app's configuration."""

    main: Optional[str]
    celery_version: str
    kombu_version: str
    broker_url: Optional[str]  # masked
    broker_urls: tuple[str, ...]  # masked, one per failover URL
    transport: Optional[str]
    backend: Optional[str]  # masked
    settings: Mapping[str, Setting]
    tasks: Mapping[str, TaskInfo]  # user tasks (celery.* built-ins excluded)
    registered: frozenset[str]  # every registered name, built-ins included
    queues: tuple[QueueInfo, ...]  # task_queues as declared (empty when not set)
    routes: Mapping[str, Route]  # task name -> where the real router sends it
    route_rules: tuple[RouteRule, ...]
    dynamic_routers: int  # routers that are functions or objects: not analysable statically
    beat: tuple[BeatEntry, ...]
    config_origin: Optional[str] = None  # file the config came from, for locations
    app_module_file: Optional[str] = None
    # (setting, why Celery cannot use its value as it is): settings of the wrong type or shape
    problems: tuple[tuple[str, str], ...] = ()
    # setting -> where it is written in config_origin (found by the collector, which reads the file once)
    setting_lines: Mapping[str, Location] = field(default_factory=dict)

    def setting(self, name: str) -> Setting:
        found = self.settings.get(name)
        if found is None:
            return Setting(name=name, value=None, explicit=False, known=False)
        return found

    def value(self, name: str) -> Any:
        return self.setting(name).value

    @property
    def transport_options(self) -> Mapping[str, Any]:
        value = self.value("broker_transport_options")
        return value if isinstance(value, Mapping) else {}

    @property
    def visibility_timeout(self) -> tuple[float, bool]:
        """Redis' visibility timeout in seconds, and whether the app set it (see facts.timeouts)."""
        from ..facts.timeouts import redis_visibility_timeout

        return redis_visibility_timeout(self)

    @property
    def default_queue(self) -> str:
        value = self.value("task_default_queue")
        return value if isinstance(value, str) and value else "celery"

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def routed_queues(self) -> dict[str, list[str]]:
        """Queue name -> the task names the router sends there (see facts.routing.routed_queues)."""
        from ..facts.routing import routed_queues

        return routed_queues(self)

    def located(self, setting_name: str) -> Optional[Location]:
        """Where a setting is written in the config module (best effort, found when the config was collected)."""
        return self.setting_lines.get(setting_name)


def example_task(name: str = "proj.tasks.work", **overrides: Any) -> TaskInfo:
    """A TaskInfo as Celery reports an undecorated task of a default app (for tests and docs)."""
    values: dict[str, Any] = dict(
        name=name, acks_late=False, reject_on_worker_lost=None, retry_on_worker_lost=False,
        acks_on_failure_or_timeout=True, acks_on_failure=True, acks_on_timeout=True, time_limit=None,
        soft_time_limit=None, max_retries=3, default_retry_delay=180, autoretry_for=(), retry_backoff=False,
        serializer="json", ignore_result=False, queue=None, expires=None, location=None, options={})
    values.update(overrides)
    return TaskInfo(**values)


def example(**overrides: Any) -> AppConfig:
    """An AppConfig for tests and docs: a Redis app `proj` with Celery's defaults and one task.

    `settings` may map setting names to plain values: they are explicit settings over Celery's defaults.
    `tasks` may be an iterable of names or TaskInfo objects. Other keywords replace AppConfig fields as they are.
    """
    from celery.app import defaults  # lazily: the module itself stays free of Celery

    explicit = overrides.pop("settings", {}) or {}
    settings = {name: Setting(name=name, value=value, explicit=False) for name, value in defaults.DEFAULTS.items()}
    for name, value in explicit.items():
        settings[name] = value if isinstance(value, Setting) else Setting(name=name, value=value, explicit=True)
    tasks = overrides.pop("tasks", ["proj.tasks.work"])
    infos = [t if isinstance(t, TaskInfo) else example_task(t) for t in tasks]
    default_queue = settings["task_default_queue"].value or "celery"
    broker = settings["broker_url"].value if settings["broker_url"].explicit else "redis://127.0.0.1:6379/0"
    config = AppConfig(
        main="proj", celery_version="5.7.0", kombu_version="5.7.0", broker_url=broker, broker_urls=(broker,),
        transport="redis", backend=None, settings=settings, tasks={t.name: t for t in infos},
        registered=frozenset(t.name for t in infos), queues=(),
        routes={t.name: Route(t.name, default_queue, default_queue, default_queue) for t in infos},
        route_rules=(), dynamic_routers=0, beat=())
    return replace(config, **overrides)
