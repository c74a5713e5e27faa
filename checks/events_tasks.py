"""Event checks about what became of tasks: CD701 sent and never received, CD703 ran twice (a redelivery),
CD704 discarded (revoked, expired, rejected), CD705 failed with no retry left, CD706 past its time limit."""
from __future__ import annotations

from typing import Optional

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.events import ALIVE, CONNECTED, EventsState, QueueProbe, TaskRecord, clock

from ._util import plural, preview
from .events_common import IDS_SHOWN, NEEDS, WATCH, by_name, dropped_line, events_of, ids_text, names_text

# -- CD701 ---------------------------------------------------------------------------------------------

@check(
    id="CD701",
    slug="sent-never-received",
    title="Tasks were sent but no worker received them",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks stay PENDING forever; the producer logged no error; no worker log mentions their ids.",
        why="A task-sent event says where the producer routed the task (its queue and routing key). If no "
            "task-received follows, no worker took it: the queue has no consumer (a route to a queue no worker "
            "consumes with -Q, a typo, a worker pool that was scaled to zero), or its consumers are stuck. The "
            "message waits in the queue until it expires or memory eviction removes it.",
        confirm=f"`{WATCH}`: the finding names the queue and the task ids; `celery -A proj inspect active_queues` "
                "lists what each worker consumes; `redis-cli -n <db> LLEN <queue>` or `rabbitmqctl list_queues name "
                "messages consumers` shows the waiting messages.",
        fix="Start a worker that consumes the queue (`celery -A proj worker -Q <queue>`), or fix the route "
            "(`task_routes`, `queue=`) so the task goes to a queue that workers consume.",
        risk="A worker started on a long-orphaned queue runs the whole backlog at once, including tasks whose "
             "purpose has passed; purge or expire them first if they must not run late.",
        references=("https://docs.celeryq.dev/en/stable/userguide/routing.html",
                    "https://docs.celeryq.dev/en/stable/userguide/monitoring.html#event-reference"),
    ),
)
def sent_never_received(snapshot: Snapshot):
    state = events_of(snapshot)
    probes = {p.name: p for p in state.queues}
    for queue, tasks in sorted(_waiting(state).items()):
        yield _never_received_finding(state, queue, tasks, probes.get(queue))


def _waiting(state: EventsState) -> dict[str, list[TaskRecord]]:
    """By queue, the tasks sent longer than the bound ago that no worker said it received."""
    waiting: dict[str, list[TaskRecord]] = {}
    for task in state.tasks:
        sent = task.sent
        if sent is None or task.last_worker_step is not None or state.ended_at - sent.t <= state.bound_s:
            continue
        waiting.setdefault(task.queue or "", []).append(task)
    return waiting


def _never_received_finding(state: EventsState, queue: str, tasks: list[TaskRecord], probe: Optional[QueueProbe]):
    evidence = _sent_lines(state, queue, tasks)
    depth = probe.depth if probe else None
    consumers = probe.consumers if probe else None
    depth_line = _depth_line(queue, probe)
    if depth_line:
        evidence.append(depth_line)
    lines, live = _consumer_lines(state, queue)
    evidence += lines
    no_task_events = state.task_events == 0
    if no_task_events:
        evidence.append("no worker sent a task event during the watch, so a received task cannot be told from "
                        "a lost one (see CD708)")
    dropped = dropped_line(state)
    if dropped:
        evidence.append(dropped)
    nobody = (consumers == 0) if consumers is not None else not live
    impact, confidence, why = _never_received_grade(no_task_events, depth, nobody)
    if why:
        evidence.append(why)
    return sent_never_received.finding(subject=f"queue:{queue}" if queue else "queue:(unknown)", evidence=evidence,
                                       impact=impact, confidence=confidence, messages_at_risk=len(tasks))


def _sent_lines(state: EventsState, queue: str, tasks: list[TaskRecord]) -> list[str]:
    """Where the tasks were routed, which they are, since when."""
    route = f"queue {queue!r}" if queue else "an unnamed queue (the event carried no queue)"
    keys = sorted({t.routing_key for t in tasks if t.routing_key and t.routing_key != queue})
    return [f"{plural(len(tasks), 'task')} sent to {route}"
            + (f" (routing key {', '.join(keys)})" if keys else "")
            + f" and not received by any worker within {state.bound_s:g} s: {ids_text(tasks)}",
            f"tasks: {names_text(tasks)}; the oldest was sent at {clock(min(t.sent.t for t in tasks))}"]


def _depth_line(queue: str, probe: Optional[QueueProbe]) -> Optional[str]:
    """What the queue held at the end of the watch (or why it could not be read)."""
    if probe and probe.error:
        return f"the queue could not be read at the end: {probe.error}"
    if not probe or probe.depth is None:
        return None
    text = f"at the end of the watch {plural(probe.depth, 'message')} waited in {queue!r} ({probe.how})"
    if probe.consumers is not None:
        text += f", with {plural(probe.consumers, 'consumer')}"
    return text


def _consumer_lines(state: EventsState, queue: str) -> tuple[list[str], list[str]]:
    """Which workers took tasks from the queue during the watch and how they are now; and those alive."""
    seen = state.consumers.get(queue, ())
    live = [w for w in seen if _verdict_of(state, w) == ALIVE]
    busy = [w for w in seen if _verdict_of(state, w) == CONNECTED]
    if not seen:
        return ([f"no worker was seen taking a task from {queue!r} during the watch"] if queue else []), live
    lines = [f"workers seen taking tasks from {queue!r} during the watch: {preview(seen)}"
             + (f"; alive now: {preview(live)}" if live else "; none of them is alive now")]
    if busy:
        lines.append(f"{preview(busy)} consumed it and is silent but connected: a solo worker busy in a "
                     "long task sends its task events only when that task ends")
    return lines, live


def _verdict_of(state: EventsState, hostname: str) -> Optional[str]:
    worker = state.worker(hostname)
    return worker.liveness.verdict if worker else None


def _never_received_grade(no_task_events: bool, depth: Optional[int], nobody: bool):
    """(impact, confidence, what an empty queue means or None) of tasks no worker received."""
    if no_task_events and not (depth and nobody):
        return Impact.LOW, Confidence.INFERRED, None
    if depth and nobody:
        return Impact.HIGH, Confidence.OBSERVED, None
    if depth == 0:
        return Impact.MEDIUM, Confidence.INFERRED, (
            "the queue is empty now: a worker took them without reporting it (task events off on that worker, or a "
            "solo worker busy in a long task), or they expired")
    return Impact.HIGH, Confidence.INFERRED, None


# -- CD703 ---------------------------------------------------------------------------------------------

@check(
    id="CD703",
    slug="task-ran-twice",
    title="The same task id ran twice (a redelivery)",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Side effects happen twice (two emails, two charges); a worker log shows the same task id "
                "received twice, sometimes on two workers at once.",
        why="The broker delivered the same message again while (or after) a worker ran it. On Redis, a message "
            "unacknowledged for longer than `visibility_timeout` (acks_late tasks that run longer, ETA/countdown "
            "tasks waiting in a worker) is restored to its queue and delivered again. On RabbitMQ, an unacked "
            "delivery returns when the worker's connection or channel closes: connection loss, or "
            "`consumer_timeout` (30 min) exceeded. Retries are not counted here: Task.retry sends a new message on "
            "purpose and emits task-retried.",
        confirm=f"`{WATCH}` names each id and the workers and times of both runs; on Redis compare "
                "`broker_transport_options['visibility_timeout']` with the task's runtime or ETA; on RabbitMQ look "
                "for `PreconditionFailed ... delivery acknowledgement ... timed out` or connection errors in the "
                "worker log.",
        fix="Redis: raise `visibility_timeout` above the longest runtime and ETA (or avoid long ETAs); RabbitMQ: "
            "keep runs below `consumer_timeout` or raise it for that queue; make the task idempotent; consider "
            "`worker_deduplicate_successful_tasks` (acks_late, persistent result backend).",
        risk="A longer visibility timeout delays the recovery of tasks held by a worker that really died.",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout",
                    "https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout"),
    ),
)
def task_ran_twice(snapshot: Snapshot):
    state = events_of(snapshot)
    twice = [t for t in state.tasks if t.ran_twice]
    config = snapshot.config
    for name, tasks in sorted(by_name(twice).items()):
        evidence = []
        for task in tasks[:IDS_SHOWN]:
            pairs = task.redeliveries()
            first, again = pairs[0]
            where = "on the same worker" if first.node == again.node else f"on {again.node}"
            text = (f"{task.id}: {first.state} on {first.node} at {clock(first.t)}, then {again.state} again "
                    f"{where} at {clock(again.t)} ({again.t - first.t:.0f} s later)")
            if len(pairs) > 1:
                text += f"; {len(pairs) + 1} deliveries in all"
            evidence.append(text)
        if len(tasks) > IDS_SHOWN:
            evidence.append(f"and {len(tasks) - IDS_SHOWN} more: {ids_text(tasks[IDS_SHOWN:], 20)}")
        if state.transport == "redis":
            why = "Redis restores a message unacknowledged for longer than visibility_timeout"
            if config is not None:
                from celery_doctor.facts.timeouts import describe_visibility_timeout

                why += f" (the app's {describe_visibility_timeout(config)})"
            evidence.append(why + ": an acks_late task running longer, or an ETA task waiting in a worker, is "
                                  "delivered again")
        elif state.transport == "rabbitmq":
            evidence.append("RabbitMQ returns an unacknowledged delivery when the worker's connection or channel "
                            "closes (connection loss, consumer_timeout)")
        yield task_ran_twice.finding(subject=f"task:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                     messages_at_risk=len(tasks))


# -- CD704 ---------------------------------------------------------------------------------------------

@check(
    id="CD704",
    slug="task-discarded",
    title="Tasks were discarded: revoked, expired or rejected without requeue",
    category=Category.TASK_CODE,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Tasks never run and their result is REVOKED (or stays PENDING); the worker log says `Discarding "
                "revoked task` or `Task ... expired`.",
        why="A worker drops a task whose `expires` time has passed when it arrives (a backlog, a worker that was "
            "down, a producer clock ahead of the worker's, a naive datetime), a task id someone revoked, or a task "
            "it rejected without requeue (`Reject(requeue=False)`, a message it could not decode, an unregistered "
            "task). Each is a task-revoked (with `expired`) or task-rejected event.",
        confirm=f"`{WATCH}` lists the ids and the reason; `celery -A proj inspect revoked`; the producer's "
                "`expires=` values and the workers' clocks (`timedatectl`).",
        fix="Give `expires` a margin above the worst backlog, in seconds rather than a datetime; keep clocks in "
            "sync (NTP); revoke with care (revokes are kept in memory only unless --statedb); route rejected "
            "messages to a dead-letter queue to keep them.",
        risk="Longer expiry runs stale work after an outage; removing expiry entirely lets a backlog of duplicates "
             "(beat) run.",
        references=("https://docs.celeryq.dev/en/stable/userguide/calling.html#expiration",
                    "https://docs.celeryq.dev/en/stable/userguide/workers.html#revoking-tasks"),
    ),
)
def task_discarded(snapshot: Snapshot):
    state = events_of(snapshot)
    dropped = [t for t in state.tasks if t.state in ("revoked", "rejected")]
    for name, tasks in sorted(by_name(dropped).items()):
        reasons: dict[str, list[TaskRecord]] = {}
        for task in tasks:
            reason = task.revoke if task.state == "revoked" else "rejected without requeue"
            reasons.setdefault(reason or "revoked", []).append(task)
        evidence = []
        for reason, group in sorted(reasons.items()):
            workers = preview(t.finished.node for t in group if t.finished)
            evidence.append(f"{plural(len(group), 'task')} {reason} (by {workers}): {ids_text(group)}")
        expired = reasons.get("expired", [])
        if expired:
            expires = sorted({t.expires for t in expired if t.expires})
            if expires:
                evidence.append(f"their expires: {preview(expires, 3)}")
        yield task_discarded.finding(subject=f"task:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                     messages_at_risk=len(tasks))


# -- CD705 ---------------------------------------------------------------------------------------------

@check(
    id="CD705",
    slug="task-failed-no-retry",
    title="Tasks failed with no retry left",
    category=Category.TASK_CODE,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Tasks end in FAILURE; the work they should have done is missing; nothing runs them again.",
        why="A task-failed event is the end of that task: it raised and was not retried (no `self.retry`, "
            "`autoretry_for` not matching, or `max_retries` used up; a retried task emits task-retried instead). "
            "A pool process killed mid-task (OOM) shows up as WorkerLostError here.",
        confirm=f"`{WATCH}` lists the ids and exceptions; `celery -A proj result <id>` (with a result backend) "
                "gives the traceback; the worker log at ERROR level.",
        fix="Fix the error, or retry what is transient: `autoretry_for=(ConnectionError, ...)`, `retry_backoff`, a "
            "`max_retries` that covers the outage you expect; for WorkerLostError, the worker's memory limits.",
        risk="Retrying errors that are not transient only repeats them; retries of non-idempotent tasks repeat "
             "their side effects.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#retrying",),
    ),
)
def task_failed_no_retry(snapshot: Snapshot):
    state = events_of(snapshot)
    failed = [t for t in state.tasks if t.state == "failed"]
    for name, tasks in sorted(by_name(failed).items()):
        evidence = [f"{plural(len(tasks), 'task')} failed: {ids_text(tasks)}"]
        errors: dict[str, list[TaskRecord]] = {}
        for task in tasks:
            errors.setdefault((task.exception or "exception not sent").split("\n")[0][:160], []).append(task)
        for error, group in sorted(errors.items(), key=lambda item: -len(item[1]))[:5]:
            retries = sorted({t.retries for t in group if t.retries is not None})
            evidence.append(f"{error} ({plural(len(group), 'task')}"
                            + (f", after {preview(str(r) for r in retries)} retries" if retries and retries != [0] else "")
                            + ")")
        lost = [t for t in tasks if "WorkerLostError" in (t.exception or "")]
        if lost:
            evidence.append(f"{plural(len(lost), 'task')} failed with WorkerLostError: the pool process running it was "
                            "killed (the OOM killer, a signal) while the worker itself survived")
        yield task_failed_no_retry.finding(subject=f"task:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                           messages_at_risk=len(tasks))


# -- CD706 ---------------------------------------------------------------------------------------------

@check(
    id="CD706",
    slug="task-past-time-limit",
    title="Tasks ran past their time limit",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="A task runs for far longer than its `time_limit`; the worker holds it (and, under acks_late or "
                "an ETA on Redis, its message) the whole time; others queue up behind it.",
        why="Only the prefork pool enforces time limits (a child past its hard limit is killed): the solo, "
            "threads, gevent and eventlet pools ignore them. A task past its limit is held beyond what the "
            "configuration promises: on Redis past the visibility timeout it is delivered again (CD703), on "
            "RabbitMQ past consumer_timeout the channel is closed.",
        confirm=f"`{WATCH} --app proj` (the limits come from the app); `celery -A proj inspect active` for the "
                "running time; the worker's `--pool`.",
        fix="Run long tasks on a prefork pool so the limit is enforced, or enforce it in the task; lower the work "
            "per task; set a limit below the visibility timeout and consumer_timeout.",
        risk="An enforced hard limit kills the task mid-run: it needs to be safe to stop (and, with acks_late, to "
             "run again).",
        references=("https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits",),
    ),
)
def task_past_time_limit(snapshot: Snapshot):
    state = events_of(snapshot)
    if not state.time_limits and not state.default_time_limit:
        return
    over: list[tuple[TaskRecord, float, float, str]] = []
    for task in state.tasks:
        limit = state.time_limit(task.name)
        if not limit:
            continue
        if task.runtime is not None and task.runtime > limit:
            over.append((task, task.runtime, limit, "finished"))
            continue
        step = task.last_worker_step
        if step is not None and step.state == "started" and state.ended_at - step.t > limit + 1.0:
            worker = state.worker(step.node)
            if worker is None or worker.liveness.verdict in (ALIVE, CONNECTED):
                over.append((task, state.ended_at - step.t, limit, "still running"))
    by_name: dict[str, list] = {}
    for item in over:
        by_name.setdefault(item[0].name or "(name unknown)", []).append(item)
    for name, items in sorted(by_name.items()):
        evidence = []
        for task, seconds, limit, how in items[:IDS_SHOWN]:
            node = task.last_worker_step.node if task.last_worker_step else "?"
            evidence.append(f"{task.id} on {node}: {how} after {seconds:.0f} s, past its hard time limit of "
                            f"{limit:g} s")
        evidence.append("the limit was not enforced: the solo, threads, gevent and eventlet pools do not enforce "
                        "time limits (only prefork does)")
        yield task_past_time_limit.finding(subject=f"task:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                           messages_at_risk=len(items))


CHECKS = [sent_never_received, task_ran_twice, task_discarded, task_failed_no_retry, task_past_time_limit]
