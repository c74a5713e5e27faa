"""Collects the config part of a snapshot (celery_doctor.parts.config): what the Celery app is configured to do,
read from the live app object once."""
from __future__ import annotations

import inspect
import os
import re
from typing import Any, Mapping, Optional

from ..broker_target import BrokerTarget
from ..facts.beat import schedule_period
from ..masking import mask_url
from ..model import Location
from ..parts.config import AppConfig, BeatEntry, QueueInfo, Route, RouteRule, TaskInfo
from ..settings import Setting, read_setting

# Settings any check may read; everything is captured with its default so checks stay pure.
TRACKED_SETTINGS = (
    "broker_url", "broker_read_url", "broker_write_url", "broker_transport", "broker_transport_options",
    "broker_connection_retry", "broker_connection_retry_on_startup", "broker_connection_max_retries",
    "broker_connection_timeout", "broker_channel_error_retry", "broker_pool_limit", "broker_heartbeat",
    "result_backend", "result_expires", "result_extended", "result_chord_expires",
    "task_acks_late", "task_reject_on_worker_lost", "task_retry_on_worker_lost",
    "task_acks_on_failure_or_timeout", "task_acks_on_failure", "task_acks_on_timeout",
    "task_time_limit", "task_soft_time_limit", "task_always_eager", "task_eager_propagates",
    "task_serializer", "accept_content", "result_serializer", "result_accept_content",
    "task_publish_retry", "task_publish_retry_policy", "task_default_delivery_mode",
    "task_default_queue", "task_default_exchange", "task_default_exchange_type", "task_default_routing_key",
    "task_default_queue_type", "task_create_missing_queues", "task_routes", "task_queues", "task_queue_max_priority",
    "task_ignore_result", "task_track_started", "task_default_retry_delay",
    "worker_prefetch_multiplier", "worker_concurrency", "worker_pool", "worker_state_db",
    "worker_cancel_long_running_tasks_on_connection_loss", "worker_deduplicate_successful_tasks",
    "worker_disable_prefetch", "worker_eta_task_limit", "worker_detect_quorum_queues",
    "worker_soft_shutdown_timeout", "beat_schedule", "beat_cron_starting_deadline", "timezone", "enable_utc",
    "imports", "include",
)

BUILTIN_TASK_PREFIX = "celery."


def _setting_lines(origin: Optional[str], settings: Mapping[str, Setting]) -> dict[str, Location]:
    """Where each setting is written in the config module, found by word search (best effort), reading it once.

    A setting is found on the first line that has, as a whole word, its name, the old name it was set under, its
    upper-case name or its CELERY_-prefixed upper-case name."""
    if not origin or not os.path.isfile(origin):
        return {}
    wanted: dict[str, list[str]] = {}
    for name, setting in settings.items():
        for word in (name, setting.set_as or "", name.upper(), f"CELERY_{name.upper()}"):
            if word:
                wanted.setdefault(word, []).append(name)
    found: dict[str, Location] = {}
    try:
        with open(origin, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                for word in set(re.findall(r"\w+", line)) & wanted.keys():
                    for name in wanted[word]:
                        found.setdefault(name, Location(_relative(origin), number))
    except OSError:
        return {}
    return found


def _relative(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _version(module_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(module_name)
    except Exception:  # noqa: BLE001
        return "unknown"


def _task_location(task: Any) -> Optional[Location]:
    try:
        target = getattr(task, "run", None) or task
        target = inspect.unwrap(target)
        path = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
        return Location(_relative(path), line) if path else None
    except (TypeError, OSError):
        return None


def _exc_names(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if not isinstance(value, (tuple, list, set)):
        value = (value,)
    return tuple(getattr(v, "__name__", str(v)) for v in value)


def _task_info(task: Any, conf_values: Mapping[str, Any]) -> TaskInfo:
    explicit = {}
    for attr, setting in (("acks_late", "task_acks_late"), ("reject_on_worker_lost", "task_reject_on_worker_lost"),
                          ("time_limit", "task_time_limit"), ("soft_time_limit", "task_soft_time_limit"),
                          ("serializer", "task_serializer"), ("ignore_result", "task_ignore_result")):
        value = getattr(task, attr, None)
        if value is not None and value != conf_values.get(setting):
            explicit[attr] = value
    for attr in ("max_retries", "default_retry_delay", "autoretry_for", "retry_backoff", "expires", "queue"):
        value = getattr(type(task), attr, None)
        if attr in type(task).__dict__ and value is not None:
            explicit[attr] = value if attr != "autoretry_for" else _exc_names(value)
    return TaskInfo(
        name=task.name,
        acks_late=getattr(task, "acks_late", None),
        reject_on_worker_lost=getattr(task, "reject_on_worker_lost", None),
        retry_on_worker_lost=getattr(task, "retry_on_worker_lost", None),
        acks_on_failure_or_timeout=getattr(task, "acks_on_failure_or_timeout", None),
        acks_on_failure=getattr(task, "acks_on_failure", None),
        acks_on_timeout=getattr(task, "acks_on_timeout", None),
        time_limit=getattr(task, "time_limit", None),
        soft_time_limit=getattr(task, "soft_time_limit", None),
        max_retries=getattr(task, "max_retries", None),
        default_retry_delay=getattr(task, "default_retry_delay", None),
        autoretry_for=_exc_names(getattr(task, "autoretry_for", ())),
        retry_backoff=getattr(task, "retry_backoff", False),
        serializer=getattr(task, "serializer", None),
        ignore_result=getattr(task, "ignore_result", None),
        queue=getattr(task, "queue", None),
        expires=getattr(task, "expires", None),
        location=_task_location(task),
        options=explicit,
    )


def _queue_info(queue: Any, default_type: str) -> QueueInfo:
    arguments = dict(getattr(queue, "queue_arguments", None) or {})
    exchange = getattr(queue, "exchange", None)
    return QueueInfo(
        name=queue.name,
        exchange=getattr(exchange, "name", "") or "",
        exchange_type=getattr(exchange, "type", "direct") or "direct",
        routing_key=queue.routing_key or "",
        durable=bool(getattr(queue, "durable", True)),
        auto_delete=bool(getattr(queue, "auto_delete", False)),
        exclusive=bool(getattr(queue, "exclusive", False)),
        arguments=arguments,
        max_priority=getattr(queue, "max_priority", None),
        queue_type=str(arguments.get("x-queue-type") or default_type or "classic"),
    )


def _route_rules(task_routes: Any) -> tuple[tuple[RouteRule, ...], int]:
    if task_routes is None:
        return (), 0
    if isinstance(task_routes, (dict, str)) or callable(task_routes):
        task_routes = [task_routes]
    rules: list[RouteRule] = []
    dynamic = 0
    for router in task_routes:
        if isinstance(router, Mapping):
            items = router.items()
        elif isinstance(router, (list, tuple)) and all(isinstance(i, (list, tuple)) and len(i) == 2 for i in router):
            items = router  # list of (pattern, route) pairs
        else:
            dynamic += 1
            continue
        for pattern, options in items:
            if isinstance(pattern, re.Pattern):
                rules.append(RouteRule(pattern.pattern, _route_options(options), False, True))
            else:
                text = str(pattern)  # Celery's MapRoute reads a key as a glob only when it has a '*'
                rules.append(RouteRule(text, _route_options(options), "*" in text, False))
    return tuple(rules), dynamic


def _route_options(options: Any) -> Mapping[str, Any]:
    if isinstance(options, str):
        return {"queue": options}
    if isinstance(options, Mapping):
        out = {}
        for key, value in options.items():
            if hasattr(value, "name") and key in ("queue", "exchange"):
                value = value.name
            out[key] = value
        return out
    return {"router": repr(options)}


def _exec_options(task: Any) -> dict:
    """The options Task.apply_async hands to the router: the task's own queue/exchange/routing_key/... (a copy)."""
    try:
        return dict(task._get_exec_options()) if task is not None else {}
    except Exception:  # noqa: BLE001 - an odd task class: route as send_task would, without them
        return {}


def _resolve_route(app: Any, name: str, task: Any = None) -> Route:
    """Where Celery sends `name`: the app's router with the options apply_async passes (decorator `queue=` and
    friends win over task_routes, as in Router.route's merge), the task given to routers as `task`."""
    try:
        route = app.amqp.router.route(_exec_options(task), name, (), {}, task)
    except Exception as exc:  # noqa: BLE001 - QueueNotFound and friends are findings, not crashes
        return Route(name, None, None, None, error=f"{type(exc).__name__}: {exc}")
    queue = route.get("queue")
    if queue is not None and hasattr(queue, "name"):
        return Route(name, queue.name, getattr(queue.exchange, "name", None), queue.routing_key)
    exchange = route.get("exchange")
    exchange = getattr(exchange, "name", exchange)
    return Route(name, queue if isinstance(queue, str) else None, exchange, route.get("routing_key"))


def _beat_entries(schedule: Any) -> tuple[BeatEntry, ...]:
    if not isinstance(schedule, Mapping):
        return ()
    entries = []
    for name, entry in sorted(schedule.items(), key=lambda kv: str(kv[0])):
        if not isinstance(entry, Mapping):
            continue
        options = entry.get("options") or {}
        entries.append(BeatEntry(
            name=str(name),
            task=str(entry.get("task", "")),
            schedule=repr(entry.get("schedule")),
            interval_s=schedule_period(entry.get("schedule")),
            options=dict(options) if isinstance(options, Mapping) else {},
            has_top_level_expires="expires" in entry,
        ))
    return tuple(entries)


def _config_origin(app: Any) -> Optional[str]:
    source = getattr(app, "_config_source", None)
    module = None
    if isinstance(source, str):
        import sys

        module_name = source.split(":")[0]
        if module_name == "django.conf" and os.environ.get("DJANGO_SETTINGS_MODULE"):
            module_name = os.environ["DJANGO_SETTINGS_MODULE"]  # the settings file the values come from
        module = sys.modules.get(module_name)
    elif source is not None and hasattr(source, "__file__"):
        module = source
    elif source is not None:
        module = inspect.getmodule(type(source))
    path = getattr(module, "__file__", None)
    return os.path.abspath(path) if path else None


def _app_module_file(app: Any) -> Optional[str]:
    """The file of the user module that holds the app object (not Celery's own modules)."""
    import sys

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("celery", "kombu", "celery_doctor") or module is None:
            continue
        path = getattr(module, "__file__", None)
        if not path:
            continue
        try:
            if any(value is app for value in vars(module).values()):
                return os.path.abspath(path)
        except Exception:  # noqa: BLE001 - exotic module objects
            continue
    return None


# Settings whose value Celery or kombu uses as it is (no conversion): the wrong type silently changes what they
# do, or makes workers (or beat, or producers) fail. Only what is certain is listed.
BOOL_SETTINGS = tuple(n for n in TRACKED_SETTINGS if n in {
    "broker_connection_retry", "broker_connection_retry_on_startup", "broker_channel_error_retry", "result_extended",
    "task_acks_late", "task_reject_on_worker_lost", "task_retry_on_worker_lost", "task_acks_on_failure_or_timeout",
    "task_acks_on_failure", "task_acks_on_timeout", "task_always_eager", "task_eager_propagates",
    "task_publish_retry", "task_create_missing_queues", "task_ignore_result", "task_track_started",
    "worker_cancel_long_running_tasks_on_connection_loss", "worker_deduplicate_successful_tasks",
    "worker_disable_prefetch", "worker_detect_quorum_queues", "enable_utc"})
NUMBER_SETTINGS = ("broker_connection_max_retries", "broker_connection_timeout", "broker_pool_limit",
                   "broker_heartbeat", "result_chord_expires", "task_time_limit", "task_soft_time_limit",
                   "worker_prefetch_multiplier", "worker_concurrency", "worker_eta_task_limit",
                   "worker_soft_shutdown_timeout", "task_default_retry_delay")
MAPPING_SETTINGS = ("broker_transport_options", "task_publish_retry_policy", "beat_schedule")
STRING_SETTINGS = ("broker_transport", "task_serializer", "result_serializer", "task_default_queue",
                   "task_default_exchange", "task_default_exchange_type", "task_default_routing_key",
                   "task_default_queue_type", "worker_pool", "worker_state_db", "timezone")
LIST_OF_NAMES_SETTINGS = ("accept_content", "result_accept_content", "imports", "include")


def _add(problems: list, name: str, why: str) -> None:
    if all(existing != name for existing, _ in problems):
        problems.append((name, why))


def _numeric_text(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def setting_problems(values: Mapping[str, Any], settings: Mapping[str, Setting]) -> list:
    """(setting, why) for explicit settings whose type Celery cannot use as the app meant."""
    problems: list = []
    for name in TRACKED_SETTINGS:
        setting = settings.get(name)
        if setting is None or not setting.explicit:
            continue
        value = values.get(name)
        if value is None:
            continue
        why = _type_problem(name, value)
        if why:
            _add(problems, name, why)
    beat = values.get("beat_schedule")
    if isinstance(beat, Mapping):
        for key, entry in beat.items():
            why = _beat_entry_problem(key, entry)
            if why:
                _add(problems, "beat_schedule", why)
    return problems


def _type_problem(name: str, value: Any) -> str:
    """Why Celery cannot use `value` for the setting `name` as meant ('' when it can). The kinds are disjoint."""
    if name in BOOL_SETTINGS:
        return _bool_problem(value)
    if name in NUMBER_SETTINGS:
        return _number_problem(value)
    if name in MAPPING_SETTINGS:
        return _mapping_problem(name, value)
    if name in STRING_SETTINGS and not isinstance(value, str):
        return f"is of type {type(value).__name__} ({str(value)[:40]!r}), not a string"
    if name in LIST_OF_NAMES_SETTINGS:
        return _names_problem(name, value)
    return ""


def _bool_problem(value: Any) -> str:
    if isinstance(value, (bool, int)):
        return ""
    if isinstance(value, str):
        return (f"is the string {value[:40]!r}, not True/False: Celery tests its truth value, so any "
                "non-empty string (\"False\", \"no\" and \"0\" included) means True")
    return f"is of type {type(value).__name__}, not True/False: Celery uses its truth value"


def _number_problem(value: Any) -> str:
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        return ""
    if isinstance(value, str) and _numeric_text(value):
        return (f"is the string {value!r}, not a number: Celery passes it on unconverted "
                "(comparisons and arithmetic on it fail or go wrong)")
    return (f"is of type {type(value).__name__} ({str(value)[:40]!r}), not a number: workers fail to start or "
            "fail when they use it")


def _mapping_problem(name: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return ""
    if name == "beat_schedule" and isinstance(value, (list, tuple)) and not value:
        return ""  # empty: no entries, beat runs nothing
    return f"is of type {type(value).__name__}, not a dict: " + (
        "kombu cannot connect with it (it reads options with .get)" if name == "broker_transport_options"
        else "beat cannot load the schedule" if name == "beat_schedule"
        else "publishing fails when a retry policy is needed")


def _names_problem(name: str, value: Any) -> str:
    if isinstance(value, str):
        why = ("kombu reads it letter by letter (\"json\" -> 'j', 's', ...): workers accept no content type "
               "and refuse every message" if "accept" in name
               else "Celery reads it as a sequence of module names, one letter each")
        return f"is the string {value!r}, not a list: {why}"
    if not isinstance(value, (list, tuple, set, frozenset)):
        return f"is of type {type(value).__name__}, not a list"
    if any(not isinstance(item, str) for item in value):
        return "holds items that are not strings"
    return ""


def _beat_entry_problem(key: Any, entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return f"entry {str(key)[:60]!r} is of type {type(entry).__name__}, not a dict: beat fails to start"
    if not isinstance(entry.get("task"), str) or not entry.get("task"):
        return f"entry {str(key)[:60]!r} has no task name (task={entry.get('task')!r}): beat fails to start"
    if isinstance(entry.get("schedule"), str) or entry.get("schedule") is None:
        return (f"entry {str(key)[:60]!r} has schedule={entry.get('schedule')!r}: "
                "not a number of seconds, a timedelta or a schedule object")
    return ""


def _queues(value: Any, default_type: str, problems: list) -> tuple[QueueInfo, ...]:
    """task_queues as declared; anything Celery could not declare is a problem, not a crash."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset, Mapping)):
        _add(problems, "task_queues", f"is of type {type(value).__name__} ({str(value)[:40]!r}), not a list of "
                                      "kombu.Queue: workers cannot declare or consume the queues")
        return ()
    items = _queue_items(value, problems) if isinstance(value, Mapping) else value
    out = []
    for item in items:
        if not isinstance(getattr(item, "name", None), str):
            _add(problems, "task_queues", f"holds {str(item)[:40]!r} of type {type(item).__name__}, not a kombu.Queue: "
                                          "workers cannot declare or consume the queues")
            continue
        try:
            out.append(_queue_info(item, default_type))
        except Exception as exc:  # noqa: BLE001 - an odd queue object is a problem, not a crash
            _add(problems, "task_queues", f"queue {item.name!r} cannot be read: {type(exc).__name__}: {exc}")
    return tuple(out)


def _queue_items(value: Mapping, problems: list) -> list:
    """A task_queues dict as Celery reads it (celery/app/amqp.py, Queues.__init__): a value that is a kombu.Queue
    is used as it is; any other value is the options of a queue named by its key (Queues.add_compat:
    `Queue.from_dict(name, **options)`, the routing key defaulting to `binding_key`, else the name)."""
    from kombu import Queue

    items = []
    for name, item in value.items():
        if isinstance(item, Queue) or not isinstance(item, Mapping):
            items.append(item)
            continue
        options = dict(item)
        options.setdefault("routing_key", options.get("binding_key"))
        if options["routing_key"] is None:
            options["routing_key"] = name
        try:
            items.append(Queue.from_dict(str(name), **options))
        except Exception as exc:  # noqa: BLE001 - options Celery could not declare are a problem, not a crash
            _add(problems, "task_queues", f"queue {str(name)[:40]!r} cannot be built from its options: "
                                          f"{type(exc).__name__}: {exc}")
    return items


def collect_config(app: Any, broker: Optional[BrokerTarget] = None) -> AppConfig:
    """`broker`: the run's BrokerTarget (the loader's); read from the app when not given."""
    conf = app.conf
    broker = broker if broker is not None else BrokerTarget.of_app(app)
    settings = {name: read_setting(conf, name) for name in TRACKED_SETTINGS}
    conf_values = {name: s.value for name, s in settings.items()}
    problems = setting_problems(conf_values, settings)
    default_type = conf_values.get("task_default_queue_type")
    default_type = default_type if isinstance(default_type, str) and default_type else "classic"
    queues = _queues(conf_values.get("task_queues"), default_type, problems)
    registered = frozenset(str(n) for n in app.tasks)
    tasks = {name: _task_info(app.tasks[name], conf_values)
             for name in sorted(registered) if not name.startswith(BUILTIN_TASK_PREFIX)}
    try:
        rules, dynamic = _route_rules(conf_values.get("task_routes"))
    except (TypeError, ValueError) as exc:
        rules, dynamic = (), 0
        _add(problems, "task_routes", f"cannot be read as routes ({type(exc).__name__}: {exc}): Celery's router "
                                      "fails on it, so tasks cannot be sent")
    routes = {name: _resolve_route(app, name, app.tasks[name]) for name in sorted(tasks)}
    beat = _beat_entries(conf_values.get("beat_schedule"))
    for entry in beat:
        if entry.task and entry.task not in routes:
            routes[entry.task] = _resolve_route(app, entry.task, app.tasks.get(entry.task))
    backend = conf_values.get("result_backend")
    origin = _config_origin(app)
    return AppConfig(
        main=getattr(app, "main", None),
        celery_version=_version("celery"),
        kombu_version=_version("kombu"),
        broker_url=broker.masked,
        broker_urls=tuple(url.masked for url in broker.urls),
        transport=broker.transport,
        backend=mask_url(backend) if isinstance(backend, str) else None,
        settings=settings,
        tasks=tasks,
        registered=registered,
        queues=queues,
        routes=routes,
        route_rules=rules,
        dynamic_routers=dynamic,
        beat=beat,
        config_origin=origin,
        app_module_file=_app_module_file(app),
        problems=tuple(problems),
        setting_lines=_setting_lines(origin, settings),
    )
