"""Live RabbitMQ checks of the server and the scan itself: node alarms, partitions and nodes down, the
management API, vhost limits, what --peek did (CD315-CD317, CD319-CD321)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.rabbitmq import EXCHANGES, NODES, OVERVIEW, POLICIES, QUEUE_DETAILS, VHOST_LIMITS

from ._util import preview
from .rabbitmq_common import MGMT, require, sample_text, version_text


@check(
    id="CD315",
    slug="rabbitmq-resource-alarm",
    title="A RabbitMQ memory or disk alarm is blocking publishers",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="`.delay()` hangs (no error, no timeout); web requests that send tasks time out; the management UI "
                "shows connections as blocked.",
        why="When a node crosses its memory high watermark or free disk drops below `disk_free_limit`, RabbitMQ "
            "blocks every publishing connection in the cluster until the alarm clears. kombu installs no "
            "`connection.blocked` handler, so a Celery producer waits indefinitely; callers with their own timeout "
            "give up and the task is never sent.",
        confirm="`rabbitmq-diagnostics alarms`; `rabbitmqctl status` (memory, disk); "
                f"`{MGMT}/nodes` → `mem_alarm`, `disk_free_alarm`, `mem_used/mem_limit`, `disk_free/disk_free_limit`.",
        fix="Drain the backlog (start consumers for the largest queues), free disk, or raise the limits "
            "(`vm_memory_high_watermark`, `disk_free_limit`) if the host has room.",
        risk="Raising the watermark too far lets the node run out of memory and crash, losing transient messages.",
        references=("https://www.rabbitmq.com/docs/alarms", "https://github.com/celery/celery/issues/2689"),
    ),
)
def resource_alarm(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, NODES):
        return
    for node in state.nodes:
        if node.mem_alarm:
            use = f"{node.mem_used:,} of {node.mem_limit:,} bytes" if node.mem_used and node.mem_limit else "over the limit"
            yield resource_alarm.finding(subject=f"server:{node.name}",
                                         evidence=[f"node {node.name}: mem_alarm=true (memory {use})",
                                                   "every publishing connection in the cluster is blocked: .delay() hangs"],
                                         confidence=Confidence.OBSERVED)
        if node.disk_free_alarm:
            disk = (f"{node.disk_free:,} bytes free, limit {node.disk_free_limit:,}"
                    if node.disk_free is not None and node.disk_free_limit is not None else "below the limit")
            yield resource_alarm.finding(subject=f"server:{node.name}",
                                         evidence=[f"node {node.name}: disk_free_alarm=true ({disk})",
                                                   "every publishing connection in the cluster is blocked: .delay() hangs"],
                                         confidence=Confidence.OBSERVED)


@check(
    id="CD316",
    slug="rabbitmq-network-partition",
    title="The RabbitMQ cluster has a network partition",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Tasks published on one side never reach workers on the other; after healing, queues lose the "
                "messages of the losing side.",
        why="In a partition each side carries on alone. Depending on `cluster_partition_handling`, one side "
            "pauses, or both keep going and the losing side's changes (messages in classic queues) are thrown away "
            "when the partition is healed.",
        confirm="`rabbitmq-diagnostics cluster_status`; `rabbitmqctl list_queues name node state`; "
                f"`{MGMT}/nodes` → `partitions`.",
        fix="Restore the network, then restart the nodes of the losing side (see the partitions guide); use "
            "quorum queues and `pause_minority` so a minority stops instead of diverging.",
        risk="Restarting the losing side discards what it accepted during the partition.",
        references=("https://www.rabbitmq.com/docs/partitions",),
    ),
)
def network_partition(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, NODES):
        return
    for node in state.nodes:
        if node.partitions:
            on_node = [q for q in state.queues.values() if q.node == node.name]
            yield network_partition.finding(
                subject=f"server:{node.name}",
                evidence=[f"node {node.name} reports a partition with {', '.join(node.partitions)}",
                          f"{len(on_node)} queues of this vhost are led by it"],
                confidence=Confidence.OBSERVED, messages_at_risk=sum(q.total for q in on_node) or None)


@check(
    id="CD317",
    slug="rabbitmq-node-down",
    title="A RabbitMQ cluster node is down",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Some queues are unavailable (`state: down`), workers bound to them reconnect in a loop, publishes "
                "to them are lost.",
        why="A classic queue lives on one node: while that node is down the queue is unavailable and messages "
            "routed to it are dropped (or the publish fails). Quorum queues survive as long as a majority of their "
            "members run.",
        confirm="`rabbitmq-diagnostics cluster_status`; `rabbitmqctl list_queues name node state`; "
                f"`{MGMT}/nodes` → `running`.",
        fix="Bring the node back; move critical task queues to quorum queues so one node's loss does not stop them.",
        risk="Forgetting a node (`rabbitmqctl forget_cluster_node`) deletes the classic queues it hosted.",
        references=("https://www.rabbitmq.com/docs/clustering",),
    ),
)
def node_down(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, NODES):
        return
    for node in state.nodes:
        if node.running is False:
            on_node = [q for q in state.queues.values() if q.node == node.name]
            down = [q.name for q in state.queues.values() if q.state in ("down", "crashed")]
            yield node_down.finding(
                subject=f"server:{node.name}",
                evidence=[f"node {node.name}: running=false",
                          f"{len(on_node)} queues of vhost {state.vhost!r} are on it"
                          + (f"; queues down: {preview(down)}" if down else "")],
                confidence=Confidence.OBSERVED, messages_at_risk=sum(q.total for q in on_node) or None)


# Checks that cannot run (or run only partly) without the management API.
API_CHECKS = {
    "CD302": QUEUE_DETAILS, "CD304": "exchanges/bindings (only missing exchanges are checked)", "CD305": OVERVIEW,
    "CD306": EXCHANGES, "CD307": QUEUE_DETAILS, "CD308": QUEUE_DETAILS, "CD309": QUEUE_DETAILS,
    "CD310": QUEUE_DETAILS, "CD311": QUEUE_DETAILS, "CD312": QUEUE_DETAILS, "CD313": QUEUE_DETAILS,
    "CD314": POLICIES, "CD315": NODES, "CD316": NODES, "CD317": NODES, "CD318": QUEUE_DETAILS, "CD320": VHOST_LIMITS,
}


@check(
    id="CD319",
    slug="rabbitmq-management-api-unavailable",
    title="The RabbitMQ management API could not be read: several RabbitMQ checks could not run",
    category=Category.BROKER,
    needs=("rabbitmq",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="The scan reports queue depths and consumers only, and says which RabbitMQ checks did not run.",
        why="Queue arguments, policies, unacked counts, bindings, node alarms and drop counters come only from "
            "the management HTTP API. Without it the scan falls back to passive declares over AMQP, which tell "
            "only whether a queue exists, its ready messages and its consumers. Causes of loss that live in the "
            "other data stay unseen.",
        confirm="`curl -s -u USER:PASS http://HOST:15672/api/overview`; `rabbitmq-plugins list | grep management`; "
                "the user needs the `monitoring` (or `management`) tag to read it.",
        fix="Enable the plugin (`rabbitmq-plugins enable rabbitmq_management`), give the scan's user the "
            "`monitoring` tag, or point `--management-url` at the right host/port/path prefix; then scan again.",
        risk="The `monitoring` tag lets the user read every vhost's metadata (not messages).",
        references=("https://www.rabbitmq.com/docs/management", "https://www.rabbitmq.com/docs/management#permissions"),
    ),
)
def api_unavailable(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None:
        return
    if state.api_reachable:
        partial = sorted(state.missing.items())
        if not partial:
            return
        blocked = sorted(cid for cid, need in API_CHECKS.items() if need in state.missing)
        yield api_unavailable.finding(
            subject=f"server:{state.management_url or 'management API'}",
            title="Part of the RabbitMQ management API could not be read: some RabbitMQ checks could not run",
            evidence=[f"{name}: {reason}" for name, reason in partial]
                     + ([f"checks that could not run: {', '.join(blocked)}"] if blocked else []),
            confidence=Confidence.OBSERVED)
        return
    evidence = [f"management API: {state.api_error}",
                f"fell back to passive declares over AMQP ({version_text(state)}):"]
    evidence += list(state.passive) or ["no app queue to probe"]
    evidence.append("checks that could not run without the API: "
                    + ", ".join(f"{cid} (partly)" if cid == "CD304" else cid for cid in sorted(API_CHECKS)))
    evidence.append("missing data: " + ", ".join(sorted(state.missing)))
    yield api_unavailable.finding(subject=f"server:{state.management_url or 'management API'}", evidence=evidence,
                                  confidence=Confidence.OBSERVED)


@check(
    id="CD320",
    slug="rabbitmq-vhost-limit",
    title="A vhost limit stops the app from declaring queues or connecting",
    category=Category.BROKER,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Workers fail to start with `NOT_ALLOWED ... queue limit in vhost` or connections are refused; "
                "tasks to new queues are lost.",
        why="`max-queues` caps the queues in a vhost: at the cap every new declare is refused, including the "
            "queues `task_create_missing_queues` and workers declare. `max-connections: 0` refuses every client.",
        confirm=f"`rabbitmqctl list_vhost_limits`; `{MGMT}/vhost-limits/%2F`; `rabbitmqctl list_queues | wc -l`.",
        fix="Delete leftover queues (old reply/temporary queues) or raise the limit "
            "(`rabbitmqctl set_vhost_limits -p VHOST '{\"max-queues\": N}'`).",
        risk="A higher cap lets a runaway client create more queues and use more memory.",
        references=("https://www.rabbitmq.com/docs/vhosts#limits",),
    ),
)
def vhost_limit(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, VHOST_LIMITS):
        return
    max_queues = state.vhost_limits.get("max-queues")
    if (isinstance(max_queues, int) and max_queues >= 0 and state.queue_count is not None
            and state.queue_count >= max_queues):
        yield vhost_limit.finding(
            subject=f"server:vhost {state.vhost}",
            evidence=[f"vhost {state.vhost!r}: max-queues={max_queues}, {state.queue_count} queues exist",
                      f"missing app queues that cannot be declared: {preview(state.missing_queues) or 'none'}",
                      "every new queue declaration is refused (NOT_ALLOWED)"],
            confidence=Confidence.OBSERVED)
    if state.vhost_limits.get("max-connections") == 0:
        yield vhost_limit.finding(subject=f"server:vhost {state.vhost}",
                                  evidence=[f"vhost {state.vhost!r}: max-connections=0", "no client can connect to this vhost"],
                                  confidence=Confidence.OBSERVED)


@check(
    id="CD321",
    slug="rabbitmq-peek-side-effects",
    title="--peek read messages with basic.get and requeued them (they are now marked redelivered)",
    category=Category.BROKER,
    needs=("rabbitmq",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="After a `scan --peek`, workers see `redelivered=True` on some messages and their order changed.",
        why="Reading a message over AMQP and putting it back (basic.get, then basic.nack requeue) is the only way "
            "to see its headers without the management API's own get (which does the same). RabbitMQ marks every "
            "requeued message redelivered, may put it back at another position, and on quorum queues counts the "
            "read toward the delivery limit. The scan reports it so nobody mistakes it for a worker problem.",
        confirm="The finding lists the queues and how many messages were read.",
        fix="Nothing to fix; scan without `--peek` when message order or the redelivered flag matters.",
        risk="None.",
        references=("https://www.rabbitmq.com/docs/confirms#automatic-requeue",),
    ),
)
def peek_side_effects(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not state.peeked:
        return
    evidence = list(state.warnings)
    for name, sample in sorted(state.peek.items()):
        if sample.error:
            evidence.append(f"queue {name!r}: not read ({sample.error})")
        elif sample.read:
            text = sample_text(state, name)
            if sample.unsafe:
                text = f"{text}; unsafe serializers: {', '.join(f'{k} ({v})' for k, v in sample.unsafe.items())}"
            if sample.malformed:
                text = (f"{text}; {sample.malformed} malformed (not Celery task messages a worker can run: "
                        "it rejects them, they are lost)")
            evidence.append(f"queue {name!r}: {text}")
    yield peek_side_effects.finding(subject=f"server:vhost {state.vhost}", evidence=evidence,
                                    confidence=Confidence.OBSERVED)
