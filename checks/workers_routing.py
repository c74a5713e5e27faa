"""Live worker checks of routing: queues the app sends to that no running worker consumes, and tasks
the consuming workers do not register (CD401, CD402)."""
from __future__ import annotations

from typing import Any, Optional

from celery_doctor.facts.routing import beat_queue, task_queue
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check

from ._util import plural, preview, setting_location
from .workers_common import INSPECT, NEEDS, QueueDepths, queue_depths, silent_text, waiting_text


@check(
    id="CD401",
    slug="queue-without-live-worker",
    title="Tasks are sent to a queue that no running worker consumes: they wait there forever",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Some tasks never start (PENDING forever) while workers are up and idle; one queue keeps growing.",
        why="A worker consumes only the queues given with `-Q` (or `task_queues`, or the default queue). The app's "
            "router, `task_default_queue` or a beat entry's `options.queue` send tasks to a queue; with "
            "`task_create_missing_queues=True` (the default) the producer creates it, publishing succeeds, and the "
            "messages wait for a consumer that never comes. Nothing errors: the task just never runs.",
        confirm=f"`{INSPECT} active_queues` lists what each worker consumes; `redis-cli -n <db> LLEN <queue>` or "
                "`rabbitmqctl list_queues name messages consumers` shows the backlog; `celery-doctor scan` names "
                "the tasks routed there.",
        fix="Start a worker (or add the queue to an existing worker's `-Q` list) that consumes the queue, or change "
            "`task_routes` / the beat entry so the tasks go to a consumed queue. Generate `-Q` lists and "
            "`task_routes` from one place so they cannot drift.",
        risk="A new consumer runs the whole backlog at once: old tasks, ETAs already passed, and duplicates queued "
             "while nobody consumed. Check the backlog before attaching a worker; purging loses those tasks.",
        references=("https://docs.celeryq.dev/en/stable/userguide/routing.html",
                    "https://docs.celeryq.dev/en/stable/userguide/workers.html#queues"),
    ),
)
def queue_without_live_worker(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    if state.none_exists:
        return  # CD409 says it once, for every queue
    views = queue_depths(snapshot)
    silent = silent_text(state)
    for queue, tasks in sorted(config.routed_queues().items()):
        if state.consumers_of(queue):
            continue
        view = views.get(queue)
        if view is not None and view.consumers:
            continue  # the broker sees a consumer (a silent worker, or one the broadcast did not reach)
        beat = _beat_entries(config, queue)
        depth, depth_text = waiting_text(views, queue)
        is_default = queue == config.default_queue
        if not tasks and not beat and not depth and not is_default:
            continue
        evidence = _unconsumed_evidence(state, queue, tasks, beat, depth_text, is_default, silent)
        impact = None
        if is_default and not tasks and not beat and not depth:
            impact = Impact.MEDIUM
            evidence.append("no task of this app is routed there now: only unrouted and by-name sends are at risk")
        if silent:
            impact = Impact.MEDIUM  # a silent worker may be its consumer
        yield queue_without_live_worker.finding(
            subject=f"queue:{queue}",
            evidence=evidence,
            fix=f"Start a worker with `-Q {queue}` (or add {queue!r} to an existing worker's -Q list), or route "
                f"{'these tasks' if tasks else 'the senders'} to a queue that is consumed.",
            confidence=Confidence.INFERRED if silent else Confidence.OBSERVED,
            messages_at_risk=depth or None,
            impact=impact,
            location=setting_location(config, "task_routes", "task_queues", "task_default_queue"),
        )


def _beat_entries(config: Any, queue: str) -> list[str]:
    """Beat entries that publish to `queue` (by their options, or by their task's route: facts.routing.beat_queue)."""
    return [e.name for e in config.beat if beat_queue(config, e) == queue]


def _unconsumed_evidence(state: Any, queue: str, tasks: list[str], beat: list[str], depth_text: str,
                         is_default: bool, silent: Optional[str]) -> list[str]:
    """What sends to a queue nobody consumes, what waits there, and what the workers consume instead."""
    evidence = []
    if is_default:
        evidence.append(f"{queue!r} is task_default_queue: tasks without a route (and send_task by name) go there")
    if tasks:
        evidence.append(f"routed there by the app: {preview(tasks)}")
    if beat:
        evidence.append(f"beat entries publishing there: {preview(beat)}")
    evidence.append(depth_text)
    answered = state.answered
    consumed = sorted({q for w in answered for q in w.queue_names})
    evidence.append(f"{plural(len(answered), 'worker')} answered, consuming "
                    f"{preview(consumed) if consumed else 'no queue'}; none consumes {queue!r}")
    if silent:
        evidence.append(silent)
    return evidence


@check(
    id="CD402",
    slug="task-not-registered-by-consumers",
    title="Workers consuming the queue do not register the task: the message is discarded as unregistered",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log shows `Received unregistered task of type 'x'. The message has been ignored and "
                "discarded.`; the task is marked FAILURE (NotRegistered) or stays PENDING; it happens only on some "
                "workers during a rolling deploy.",
        why="A worker executes only tasks it imported. A message for any other name is rejected without requeue: "
            "the task is gone. This happens when the worker runs older code (rolling deploy, stale image), misses "
            "an `imports`/`include` module, or when another app's tasks are routed to a queue it consumes. When "
            "only some consumers lack the task, the loss is intermittent.",
        confirm=f"`{INSPECT} registered` on each worker; `{INSPECT} active_queues`; grep the worker logs for "
                "`Received unregistered task`.",
        fix="Deploy the code that defines the task to every worker consuming that queue (check `imports`/`include` "
            "and autodiscovery), or route the task to workers that have it. Roll out workers before producers "
            "when adding tasks.",
        risk="Restarting workers to load new code requeues or waits for their running tasks; with early acks a "
             "killed worker loses the task it was running.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#names",
                    "https://docs.celeryq.dev/en/stable/faq.html#the-worker-reports-received-unregistered-task"),
    ),
)
def task_not_registered(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    refs, queued = _destinations(config, queue_depths(snapshot))
    for (task, queue), why in sorted(refs.items()):
        consumers = [w for w in state.consumers_of(queue) if w.registered is not None]
        if not consumers:
            continue
        missing = [w for w in consumers if task not in w.registered]
        if not missing:
            continue
        having = [w for w in consumers if task in w.registered]
        evidence = [f"{task} goes to {queue!r}: {'; '.join(why)}"]
        if having:
            evidence.append(f"{len(missing)} of {len(consumers)} workers consuming {queue!r} do not register it "
                            f"({preview(w.name for w in missing)}); {preview(w.name for w in having)} do: messages "
                            "delivered to the former are discarded")
        else:
            evidence.append(f"no worker consuming {queue!r} registers it ({preview(w.name for w in missing)}, "
                            f"registering {preview(sorted(missing[0].registered)) or 'no task'}): every delivery "
                            "is discarded")
        silent = silent_text(state)
        if silent:
            evidence.append(silent)
        at_risk = queued.get((task, queue))
        yield task_not_registered.finding(
            subject=f"task:{task}",
            evidence=evidence,
            fix=f"Deploy the module defining {task} to {preview(w.name for w in missing)} (check imports/include), "
                f"or route {task} away from {queue!r}.",
            confidence=Confidence.OBSERVED,
            messages_at_risk=at_risk,
            location=config.tasks[task].location if task in config.tasks else None,
        )


def _destinations(config: Any, views: QueueDepths) -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], int]]:
    """((task, queue) -> why the task goes there, (task, queue) -> messages of it waiting there): from the app's
    routes, its beat entries and the tasks found in the queues."""
    refs: dict[tuple[str, str], list[str]] = {}  # (task, queue) -> why it goes there

    def add(task: str, queue: Optional[str], why: str) -> None:
        if task and queue and not task.startswith("celery."):
            refs.setdefault((task, queue), []).append(why)

    for task in config.routes:
        add(task, task_queue(config, task), "routed there by the app" if task in config.tasks else "referenced by the app")
    for entry in config.beat:
        add(entry.task, beat_queue(config, entry), f"beat entry {entry.name!r}")
    queued: dict[tuple[str, str], int] = {}
    for queue, view in views.items():
        for task, count in (view.task_counts or {}).items():
            queued[(task, queue)] = count
            add(task, queue, f"{plural(count, 'message')} of it waiting (sample of {view.sampled})")
    return refs, queued
