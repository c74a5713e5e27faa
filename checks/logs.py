"""Log checks: what worker, beat and kernel logs say happened to tasks (the `logs` part; `celery-doctor logs`
and `scan --logs`). One check per signature kind; one finding per place (a worker, a host, a beat entry).

Every message text a check relies on was read in the installed celery 5.7 / kombu 5.7 / billiard 4.3 source;
each runbook names the file. The log engine (celery_doctor.logs) keeps no message body and no argument: the
evidence holds task names and ids, worker and process names, counts and times.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, Optional

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts import logs as P

from ._util import plural

NEEDS = ("logs",)
SHOWN_IDS = 10
WORKERS_GUIDE = "https://docs.celeryq.dev/en/stable/userguide/workers.html"
TASKS_GUIDE = "https://docs.celeryq.dev/en/stable/userguide/tasks.html"


# -- wording ----------------------------------------------------------------------------------------------

def _time(epoch: Optional[float]) -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _span(sig: P.Signature) -> str:
    if sig.first is None:
        return "time not in the log"
    if sig.last is None or sig.last - sig.first < 1:
        return f"at {_time(sig.first)} UTC"
    return f"from {_time(sig.first)} to {_time(sig.last)} UTC"


def _seen(sig: P.Signature, what: str) -> str:
    logs = ", ".join(sig.sources[:3]) + (f" and {len(sig.sources) - 3} more" if len(sig.sources) > 3 else "")
    return f"{what} {_span(sig)}" + (f" (read in {logs})" if logs else "")


def _names(pairs: Iterable[tuple[str, int]], limit: int = 8) -> str:
    pairs = list(pairs)
    shown = [f"{name} ×{count}" if count > 1 else name for name, count in pairs[:limit]]
    if len(pairs) > limit:
        shown.append(f"{len(pairs) - limit} more names")
    return ", ".join(shown)


def _tasks(sig: P.Signature, label: str = "tasks") -> list[str]:
    lines = []
    if sig.names:
        lines.append(f"{label}: {_names(sig.names)}")
    ids = sig.task_ids
    if ids:
        more = sig.tasks_total - min(len(ids), SHOWN_IDS)
        shown = ", ".join(ids[:SHOWN_IDS])
        lines.append(f"task ids (for `celery-doctor trace`): {shown}" + (f" and {more} more" if more > 0 else ""))
    return lines


def _table(values: Any) -> str:
    if not values:
        return "?"
    if isinstance(values, dict):
        return ", ".join(f"{k} ×{v}" if v > 1 else str(k) for k, v in values.items())
    return ", ".join(str(v) for v in values)


def _logs(snapshot: Snapshot) -> P.LogsState:
    return snapshot.get("logs")


def _worker(sig: P.Signature) -> str:
    return f"worker:{sig.where}"


# -- CD601 -------------------------------------------------------------------------------------------------

@check(
    id="CD601",
    slug="log-pool-process-killed",
    title="A pool process died while running tasks (SIGKILL, OOM, crash): the tasks it held are lost",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks stay PENDING or STARTED forever, or end as FAILURE with WorkerLostError; the worker log "
                "says `Process 'ForkPoolWorker-3' pid:4321 exited with 'signal 9 (SIGKILL)'` and "
                "`Task handler raised error: WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL) "
                "Job: 12.')`.",
        why="A prefork pool child that dies (SIGKILL from the OOM killer, a container limit, `kill -9`, a "
            "segfault, `os._exit`) takes the task it was running with it. With the default early "
            "acknowledgement the message was acked when the child accepted the task, so nothing redelivers it; "
            "with `acks_late=True` Celery still acks it on a lost worker unless `task_reject_on_worker_lost` is "
            "set. The log line names the process, not the task: celery-doctor names the tasks the worker had "
            "received and that never finished afterwards (or, when the task logged from that process, that "
            "very task). Message texts: billiard/pool.py (`Process %r pid:%r exited with %r`, status from "
            "billiard/common.py human_status), celery/worker/request.py (`Task handler raised error: %r`).",
        confirm="`grep -E \"exited with 'signal|WorkerLostError\" worker.log`; `dmesg -T | grep -i 'killed "
                "process'` (OOM: CD602); the result backend shows FAILURE/WorkerLostError for the task ids; "
                "`celery-doctor trace <id>` for each named task.",
        fix="Find what killed the process: memory (set `worker_max_memory_per_child`, lower concurrency, raise "
            "the container limit), a hard time limit (CD603) or a crash in native code. Make the tasks "
            "survivable: `acks_late=True` with `task_reject_on_worker_lost=True` (the message is requeued), or "
            "`task_retry_on_worker_lost=True` (Celery 5.7, bounded by max_retries), and idempotent task bodies.",
        risk="Requeueing a task that kills its process makes a loop (each delivery kills another child); on "
             "quorum queues it counts toward the delivery limit. Requeued tasks may run twice: make them "
             "idempotent first.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost",
                    "billiard/pool.py, billiard/common.py, celery/worker/request.py (celery 5.7)"),
    ),
)
def log_pool_process_killed(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.POOL_PROCESS_KILLED):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.count, 'pool process')} died")]
        evidence.append(f"exit status: {_table(d.get('signals'))}; processes: {_table(d.get('processes'))}"
                        + (f"; pids: {_table(d.get('pids'))}" if d.get("pids") else ""))
        if d.get("oom"):
            evidence.append(f"{d['oom']} of them killed by the kernel's OOM killer (pid matched in the kernel log)")
        if d.get("worker_lost_errors"):
            evidence.append(f"WorkerLostError logged {plural(d['worker_lost_errors'], 'time')} "
                            "(once per task whose process died)")
        if sig.tasks_total:
            how = ("the task that process was running (it logged from it)" if d.get("identified") == sig.count
                   else "received by the worker before the process died and never finished afterwards")
            evidence.append(f"{plural(sig.tasks_total, 'task')} lost: {how}")
            evidence += _tasks(sig)
        else:
            evidence.append("no task the worker had received stayed unfinished after the process died "
                            "(it died between tasks, or its task finished elsewhere)")
        yield log_pool_process_killed.finding(
            subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
            messages_at_risk=sig.tasks_total or None,
            impact=None if sig.tasks_total or d.get("worker_lost_errors") else Impact.MEDIUM)


# -- CD602 -------------------------------------------------------------------------------------------------

@check(
    id="CD602",
    slug="log-oom-killed",
    title="The kernel's OOM killer killed a Celery process",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Workers lose pool processes or restart without a word in their own log; the kernel log says "
                "`Out of memory: Killed process 4321 (celery)` or `Memory cgroup out of memory: Killed process "
                "4321 (celery)` (a container limit), with an `oom-kill:...,task=celery,pid=4321` line.",
        why="The OOM killer sends SIGKILL: nothing in the process can react. A killed pool child loses the task "
            "it ran (CD601; the worker logs the exit, and celery-doctor matches its pid to the kernel's line); a "
            "killed main process loses every task it had received, and with Redis its prefetched messages wait "
            "for the visibility timeout. Kernel texts: Linux mm/oom_kill.c (not part of Celery: there is no "
            "Celery source for them).",
        confirm="`dmesg -T | grep -iE 'killed process|oom-kill'`, `journalctl -k | grep -i oom`; in Kubernetes "
                "`kubectl describe pod` shows `OOMKilled`; compare the pid with `exited with 'signal 9 "
                "(SIGKILL)'` in the worker log.",
        fix="Bound memory per child: `worker_max_memory_per_child` (KiB) and `worker_max_tasks_per_child` "
            "recycle children before they grow; lower `--concurrency`; raise the memory limit; fix the task "
            "that loads too much (stream, paginate). Make the tasks survivable (see CD601).",
        risk="Recycling children costs a fork per N tasks; a lower concurrency lowers throughput. A higher "
             "container limit only moves the problem if a task leaks.",
        references=("https://docs.celeryq.dev/en/stable/userguide/workers.html#max-memory-per-child-setting",
                    "Linux mm/oom_kill.c"),
    ),
)
def log_oom_killed(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.OOM_KILL):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.count, 'process')} killed by the OOM killer on {sig.where}")]
        evidence.append(f"processes: {_table(d.get('processes'))}; pids: {_table(d.get('pids'))}"
                        + (f"; {d['cgroup']} by a memory cgroup (container) limit" if d.get("cgroup") else ""))
        if d.get("matched"):
            evidence.append(f"matched in the worker logs: {_table(d['matched'])}")
        if sig.tasks_total:
            evidence += _tasks(sig, "tasks lost with them")
        if d.get("other_processes"):
            evidence.append(f"{plural(d['other_processes'], 'other process')} (not Celery) killed on the same "
                            "host: the host itself is short of memory")
        yield log_oom_killed.finding(subject=f"host:{sig.where}", evidence=evidence, confidence=Confidence.OBSERVED,
                                     messages_at_risk=sig.tasks_total or None)


# -- CD603 -------------------------------------------------------------------------------------------------

@check(
    id="CD603",
    slug="log-hard-time-limit",
    title="Tasks were killed by their hard time limit",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Hard time limit (300s) exceeded for proj.tasks.x[<id>]`, then a pool "
                "process `exited with 'signal 9 (SIGKILL)'`; the task ends as FAILURE (TimeLimitExceeded) or, "
                "with acks_late and `task_acks_on_timeout=False`, is requeued and times out again.",
        why="At the hard limit the pool kills the child process running the task: no `finally`, no cleanup, "
            "half-done work. With early acks the message is gone; with acks_late the message is acked "
            "(`task_acks_on_failure_or_timeout`, default True) or, when that is off, rejected with requeue, "
            "which loops forever for a task that always runs too long. Message text: "
            "celery/worker/request.py Request.on_timeout (`Hard time limit (%ss) exceeded for %s[%s]`).",
        confirm="`grep 'Hard time limit' worker.log`; the task's `time_limit` / `task_time_limit`; its runtime "
                "(`succeeded in Ns` lines of the same task name).",
        fix="Raise the limit above the task's real runtime, or split the work into smaller tasks; set a soft "
            "limit (`soft_time_limit`) below the hard one and handle SoftTimeLimitExceeded to stop cleanly.",
        risk="A higher limit lets a stuck task hold a pool process (and, with acks_late on Redis, its message "
             "past the visibility timeout: CD111).",
        references=("https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits",
                    "celery/worker/request.py (celery 5.7)"),
    ),
)
def log_hard_time_limit(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.HARD_TIME_LIMIT):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.count, 'task')} killed at the hard time limit"),
                    f"limits: {_table(d.get('limits'))}"]
        if d.get("process_exits"):
            evidence.append(f"{plural(d['process_exits'], 'pool process')} exited right after (the limit's "
                            "SIGKILL; not counted under CD601)")
        evidence += _tasks(sig)
        yield log_hard_time_limit.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                          messages_at_risk=sig.tasks_total or sig.count)


# -- CD604 -------------------------------------------------------------------------------------------------

@check(
    id="CD604",
    slug="log-soft-time-limit",
    title="Tasks exceeded their soft time limit",
    category=Category.TASK_CODE,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Soft time limit (60s) exceeded for proj.tasks.x[<id>]`.",
        why="At the soft limit the task gets SoftTimeLimitExceeded raised inside it. A task that catches it "
            "(or a broad `except Exception`) and carries on reaches the hard limit, when there is one, and is "
            "killed (CD603); one that lets it propagate fails; only a task that stops cleanly and retries keeps "
            "its work. Message "
            "text: celery/worker/request.py Request.on_timeout (`Soft time limit (%ss) exceeded for %s[%s]`).",
        confirm="`grep 'Soft time limit' worker.log`, then what the same task id logged next (succeeded, raised, "
                "`Hard time limit`); the evidence below counts these outcomes.",
        fix="Handle `celery.exceptions.SoftTimeLimitExceeded` explicitly: save progress and `self.retry()` or "
            "re-raise; never swallow it in a catch-all. Raise the limit if the task legitimately runs longer.",
        risk="A longer limit delays the detection of stuck tasks.",
        references=(f"{TASKS_GUIDE}#time-limits", "celery/worker/request.py (celery 5.7)"),
    ),
)
def log_soft_time_limit(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.SOFT_TIME_LIMIT):
        outcomes = dict(sig.details.get("outcomes") or {})
        words = {"finished": "finished anyway", "failed": "then failed", "hard": "then hit the hard limit",
                 "unfinished": "never finished in the log", "ended": "ended otherwise"}
        evidence = [_seen(sig, f"{plural(sig.count, 'task')} exceeded the soft time limit"),
                    f"limits: {_table(sig.details.get('limits'))}"]
        if outcomes:
            evidence.append("afterwards: " + ", ".join(f"{n} {words.get(k, k)}" for k, n in outcomes.items()))
        evidence += _tasks(sig)
        benign = set(outcomes) <= {"finished"}
        yield log_soft_time_limit.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                          impact=Impact.LOW if benign else None,
                                          messages_at_risk=sum(n for k, n in outcomes.items() if k != "finished")
                                          or None)


# -- CD605 -------------------------------------------------------------------------------------------------

@check(
    id="CD605",
    slug="log-unregistered-task",
    title="Workers received tasks they do not know and discarded them",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Received unregistered task of type 'proj.tasks.x'. The message has been "
                "ignored and discarded.`; the task's result is FAILURE (NotRegistered) or PENDING.",
        why="The worker that took the message has no task of that name: its code is older or newer than the "
            "producer's (a rolling deploy), the module is not imported (`include`, autodiscovery), the name "
            "differs (relative imports, a renamed task), or the queue is shared with another app. The worker "
            "rejects the message without requeue: it is gone. celery-doctor reads the task id from the "
            "headers line of that record and never the body. Message text: celery/worker/consumer/consumer.py "
            "(UNKNOWN_TASK_ERROR, on_unknown_task).",
        confirm="`celery -A proj inspect registered` on the workers consuming that queue; `celery-doctor scan` "
                "(CD402 compares live workers, CD541 the source).",
        fix="Deploy the task's code to every worker that consumes the queue before producers send it; import "
            "the module in the app (`include=[...]` or `autodiscover_tasks`); route the task to workers that "
            "have it; keep old names as aliases while renaming.",
        risk="None from registering a task; routing changes move load between workers.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#names",
                    "celery/worker/consumer/consumer.py (celery 5.7)"),
    ),
)
def log_unregistered_task(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.UNREGISTERED):
        evidence = [_seen(sig, f"{plural(sig.count, 'message')} discarded as unregistered")]
        evidence += _tasks(sig, "task names")
        yield log_unregistered_task.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                            messages_at_risk=sig.count)


# -- CD606 -------------------------------------------------------------------------------------------------

@check(
    id="CD606",
    slug="log-message-rejected",
    title="Workers rejected messages they could not accept or decode: those tasks are dropped",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Received invalid task message: Refusing to deserialize untrusted content "
                "of type pickle (application/x-python-serialize)` (kombu's ContentDisallowed), `Received invalid "
                "task message: ...`, `Can't decode message body: ...` or `Received and deleted unknown message.`",
        why="A message whose content type is not in the worker's `accept_content` (a producer using pickle or "
            "yaml while workers accept json), that is not a task message, or whose body does not decode is "
            "rejected without requeue, or acked (decode errors), and never runs. celery-doctor reports the "
            "reason and content type, never the body Celery dumps after it. Message texts: "
            "celery/worker/consumer/consumer.py (INVALID_TASK_ERROR, MESSAGE_DECODE_ERROR, UNKNOWN_FORMAT), "
            "kombu/serialization.py (`Refusing to deserialize {} content of type {}`).",
        confirm="The producers' `task_serializer` and the workers' `accept_content` (`celery -A proj inspect conf`); "
                "which service publishes to the queue.",
        fix="Make producers and workers agree: `task_serializer='json'` everywhere (CD143), or add the type to "
            "`accept_content` only if every publisher is trusted (pickle runs code: CD142). Route foreign "
            "messages elsewhere.",
        risk="Accepting pickle or yaml lets anyone who can publish to the broker run code on the workers.",
        references=("https://docs.celeryq.dev/en/stable/userguide/security.html#serializers",
                    "celery/worker/consumer/consumer.py, kombu/serialization.py (5.7)"),
    ),
)
def log_message_rejected(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.REJECTED_MESSAGE):
        evidence = [_seen(sig, f"{plural(sig.count, 'message')} rejected"),
                    f"why: {_table(sig.details.get('reasons'))}"]
        evidence += _tasks(sig, "tasks (from the message headers)")
        yield log_message_rejected.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                           messages_at_risk=sig.count)


# -- CD607 -------------------------------------------------------------------------------------------------

@check(
    id="CD607",
    slug="log-revoked-or-expired-discarded",
    title="Workers discarded tasks as revoked or expired",
    category=Category.TASK_CODE,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Discarding revoked task: proj.tasks.x[<id>]`; the task never runs and its "
                "state is REVOKED.",
        why="Celery logs the same line for a task revoked by id or by stamped header and for one whose "
            "`expires` time has passed when the worker receives it. Expiry surprises come from beat entries "
            "or producers with a short `expires`, from a backlog (workers down, the tasks wait past their "
            "expiry), and from clocks: `expires` is an absolute time compared with the worker's clock (naive "
            "datetimes, skew: CD146, CD611). celery-doctor counts a discard as `revoked` when the same log "
            "shows the id flagged (`Tasks flagged as revoked`). Message texts: celery/worker/request.py "
            "Request.revoked (`Discarding revoked task: %s[%s]`), celery/worker/control.py.",
        confirm="Who revoked (control commands, `revoke()` in code, flower) and the tasks' `expires`; "
                "`celery -A proj inspect revoked`; the producer's and the worker's clocks.",
        fix="Give `expires` in seconds relative to sending (not a naive datetime); make it longer than the worst "
            "backlog you accept; sync clocks (NTP); revoke deliberately and persist revokes (`--statedb`).",
        risk="A longer expiry runs stale work after an outage (beat backlogs: CD141).",
        references=("https://docs.celeryq.dev/en/stable/userguide/calling.html#expiration",
                    "celery/worker/request.py, celery/worker/control.py (celery 5.7)"),
    ),
)
def log_revoked_or_expired_discarded(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.REVOKED_DISCARDED):
        evidence = [_seen(sig, f"{plural(sig.count, 'task')} discarded as revoked or expired"),
                    f"how: {_table(sig.details.get('how'))}"]
        evidence += _tasks(sig)
        yield log_revoked_or_expired_discarded.finding(subject=_worker(sig), evidence=evidence,
                                                       confidence=Confidence.OBSERVED, messages_at_risk=sig.count)


# -- CD608 -------------------------------------------------------------------------------------------------

@check(
    id="CD608",
    slug="log-rabbitmq-ack-timeout",
    title="RabbitMQ closed a worker's channel: a delivery was not acknowledged within consumer_timeout",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
                "Timeout value used: 1800000 ms` (in `Unrecoverable error: PreconditionFailed(406, ...)`); the "
                "worker exits or reconnects, and the same tasks run again.",
        why="RabbitMQ's `consumer_timeout` (30 min by default) bounds how long a delivery may stay unacked. An "
            "acks_late task running longer, or an ETA/countdown task held in the worker longer, makes the "
            "broker close the channel: every unacked message of that channel goes back to the queue "
            "(duplicates of running tasks) and Celery 5.7 stops the worker. The text is the broker's; it reaches "
            "the worker as amqp's PreconditionFailed (code 406, amqp/exceptions.py) and is logged by "
            "celery/worker/worker.py (`Unrecoverable error: %r`).",
        confirm="The timeout in the message; `rabbitmq-diagnostics environment | grep consumer_timeout`; the "
                "longest task runtime and ETA/countdown in the app (CD134).",
        fix="Keep every delivery shorter than consumer_timeout: shorter tasks, no long countdowns over "
            "RabbitMQ (use a scheduler), or raise `consumer_timeout` (rabbitmq.conf, or per queue with the "
            "`x-consumer-timeout` argument / policy on RabbitMQ 3.12+).",
        risk="A longer consumer_timeout delays the redelivery of tasks held by a hung worker.",
        references=("https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout",
                    "celery/worker/worker.py, amqp/exceptions.py"),
    ),
)
def log_rabbitmq_ack_timeout(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.ACK_TIMEOUT):
        d = sig.details
        evidence = [_seen(sig, f"the broker closed the channel {plural(sig.count, 'time')}")]
        if d.get("timeout_ms"):
            evidence.append(f"timeout value used: {d['timeout_ms']:,} ms ({d['timeout_ms'] / 60000:g} min)")
        if d.get("open_tasks"):
            evidence.append(f"{plural(d['open_tasks'], 'task')} received and unfinished at that moment: their "
                            "messages go back to the queue (duplicates of those already running)")
            evidence += _tasks(sig, "tasks held")
        yield log_rabbitmq_ack_timeout.finding(subject=_worker(sig), evidence=evidence,
                                               confidence=Confidence.OBSERVED,
                                               messages_at_risk=d.get("open_tasks") or None)


# -- CD609 -------------------------------------------------------------------------------------------------

@check(
    id="CD609",
    slug="log-broker-connection-lost",
    title="Workers lost their broker connection: held tasks are restored or redelivered (and may run twice)",
    category=Category.BROKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `consumer: Connection to broker lost. Trying to re-establish the "
                "connection...`, often with `Restoring N unacknowledged message(s)`, and later `Connected to`.",
        why="While disconnected the worker cannot ack: tasks it had prefetched are restored to the queue (Redis: "
            "`Restoring N unacknowledged message(s)`) or redelivered by the broker, and tasks running with "
            "acks_late run a second time elsewhere (CD104). A worker that exhausts "
            "`broker_connection_max_retries` exits. A broker restarted without persistence loses its queues "
            "(CD204). Message texts: celery/worker/consumer/consumer.py (CONNECTION_RETRY), "
            "kombu/transport/virtual/base.py (RESTORING_FMT), celery/worker/consumer/connection.py "
            "(`Connected to %s`).",
        confirm="The broker's own log and uptime at that time (restart, failover, network); "
                "`celery-doctor scan` for persistence (CD204) and retry settings (CD132).",
        fix="Make the broker durable (AOF/RDB on Redis, durable queues on RabbitMQ) and reachable (health checks, "
            "`broker_transport_options={'health_check_interval': ...}`); make tasks idempotent; consider "
            "`worker_cancel_long_running_tasks_on_connection_loss=True`.",
        risk="Cancelling long tasks on connection loss restarts them from the beginning.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry",
                    "celery/worker/consumer/consumer.py, kombu/transport/virtual/base.py (5.7)"),
    ),
)
def log_broker_connection_lost(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.CONNECTION_LOST):
        d = sig.details
        evidence = [_seen(sig, f"the broker connection was lost {plural(sig.count, 'time')}")]
        if d.get("longest_s") is not None:
            evidence.append(f"longest time to reconnect: {d['longest_s']:.1f} s")
        if d.get("most_open"):
            evidence.append(f"up to {plural(d['most_open'], 'task')} received and unfinished when it dropped")
        if d.get("restored"):
            evidence.append(f"{d['restored']:,} unacknowledged message(s) restored to their queues")
        if d.get("received_again"):
            evidence.append(f"{plural(d['received_again'], 'task')} received again after reconnecting while "
                            "the first delivery was unfinished (they may run twice)")
            evidence += _tasks(sig, "received again")
        yield log_broker_connection_lost.finding(subject=_worker(sig), evidence=evidence,
                                                 confidence=Confidence.OBSERVED,
                                                 messages_at_risk=d.get("received_again") or None)


# -- CD610 -------------------------------------------------------------------------------------------------

@check(
    id="CD610",
    slug="log-missed-heartbeats",
    title="Workers stopped hearing other workers' heartbeats",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `missed heartbeat from celery@host2`.",
        why="Workers with gossip enabled watch each other's heartbeat events; a missed heartbeat means the other "
            "worker died, froze (a blocked event loop, a solo worker in a long task) or lost its broker "
            "connection, or the clocks differ (CD611). A dead worker's running tasks are lost (early ack) or, on "
            "Redis, wait for the visibility timeout. Message text: celery/worker/consumer/gossip.py "
            "(`missed heartbeat from %s`).",
        confirm="That worker's own log at the same time; `celery -A proj inspect ping`; `celery-doctor scan` "
                "(CD409, CD410).",
        fix="Find why the worker went silent (crash, OOM: CD601/CD602, blocked loop); keep clocks in sync.",
        risk="None from the diagnosis.",
        references=(f"{WORKERS_GUIDE}#gossip", "celery/worker/consumer/gossip.py (celery 5.7)"),
    ),
)
def log_missed_heartbeats(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.MISSED_HEARTBEAT):
        evidence = [_seen(sig, f"{plural(sig.count, 'missed heartbeat')} noticed by {sig.where}"),
                    f"from: {_table(sig.details.get('nodes'))}"]
        yield log_missed_heartbeats.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED)


# -- CD611 -------------------------------------------------------------------------------------------------

@check(
    id="CD611",
    slug="log-clock-drift",
    title="Worker clocks drift apart: expiry and ETA times are misjudged",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `Substantial drift from celery@host2 may mean clocks are out of sync.  "
                "Current drift is 120 seconds.`",
        why="`expires` and `eta` are absolute times set on the producer's clock and compared with the worker's: "
            "a worker ahead discards tasks as expired (`Discarding revoked task`, CD607) or runs ETA tasks "
            "early; one behind holds them longer (on Redis past the visibility timeout: CD110). Celery warns "
            "above 16 s. Message text: celery/events/state.py (DRIFT_WARNING).",
        confirm="`chronyc tracking` / `timedatectl` on each host; the drift in the evidence.",
        fix="Run NTP (chrony, systemd-timesyncd) on every producer and worker host; use UTC everywhere.",
        risk="None.",
        references=("https://docs.celeryq.dev/en/stable/userguide/calling.html#eta-and-countdown",
                    "celery/events/state.py (celery 5.7)"),
    ),
)
def log_clock_drift(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.CLOCK_DRIFT):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.count, 'drift warning')} on {sig.where}"),
                    f"from: {_table(d.get('nodes'))}"]
        if d.get("max_drift_s") is not None:
            evidence.append(f"largest drift: {d['max_drift_s']:g} s")
        yield log_clock_drift.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED)


# -- CD612 -------------------------------------------------------------------------------------------------

@check(
    id="CD612",
    slug="log-worker-stopped-with-tasks",
    title="A worker stopped with tasks it had received and not finished",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks vanish around deploys or restarts: the worker log shows `worker: Warm shutdown "
                "(MainProcess)` or `worker: Cold shutdown (MainProcess)` (or `Unrecoverable error: ...`, or "
                "simply starts again) while tasks it had received have no `succeeded`/`raised` line.",
        why="A warm shutdown waits for running tasks, but the process manager (systemd's TimeoutStopSec, "
            "Kubernetes' terminationGracePeriodSeconds, docker stop's 10 s) sends SIGKILL when its grace "
            "period ends; a cold shutdown terminates running tasks. Tasks acked early are lost; unacked "
            "prefetched messages are restored (Redis: `Restoring N unacknowledged message(s)`) or redelivered. "
            "A restart without any shutdown line means the main process was killed. Message texts: "
            "celery/apps/worker.py (`worker: %s shutdown (MainProcess)`, `%s ready.`), celery/worker/worker.py "
            "(`Initiating Soft Shutdown`, `Unrecoverable error: %r`), kombu/transport/virtual/base.py.",
        confirm="The deploy or restart time; the grace period of the process manager; the task ids below with "
                "`celery-doctor trace <id>` and the result backend.",
        fix="Give workers a grace period longer than the longest task (or set `worker_soft_shutdown_timeout`, "
            "Celery 5.5+), stop consuming before stopping (`celery control cancel_consumer`), use "
            "`acks_late=True` with `task_reject_on_worker_lost=True` for tasks that must not be lost.",
        risk="Longer grace periods slow deploys; requeued tasks run again (make them idempotent).",
        references=(f"{WORKERS_GUIDE}#stopping-the-worker",
                    "celery/apps/worker.py, celery/worker/worker.py (celery 5.7)"),
    ),
)
def log_worker_stopped_with_tasks(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.STOPPED_WITH_TASKS):
        d = sig.details
        evidence = [_seen(sig, f"stopped {plural(sig.count, 'time')} with tasks unfinished"),
                    f"how: {_table(d.get('how'))}",
                    f"{plural(sig.tasks_total, 'task')} received and never finished before it stopped"]
        if d.get("restored"):
            evidence.append(f"{d['restored']:,} unacknowledged message(s) restored to their queues at shutdown "
                            "(those come back; the tasks already running do not, unless acked late)")
        evidence += _tasks(sig)
        yield log_worker_stopped_with_tasks.finding(subject=_worker(sig), evidence=evidence,
                                                    confidence=Confidence.OBSERVED,
                                                    messages_at_risk=sig.tasks_total or None)


# -- CD613 -------------------------------------------------------------------------------------------------

@check(
    id="CD613",
    slug="log-retries-exhausted",
    title="Tasks gave up after their last retry",
    category=Category.TASK_CODE,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `Task proj.tasks.x[<id>] raised unexpected: MaxRetriesExceededError(\"Can't "
                "retry proj.tasks.x[<id>] ...\")`, or a task id logged `retry:` lines and then `raised "
                "unexpected: <its own exception>`.",
        why="`self.retry()` raises MaxRetriesExceededError once `max_retries` (3 by default) is reached; when "
            "it was given `exc=` (and with `autoretry_for`) it raises that exception instead. Either way the "
            "task ends as FAILURE and the work is dropped unless something reads failures. celery-doctor counts "
            "a task as having given up when it raised MaxRetriesExceededError, or raised after logging "
            "`retry:` under the same id (in any of the logs read). Message texts: celery/app/task.py "
            "Task.retry (`Can't retry %s[%s] args:%s kwargs:%s`), celery/exceptions.py, celery/app/trace.py "
            "(LOG_FAILURE, LOG_RETRY).",
        confirm="The task's `max_retries` and `default_retry_delay` / countdown; what it retried on (the "
                "worker log's `retry:` lines of the same id).",
        fix="Retry with backoff (`autoretry_for`, `retry_backoff`), a limit that covers the outage you expect, "
            "and a dead-letter path for the final failure (store it, alert, or re-drive later).",
        risk="More retries keep failing work in the queues longer.",
        references=(f"{TASKS_GUIDE}#retrying", "celery/app/task.py, celery/exceptions.py (celery 5.7)"),
    ),
)
def log_retries_exhausted(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.RETRIES_EXHAUSTED):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.count, 'task')} gave up after the last retry"),
                    f"how: {_table(d.get('how'))}" + (f"; up to {d['most_retries']} "
                                                      f"retr{'y' if d['most_retries'] == 1 else 'ies'} logged before"
                                                      if d.get("most_retries") else "")] + _tasks(sig)
        yield log_retries_exhausted.finding(subject=_worker(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                            messages_at_risk=sig.count)


# -- CD614 -------------------------------------------------------------------------------------------------

@check(
    id="CD614",
    slug="log-beat-duplicate-schedulers",
    title="Two beat schedulers sent the same periodic task at the same time: every run happens twice",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Periodic tasks run twice (or more) per period; two logs (hosts, containers) both say "
                "`Scheduler: Sending due task <entry> (<task>)` for the same entry over the same period.",
        why="Celery beat has no lock: every `celery beat` process (and every `worker -B`) sends every due entry. "
            "Two replicas of a beat deployment, a beat left running after a migration, or `-B` on several "
            "workers multiply every periodic task. celery-doctor counts an entry as duplicated when two places "
            "sent it during the same stretch of time (not one after the other, as in a failover). Message text: "
            "celery/beat.py Scheduler.apply_entry (`Scheduler: Sending due task %s (%s)`).",
        confirm="Where beat runs: `ps aux | grep 'celery.*beat'` on each host, replicas of the beat deployment, "
                "`-B` in worker command lines.",
        fix="Run exactly one beat (a single-replica deployment with `strategy: Recreate`, or a scheduler with a "
            "lock such as a database-backed one used by one process); never `worker -B` on more than one node.",
        risk="With one beat, its outage stops periodic tasks: monitor it.",
        references=("https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#starting-the-scheduler",
                    "celery/beat.py (celery 5.7)"),
    ),
)
def log_beat_duplicate_schedulers(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.BEAT_DUPLICATE):
        d = sig.details
        origins = d.get("origins") or {}
        evidence = [_seen(sig, f"entry {d.get('entry', '?')!s} ({d.get('task', '?')!s}) sent by "
                               f"{plural(len(origins), 'scheduler')} at once"),
                    "sends per place: " + ", ".join(f"{w} {n:,}" for w, n in origins.items()),
                    f"about {plural(sig.count, 'duplicate run')} while they overlapped"]
        if d.get("period_s"):
            evidence.append(f"the entry's period in the log: about {d['period_s']:g} s")
        yield log_beat_duplicate_schedulers.finding(subject=f"beat-entry:{d.get('entry', '?')}", evidence=evidence,
                                                    confidence=Confidence.OBSERVED, messages_at_risk=sig.count)


# -- CD615 -------------------------------------------------------------------------------------------------

@check(
    id="CD615",
    slug="log-tasks-never-finished",
    title="Tasks were received but never finished by the end of the log",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Tasks have a `Task proj.tasks.x[<id>] received` line and nothing after it (no `succeeded`, "
                "`raised`, `retry`, time limit or discard) up to the end of the log.",
        why="A received task is still running, waiting for its ETA/countdown, prefetched behind others, or "
            "gone without a trace: a worker that was killed (no shutdown line, no restart in the log yet) or "
            "a log cut short. Tasks received in the last minute of the log are usually still running. Message "
            "texts: celery/app/trace.py (LOG_RECEIVED, LOG_SUCCESS, LOG_FAILURE, LOG_RETRY), "
            "celery/worker/strategy.py.",
        confirm="`celery-doctor trace <id>` for the ids below (queue, unacked, a worker's active/reserved/"
                "scheduled, the result backend); the worker's state now (`celery -A proj inspect active "
                "reserved scheduled`).",
        fix="Depends on what trace finds: restart a stuck worker, fix the cause of a kill (CD601, CD602), or "
            "accept that ETA tasks wait.",
        risk="None from the diagnosis. The log may simply end before the tasks did: confirm before acting.",
        references=("celery/app/trace.py, celery/worker/strategy.py (celery 5.7)",),
    ),
)
def log_tasks_never_finished(snapshot: Snapshot):
    for sig in _logs(snapshot).of(P.NEVER_FINISHED):
        d = sig.details
        evidence = [_seen(sig, f"{plural(sig.tasks_total, 'task')} received and never finished; the log ends")]
        if d.get("oldest_s") is not None:
            evidence.append(f"the oldest was received {d['oldest_s'] / 60:.1f} min before the log ends")
        if d.get("last_minute"):
            evidence.append(f"{d['last_minute']} of them in the last minute of the log (probably still running)")
        evidence += _tasks(sig)
        recent_only = d.get("last_minute") == sig.tasks_total
        yield log_tasks_never_finished.finding(subject=_worker(sig), evidence=evidence,
                                               confidence=Confidence.INFERRED,
                                               impact=Impact.LOW if recent_only else None,
                                               messages_at_risk=sig.tasks_total or None)


CHECKS = [log_pool_process_killed, log_oom_killed, log_hard_time_limit, log_soft_time_limit, log_unregistered_task,
          log_message_rejected, log_revoked_or_expired_discarded, log_rabbitmq_ack_timeout,
          log_broker_connection_lost, log_missed_heartbeats, log_clock_drift, log_worker_stopped_with_tasks,
          log_retries_exhausted, log_beat_duplicate_schedulers, log_tasks_never_finished]
