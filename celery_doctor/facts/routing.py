"""Where tasks are routed, and whether their queue is declared.

The route of every task the app registers (and of every task a beat entry names) is Celery's own answer: the
collector asks the app's router (`app.amqp.router.route`) with the options `Task.apply_async` passes (the task's
decorator `queue=`/`exchange=`/`routing_key=`, which win over `task_routes`), so `task_routes`, routers, decorator
options and `task_default_queue` are all taken into account there, once. The functions here read that answer.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from ..parts.config import AppConfig, BeatEntry, Route, RouteRule


def task_route(config: "AppConfig", task_name: str) -> Optional["Route"]:
    """Where Celery's router sends `task_name` (None for a name the app neither registers nor schedules)."""
    return config.routes.get(task_name)


def task_queue(config: "AppConfig", task_name: str) -> Optional[str]:
    """The queue `task_name` is published to; None when the router fails for it, or sends it to an exchange only."""
    route = task_route(config, task_name)
    if route is None or route.error:
        return None
    return route.queue


def route_exchange(route: "Route") -> Optional[str]:
    """The exchange a resolved route names without a queue, else None. Celery's Router.expand_destination keeps the
    `exchange` (and `routing_key`) of a route that gives no `queue`, and send_task_message publishes through that
    exchange, which kombu resolves by its bindings (on Redis the set `_kombu.binding.<exchange>`).

    Note: a route with a direct exchange (the default type) and no routing key is published by send_task_message to
    the default exchange with no routing key instead (its anon-exchange conversion); it is listed all the same."""
    if route.error or route.queue or not route.exchange:
        return None
    return route.exchange


def rule_exchange(rule: "RouteRule") -> Optional[str]:
    """The exchange a task_routes entry sends to without a queue (see route_exchange), else None. Such an entry
    also applies to names the app does not register (send_task by name), which is why it is read on its own."""
    exchange = rule.options.get("exchange")
    if not exchange or rule.options.get("queue"):
        return None
    return str(getattr(exchange, "name", exchange))


def exchange_routes(config: "AppConfig") -> dict[str, list[str]]:
    """Exchange -> the task names Celery's router sends through it without a queue (sorted): from the resolved routes
    of the app's tasks and beat entries, and every exchange a task_routes entry names without a queue (with no task
    when it matches none the app registers)."""
    out: dict[str, list[str]] = {}
    for task, route in sorted(config.routes.items()):
        exchange = route_exchange(route)
        if exchange:
            out.setdefault(exchange, []).append(task)
    for rule in config.route_rules:
        exchange = rule_exchange(rule)
        if exchange:
            out.setdefault(exchange, [])
    return out


def _queue_name(value: Any) -> Optional[str]:
    value = getattr(value, "name", value)
    return value if isinstance(value, str) and value else None


def beat_queue(config: "AppConfig", entry: "BeatEntry") -> Optional[str]:
    """The queue a beat entry publishes to: its `options['queue']` (beat passes the options to apply_async, where
    they win over the route), else the route of its task."""
    options = entry.options if isinstance(entry.options, Mapping) else {}
    return _queue_name(options.get("queue")) or task_queue(config, entry.task)


def routed_queues(config: "AppConfig") -> dict[str, list[str]]:
    """Queue name -> the task names the router sends there (the default queue is always present, and so is every
    queue a beat entry names in its options)."""
    out: dict[str, list[str]] = {config.default_queue: []}
    for task, route in sorted(config.routes.items()):
        if route.queue:
            out.setdefault(route.queue, []).append(task)
    for entry in config.beat:
        options = entry.options if isinstance(entry.options, Mapping) else {}
        queue = _queue_name(options.get("queue"))  # a name, or a kombu Queue as apply_async takes it
        if queue:
            out.setdefault(queue, [])
    return out


def app_queues(config: "AppConfig") -> list[str]:
    """Every queue the app uses: the default queue, the queues its routes and beat entries send to, and the queues
    it declares in `task_queues` (sorted)."""
    return sorted(set(routed_queues(config)) | set(config.queue_names()))


def declared_queue_arguments(config: "AppConfig") -> dict[str, dict[str, Any]]:
    """Queue -> the arguments Celery declares it with, for the queues the app declares (see queue_declared): each
    `task_queues` entry's queue_arguments, else the default queue, which Celery builds with x-queue-type quorum when
    `task_default_queue_type` is quorum (app.amqp.Queues); `task_queue_max_priority` is added as x-max-priority to
    every queue without one (Queues._set_max_priority), and a kombu Queue's own `max_priority` wins over both (it is
    passed to prepare_queue_arguments at declare time). Queue attributes other than max_priority (expires,
    message_ttl, max_length...) are not in the config part and not counted, nor are the queues a route creates on
    the fly (task_create_missing_queues)."""
    declared: dict[str, dict[str, Any]] = {}
    own_priority: dict[str, Any] = {}
    for info in config.queues:
        declared[info.name] = dict(info.arguments)
        own_priority[info.name] = info.max_priority
    if not config.queues:
        quorum = config.value("task_default_queue_type") == "quorum"
        declared[config.default_queue] = {"x-queue-type": "quorum"} if quorum else {}
    max_priority = config.value("task_queue_max_priority")
    for name, arguments in declared.items():
        if max_priority is not None:
            arguments.setdefault("x-max-priority", max_priority)
        if own_priority.get(name) is not None:
            arguments["x-max-priority"] = own_priority[name]
    return declared


def queue_declared(config: "AppConfig", queue: str) -> bool:
    """Whether the app declares `queue`: it is in `task_queues`, or `task_queues` is not set and it is the default
    queue (Celery then declares only that one). A worker started without -Q consumes exactly these."""
    if config.queues:
        return queue in config.queue_names()
    return queue == config.default_queue


@lru_cache(maxsize=4096)
def _map_route_matches(pattern: str, is_regex: bool, task_name: str) -> bool:
    from celery.app.routes import MapRoute

    key = re.compile(pattern) if is_regex else pattern
    return MapRoute([(key, {"queue": "-"})])(task_name) is not None


def rule_matches(rule: "RouteRule", task_name: str) -> bool:
    """Whether Celery's MapRoute applies a task_routes entry to `task_name`: an exact name, a glob when the key has
    a `*` (only `*`: a `?` is an ordinary character to Celery), or a compiled regex."""
    return _map_route_matches(rule.pattern, rule.is_regex, task_name)
