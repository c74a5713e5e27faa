"""Acknowledgement settings: when the worker acks decides which crash loses or duplicates a task."""
from __future__ import annotations

from celery_doctor.facts.acks import REJECTED, REQUEUED, all_task_acks, global_acks
from celery_doctor.facts.limits import task_time_limits
from celery_doctor.model import Category, Impact, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import plural, preview, setting_line, setting_location
from .config_context import impact_line

# A task that may run this long is exposed to kills and deploys for minutes (its limits say so).
LONG_RUN_SECONDS = 300


@check(
    id="CD101",
    slug="acks-early-crash-loss",
    title="Tasks are acknowledged when they start: a killed worker process loses the task it was running",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="A task was received (`Received task` in the worker log) but never finished, and it is in no queue. "
                "The worker log shows `Process 'ForkPoolWorker-N' pid:... exited with 'signal 9 (SIGKILL)'` or the "
                "host was restarted; the result backend says FAILURE/WorkerLostError, or stays PENDING.",
        why="With the default early acknowledgement (`task_acks_late=False`) the worker acks the message when a pool "
            "process starts the task (celery/worker/request.py, Request.on_accepted: `if not self.task.acks_late: "
            "self.acknowledge()`). If that process is OOM-killed or SIGKILLed, or the machine dies, the broker has "
            "already forgotten the message: nothing redelivers it. Only the tasks running at that moment are lost "
            "(prefetched ones are not acked yet, see CD140), and a warm shutdown waits for them, so this is Celery's "
            "at-most-once default rather than a fault: the impact is low unless the project shows exposure (it "
            "acks some tasks late and leaves others early, or its tasks run for minutes, long enough for deploys "
            "and OOM kills to catch them).",
        confirm="`celery -A proj inspect conf | grep acks_late`; look for `exited with 'signal 9` and "
                "`WorkerLostError` in worker logs and `dmesg | grep -i oom` on worker hosts.",
        fix="Set `task_acks_late = True` (globally, or `@app.task(acks_late=True)` on tasks that must not be lost) "
            "together with `task_reject_on_worker_lost = True` (see CD102), and make those tasks idempotent: late "
            "acknowledgement means a task can run more than once.",
        risk="Tasks run at least once instead of at most once: a task that is not idempotent (charges a card, sends "
             "an email) can run twice after a crash. A task that kills its worker every time (OOM) is redelivered "
             "in a loop; bound it with time/memory limits.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late",
                    "https://docs.celeryq.dev/en/stable/faq.html#faq-acks-late-vs-retry"),
    ),
)
def acks_early(snapshot: Snapshot):
    config = snapshot.config
    acks = all_task_acks(config)
    early = [a.task for a in acks if not a.acks_late]
    global_late = bool(config.value("task_acks_late"))
    if not early and (config.tasks or global_late):
        return
    evidence = [setting_line(config, "task_acks_late")]
    if config.tasks:
        evidence.append(f"{len(early)} of {plural(len(config.tasks), 'task')} are acked when they start: {preview(early)}")
    else:
        evidence.append("no task is registered in the app as loaded, so the global setting decides for every task")
    evidence.append("a SIGKILL/OOM of the pool process or a host crash loses the task it was running: its message "
                    "was already acked")
    impact, reason = _early_ack_exposure(config, early, len(early) < len(acks))
    evidence.append(impact_line(impact, reason))
    yield acks_early.finding(
        subject="setting:task_acks_late",
        evidence=evidence,
        impact=impact,
        location=setting_location(config, "task_acks_late"),
    )


def _early_ack_exposure(config, early: list[str], some_late: bool) -> tuple[Impact, str]:
    """Medium when the project shows that early acks expose it (some tasks late, others not; long tasks), else low:
    Celery's default, at most once, losing only the tasks running when a pool process is killed."""
    if some_late:
        return Impact.MEDIUM, "the project acks some tasks late, so it guards against this loss, but not for these"
    long_running = [name for name in early
                    if (task_time_limits(config, config.tasks[name]).longest or 0) >= LONG_RUN_SECONDS]
    if long_running:
        return Impact.MEDIUM, (f"{plural(len(long_running), 'task')} may run {human_seconds(LONG_RUN_SECONDS)} or "
                               f"more ({preview(long_running, 3)}): long runs are what kills and deploys catch")
    chosen = "set explicitly" if config.setting("task_acks_late").explicit else "Celery's default"
    return Impact.LOW, (f"{chosen} (at most once): only a task running when its pool process is killed is lost, and "
                        "nothing in the configuration shows long or specially guarded tasks")


@check(
    id="CD102",
    slug="acks-late-acked-on-worker-lost",
    title="acks_late tasks are still acked (lost) when their worker process is killed",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="acks_late is on, yet tasks whose worker child was SIGKILLed/OOM-killed are gone: FAILURE with "
                "`WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)` and no redelivery.",
        why="With `acks_late=True`, a WorkerLostError takes the `acks_on_failure` branch: the message is acknowledged "
            "unless `task_reject_on_worker_lost=True` (requeue) or, from Celery 5.7, `task_retry_on_worker_lost=True` "
            "(resend as a retry bounded by max_retries). So acks_late alone does not protect against a killed child. Source: celery/worker/request.py, "
            "Request.on_failure (`ack_flag = acks_on_failure`; requeue only with `reject_on_worker_lost and is_worker_lost`; `retry_on_worker_lost` resends first).",
        confirm="`celery -A proj inspect conf | grep -E 'reject_on_worker_lost|retry_on_worker_lost'`; kill a pool "
                "child running a test task (`kill -9 <pid>`) on a staging worker and check that it is re-received.",
        fix="Set `task_reject_on_worker_lost = True` (or per task `reject_on_worker_lost=True`); on Celery 5.7+ prefer "
            "`task_retry_on_worker_lost = True` with a bounded `max_retries`, which cannot loop forever.",
        risk="A task that itself kills the child (memory blow-up, segfault) is redelivered and kills the next child: a "
             "crash loop. On RabbitMQ quorum queues each redelivery counts toward the delivery limit (20 by default "
             "since 4.0), after which the message is dropped or dead-lettered.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost",
                    "https://github.com/celery/celery/issues/1628"),
    ),
)
def acks_late_worker_lost(snapshot: Snapshot):
    config = snapshot.config
    if config.tasks:
        exposed = [a.task for a in all_task_acks(config) if a.lost_with_worker]
        what = f"{plural(len(exposed), 'task')} with acks_late and no protection: {preview(exposed)}"
    else:  # the app as loaded registers no task: the global settings decide for every task (as in CD101)
        exposed = ["every task"] if global_acks(config).lost_with_worker else []
        what = "no task is registered in the app as loaded: task_acks_late=True and the global settings decide"
    if not exposed:
        return
    retry_known = config.setting("task_retry_on_worker_lost").known
    evidence = [what, setting_line(config, "task_reject_on_worker_lost")]
    if retry_known:
        evidence.append(setting_line(config, "task_retry_on_worker_lost"))
    else:
        evidence.append(f"task_retry_on_worker_lost does not exist in the installed Celery {config.celery_version}")
    evidence.append("a killed pool child makes the worker ack the message (WorkerLostError): the task is lost")
    evidence.append(impact_line(Impact.MEDIUM, "only a task whose pool process is killed while it runs is lost (a "
                                               "crash of the whole worker or host leaves the message unacked, and it "
                                               "returns): the loss early acks have, in a project that chose "
                                               "acks_late to avoid it"))
    yield acks_late_worker_lost.finding(
        subject="setting:task_reject_on_worker_lost",
        evidence=evidence,
        location=setting_location(config, "task_reject_on_worker_lost", "task_acks_late"),
    )


@check(
    id="CD103",
    slug="acks-on-failure-timeout-drop-or-loop",
    title="acks_late failure/timeout handling drops failed tasks or requeues timed-out ones forever",
    category=Category.WORKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Failed tasks vanish without a retry, or one task keeps timing out and being re-received "
                "(`Hard time limit (...) exceeded` repeating for the same task id).",
        why="For acks_late tasks, Celery decides on failure with `acks_on_failure` and on a hard time limit with "
            "`acks_on_timeout` (Celery 5.7; both fall back to `task_acks_on_failure_or_timeout`). When the failure "
            "flag is False the message is rejected without requeue: dropped unless RabbitMQ dead-letters it. When "
            "the timeout flag is False the message is rejected *with* requeue: the task runs again, times out "
            "again, without any bound. Source: celery/worker/request.py, Request.on_failure (`ack_flag = "
            "acks_on_timeout if is_timeout else acks_on_failure`, else `reject(requeue=...)`) and Request.on_timeout "
            "(`if not acks_on_timeout: reject(requeue=True)`).",
        confirm="`celery -A proj inspect conf | grep acks_on`; count `Hard time limit` lines per task id in worker "
                "logs; on RabbitMQ look at the queue's `redeliver` rate in the management UI.",
        fix="Leave `task_acks_on_failure_or_timeout` (and 5.7's `task_acks_on_failure`/`task_acks_on_timeout`) at True "
            "and use `autoretry_for`/`self.retry(max_retries=N)` for failures you want retried; if you need failed "
            "messages kept, configure a dead-letter exchange on RabbitMQ instead of relying on reject.",
        risk="Acking failures means a failed task is not retried by the broker: retries must come from the task "
             "(`retry`) or from the result backend's failure records.",
    ),
)
def acks_failure_timeout(snapshot: Snapshot):
    config = snapshot.config
    acks = {a.task: a for a in all_task_acks(config)}
    dropped = [name for name, a in acks.items() if a.on_failure == REJECTED]
    looping = [name for name, a in acks.items() if a.on_timeout == REQUEUED
               and task_time_limits(config, config.tasks[name]).hard is not None]
    if dropped:
        yield acks_failure_timeout.finding(
            subject="setting:task_acks_on_failure_or_timeout",
            evidence=[
                setting_line(config, "task_acks_on_failure_or_timeout"),
                *([setting_line(config, "task_acks_on_failure")] if config.setting("task_acks_on_failure").known else []),
                f"{plural(len(dropped), 'acks_late task')} reject failed messages without requeue: {preview(dropped)}",
                "on Redis the rejected message is gone; on RabbitMQ it is dropped unless the queue has a dead-letter exchange",
            ],
            location=setting_location(config, "task_acks_on_failure", "task_acks_on_failure_or_timeout"),
        )
    if looping:
        yield acks_failure_timeout.finding(
            subject="setting:task_acks_on_timeout",
            title="Timed-out acks_late tasks are requeued and time out again, without bound",
            evidence=[
                setting_line(config, "task_acks_on_timeout"),
                f"{plural(len(looping), 'task')} with a hard time limit requeue on timeout: {preview(looping)}",
                "each hard time limit rejects the message with requeue: the same task times out again, forever",
            ],
            location=setting_location(config, "task_acks_on_timeout", "task_acks_on_failure_or_timeout"),
        )


@check(
    id="CD104",
    slug="acks-late-duplicates-on-connection-loss",
    title="acks_late tasks running during a broker connection loss are redelivered and run twice",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="After a broker restart or network blip, some tasks ran twice (two `succeeded` log lines for one "
                "task id on different workers or at different times).",
        why="An acks_late task still running when the worker's broker connection drops cannot ack on the dead "
            "channel. The broker redelivers it, and another worker runs it while the first copy completes. "
            "`worker_cancel_long_running_tasks_on_connection_loss=True` cancels such tasks instead (default True "
            "from Celery 6.0).",
        confirm="`celery -A proj inspect conf | grep cancel_long_running`; grep worker logs for "
                "`consumer: Connection to broker lost` followed by the same task id being received again.",
        fix="Set `worker_cancel_long_running_tasks_on_connection_loss = True`, and keep acks_late tasks idempotent.",
        risk="Cancelled tasks are requeued and start over from the beginning; work done before the connection loss is "
             "repeated, so side effects must be idempotent either way.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-cancel-long-running-tasks-on-connection-loss",),
    ),
)
def acks_late_connection_loss(snapshot: Snapshot):
    config = snapshot.config
    setting = config.setting("worker_cancel_long_running_tasks_on_connection_loss")
    if not setting.known or setting.value:
        return
    late = [a.task for a in all_task_acks(config) if a.acks_late]
    if not late:
        return
    yield acks_late_connection_loss.finding(
        subject="setting:worker_cancel_long_running_tasks_on_connection_loss",
        evidence=[setting.describe(), f"{plural(len(late), 'acks_late task')}: {preview(late)}",
                  "a running acks_late task cannot ack after the connection drops: it is redelivered and runs twice"],
        location=setting_location(config, "worker_cancel_long_running_tasks_on_connection_loss"),
    )


CHECKS = [acks_early, acks_late_worker_lost, acks_failure_timeout, acks_late_connection_loss]
