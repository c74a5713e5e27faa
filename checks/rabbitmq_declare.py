"""Live RabbitMQ checks of how queues are declared and kept: quorum queues without delayed delivery,
declarations that differ from the broker's, durability, classic mirroring (CD311-CD314)."""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from celery_doctor.facts.routing import declared_queue_arguments
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.rabbitmq import (
    BINDINGS,
    EXCHANGES,
    POLICIES,
    QUEUE_DETAILS,
    RabbitQueue,
    RabbitState,
    scope_queues,
)
from celery_doctor.settings import as_seconds, human_seconds

from ._util import plural, preview
from .rabbitmq_common import MGMT, anchor, count_text, delays_by_queue, require, routed_tasks, tasks_text, version_text

MIRRORING_REMOVED_IN = (4, 0)
# Arguments RabbitMQ compares when a queue is declared again: a difference is 406 PRECONDITION_FAILED.
DECLARE_ARGS = ("x-queue-type", "x-max-priority", "x-max-length", "x-max-length-bytes", "x-overflow",
                "x-message-ttl", "x-expires", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                "x-dead-letter-strategy", "x-delivery-limit", "x-single-active-consumer", "x-queue-mode",
                "x-queue-version", "x-queue-master-locator", "x-queue-leader-locator", "x-max-age",
                "x-quorum-initial-group-size", "x-initial-cluster-size", "x-max-in-memory-length",
                "x-max-in-memory-bytes", "x-stream-max-segment-size-bytes")


@check(
    id="CD311",
    slug="rabbitmq-quorum-eta-without-delayed-delivery",
    title="ETA/countdown tasks go to a quorum queue without native delayed delivery",
    category=Category.WORKER,
    needs=("rabbitmq", "config"),
    runbook=Runbook(
        symptom="Workers on a quorum queue stop taking new tasks while they hold many ETA/countdown/retry tasks; "
                "the queue grows though workers look idle.",
        why="On quorum queues Celery cannot use global QoS, so ETA tasks held in the worker fill its prefetch "
            "window and block it until they are due. Celery 5.5+ avoids this with native delayed delivery "
            "(exchanges `celery_delayed_0..27` and `celery_delayed_delivery`), but only when the app declares the "
            "queue as quorum (`x-queue-type`), the queue's exchange is topic (not direct), and a worker has "
            "set up and bound the delay exchanges.",
        confirm=f"`{MGMT}/exchanges/%2F/celery_delayed_27`; `{MGMT}/exchanges/%2F/celery_delayed_delivery/bindings/source`; "
                "`celery -A proj inspect scheduled`; worker log line `Direct exchanges are not supported with "
                "native delayed delivery`.",
        fix="Declare the queue in `task_queues` with `queue_arguments={'x-queue-type': 'quorum'}` and a topic "
            "exchange, run Celery 5.5+ workers so they create the delay exchanges, or keep ETA-heavy tasks on a "
            "classic queue.",
        risk="Changing a queue's exchange type or arguments means a new queue (RabbitMQ refuses to redeclare with "
             "different arguments): drain and migrate the old one.",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#quorum-queues",
                    "https://github.com/celery/celery/pull/9207"),
    ),
)
def quorum_eta(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS, EXCHANGES, BINDINGS):
        return
    config = snapshot.config
    routed = routed_tasks(snapshot)
    delays = delays_by_queue(snapshot)
    declared = {q.name: q for q in config.queues}
    celery_version = tuple(int(p) for p in re.findall(r"\d+", config.celery_version or "")[:2]) or (0,)
    for queue in scope_queues(state):
        if queue.type != "quorum":
            continue
        uses = _delayed_uses(config, delays.get(queue.name, []), routed.get(queue.name, []))
        if not uses:
            continue
        reasons = _no_native_delay(state, config, queue, declared.get(queue.name), celery_version)
        if not reasons:
            continue
        evidence = [f"queue {queue.name!r} is a quorum queue on the broker; {queue.ready:,} ready, "
                    f"{queue.unacked:,} unacked, {count_text(queue.consumers)} consumers",
                    f"delayed tasks routed here: {preview(uses, 4)}",
                    "native delayed delivery is not in effect: " + "; ".join(reasons),
                    "held ETA messages fill the worker's prefetch window (no global QoS on quorum queues): it stops "
                    "fetching until they are due"]
        yield quorum_eta.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                 messages_at_risk=queue.ready, location=anchor(snapshot, "task_queues"))


def _delayed_uses(config: Any, delays: list, routed: list[str]) -> list[str]:
    """What sends delayed tasks to a queue: literal countdowns/ETAs in the code, and tasks that retry by themselves."""
    uses = [f"{d.kind} {human_seconds(d.seconds)} for {t} at {d.location}" for d, t in delays]
    for name in routed:
        task = config.tasks.get(name)
        if task and task.autoretry_for:
            uses.append(f"{name} retries automatically (countdown {human_seconds(as_seconds(task.default_retry_delay))})")
    return uses


def _no_native_delay(state: RabbitState, config: Any, queue: RabbitQueue, info: Any,
                     celery_version: tuple[int, ...]) -> list[str]:
    """Why Celery does not use native delayed delivery for this quorum queue (empty when it does)."""
    reasons = []
    if celery_version < (5, 5):
        reasons.append(f"Celery {config.celery_version} has no native delayed delivery (5.5+)")
    app_quorum = declared_queue_arguments(config).get(queue.name, {}).get("x-queue-type") == "quorum"
    if not app_quorum:
        reasons.append("the app does not declare it with x-queue-type=quorum, so Celery does not use native "
                       "delayed delivery for it")
    exchange_type = info.exchange_type if info else "direct"
    if exchange_type == "direct":
        named = info.exchange if info and info.exchange else None
        reasons.append((f"its exchange {named!r} is direct" if named else "it is reached through a direct exchange")
                       + ": native delayed delivery needs a topic exchange")
    if "celery_delayed_27" not in state.exchanges or "celery_delayed_delivery" not in state.exchanges:
        reasons.append("the delay exchanges celery_delayed_27 / celery_delayed_delivery do not exist in this vhost")
    elif info and info.exchange and not any(b.destination == info.exchange and b.destination_type == "exchange"
                                           for b in state.bindings_from("celery_delayed_delivery")):
        reasons.append(f"exchange {info.exchange!r} is not bound to celery_delayed_delivery")
    return reasons


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bytes):
        a = a.decode("utf-8", "replace")
    if isinstance(b, bytes):
        b = b.decode("utf-8", "replace")
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


@check(
    id="CD312",
    slug="rabbitmq-queue-argument-drift",
    title="The app declares a queue differently from the one on the broker (PRECONDITION_FAILED)",
    category=Category.ROUTING,
    needs=("rabbitmq", "config"),
    runbook=Runbook(
        symptom="Workers fail at start-up or reconnect with `PRECONDITION_FAILED - inequivalent arg 'x-...' for "
                "queue` and consume nothing; producers that declare the queue fail to publish.",
        why="A queue's type, durability and arguments are fixed when it is created. Declaring it again with any "
            "difference (switching to quorum, adding `x-max-priority`, a TTL, `durable`) is refused with 406 "
            "PRECONDITION_FAILED and the channel is closed. Celery declares its queues on every worker start and "
            "on publish, so after a config change the old queue blocks the new code.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `type`, `durable`, `arguments`; compare with `task_queues` "
                "(`celery -A proj shell -c \"print(app.amqp.queues)\"`).",
        fix="Make the app declare exactly what exists, or migrate: create the new queue under a new name, route "
            "tasks there, drain the old one, delete it. Prefer policies for TTL/length/DLX, which can change "
            "without redeclaring.",
        risk="Deleting the old queue deletes its messages: drain or shovel them first.",
        references=("https://www.rabbitmq.com/docs/queues#property-equivalence", "https://www.rabbitmq.com/docs/parameters#policies"),
    ),
)
def queue_argument_drift(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    for name, (args, durable, auto_delete, origin) in sorted(_declared(snapshot.config).items()):
        queue = state.queue(name)
        if queue is None or queue.source != "api":
            continue
        diffs = _declaration_diffs(queue, args, durable, auto_delete)
        if not diffs:
            continue
        evidence = [f"queue {queue.describe()} differs from {origin}: {'; '.join(diffs)}",
                    f"{queue.ready:,} ready, {count_text(queue.consumers)} consumers; {tasks_text(routed.get(name, []))}",
                    "a worker (or producer) declaring it gets 406 PRECONDITION_FAILED inequivalent arg and cannot "
                    "consume (or publish)"]
        if queue.consumers:
            evidence.append("the current consumers declared it before the change; the next restart or deploy fails")
        yield queue_argument_drift.finding(subject=f"queue:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                           messages_at_risk=queue.ready, location=anchor(snapshot, "task_queues"))


def _declared(config: Any) -> dict[str, tuple[Mapping[str, Any], Optional[bool], Optional[bool], str]]:
    """queue -> (arguments, durable, auto_delete, where the declaration comes from), as the app declares them."""
    arguments = declared_queue_arguments(config)  # the default queue alone when task_queues is not set
    expected: dict[str, tuple[Mapping[str, Any], Optional[bool], Optional[bool], str]] = {}
    for info in config.queues:
        expected[info.name] = (arguments[info.name], info.durable, info.auto_delete, "task_queues")
    if not config.queues:
        expected[config.default_queue] = (arguments[config.default_queue], True, False,
                                          "the default queue Celery declares")
    return expected


def _declaration_diffs(queue: RabbitQueue, args: Mapping[str, Any], durable: Optional[bool],
                       auto_delete: Optional[bool]) -> list[str]:
    """How a declaration differs from the queue on the broker, in what RabbitMQ compares (empty: equivalent)."""
    diffs = []
    if durable is not None and queue.durable is not None and durable != queue.durable:
        diffs.append(f"durable: app {durable}, broker {queue.durable}")
    if auto_delete is not None and queue.auto_delete is not None and auto_delete != queue.auto_delete:
        diffs.append(f"auto_delete: app {auto_delete}, broker {queue.auto_delete}")
    for key in DECLARE_ARGS:
        mine, theirs = args.get(key), queue.arguments.get(key)
        if mine is None and theirs is None:
            continue
        if mine is not None and theirs is not None and _same(mine, theirs):
            continue
        if key == "x-queue-type" and mine in (None, "classic") and theirs in (None, "classic"):
            continue
        diffs.append(f"{key}: app {'none' if mine is None else repr(mine)}, broker "
                     f"{'none' if theirs is None else repr(theirs)}")
    return diffs


@check(
    id="CD313",
    slug="rabbitmq-non-durable-or-transient",
    title="Task messages would not survive a RabbitMQ restart (non-durable queue or transient messages)",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="After a broker restart or node failover, queues are empty or gone and queued tasks never run.",
        why="A non-durable (or auto-delete, or exclusive) queue is deleted on restart (auto-delete: when its last "
            "consumer leaves), with its messages. In a durable classic queue, messages published with "
            "delivery_mode 1 (transient; `task_default_delivery_mode='transient'` or an exchange/queue set to it) "
            "are not written to disk and are lost on restart.",
        confirm=f"`{MGMT}/queues/%2F/QUEUE` → `durable`, `auto_delete`, `messages`, `messages_persistent`; "
                "`rabbitmqctl list_queues name durable auto_delete messages messages_persistent`.",
        fix="Declare task queues durable (kombu's default) and publish persistently (`task_default_delivery_mode="
            "'persistent'`, the default); recreate a non-durable queue as durable (new name, migrate).",
        risk="Persistent messages cost a disk write each: a little more latency and I/O at high rates.",
        references=("https://www.rabbitmq.com/docs/queues#durability", "https://www.rabbitmq.com/docs/persistence-conf"),
    ),
)
def non_durable(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, QUEUE_DETAILS):
        return
    routed = routed_tasks(snapshot)
    for queue in scope_queues(state):
        tasks = tasks_text(routed.get(queue.name, []))
        problems = []
        if queue.durable is False:
            problems.append("durable=false: deleted with its messages when the broker restarts")
        if queue.auto_delete:
            problems.append("auto_delete=true: deleted when its last consumer goes away")
        if problems:
            yield non_durable.finding(subject=f"queue:{queue.name}",
                                      evidence=[f"queue {queue.describe()}: " + "; ".join(problems),
                                                f"{queue.total:,} messages; {tasks}"],
                                      confidence=Confidence.OBSERVED, messages_at_risk=queue.total)
            continue
        transient = None
        if queue.type == "classic" and queue.messages is not None and queue.messages_persistent is not None:
            transient = queue.messages - queue.messages_persistent
        sample = state.peek.get(queue.name)
        evidence = []
        if transient and transient > 0:
            evidence.append(f"durable classic queue {queue.name!r}: {transient:,} of {queue.messages:,} messages are "
                            f"transient (messages_persistent={queue.messages_persistent:,})")
        if sample and sample.transient:
            evidence.append(f"--peek: {sample.transient} of {sample.read} sampled messages have delivery_mode 1")
        if evidence:
            evidence += [tasks, "transient messages are not written to disk: a broker restart loses them"]
            at_risk = transient if transient and transient > 0 else sample.transient if sample else None
            yield non_durable.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                      confidence=Confidence.OBSERVED, messages_at_risk=at_risk)


@check(
    id="CD314",
    slug="rabbitmq-classic-mirroring-policy",
    title="A policy relies on classic queue mirroring (ha-*), removed in RabbitMQ 4.0",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="After a node failure (or after upgrading to RabbitMQ 4), queues that were thought to be "
                "replicated are unavailable or lost with their node.",
        why="Classic mirrored queues (`ha-mode`, `ha-params`, `ha-sync-mode` policy keys) were deprecated in 3.x "
            "and removed in 4.0: there the keys do nothing and the queues live on one node only. Celery's old "
            "`task_queue_ha_policy` never worked on RabbitMQ 3 and is gone.",
        confirm="`rabbitmqctl list_policies`; `rabbitmqctl list_queues name policy type node`; "
                f"`{MGMT}/policies/%2F`.",
        fix="Migrate the task queues to quorum queues (new queue names or a blue-green migration; "
            "`x-queue-type: quorum` in `task_queues`) and delete the ha-* policy.",
        risk="Quorum queues behave differently: no global QoS (ETA tasks, see CD311), a delivery limit, no "
             "priorities before 4.0; test the workers against them first.",
        references=("https://www.rabbitmq.com/docs/ha", "https://www.rabbitmq.com/docs/migrate-mcq-to-qq"),
    ),
)
def classic_mirroring(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, POLICIES):
        return
    removed = state.version_tuple() >= MIRRORING_REMOVED_IN
    for policy in state.all_policies():
        keys = sorted(k for k in policy.definition if k.startswith("ha-"))
        if not keys:
            continue
        matched = [q for q in state.queues.values() if q.policy == policy.name or q.operator_policy == policy.name]
        messages = sum(q.total for q in matched)
        definition = ", ".join(f"{k}={policy.definition[k]!r}" for k in keys)
        evidence = [f"{policy.label} (pattern {policy.pattern!r}, apply-to {policy.apply_to}): {definition}",
                    (f"applied to {plural(len(matched), 'queue')} of vhost {state.vhost!r}: "
                     f"{preview(q.name for q in matched)}; {messages:,} messages in them" if matched
                     else f"applied to no queue of vhost {state.vhost!r} right now")]
        if removed:
            evidence.append(f"{version_text(state)} removed classic mirroring: these queues are not replicated, "
                            "a node loss takes them and their messages")
        else:
            evidence.append(f"{version_text(state)}: classic mirroring is deprecated and is removed in 4.0; an "
                            "upgrade silently leaves these queues unreplicated")
        yield classic_mirroring.finding(subject=f"server:policy {policy.name}", evidence=evidence,
                                        confidence=Confidence.OBSERVED, messages_at_risk=messages,
                                        impact=Impact.HIGH if removed else Impact.MEDIUM)
