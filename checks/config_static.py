"""Configuration checks a static linter makes: queues named where tasks are sent, beat periods against time
limits, results that never expire."""
from __future__ import annotations

import ast
from typing import Any, Optional

from celery_doctor.facts.limits import task_time_limits
from celery_doctor.facts.routing import queue_declared, routed_queues
from celery_doctor.model import Category, Confidence, Impact, Location, Runbook, Snapshot, check
from celery_doctor.pyast import MISSING, keyword, last_name, nodes_of, project, segment
from celery_doctor.settings import as_seconds, human_seconds

from ._util import plural, preview, setting_line, setting_location
from .config_context import gated, impact_line

# Calls that take the queue a message goes to: apply_async/send_task/signature options, Signature.set.
QUEUE_CALLS = {"apply_async", "send_task", "set", "signature", "s", "si", "apply_async_on_commit", "delay_on_commit"}


def _queue_name(proj: Any, module: Any, node: Optional[ast.AST]) -> Optional[str]:
    """A queue named by a literal (or a module constant), or by kombu's Queue("name", ...)."""
    if node is None:
        return None
    if isinstance(node, ast.Call) and last_name(node) == "Queue" and node.args:
        node = node.args[0]
    value = proj.constant(module, node)
    return value if value is not MISSING and isinstance(value, str) and value else None


def _queue_of(proj: Any, module: Any, call: ast.Call) -> Optional[str]:
    queue = _queue_name(proj, module, keyword(call, "queue"))
    if queue is None:
        options = keyword(call, "options")
        if isinstance(options, ast.Dict):
            for key, value in zip(options.keys, options.values):
                if isinstance(key, ast.Constant) and key.value == "queue":
                    queue = _queue_name(proj, module, value)
    return queue


def published_queues(snapshot: Snapshot) -> dict[str, list[tuple[Location, str]]]:
    """Queue -> where the source sends a task there explicitly (apply_async(queue=...), .set(queue=...),
    send_task(..., queue=...), signature(..., options={'queue': ...}))."""
    proj = project(snapshot.source)
    found: dict[str, list[tuple[Location, str]]] = {}
    if proj is None:
        return found
    for module in proj.modules_mentioning("queue"):
        for node in nodes_of(module.tree, ast.Call):
            if last_name(node) in QUEUE_CALLS:
                queue = _queue_of(proj, module, node)
                if queue:
                    found.setdefault(queue, []).append((Location(module.path, node.lineno),
                                                        segment(module.file, node, 80)))
    return found


@check(
    id="CD170",
    slug="publish-to-undeclared-queue",
    title="Code sends tasks to a queue that task_queues does not declare: workers started from this config never "
          "consume it",
    category=Category.ROUTING,
    needs=("config", "source"),
    runbook=Runbook(
        symptom="Tasks sent with `apply_async(queue=...)`, `.set(queue=...)` or `send_task(..., queue=...)` never "
                "run; the queue (a Redis list, a RabbitMQ queue) only grows, or the call raises `QueueNotFound`.",
        why="A queue named at the call wins over `task_routes` (celery/app/routes.py, Router.route merges the call's "
            "options last) and is looked up in the app's queues: with `task_create_missing_queues=True` (the "
            "default) a name `task_queues` does not declare is created on the fly (celery/app/amqp.py, "
            "Queues.__missing__), so the publish succeeds. A worker started without -Q consumes only the queues "
            "`task_queues` declares (Queues.consume_from returns `_default_consume_from`, the declared ones), so the "
            "messages wait for a worker that never comes. With `task_create_missing_queues=False` the publish raises "
            "QueueNotFound, and the task is lost where the caller swallows it. Queues named in decorators "
            "(`@app.task(queue=...)`) and routes are reported by CD120.",
        confirm="`celery -A proj inspect active_queues` (what workers consume); the queue's depth: "
                "`redis-cli -n <db> LLEN <queue>` or `rabbitmqctl list_queues name messages consumers`.",
        fix="Declare the queue in `task_queues` (or start workers with `-Q` that includes it), or send to a queue "
            "that is consumed; prefer `task_routes` over queue names scattered in calls.",
        risk="A worker that starts consuming the queue runs the backlog that piled up there at once.",
        references=("https://docs.celeryq.dev/en/stable/userguide/routing.html",),
    ),
)
def publish_to_undeclared_queue(snapshot: Snapshot):
    config = snapshot.config
    if not config.queues:
        return  # without task_queues a worker's queues are the default queue and its -Q: not knowable here
    reported_by_routes = set(routed_queues(config))
    for queue, places in sorted(published_queues(snapshot).items()):
        if queue_declared(config, queue) or queue in reported_by_routes:
            continue
        creates = bool(config.value("task_create_missing_queues"))
        outcome = (f"{setting_line(config, 'task_create_missing_queues')}: the producer creates {queue!r} and "
                   "publishes there, but a worker started without -Q does not consume it" if creates else
                   f"{setting_line(config, 'task_create_missing_queues')}: each of these publishes raises "
                   "QueueNotFound: the task is lost where the caller swallows the error")
        yield publish_to_undeclared_queue.finding(
            subject=f"queue:{queue}",
            evidence=[f"task_queues declares {preview(config.queue_names())}, not {queue!r}",
                      f"sent there in {plural(len(places), 'place')}: "
                      + "; ".join(f"{where}: {code}" for where, code in places[:3]), outcome],
            location=places[0][0],
        )


@check(
    id="CD171",
    slug="beat-period-shorter-than-time-limit",
    title="A beat entry runs more often than its task's time limit: runs may overlap",
    category=Category.TASK_CODE,
    needs=("config",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="The same periodic task runs twice at the same time (duplicated work, lock contention), or its runs "
                "queue up behind each other and the queue grows.",
        why="Beat publishes a run every period whatever became of the previous one (celery/beat.py, "
            "Scheduler.apply_async). A task allowed to run for longer than the period (its time_limit, else "
            "task_time_limit; the soft limit when there is no hard one) can still be running when the next run "
            "starts on another pool process: two runs overlap. A task that takes a lock to prevent that drops the "
            "second run instead. This is about limits, not measured durations: it matters when runs really last that "
            "long.",
        confirm="Compare the task's real durations (Flower, `task-succeeded` events' runtime, logs) with the period.",
        fix="Make the period longer than the longest run, or lower the task's time limit below the period, or make "
            "the task safe to overlap (an expiring lock, `expires` on the entry so late runs are discarded).",
        risk="A longer period runs the job less often; a lower time limit kills runs that legitimately take longer.",
    ),
)
def beat_period_shorter_than_time_limit(snapshot: Snapshot):
    config = snapshot.config
    for entry in config.beat:
        task = config.tasks.get(entry.task)
        if task is None or not entry.interval_s:
            continue
        limit = task_time_limits(config, task).longest
        if not limit or limit <= entry.interval_s:
            continue
        yield beat_period_shorter_than_time_limit.finding(
            subject=f"beat:{entry.name}",
            evidence=[f"beat entry {entry.name!r} sends {entry.task} every {human_seconds(entry.interval_s)}",
                      f"{entry.task} may run for up to {human_seconds(limit)} (its time limit)",
                      "a run that lasts longer than the period overlaps the next one (or a lock drops the next one)",
                      impact_line(Impact.LOW, "duplicated or skipped periodic work; no message is lost by it")],
            confidence=Confidence.INFERRED,
            location=setting_location(config, "beat_schedule") or task.location,
        )


def _results_stored(config: Any) -> bool:
    """Whether any task stores a result: not when task_ignore_result is set and no task overrides it."""
    if not config.value("task_ignore_result"):
        return True
    return any(task.ignore_result is False for task in config.tasks.values())


@check(
    id="CD172",
    slug="results-never-expire",
    title="result_expires is None or 0: task results are kept forever",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="The result backend grows without end: Redis memory (celery-task-meta-* keys without TTL), or the "
                "database's celery_taskmeta table.",
        why="Backends take their expiry from result_expires (celery/backends/base.py, prepare_expires). The Redis "
            "backend writes a result with SETEX only when that expiry is set, else with a plain SET, no TTL "
            "(celery/backends/redis.py, RedisBackend._set). Database-like backends are cleaned by the "
            "celery.backend_cleanup entry, which beat installs only when result_expires is set "
            "(celery/beat.py, Scheduler.install_default_entries). The default is one day "
            "(celery/app/defaults.py). No task is lost by it; but a Redis that fills up refuses writes or evicts "
            "keys under its maxmemory policy, and when it is also the broker, queued messages go with them.",
        confirm="`redis-cli -n <db> --scan --pattern 'celery-task-meta-*' | head` and `TTL <key>` (-1: no expiry); "
                "`SELECT count(*) FROM celery_taskmeta`.",
        fix="Set `result_expires` to how long callers need results (the default one day, or less), or "
            "`task_ignore_result = True` for tasks whose result nobody reads.",
        risk="Results older than the expiry disappear: a caller that reads them later gets PENDING.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-expires",),
    ),
)
def results_never_expire(snapshot: Snapshot):
    config = snapshot.config
    setting = config.setting("result_expires")
    if not setting.explicit or not config.backend or not _results_stored(config):
        return
    if config.backend.split(":", 1)[0].lower() == "rpc":
        return  # rpc results are messages to the caller, not stored records
    if setting.value is not None and as_seconds(setting.value) != 0:
        return
    yield results_never_expire.finding(
        subject="setting:result_expires",
        evidence=[setting_line(config, "result_expires"), f"result backend {config.backend}",
                  "every stored result stays until deleted: Redis keys without TTL, database rows never cleaned",
                  impact_line(Impact.LOW, "the backend grows without end; no task is lost by it")],
        location=setting_location(config, "result_expires"),
    )


CHECKS = [gated(publish_to_undeclared_queue), gated(beat_period_shorter_than_time_limit), results_never_expire]
