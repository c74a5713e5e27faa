"""Live RabbitMQ checks of the app's queues: backlogs nobody consumes, deliveries held unacknowledged,
redeliveries (CD301, CD302, CD318)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.rabbitmq import QUEUE_DETAILS, scope_queues
from celery_doctor.settings import human_seconds

from .rabbitmq_common import (
    MGMT,
    REF_CELERY_AMQP,
    count_text,
    require,
    routed_tasks,
    sample_text,
    server_consumer_timeout,
    tasks_text,
)

LONG_UNACKED_S = 600  # unacked deliveries and no queue activity for this long are "long"


@check(
    id="CD301",
    slug="rabbitmq-backlog-no-consumers",
    title="A RabbitMQ queue holds messages and nothing consumes it",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Tasks are sent (`.delay()` returns an id) but never start; their results stay PENDING.",
        why="A queue with ready messages and zero consumers is a dead end: no worker subscribes to it (workers "
            "started with a `-Q` list that leaves it out, all workers down or stuck, or a route to a queue nobody "
            "serves). The messages wait until something consumes them, and with a message TTL, a length limit or "
            "`x-expires` on the queue they are dropped instead.",
        confirm="`rabbitmqctl list_queues name messages_ready messages_unacknowledged consumers`; "
                f"`{MGMT}/queues/%2F/QUEUE`; `celery -A proj inspect active_queues` to see which queues each "
                "worker consumes.",
        fix="Start a worker for the queue (`celery -A proj worker -Q QUEUE`), or add it to the existing workers' "
            "`-Q` list; if the route is wrong, fix `task_routes` and move the backlog (shovel) to the right queue.",
        risk="A worker started on a large backlog runs all of it at once: stale work, duplicates of tasks that "
             "were re-sent by hand, load spikes on downstream systems. Look at the backlog (`--peek`) first.",
        references=("https://www.rabbitmq.com/docs/queues", REF_CELERY_AMQP),
    ),
)
def backlog_no_consumers(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None:
        return
    routed = routed_tasks(snapshot)
    for queue in scope_queues(state):
        if queue.consumers != 0 or queue.ready <= 0:
            continue
        evidence = [f"queue {queue.describe()} in vhost {state.vhost!r}: {queue.ready:,} ready messages, "
                    f"0 consumers ({'passive declare' if queue.source == 'passive' else 'management API'})",
                    tasks_text(routed.get(queue.name, []))]
        if queue.idle_since:
            evidence.append(f"idle since {queue.idle_since}"
                            + (f" ({human_seconds(round(snapshot.now - queue.idle_since_epoch))} before the scan)"
                               if queue.idle_since_epoch and snapshot.now > queue.idle_since_epoch else ""))
        sample = sample_text(state, queue.name)
        if sample:
            evidence.append(sample)
        evidence.append("no worker consumes this queue: these tasks do not run")
        yield backlog_no_consumers.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                           confidence=Confidence.OBSERVED, messages_at_risk=queue.ready)


@check(
    id="CD302",
    slug="rabbitmq-long-unacked",
    title="Deliveries have stayed unacknowledged for a long time",
    category=Category.WORKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="`messages_unacknowledged` stays above zero and does not move; tasks look stuck as received "
                "but never finish; later they run twice, or the worker dies with `PRECONDITION_FAILED ... delivery "
                "acknowledgement timed out`.",
        why="A delivery stays unacknowledged while a worker holds it: an acks_late task still running (or hung), "
            "an ETA/countdown task waiting in the worker's memory, or a worker whose pool is wedged. When the "
            "channel closes (worker killed, `consumer_timeout` reached, network loss) every one of them goes back "
            "to the queue and is delivered again: duplicates, or a crash loop when it happens each time.",
        confirm="`rabbitmqctl list_queues name messages_unacknowledged consumers idle_since`; "
                "`rabbitmqctl list_consumers`; `celery -A proj inspect active` and `inspect scheduled` (age of "
                "`time_start` / `eta`).",
        fix="Find the holder: hung tasks need a `time_limit`; long ETAs/countdowns belong in a scheduler (beat, a "
            "database) rather than the broker; restart a wedged worker with a warm shutdown so it requeues "
            "cleanly.",
        risk="Restarting the holding worker makes RabbitMQ redeliver the messages: tasks that had partly run run "
             "again, so they must be idempotent.",
        references=("https://www.rabbitmq.com/docs/confirms#acknowledgement-timeout",
                    "https://github.com/celery/celery/issues/6760"),
    ),
)
def long_unacked(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    _timeout, timeout_text = server_consumer_timeout(snapshot)
    for queue in scope_queues(state):
        if queue.unacked <= 0 or queue.idle_since_epoch is None:
            continue
        idle = snapshot.now - queue.idle_since_epoch
        if idle < LONG_UNACKED_S:
            continue
        per_queue = queue.setting("consumer-timeout")
        evidence = [f"queue {queue.describe()}: {queue.unacked:,} unacknowledged deliveries, "
                    f"{count_text(queue.consumers)} consumers",
                    f"no delivery or ack on the queue for {human_seconds(round(idle))} (idle since {queue.idle_since}): "
                    "every unacked delivery is at least that old",
                    (f"queue consumer timeout: {per_queue}" if per_queue else timeout_text)]
        if queue.redeliver:
            evidence.append(f"message_stats.redeliver={queue.redeliver:,}: deliveries already came back before")
        evidence.append("when the channel closes these deliveries are redelivered: the tasks run again")
        yield long_unacked.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                   messages_at_risk=queue.unacked)


@check(
    id="CD318",
    slug="rabbitmq-redeliveries",
    title="Task messages are being redelivered: tasks run more than once",
    category=Category.WORKER,
    needs=("rabbitmq",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The same task id runs twice (duplicate emails, double charges); workers log the same task being "
                "received again.",
        why="RabbitMQ redelivers every delivery that was not acknowledged when its channel closed: a worker "
            "killed or restarted while holding prefetched/ETA/acks_late messages, a channel closed by "
            "consumer_timeout, `reject(requeue=True)`. The queue's `message_stats.redeliver` counts them.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `message_stats.redeliver`, `redeliver_details.rate`; worker logs "
                "with `redelivered: True`; `celery -A proj events` for repeated task ids.",
        fix="Find why channels close (CD302, CD310, worker crashes/OOM), make tasks idempotent, and consider "
            "`worker_deduplicate_successful_tasks` with acks_late.",
        risk="Acking early to avoid duplicates trades them for loss when a worker dies mid-task.",
        references=("https://www.rabbitmq.com/docs/confirms#automatic-requeue",),
    ),
)
def redeliveries(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    for queue in scope_queues(state):
        count = queue.redeliver or 0
        sample = state.peek.get(queue.name)
        if not count and not (sample and sample.redelivered):
            continue
        evidence = []
        if count:
            delivered = queue.message_stats.get("deliver_get")
            evidence.append(f"queue {queue.describe()}: message_stats.redeliver={count:,}"
                            + (f" of deliver_get={delivered:,}" if delivered else "")
                            + " since the queue was created or stats were reset")
        if sample and sample.redelivered:
            evidence.append(f"--peek: {sample.redelivered} of {sample.read} sampled messages were already redelivered")
        evidence += [tasks_text(routed.get(queue.name, [])),
                     "a redelivered task runs again from the start: duplicates unless the task is idempotent"]
        yield redeliveries.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                   messages_at_risk=count or (sample.redelivered if sample else None))
