"""Event-stream checks: what `celery-doctor watch` saw happen to tasks and workers, live or replayed.

They read the `events` part (celery_doctor.parts.events: a ledger of task and worker events, each worker's
liveness verdict from broker evidence, queue depths read at the end) and, when the app was loaded, its
configuration (acks and time limits), to say what became of each task id and why.
"""
from __future__ import annotations

from typing import Iterable, Optional

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.events import (ALIVE, AMBIGUOUS, CONNECTED, DEAD, OFFLINE, UNKNOWN, EventsState, Liveness,
                                        QueueProbe, TaskRecord, WorkerRecord, clock)

from ._util import plural, preview

NEEDS = ("events",)
WATCH = "celery-doctor watch --app proj --duration 300"
IDS_SHOWN = 8


def _state(snapshot: Snapshot) -> EventsState:
    return snapshot.get("events")


def _ids(tasks: Iterable[TaskRecord], limit: int = IDS_SHOWN) -> str:
    ids = [t.id for t in tasks]
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _names(tasks: Iterable[TaskRecord]) -> str:
    return preview((t.name or "(name unknown)") for t in tasks)


def _by_name(tasks: Iterable[TaskRecord]) -> dict[str, list[TaskRecord]]:
    out: dict[str, list[TaskRecord]] = {}
    for task in tasks:
        out.setdefault(task.name or "(name unknown)", []).append(task)
    return out


def _dropped(state: EventsState) -> Optional[str]:
    if not state.open_dropped:
        return None
    return (f"{plural(state.open_dropped, 'more open task')} were dropped from the ledger (limit "
            f"{state.max_open:,} open entries, the oldest dropped first): they are not counted here")


def _acks_fate(snapshot: Snapshot, task_name: Optional[str]) -> Optional[str]:
    """What the whole worker's death did to a started task's message, from the app's settings (when loaded)."""
    config = snapshot.config
    if config is None:
        return None
    from celery_doctor.facts.acks import task_acks

    info = config.tasks.get(task_name or "") if task_name else None
    if info is None:
        late = bool(config.value("task_acks_late"))
    else:
        late = task_acks(config, info).acks_late
    if not late:
        return ("acks are early (task_acks_late=False): its message was acknowledged when it started, so the broker "
                "has nothing to deliver again: the task is lost")
    how = ("on Redis after the visibility timeout" if snapshot.get("events").transport == "redis"
           else "at once on RabbitMQ, when the worker's connection closed")
    return (f"acks_late: its message stays unacknowledged and is delivered again ({how}); it did not come back "
            "within the watch")


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
    state = _state(snapshot)
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
    dropped = _dropped(state)
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
            + f" and not received by any worker within {state.bound_s:g} s: {_ids(tasks)}",
            f"tasks: {_names(tasks)}; the oldest was sent at {clock(min(t.sent.t for t in tasks))}"]


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


# -- CD702 ---------------------------------------------------------------------------------------------

LOST_VERDICTS = (DEAD, AMBIGUOUS, UNKNOWN, OFFLINE)


def _lost_on(state: EventsState, worker: WorkerRecord) -> list[TaskRecord]:
    out = []
    for task in state.tasks:
        step = task.last_worker_step
        if step is None or step.node != worker.hostname or step.state not in ("received", "started"):
            continue
        restarted = any(t > step.t for t in worker.restarted_at)
        if worker.liveness.verdict in LOST_VERDICTS or restarted:
            out.append(task)
    return out


@check(
    id="CD702",
    slug="task-lost-with-worker",
    title="Tasks were on a worker that died or went away, and never finished",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="A task's log says `Received task` (and maybe `started`) but never `succeeded` or `failed`; the "
                "worker was restarted, OOM-killed or its host was lost; the result stays PENDING or STARTED.",
        why="With early acks (the default) a worker acknowledges a task's message when it starts running it. If "
            "the worker process is then killed (SIGKILL, the OOM killer, a container stopped without a grace "
            "period, a lost host), nothing is left to run or deliver the task again. Tasks only received "
            "(prefetched) were not acknowledged yet and come back, on Redis only after the visibility timeout "
            "(1 h by default).",
        confirm=f"`{WATCH}` across a deploy or an incident: the finding names the worker and each task id, with "
                "the evidence that the worker's broker connections closed (killed) rather than stayed open (busy); "
                "the host's `dmesg`/journal for `Out of memory: Killed process`; the process manager's restarts.",
        fix="Find why the worker died (memory limits, `--max-memory-per-child`, the orchestrator's kill timeout "
            "longer than the longest task) and make tasks that must not be lost idempotent with `acks_late=True` "
            "and `task_reject_on_worker_lost=True`, so a killed run is delivered again.",
        risk="With acks_late a task killed mid-run runs again from the start: it must be idempotent. A task that "
             "kills its worker every time (memory) loops.",
        references=("https://docs.celeryq.dev/en/stable/faq.html#faq-acks-late-vs-retry",
                    "https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost"),
    ),
)
def task_lost_with_worker(snapshot: Snapshot):
    state = _state(snapshot)
    for worker in state.workers:
        tasks = _lost_on(state, worker)
        if tasks:
            yield _lost_with_worker_finding(snapshot, state, worker, tasks)


def _lost_with_worker_finding(snapshot: Snapshot, state: EventsState, worker: WorkerRecord, tasks: list[TaskRecord]):
    live = worker.liveness
    started = [t for t in tasks if t.last_worker_step.state == "started"]
    received = [t for t in tasks if t.last_worker_step.state == "received"]
    evidence = _lost_task_lines(state, worker, tasks)
    restarts = [t for t in worker.restarted_at if any(t > task.last_worker_step.t for task in tasks)]
    if restarts:
        evidence.append(f"{worker.hostname} restarted at {clock(restarts[0])} (a new process under the same "
                        "name): the new process does not have them")
    if live.verdict != ALIVE:
        evidence.extend(live.evidence)
    fate = _acks_fate(snapshot, started[0].name) if started else None
    if fate:
        evidence.append(fate)
    if received:
        evidence.append(f"{plural(len(received), 'task')} only received (prefetched, not started): not "
                        "acknowledged yet, so the broker delivers them again (RabbitMQ when the connection "
                        "closed; Redis after the visibility timeout)")
    impact, confidence = _lost_with_worker_grade(live, bool(started), bool(restarts))
    return task_lost_with_worker.finding(subject=f"worker:{worker.hostname}", evidence=evidence, impact=impact,
                                         confidence=confidence, messages_at_risk=len(tasks))


def _lost_task_lines(state: EventsState, worker: WorkerRecord, tasks: list[TaskRecord]) -> list[str]:
    """Each task's last step on the worker (the first IDS_SHOWN, then the other ids)."""
    lines = []
    for task in tasks[:IDS_SHOWN]:
        step = task.last_worker_step
        lines.append(f"task {task.id} ({task.name or 'name unknown'}) {step.state} on {worker.hostname} at "
                     f"{clock(step.t)}; nothing after it (no task-succeeded or task-failed, no redelivery) by "
                     f"the end of the watch at {clock(state.ended_at)}")
    if len(tasks) > IDS_SHOWN:
        lines.append(f"and {len(tasks) - IDS_SHOWN} more: {_ids(tasks[IDS_SHOWN:], 20)}")
    return lines


def _lost_with_worker_grade(live: Liveness, started: bool, restarted: bool) -> tuple[Impact, Confidence]:
    """A started task is lost (high), a received one comes back (medium); how sure depends on the verdict."""
    held = Impact.HIGH if started else Impact.MEDIUM
    if live.verdict == DEAD or restarted:
        return held, Confidence.OBSERVED if live.certain or restarted else Confidence.INFERRED
    if live.verdict == OFFLINE:
        return held, Confidence.OBSERVED
    if live.verdict == AMBIGUOUS:
        return held, Confidence.INFERRED
    return Impact.MEDIUM, Confidence.INFERRED  # UNKNOWN: silent, busy or dead cannot be told


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
    state = _state(snapshot)
    twice = [t for t in state.tasks if t.ran_twice]
    config = snapshot.config
    for name, tasks in sorted(_by_name(twice).items()):
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
            evidence.append(f"and {len(tasks) - IDS_SHOWN} more: {_ids(tasks[IDS_SHOWN:], 20)}")
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
    state = _state(snapshot)
    dropped = [t for t in state.tasks if t.state in ("revoked", "rejected")]
    for name, tasks in sorted(_by_name(dropped).items()):
        reasons: dict[str, list[TaskRecord]] = {}
        for task in tasks:
            reason = task.revoke if task.state == "revoked" else "rejected without requeue"
            reasons.setdefault(reason or "revoked", []).append(task)
        evidence = []
        for reason, group in sorted(reasons.items()):
            workers = preview(t.finished.node for t in group if t.finished)
            evidence.append(f"{plural(len(group), 'task')} {reason} (by {workers}): {_ids(group)}")
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
    state = _state(snapshot)
    failed = [t for t in state.tasks if t.state == "failed"]
    for name, tasks in sorted(_by_name(failed).items()):
        evidence = [f"{plural(len(tasks), 'task')} failed: {_ids(tasks)}"]
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
    state = _state(snapshot)
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


# -- CD707 ---------------------------------------------------------------------------------------------

@check(
    id="CD707",
    slug="worker-went-away",
    title="A worker went away or went silent: killed, blocked or shut down",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="A worker disappears from `celery inspect ping` or Flower; its queue backs up; tasks it held never "
                "finish.",
        why="A worker sends a heartbeat every 2 s from its event loop. It stops when the worker is killed "
            "(SIGKILL, OOM, host lost: its broker connections close at once), and also when a solo-pool worker "
            "runs a long task or the loop is blocked (its connections stay open). A prefork worker whose children "
            "are busy keeps heart-beating. celery-doctor watch tells these apart from the broker's view of the "
            "connections (Redis CLIENT LIST; RabbitMQ the worker's exclusive mailbox queue), and says so when it "
            "cannot single out which of several silent workers is gone.",
        confirm=f"`{WATCH}`; on the host `ps`/`systemctl status`/`kubectl get pods` for the worker; `dmesg` for "
                "OOM kills; `py-spy dump --pid <pid>` for a blocked one.",
        fix="Killed: find why (memory, the orchestrator's kill timeout) and let the process manager restart it. "
            "Blocked or busy: move long tasks to a prefork pool or their own queue and bound them with time "
            "limits.",
        risk="Restarting a blocked worker loses its running task under early acks and runs it again under "
             "acks_late.",
        references=("https://docs.celeryq.dev/en/stable/userguide/monitoring.html#worker-events",),
    ),
)
def worker_went_away(snapshot: Snapshot):
    state = _state(snapshot)
    for worker in state.workers:
        live = worker.liveness
        evidence = list(live.evidence)
        running = [t for t in state.tasks if t.last_worker_step and t.last_worker_step.node == worker.hostname
                   and t.last_worker_step.state in ("received", "started")]
        if running:
            evidence.append(f"it held {plural(len(running), 'task')} not finished: {_ids(running)}"
                            + (" (see CD702)" if live.verdict in LOST_VERDICTS else ""))
        if worker.active:
            evidence.append(f"its last heartbeat said it was running {worker.active} task(s)")
        if live.verdict == DEAD:
            impact = Impact.HIGH
            confidence = Confidence.OBSERVED if live.certain else Confidence.INFERRED
        elif live.verdict == AMBIGUOUS:
            impact, confidence = Impact.HIGH, Confidence.INFERRED
        elif live.verdict == CONNECTED:
            impact, confidence = Impact.MEDIUM, Confidence.OBSERVED
        elif live.verdict == UNKNOWN:
            impact, confidence = Impact.MEDIUM, Confidence.INFERRED
        elif live.verdict == OFFLINE:
            impact, confidence = Impact.LOW, Confidence.OBSERVED
        elif worker.restarted_at:
            impact, confidence = Impact.LOW, Confidence.OBSERVED
            evidence.insert(0, f"it restarted at {preview(clock(t) for t in worker.restarted_at)} (a new process "
                               "under the same name): whatever the old process held was dropped or redelivered")
        else:
            continue
        titles = {DEAD: "A worker died: its heartbeats stopped and its broker connections closed",
                  AMBIGUOUS: "Workers went silent and one of them died: the evidence cannot single out which",
                  CONNECTED: "A worker stopped heart-beating but is still connected: busy (solo pool) or blocked",
                  UNKNOWN: "A worker stopped heart-beating: busy or dead could not be told",
                  OFFLINE: "A worker shut down during the watch"}
        yield worker_went_away.finding(subject=f"worker:{worker.hostname}", evidence=evidence, impact=impact,
                                       confidence=confidence, title=titles.get(live.verdict, "A worker restarted"),
                                       messages_at_risk=len(running) or None)


# -- CD708 ---------------------------------------------------------------------------------------------

@check(
    id="CD708",
    slug="task-events-off",
    title="Task events are off: what happens to tasks cannot be followed",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="Flower or `celery events` show workers but no tasks; celery-doctor watch sees heartbeats only.",
        why="Workers send task events only with `worker_send_task_events = True` (or `celery worker -E`), and "
            "producers send task-sent only with `task_send_sent_event = True`; both are off by default. Without "
            "them a watch cannot see a task lost between producer and worker, or on a worker that died; it still "
            "sees workers come, go and stop heart-beating.",
        confirm="`celery -A proj inspect conf | grep -E 'send_task_events|send_sent_event'`; a worker log line "
                "`Events of group {task} enabled by remote.`",
        fix="Set `worker_send_task_events = True` (or start workers with `-E`) and `task_send_sent_event = True` in "
            "the app's configuration; or, for one session, `celery-doctor watch --enable-events` (celery control "
            "enable_events, undone at the end).",
        risk="Events cost one message per task state change on the broker (a few percent of the task traffic); "
             "nothing else changes.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events",
                    "https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-send-sent-event"),
    ),
)
def task_events_off(snapshot: Snapshot):
    state = _state(snapshot)
    if state.events == 0:
        evidence = [f"no event at all in {state.duration:.0f} s on {state.source}"]
        if state.undecoded:
            evidence.append(f"{plural(state.undecoded, 'message')} in {', '.join(state.undecoded_types)} were not "
                            "decoded (celery-doctor never loads pickle or yaml): set `event_serializer = 'json'`")
        evidence.append("no worker sends events there: none runs, they run with --without-heartbeat and without -E, "
                        "or they use another event_exchange or broker database")
        yield task_events_off.finding(subject="events:workers", evidence=evidence, confidence=Confidence.OBSERVED,
                                      title="No event at all: no worker is watched")
        return
    quiet = [w for w in state.workers if w.task_events == 0 and w.heartbeats]
    if quiet:
        busy = [w for w in quiet if w.processed_during]
        evidence = [f"{plural(len(quiet), 'worker')} sent heartbeats but no task event during the watch: "
                    f"{preview(w.hostname for w in quiet)}"]
        for worker in busy[:IDS_SHOWN]:
            evidence.append(f"{worker.hostname} processed {worker.processed_during} task(s) meanwhile (heartbeat "
                            f"`processed` {worker.processed_first} -> {worker.processed_last}) and reported none")
        evidence.append("turn on task events on the workers: `worker_send_task_events = True` or `celery worker -E` "
                        "(or run `celery-doctor watch --enable-events` for one session); heartbeats alone still "
                        "show which workers stopped, above")
        yield task_events_off.finding(subject="events:workers", evidence=evidence,
                                      confidence=Confidence.OBSERVED if busy else Confidence.INFERRED)
    if state.sent_events == 0 and state.task_events:
        evidence = ["workers reported tasks but no producer sent a task-sent event: `task_send_sent_event` is off "
                    "where tasks are sent",
                    "a task lost before any worker takes it (a route to a queue nobody consumes, an expired or "
                    "evicted message) cannot be seen without it (CD701)",
                    "turn it on in the producers' configuration: `task_send_sent_event = True` (beat included)"]
        yield task_events_off.finding(subject="events:producers", evidence=evidence, confidence=Confidence.OBSERVED,
                                      title="Producers send no task-sent event: tasks lost before a worker are invisible")
    if state.undecoded:
        yield task_events_off.finding(
            subject="events:serializer",
            evidence=[f"{plural(state.undecoded, 'event message')} in {', '.join(state.undecoded_types)} were not "
                      "decoded (celery-doctor never loads pickle or yaml): set `event_serializer = 'json'`"],
            confidence=Confidence.OBSERVED, title="Some events could not be read (not JSON)")


CHECKS = [
    sent_never_received,
    task_lost_with_worker,
    task_ran_twice,
    task_discarded,
    task_failed_no_retry,
    task_past_time_limit,
    worker_went_away,
    task_events_off,
]
