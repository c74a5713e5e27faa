"""Static routing checks: where the app's own router sends tasks, compared with what it declares."""
from __future__ import annotations

from celery_doctor.facts.context import test_settings_reason
from celery_doctor.facts.routing import beat_queue, queue_declared, routed_queues
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check

from ._util import plural, preview, setting_line, setting_location
from .config_context import impact_line


@check(
    id="CD120",
    slug="route-to-undeclared-queue",
    title="Tasks are routed to a queue the app does not declare: workers started from this config never consume it",
    category=Category.ROUTING,
    needs=("config",),
    runbook=Runbook(
        symptom="Tasks of one kind never run; the broker shows a queue (Redis list / RabbitMQ queue) that only grows, "
                "or `.delay()` raises `QueueNotFound`.",
        why="A worker started without `-Q` consumes exactly the queues in `task_queues` (or only the default queue "
            "when `task_queues` is not set). A route to any other queue is auto-created by the producer while "
            "`task_create_missing_queues=True`, so publishing succeeds and the messages wait forever for a worker. "
            "With `task_create_missing_queues=False` the publish raises instead, and the task is lost if the caller "
            "swallows the error. Source: celery/app/amqp.py, Queues.__missing__ (creates a missing queue when "
            "create_missing) and Queues.consume_from (`_default_consume_from`: the declared queues a worker without "
            "-Q consumes).",
        confirm="`celery -A proj inspect active_queues` (which queues workers consume); `redis-cli -n <db> LLEN <queue>` "
                "or `rabbitmqctl list_queues name messages consumers`.",
        fix="Declare the queue in `task_queues` (or start a worker with `-Q <queue>`), or route the task to a queue "
            "that is consumed; keep `task_routes` and worker `-Q` lists generated from one place.",
        risk="A new consumer of the queue immediately runs the backlog that piled up there: check it first (old tasks, "
             "expired ETAs, duplicates).",
        references=("https://docs.celeryq.dev/en/stable/userguide/routing.html",),
    ),
)
def route_to_undeclared_queue(snapshot: Snapshot):
    config = snapshot.config
    errors = {name: route.error for name, route in config.routes.items() if route.error}
    for name, error in sorted(errors.items()):
        yield route_to_undeclared_queue.finding(
            subject=f"task:{name}",
            evidence=[f"the app's router fails for {name}: {error}", setting_line(config, "task_create_missing_queues"),
                      "every publish of this task raises: it is lost wherever the caller swallows the error"],
            location=setting_location(config, "task_routes"),
        )
    declared = set(config.queue_names())
    if not declared:
        return  # without task_queues, workers consume the default queue plus whatever -Q says
    for queue, tasks in sorted(routed_queues(config).items()):
        if queue_declared(config, queue):
            continue
        beat = [e.name for e in config.beat if beat_queue(config, e) == queue]
        is_default = queue == config.default_queue
        what = []
        if is_default:
            what.append(f"{queue!r} is task_default_queue: every task without a route goes there")
        if tasks:
            what.append(f"routed there: {preview(tasks)}")
        if beat:
            what.append(f"beat entries publishing there: {preview(beat)}")
        if not what:
            continue
        yield route_to_undeclared_queue.finding(
            subject=f"queue:{queue}",
            evidence=[f"task_queues declares {preview(sorted(declared))}, not {queue!r}", *what,
                      f"{setting_line(config, 'task_create_missing_queues')}: the producer creates {queue!r}, "
                      "but a worker started without -Q does not consume it"],
            location=setting_location(config, "task_queues", "task_routes"),
        )


@check(
    id="CD121",
    slug="route-matches-no-task",
    title="A task_routes entry matches no registered task: the task it meant goes to the default queue",
    category=Category.ROUTING,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="A task that should run on a dedicated queue (and dedicated workers) runs on the default queue, or "
                "never runs because nothing consumes the default queue.",
        why="`task_routes` keys are matched against the full task name (`module.function` unless `name=` is given). "
            "A key with a typo or an outdated module path matches nothing, and Celery silently falls back to "
            "`task_default_queue`.",
        confirm="`celery -A proj inspect registered` lists the real task names; compare with `task_routes` keys.",
        fix="Use the registered task name as the key (or a glob such as `proj.reports.*`), and keep a test that "
            "every route key matches a registered task.",
        risk="Fixing the route moves the task to its intended queue: make sure workers consume it first (CD120).",
    ),
)
def route_matches_no_task(snapshot: Snapshot):
    config = snapshot.config
    if not config.tasks:
        return
    names = set(config.registered)
    for rule in config.route_rules:
        if any(rule.matches(name) for name in names):
            continue
        kind = "regex" if rule.is_regex else ("glob" if rule.is_glob else "name")
        near = [n for n in config.tasks if n.rsplit(".", 1)[-1] == rule.pattern.rsplit(".", 1)[-1]]
        evidence = [f"task_routes {kind} {rule.pattern!r} -> {dict(rule.options)!r} matches none of the "
                    f"{plural(len(config.tasks), 'registered task')}"]
        if near:
            evidence.append(f"did you mean {preview(near)}?")
        evidence.append(f"tasks it was meant for go to the default queue {config.default_queue!r}")
        yield route_matches_no_task.finding(subject=f"route:{rule.pattern}", evidence=evidence,
                                            location=setting_location(config, "task_routes"))


@check(
    id="CD122",
    slug="beat-unregistered-task",
    title="A beat schedule entry names a task the app does not register: workers discard every run",
    category=Category.ROUTING,
    needs=("config",),
    runbook=Runbook(
        symptom="A periodic task never runs; worker logs show `Received unregistered task of type '...'. The message "
                "has been ignored and discarded.`",
        why="Beat publishes the task name as written in `beat_schedule`. A worker that does not have a task by that "
            "name rejects the message without requeue and marks it failed (NotRegistered): every run is lost. Source: "
            "celery/worker/consumer/consumer.py, Consumer.on_unknown_task (`message.reject_log_error(...)`, then "
            "`backend.mark_as_failure(...)`). When the app as loaded registers no task of its own, its task "
            "modules were not imported where celery-doctor loaded it, and every name looks unregistered: the "
            "findings are then low and inferred.",
        confirm="`celery -A proj inspect registered | grep <name>`; grep worker logs for `unregistered task`.",
        fix="Use the exact registered name (check `app.tasks.keys()`), or make sure the module defining the task is "
            "imported by workers (`imports`/`include`/`autodiscover_tasks`).",
        risk="None; once the name matches, the next scheduled run executes normally.",
    ),
)
def beat_unregistered(snapshot: Snapshot):
    config = snapshot.config
    # An app that registers no task of its own was loaded without its task modules (Django not set up, tasks
    # imported by the worker's own entry point): every name then looks unregistered, which says nothing.
    nothing_loaded = not config.tasks
    for entry in config.beat:
        if entry.task and entry.task not in config.registered:
            evidence = [f"beat_schedule[{entry.name!r}] task={entry.task!r} (schedule {entry.schedule})",
                        f"{entry.task!r} is not among the {plural(len(config.registered), 'task')} registered by the "
                        "app as loaded (imports, include, autodiscover)",
                        "workers reject it as unregistered: every scheduled run is lost"]
            if nothing_loaded:
                evidence.append(impact_line(Impact.LOW, "the app as loaded registers no task of its own, so its task "
                                                        "modules were not imported here and no name can be checked; "
                                                        "lint the module the workers load"))
            yield beat_unregistered.finding(
                subject=f"beat:{entry.name}", evidence=evidence,
                impact=Impact.LOW if nothing_loaded else None,
                confidence=Confidence.INFERRED if nothing_loaded else Confidence.CONFIGURED,
                location=setting_location(config, "beat_schedule"),
            )


@check(
    id="CD123",
    slug="task-always-eager",
    title="task_always_eager is on: tasks run inline in the caller and never reach the broker",
    category=Category.ROUTING,
    needs=("config",),
    runbook=Runbook(
        symptom="No task ever shows up on the broker or in worker logs; work happens (or fails) inside web requests.",
        why="`task_always_eager=True` makes `.delay()`/`.apply_async()` execute the task locally and synchronously. "
            "It is meant for tests. In production nothing is queued, retries and time limits do not apply, and "
            "unless `task_eager_propagates=True` exceptions are stored in an EagerResult that nobody reads. Source: "
            "celery/app/task.py, Task.apply_async (`if app.conf.task_always_eager: return self.apply(...)`); "
            "`app.send_task` ignores the setting and still publishes (Celery.send_task).",
        confirm="`python -c 'from proj.celery import app; print(app.conf.task_always_eager)'` in the production environment.",
        fix="Set `task_always_eager = False` outside tests (set it only in the test settings; the check is silent "
            "for a settings module named as a test module: test.py, testing.py, test_settings.py, under tests/).",
        risk="Tasks start going through the broker: workers must be running and consuming the right queues.",
    ),
)
def always_eager(snapshot: Snapshot):
    config = snapshot.config
    if test_settings_reason(config):
        return  # eager mode is what test settings are for
    if config.value("task_always_eager"):
        yield always_eager.finding(
            subject="setting:task_always_eager",
            evidence=[setting_line(config, "task_always_eager"), setting_line(config, "task_eager_propagates"),
                      "tasks run inline in the caller: nothing is published, a failure is kept in an EagerResult"],
            location=setting_location(config, "task_always_eager"),
            confidence=Confidence.CONFIGURED,
        )


CHECKS = [route_to_undeclared_queue, route_matches_no_task, beat_unregistered, always_eager]
