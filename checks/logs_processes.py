"""Log checks about pool processes and workers dying, killed or stopped with tasks: CD601 pool process killed, CD602
OOM killer, CD603/CD604 hard and soft time limits, CD612 stopped with tasks, CD615 never finished."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts import logs as P

from ._util import plural
from .logs_common import NEEDS, TASKS_GUIDE, WORKERS_GUIDE, logs_of, seen, table, task_lines, worker_subject

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
    for sig in logs_of(snapshot).of(P.POOL_PROCESS_KILLED):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.count, 'pool process')} died")]
        evidence.append(f"exit status: {table(d.get('signals'))}; processes: {table(d.get('processes'))}"
                        + (f"; pids: {table(d.get('pids'))}" if d.get("pids") else ""))
        if d.get("oom"):
            evidence.append(f"{d['oom']} of them killed by the kernel's OOM killer (pid matched in the kernel log)")
        if d.get("worker_lost_errors"):
            evidence.append(f"WorkerLostError logged {plural(d['worker_lost_errors'], 'time')} "
                            "(once per task whose process died)")
        if sig.tasks_total:
            how = ("the task that process was running (it logged from it)" if d.get("identified") == sig.count
                   else "received by the worker before the process died and never finished afterwards")
            evidence.append(f"{plural(sig.tasks_total, 'task')} lost: {how}")
            evidence += task_lines(sig)
        else:
            evidence.append("no task the worker had received stayed unfinished after the process died "
                            "(it died between tasks, or its task finished elsewhere)")
        yield log_pool_process_killed.finding(
            subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
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
    for sig in logs_of(snapshot).of(P.OOM_KILL):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.count, 'process')} killed by the OOM killer on {sig.where}")]
        evidence.append(f"processes: {table(d.get('processes'))}; pids: {table(d.get('pids'))}"
                        + (f"; {d['cgroup']} by a memory cgroup (container) limit" if d.get("cgroup") else ""))
        if d.get("matched"):
            evidence.append(f"matched in the worker logs: {table(d['matched'])}")
        if sig.tasks_total:
            evidence += task_lines(sig, "tasks lost with them")
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
    for sig in logs_of(snapshot).of(P.HARD_TIME_LIMIT):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.count, 'task')} killed at the hard time limit"),
                    f"limits: {table(d.get('limits'))}"]
        if d.get("process_exits"):
            evidence.append(f"{plural(d['process_exits'], 'pool process')} exited right after (the limit's "
                            "SIGKILL; not counted under CD601)")
        evidence += task_lines(sig)
        yield log_hard_time_limit.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
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
    for sig in logs_of(snapshot).of(P.SOFT_TIME_LIMIT):
        outcomes = dict(sig.details.get("outcomes") or {})
        words = {"finished": "finished anyway", "failed": "then failed", "hard": "then hit the hard limit",
                 "unfinished": "never finished in the log", "ended": "ended otherwise"}
        evidence = [seen(sig, f"{plural(sig.count, 'task')} exceeded the soft time limit"),
                    f"limits: {table(sig.details.get('limits'))}"]
        if outcomes:
            evidence.append("afterwards: " + ", ".join(f"{n} {words.get(k, k)}" for k, n in outcomes.items()))
        evidence += task_lines(sig)
        benign = set(outcomes) <= {"finished"}
        yield log_soft_time_limit.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                          impact=Impact.LOW if benign else None,
                                          messages_at_risk=sum(n for k, n in outcomes.items() if k != "finished")
                                          or None)

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
    for sig in logs_of(snapshot).of(P.STOPPED_WITH_TASKS):
        d = sig.details
        evidence = [seen(sig, f"stopped {plural(sig.count, 'time')} with tasks unfinished"),
                    f"how: {table(d.get('how'))}",
                    f"{plural(sig.tasks_total, 'task')} received and never finished before it stopped"]
        if d.get("restored"):
            evidence.append(f"{d['restored']:,} unacknowledged message(s) restored to their queues at shutdown "
                            "(those come back; the tasks already running do not, unless acked late)")
        evidence += task_lines(sig)
        yield log_worker_stopped_with_tasks.finding(subject=worker_subject(sig), evidence=evidence,
                                                    confidence=Confidence.OBSERVED,
                                                    messages_at_risk=sig.tasks_total or None)

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
    for sig in logs_of(snapshot).of(P.NEVER_FINISHED):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.tasks_total, 'task')} received and never finished; the log ends")]
        if d.get("oldest_s") is not None:
            evidence.append(f"the oldest was received {d['oldest_s'] / 60:.1f} min before the log ends")
        if d.get("last_minute"):
            evidence.append(f"{d['last_minute']} of them in the last minute of the log (probably still running)")
        evidence += task_lines(sig)
        recent_only = d.get("last_minute") == sig.tasks_total
        yield log_tasks_never_finished.finding(subject=worker_subject(sig), evidence=evidence,
                                               confidence=Confidence.INFERRED,
                                               impact=Impact.LOW if recent_only else None,
                                               messages_at_risk=sig.tasks_total or None)


CHECKS = [log_pool_process_killed, log_oom_killed, log_hard_time_limit, log_soft_time_limit, log_worker_stopped_with_tasks, log_tasks_never_finished]
