"""Live RabbitMQ checks of queue limits set by arguments or policies: length, TTLs, delivery limits and
consumer timeouts that drop or redeliver tasks (CD307-CD310)."""
from __future__ import annotations

from typing import Any, Optional

from celery_doctor.facts.acks import HARD_TIME_LIMIT, WORKER_LOST, requeued_on, task_acks
from celery_doctor.facts.limits import task_time_limits
from celery_doctor.model import Category, Confidence, Impact, Location, Runbook, Snapshot, check
from celery_doctor.parts.rabbitmq import QUEUE_DETAILS, scope_queues
from celery_doctor.settings import as_seconds, human_seconds

from ._util import preview
from .rabbitmq_common import (
    MGMT,
    confirms_on,
    count_text,
    delays_by_queue,
    ms_text,
    require,
    routed_tasks,
    server_consumer_timeout,
    tasks_text,
    version_text,
)

QUORUM_DEFAULT_DELIVERY_LIMIT = 20  # RabbitMQ 4.0+
PER_QUEUE_CONSUMER_TIMEOUT_SINCE = (3, 11, 15)


@check(
    id="CD307",
    slug="rabbitmq-max-length-overflow",
    title="A queue length limit drops or refuses task messages",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Under load, the oldest queued tasks disappear (drop-head), or `.delay()` succeeds but the task "
                "never arrives (reject-publish without confirms).",
        why="`max-length`/`max-length-bytes` (queue argument `x-max-length...` or a policy; the smaller wins) cap "
            "the ready messages. With the default overflow `drop-head` RabbitMQ silently discards the oldest "
            "message (or dead-letters it, if the queue has a dead-letter exchange). With `reject-publish` the new "
            "message is refused; a producer only learns of it with publisher confirms.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `arguments`, `effective_policy_definition`, `messages_ready`; "
                "`rabbitmqctl list_policies`.",
        fix="Remove the limit from task queues (length limits are for data you can afford to lose), or set "
            "`overflow: reject-publish` together with `broker_transport_options={'confirm_publish': True}` so "
            "producers get an error they can handle, and add a dead-letter exchange for drop-head.",
        risk="Without a limit, a stuck consumer lets the queue grow until the memory/disk alarm blocks every "
             "publisher: watch queue depth.",
        references=("https://www.rabbitmq.com/docs/maxlength", "https://github.com/rabbitmq/rabbitmq-server/issues/995"),
    ),
)
def max_length_overflow(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    confirms = confirms_on(snapshot)
    routed = routed_tasks(snapshot)
    for queue in scope_queues(state):
        limits = [s for s in (queue.setting("max-length"), queue.setting("max-length-bytes")) if s is not None]
        if not limits:
            continue
        overflow = queue.setting("overflow")
        mode = str(overflow.value) if overflow else "drop-head"
        dlx = queue.setting("dead-letter-exchange")
        evidence = [f"queue {queue.describe()}: {'; '.join(str(s) for s in limits)}",
                    f"overflow {mode!r} ({overflow.source if overflow else 'default'})"]
        length = queue.setting("max-length")
        if length is not None and isinstance(length.value, int) and length.value > 0:
            evidence.append(f"{queue.ready:,} ready of at most {length.value:,} ({100 * queue.ready // length.value}% full)")
        else:
            evidence.append(f"{queue.ready:,} ready messages")
        evidence.append(tasks_text(routed.get(queue.name, [])))
        impact = None
        at_risk: Optional[int] = None
        if mode == "drop-head":
            at_risk = queue.ready
            if dlx:
                impact = Impact.MEDIUM
                evidence.append(f"when full, the oldest messages are dead-lettered ({dlx}): they leave the task queue unrun")
            else:
                evidence.append("when full, RabbitMQ silently discards the oldest messages: no dead-letter exchange is set")
        elif mode.startswith("reject-publish"):
            if confirms:
                impact = Impact.MEDIUM
                evidence.append("when full, new publishes are refused; publisher confirms are on, so `.delay()` raises")
            else:
                evidence.append("when full, new publishes are refused and publisher confirms are off: the producer "
                                "believes the task was sent")
        yield max_length_overflow.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                          confidence=Confidence.OBSERVED, messages_at_risk=at_risk, impact=impact)


@check(
    id="CD308",
    slug="rabbitmq-ttl-expiry",
    title="Queue TTLs discard tasks: message-ttl without a dead-letter exchange, or an expiring queue",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Tasks that waited in the queue for a while never run; no worker logs them; results stay PENDING "
                "(not REVOKED).",
        why="`message-ttl` (argument `x-message-ttl` or policy) makes RabbitMQ drop messages older than the TTL "
            "before any worker sees them, unless a dead-letter exchange catches them. `expires` (`x-expires`) "
            "deletes the whole queue once it has had no consumer (and no declare) for that long: its messages go "
            "with it, and publishes to it are unroutable until it is declared again.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `arguments`, `effective_policy_definition`; `rabbitmqctl list_policies`.",
        fix="Remove `message-ttl`/`expires` from task queues (use Celery's per-task `expires` when a task really "
            "goes stale), or add a dead-letter exchange and a queue that keeps what expires.",
        risk="Without a TTL, stale tasks run late after an outage: give such tasks a Celery `expires` so the "
             "worker discards them knowingly (REVOKED).",
        references=("https://www.rabbitmq.com/docs/ttl", "https://www.rabbitmq.com/docs/dlx"),
    ),
)
def ttl_expiry(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    for queue in scope_queues(state):
        ttl = queue.setting("message-ttl")
        dlx = queue.setting("dead-letter-exchange")
        tasks = tasks_text(routed.get(queue.name, []))
        if ttl is not None and not dlx:
            yield ttl_expiry.finding(
                subject=f"queue:{queue.name}",
                evidence=[f"queue {queue.describe()}: {ttl} = {ms_text(ttl.value)}",
                          "no dead-letter-exchange (argument or policy)",
                          f"{queue.ready:,} ready messages; {tasks}",
                          "a message waiting longer than the TTL is discarded before any worker sees it"],
                confidence=Confidence.OBSERVED, messages_at_risk=queue.ready)
        expires = queue.setting("expires")
        if expires is not None:
            yield ttl_expiry.finding(
                subject=f"queue:{queue.name}",
                evidence=[f"queue {queue.describe()}: {expires} = {ms_text(expires.value)}",
                          f"{queue.total:,} messages, {count_text(queue.consumers)} consumers; {tasks}",
                          "once unused that long (no consumer, no declare) the queue is deleted with every message "
                          "in it, and later publishes to it are dropped as unroutable"],
                confidence=Confidence.OBSERVED, messages_at_risk=queue.total)


@check(
    id="CD309",
    slug="rabbitmq-quorum-delivery-limit",
    title="A quorum queue drops messages after too many redeliveries (delivery-limit without dead-lettering)",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Tasks that were redelivered a few times (worker crashes, `reject_on_worker_lost`, requeue on "
                "timeout, consumer_timeout) vanish; quorum queue `message_stats.redeliver` is high.",
        why="A quorum queue counts how often each message was returned. Past `delivery-limit` (argument "
            "`x-delivery-limit` or policy; RabbitMQ 4.0+ defaults it to 20) the message is dead-lettered, or "
            "dropped when the queue has no dead-letter exchange. Celery requeue loops (acks_late with "
            "`reject_on_worker_lost`, hard time limits with `acks_on_timeout=False`, a worker killed by "
            "consumer_timeout) reach that limit quickly. A task that fails is not requeued: with "
            "`acks_on_failure=False` (or `acks_on_failure_or_timeout=False`) Celery rejects it without requeue, "
            "so it is dropped (or dead-lettered) at once.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `type`, `arguments`, `effective_policy_definition`, "
                "`message_stats.redeliver`; `rabbitmqctl list_queues name type arguments`.",
        fix="Add a dead-letter exchange (policy `dead-letter-exchange`, and `dead-letter-strategy: at-least-once` "
            "for quorum queues) bound to a queue you watch; fix the requeue loop that makes messages come back.",
        risk="Dead-lettered poison messages pile up in the DLQ: alert on it and replay only after a fix. "
             "at-least-once dead-lettering needs `overflow: reject-publish` on the source queue.",
        references=("https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling",
                    "https://github.com/rabbitmq/rabbitmq-server/pull/11937"),
    ),
)
def quorum_delivery_limit(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    config = snapshot.config
    for queue in scope_queues(state):
        if queue.type != "quorum":
            continue
        limit = queue.setting("delivery-limit")
        if limit is None:
            if state.version_tuple() >= (4, 0):
                text = f"delivery-limit {QUORUM_DEFAULT_DELIVERY_LIMIT} ({version_text(state)} default: not set)"
                value: Any = QUORUM_DEFAULT_DELIVERY_LIMIT
            else:
                continue
        else:
            value = limit.value
            text = str(limit)
        if isinstance(value, (int, float)) and value < 0:
            continue  # -1: unlimited (4.x)
        if queue.setting("dead-letter-exchange"):
            continue
        tasks = routed.get(queue.name, [])
        evidence = [f"quorum queue {queue.name!r}: {text}", "no dead-letter-exchange (argument or policy)",
                    f"{queue.total:,} messages ({queue.ready:,} ready, {queue.unacked:,} unacked); {tasks_text(tasks)}"]
        if queue.redeliver:
            evidence.append(f"message_stats.redeliver={queue.redeliver:,}: messages are already coming back")
        loops = _requeue_loops(config, tasks) if config is not None else []
        if loops:
            evidence.append(f"acks_late tasks whose message Celery requeues (each return counts): {preview(loops)}")
        evidence.append(f"a message returned more than {value} times is dropped")
        yield quorum_delivery_limit.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                            confidence=Confidence.OBSERVED, messages_at_risk=queue.total)


def _requeue_loops(config: Any, tasks: list[str]) -> list[str]:
    """'task (what requeues it)' for the tasks whose message the worker rejects with requeue (facts.acks.requeued_on:
    its pool process killed with reject_on_worker_lost, its hard time limit with acks_on_timeout False)."""
    loops = []
    for name in tasks:
        task = config.tasks.get(name)
        if task is None:
            continue
        limits = task_time_limits(config, task)
        why = {WORKER_LOST: "pool process killed: reject_on_worker_lost",
               HARD_TIME_LIMIT: f"hard time limit {human_seconds(limits.hard)}: acks_on_timeout=False"}
        ends = requeued_on(task_acks(config, task), limits)
        if ends:
            loops.append(f"{name} ({'; '.join(why[end] for end in ends)})")
    return loops


@check(
    id="CD310",
    slug="rabbitmq-queue-consumer-timeout",
    title="A queue's consumer timeout is shorter than its tasks hold their deliveries",
    category=Category.BROKER,
    needs=("rabbitmq", "config"),
    runbook=Runbook(
        symptom="Workers on one queue crash with `PRECONDITION_FAILED - delivery acknowledgement on channel N timed "
                "out`, restart, and the same tasks run again.",
        why="RabbitMQ closes a channel whose delivery stays unacknowledged longer than the consumer timeout: the "
            "queue's `x-consumer-timeout` argument or `consumer-timeout` policy (RabbitMQ 3.11.15+/3.12+), else "
            "the server's `consumer_timeout` (30 min by default). Celery holds a delivery unacked while an "
            "acks_late task runs and, whatever acks_late says, while an ETA/countdown task waits. The channel "
            "close kills the worker's consumer and every unacked message is redelivered: duplicates and a crash "
            "loop. Servers older than 3.11.15 ignore the per-queue value.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `arguments.x-consumer-timeout`, `effective_policy_definition`; "
                "`rabbitmq-diagnostics environment | grep consumer_timeout`; worker logs for "
                "`delivery acknowledgement on channel`.",
        fix="Raise the queue's consumer timeout (policy `consumer-timeout`, in ms) above the longest task time "
            "limit and countdown routed to it, or cap those tasks with a `time_limit` below it; schedule far-future "
            "work with beat instead of long countdowns; upgrade RabbitMQ if it ignores the per-queue value.",
        risk="A long timeout lets a truly stuck consumer hold messages longer before RabbitMQ reclaims them.",
        references=("https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout",
                    "https://github.com/celery/celery/issues/6760"),
    ),
)
def queue_consumer_timeout(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    delays = delays_by_queue(snapshot)
    server, server_text = server_consumer_timeout(snapshot)
    honoured = state.version_tuple() >= PER_QUEUE_CONSUMER_TIMEOUT_SINCE if state.version else True
    for queue in scope_queues(state):
        per_queue = queue.setting("consumer-timeout")
        if per_queue is None:
            continue  # the server-wide value: the static check (CD134) covers it
        per_queue_s = as_seconds(per_queue.value)
        per_queue_s = per_queue_s / 1000 if per_queue_s is not None else None
        effective = per_queue_s if honoured and per_queue_s else server
        needs = _holds(snapshot, routed.get(queue.name, []), delays.get(queue.name, []))
        over = sorted((n for n in needs if n[0] > effective), key=lambda n: -n[0])
        if not over:
            continue
        evidence = [f"queue {queue.describe()}: {per_queue} = {ms_text(per_queue.value)}"]
        if not honoured:
            evidence.append(f"{version_text(state)} ignores per-queue consumer timeouts (3.11.15+): {server_text} applies")
        evidence.append(f"effective timeout {human_seconds(effective)}; held longer by:")
        evidence += [text for _, text, _ in over[:6]]
        if queue.unacked:
            evidence.append(f"{queue.unacked:,} deliveries are unacked right now")
        if queue.redeliver:
            evidence.append(f"message_stats.redeliver={queue.redeliver:,}")
        evidence.append("past the timeout RabbitMQ closes the channel, the worker exits and the messages are redelivered")
        yield queue_consumer_timeout.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                             confidence=Confidence.OBSERVED, messages_at_risk=queue.unacked,
                                             location=over[0][2])


def _holds(snapshot: Snapshot, routed: list[str], delays: list) -> list[tuple[float, str, Optional[Location]]]:
    """(seconds, what, where) for everything that holds a delivery of a queue unacknowledged: acks_late tasks up to
    their time limit, literal countdowns/ETAs until they are due."""
    config = snapshot.config
    needs: list[tuple[float, str, Optional[Location]]] = []
    for task_name in routed:
        task = config.tasks.get(task_name)
        if task is None:
            continue
        limit = task_time_limits(config, task).hard
        if task_acks(config, task).acks_late and limit:
            needs.append((limit, f"acks_late task {task_name} time_limit {human_seconds(limit)}", task.location))
    for delay, task_name in delays:
        needs.append((delay.seconds, f"{delay.kind} {human_seconds(delay.seconds)} for {task_name} at "
                                     f"{delay.location}: {delay.code}", delay.location))
    return needs
