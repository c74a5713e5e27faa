"""Log checks about messages a worker discarded or tasks that gave up: CD605 unregistered, CD606 rejected, CD607
revoked or expired, CD613 retries exhausted."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.parts import logs as P

from ._util import plural
from .logs_common import NEEDS, TASKS_GUIDE, logs_of, seen, table, task_lines, worker_subject

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
    for sig in logs_of(snapshot).of(P.UNREGISTERED):
        evidence = [seen(sig, f"{plural(sig.count, 'message')} discarded as unregistered")]
        evidence += task_lines(sig, "task names")
        yield log_unregistered_task.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
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
    for sig in logs_of(snapshot).of(P.REJECTED_MESSAGE):
        evidence = [seen(sig, f"{plural(sig.count, 'message')} rejected"),
                    f"why: {table(sig.details.get('reasons'))}"]
        evidence += task_lines(sig, "tasks (from the message headers)")
        yield log_message_rejected.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
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
    for sig in logs_of(snapshot).of(P.REVOKED_DISCARDED):
        evidence = [seen(sig, f"{plural(sig.count, 'task')} discarded as revoked or expired"),
                    f"how: {table(sig.details.get('how'))}"]
        evidence += task_lines(sig)
        yield log_revoked_or_expired_discarded.finding(subject=worker_subject(sig), evidence=evidence,
                                                       confidence=Confidence.OBSERVED, messages_at_risk=sig.count)

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
    for sig in logs_of(snapshot).of(P.RETRIES_EXHAUSTED):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.count, 'task')} gave up after the last retry"),
                    f"how: {table(d.get('how'))}" + (f"; up to {d['most_retries']} "
                                                      f"retr{'y' if d['most_retries'] == 1 else 'ies'} logged before"
                                                      if d.get("most_retries") else ""), *task_lines(sig)]
        yield log_retries_exhausted.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED,
                                            messages_at_risk=sig.count)


CHECKS = [log_unregistered_task, log_message_rejected, log_revoked_or_expired_discarded, log_retries_exhausted]
