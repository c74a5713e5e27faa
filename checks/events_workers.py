"""Event checks about workers: CD702 tasks lost with the worker that held them, CD707 a worker that died, went
silent or shut down, CD708 task events off (what to turn on)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.events import (
    ALIVE,
    AMBIGUOUS,
    CONNECTED,
    DEAD,
    OFFLINE,
    UNKNOWN,
    EventsState,
    Liveness,
    TaskRecord,
    WorkerRecord,
    clock,
)

from ._util import plural, preview
from .events_common import IDS_SHOWN, NEEDS, WATCH, acks_fate, events_of, ids_text

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
    state = events_of(snapshot)
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
    fate = acks_fate(snapshot, started[0].name) if started else None
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
        lines.append(f"and {len(tasks) - IDS_SHOWN} more: {ids_text(tasks[IDS_SHOWN:], 20)}")
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
    state = events_of(snapshot)
    for worker in state.workers:
        live = worker.liveness
        evidence = list(live.evidence)
        running = [t for t in state.tasks if t.last_worker_step and t.last_worker_step.node == worker.hostname
                   and t.last_worker_step.state in ("received", "started")]
        if running:
            evidence.append(f"it held {plural(len(running), 'task')} not finished: {ids_text(running)}"
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
    state = events_of(snapshot)
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


CHECKS = [task_lost_with_worker, worker_went_away, task_events_off]
