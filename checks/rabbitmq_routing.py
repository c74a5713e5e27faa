"""Live RabbitMQ checks of routing: where the app's publishes really go, and what RabbitMQ dropped
(CD303-CD306)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from celery_doctor.facts.routing import route_exchange
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.rabbitmq import BINDINGS, EXCHANGES, OVERVIEW, POLICIES, RabbitState

from ._util import plural, preview
from .rabbitmq_common import MGMT, REF_CELERY_AMQP, anchor, confirms_on, count_text, require, routed_tasks


@dataclass
class _Publish:
    """Where the app's publishes for some tasks really go (Celery's rules, see celery/app/amqp.py)."""

    exchange: str  # '' is the default exchange
    routing_key: str
    queue: Optional[str]  # the queue the app means to reach
    tasks: list[str] = field(default_factory=list)


def _publishes(snapshot: Snapshot) -> list[_Publish]:
    config = snapshot.config
    if config is None:
        return []
    declared = {q.name: q for q in config.queues}
    found: dict[tuple, _Publish] = {}
    for task, route in sorted(config.routes.items()):
        if route.error:
            continue
        if route.queue:
            queue = declared.get(route.queue)
            if queue is None or not queue.exchange or queue.exchange_type == "direct":
                # A direct exchange is turned into a default-exchange publish with the queue's name as key.
                key = ("", route.queue, route.queue)
            else:
                key = (queue.exchange, queue.routing_key or config.value("task_default_routing_key") or "", route.queue)
        elif route_exchange(route):
            key = (route.exchange, route.routing_key or "", None)
        else:
            continue
        found.setdefault(key, _Publish(*key)).tasks.append(task)
    return list(found.values())


def _topic_match(pattern: str, key: str) -> bool:
    words, keys = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(keys)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(keys) + 1))
        if j == len(keys):
            return False
        return (words[i] == "*" or words[i] == keys[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _binding_matches(exchange_type: Optional[str], binding_key: str, routing_key: str) -> Optional[bool]:
    """True/False when the exchange type's rule is known, None when it cannot be told (headers, plugins)."""
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "topic":
        return _topic_match(binding_key, routing_key)
    if exchange_type == "fanout":
        return True
    return None


@check(
    id="CD303",
    slug="rabbitmq-route-to-missing-queue",
    title="Tasks are routed to a RabbitMQ queue that does not exist",
    category=Category.ROUTING,
    needs=("rabbitmq", "config"),
    runbook=Runbook(
        symptom="Tasks routed to one queue vanish; RabbitMQ's `drop_unroutable` counter rises; no error on the "
                "producer.",
        why="Celery publishes a direct route through the default exchange with the queue's name as routing key, "
            "without the `mandatory` flag. If the queue does not exist, RabbitMQ drops the message and tells no "
            "one (publisher confirms still ack it). A producer declares the queue on first use when "
            "`task_create_missing_queues` is on, but a long-running producer caches that declaration: once the "
            "queue is deleted (by hand, `auto_delete`, `x-expires`, a broker reset without definitions) every "
            "later publish is lost until a worker or a fresh producer declares it again.",
        confirm=f"`rabbitmqctl list_queues name | grep QUEUE`; `{MGMT}/queues/%2F/QUEUE` (404); "
                f"`{MGMT}/overview` → `message_stats.drop_unroutable`.",
        fix="Declare the queue durably (start a worker that consumes it, or load definitions at broker start), "
            "remove `x-expires`/`auto_delete` from task queues, and restart long-running producers after a broker "
            "reset.",
        risk="Declaring a queue with arguments other than the ones the app declares makes the app's own declare "
             "fail with PRECONDITION_FAILED: declare it exactly as `task_queues` says.",
        references=("https://github.com/celery/celery/issues/2595", REF_CELERY_AMQP),
    ),
)
def route_to_missing_queue(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None:
        return
    routed = routed_tasks(snapshot)
    declared = set(snapshot.config.queue_names())
    drops = state.vhost_message_stats.get("drop_unroutable") or state.message_stats.get("drop_unroutable")
    for name in state.missing_queues:
        tasks = routed.get(name, [])
        if not tasks:
            continue
        evidence = [f"queue {name!r} does not exist in vhost {state.vhost!r} "
                    f"({'passive declare: 404 NOT_FOUND' if not state.api_reachable else 'not in the management API'})",
                    f"{plural(len(tasks), 'task')} routed there: {preview(tasks)}"
                    + (" (declared in task_queues)" if name in declared else " (not in task_queues)")]
        if drops:
            evidence.append(f"the vhost's drop_unroutable counter is {drops:,}")
        evidence.append("producers declare a queue once per process (kombu's declare cache): one that declared it "
                        "before it disappeared now publishes into nothing, dropped without an error (Celery does not "
                        "publish as mandatory); a new producer recreates it, with no consumer until a worker declares it")
        yield route_to_missing_queue.finding(subject=f"queue:{name}", evidence=evidence,
                                             confidence=Confidence.OBSERVED, location=anchor(snapshot, "task_routes"))


@check(
    id="CD304",
    slug="rabbitmq-route-unroutable",
    title="Tasks are published to an exchange that is missing or has no binding for their routing key",
    category=Category.ROUTING,
    needs=("rabbitmq", "config"),
    runbook=Runbook(
        symptom="Tasks routed through a named (topic/fanout) exchange never arrive in any queue; the exchange's "
                "`publish_in` grows but `publish_out` does not.",
        why="A message published to an exchange goes to the queues whose bindings match its routing key. With no "
            "matching binding it is unroutable and RabbitMQ drops it silently: Celery does not publish as "
            "mandatory, and publisher confirms ack unroutable messages. Publishing to an exchange that does not "
            "exist is a channel error (404); without publisher confirms the producer never learns of it.",
        confirm=f"`rabbitmqctl list_bindings source_name routing_key destination_name`; "
                f"`{MGMT}/exchanges/%2F/EXCHANGE/bindings/source`; `{MGMT}/exchanges/%2F/EXCHANGE` → "
                "`message_stats.publish_in` vs `publish_out`.",
        fix="Bind the intended queue with a key that matches (declare it in `task_queues` with that exchange and "
            "routing key and let a worker declare it), or route by queue name; add an alternate exchange to catch "
            "what still does not match.",
        risk="A broader binding (e.g. `#`) can make the queue receive messages meant for other consumers.",
        references=("https://www.rabbitmq.com/docs/exchanges", "https://www.rabbitmq.com/docs/ae", REF_CELERY_AMQP),
    ),
)
def route_unroutable(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None:
        return
    for pub in _publishes(snapshot):
        if not pub.exchange:
            continue
        tasks = f"{plural(len(pub.tasks), 'task')}: {preview(pub.tasks)}"
        target = f"exchange {pub.exchange!r} with routing key {pub.routing_key!r}"
        if pub.exchange in state.missing_exchanges:
            yield route_unroutable.finding(
                subject=f"exchange:{pub.exchange}",
                evidence=[f"{tasks} publish to {target}", f"exchange {pub.exchange!r} does not exist in vhost {state.vhost!r}",
                          "publishing to a missing exchange closes the channel (404 NOT_FOUND); "
                          + ("publisher confirms are on, so the publish raises" if confirms_on(snapshot)
                             else "without publisher confirms the producer never sees it")],
                confidence=Confidence.OBSERVED, location=anchor(snapshot, "task_routes"))
        elif state.has(EXCHANGES, BINDINGS) and state.exchange(pub.exchange) is not None:
            yield from _unbound(snapshot, state, pub, tasks, target)


def _unbound(snapshot: Snapshot, state: RabbitState, pub: _Publish, tasks: str, target: str):
    """CD304 findings for publishes to an existing exchange: no binding matches their key, or none leads to the
    queue they are meant for."""
    exchange = state.exchange(pub.exchange)
    bindings = state.bindings_from(pub.exchange)
    verdicts = [(b, _binding_matches(exchange.type, b.routing_key, pub.routing_key)) for b in bindings]
    if any(v is None for _, v in verdicts):
        return  # headers or plugin exchange: cannot tell
    matched = [b for b, v in verdicts if v]
    stats = ""
    if exchange.publish_in is not None:
        stats = f"; exchange stats: publish_in={exchange.publish_in:,}, publish_out={exchange.publish_out or 0:,}"
    at_risk = exchange.publish_in if exchange.publish_in and not exchange.publish_out else None
    if not matched:
        keys = preview(repr(b.routing_key) for b in bindings) if bindings else "none"
        yield route_unroutable.finding(
            subject=f"exchange:{pub.exchange}",
            evidence=[f"{tasks} publish to {target}",
                      f"{exchange.label} has no binding matching {pub.routing_key!r} (binding keys: {keys}){stats}",
                      "these messages are unroutable and dropped, even with publisher confirms"],
            confidence=Confidence.OBSERVED, messages_at_risk=at_risk, location=anchor(snapshot, "task_queues"))
    elif pub.queue and not any(b.destination == pub.queue or b.destination_type == "exchange" for b in matched):
        where = preview(f"{b.destination_type} {b.destination!r}" for b in matched)
        yield route_unroutable.finding(
            subject=f"queue:{pub.queue}",
            evidence=[f"{tasks} are meant for queue {pub.queue!r} and publish to {target}",
                      f"{exchange.label} routes {pub.routing_key!r} to {where}, not to {pub.queue!r}{stats}",
                      f"queue {pub.queue!r} is not bound for this key: its consumers never see these tasks"],
            confidence=Confidence.OBSERVED, location=anchor(snapshot, "task_queues"))


@check(
    id="CD305",
    slug="rabbitmq-unroutable-drops",
    title="RabbitMQ has dropped unroutable messages",
    category=Category.ROUTING,
    needs=("rabbitmq",),
    runbook=Runbook(
        symptom="Some tasks are never received by any worker, with no error anywhere.",
        why="RabbitMQ counts messages it could not route to any queue (`drop_unroutable`; `return_unroutable` "
            "for mandatory publishes) and, per exchange, messages in (`publish_in`) and routed out "
            "(`publish_out`). Celery never publishes as mandatory, so each unroutable task message is simply gone: "
            "a route to a deleted queue, a routing key with no binding, a queue that expired.",
        confirm=f"`{MGMT}/vhosts/%2F` → `message_stats.drop_unroutable`; `{MGMT}/exchanges/%2F` → "
                "`message_stats.publish_in/publish_out` per exchange; `rabbitmqctl list_bindings`.",
        fix="Find the route with CD303/CD304 and fix it; set an alternate exchange (policy `alternate-exchange`) "
            "on the task exchanges so unroutable messages land in a queue you can inspect.",
        risk="An alternate exchange keeps messages that used to vanish: its queue needs a consumer or a length "
             "limit, or it grows without bound.",
        references=("https://www.rabbitmq.com/docs/ae", "https://github.com/celery/celery/issues/2595"),
    ),
)
def unroutable_drops(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not require(state, OVERVIEW):
        return
    stats = state.vhost_message_stats or state.message_stats
    drop = stats.get("drop_unroutable") or 0
    ret = stats.get("return_unroutable") or 0
    if drop or ret:
        evidence = [f"vhost {state.vhost!r} message_stats: drop_unroutable={drop:,}, return_unroutable={ret:,} "
                    "(since the node started or stats were reset)"]
        if state.missing_queues:
            evidence.append(f"app queues that do not exist: {preview(state.missing_queues)}")
        evidence.append("each of these messages reached no queue and was discarded")
        yield unroutable_drops.finding(subject=f"server:vhost {state.vhost}", evidence=evidence,
                                       confidence=Confidence.OBSERVED, messages_at_risk=drop + ret)
    if not state.has(EXCHANGES):
        return
    for name, exchange in sorted(state.exchanges.items()):
        if not name or exchange.internal:
            continue
        if exchange.publish_in and not exchange.publish_out:
            bound = len(state.bindings_from(name)) if state.has(BINDINGS) else None
            evidence = [f"{exchange.label}: publish_in={exchange.publish_in:,}, publish_out=0",
                        f"bindings from it: {count_text(bound)}",
                        "every message published to it was unroutable and dropped"]
            impact = None
            if name in state.app_exchanges:
                evidence.insert(1, "the app publishes to this exchange")
            elif state.app_queues:
                evidence.insert(1, "not an exchange this app's routes use (another producer, or an old deploy)")
                impact = Impact.MEDIUM
            yield unroutable_drops.finding(subject=f"exchange:{name}", evidence=evidence, impact=impact,
                                           confidence=Confidence.OBSERVED, messages_at_risk=exchange.publish_in)


@check(
    id="CD306",
    slug="rabbitmq-no-alternate-exchange",
    title="An exchange the app publishes to has no alternate exchange",
    category=Category.ROUTING,
    needs=("rabbitmq",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="When a binding goes missing, tasks routed through this exchange disappear without a trace.",
        why="Without an alternate exchange, a message no binding matches is discarded. An alternate exchange "
            "(argument `alternate-exchange` or the policy key of the same name) receives those messages instead, "
            "so a routing mistake strands tasks in an inspectable queue rather than losing them.",
        confirm=f"`{MGMT}/exchanges/%2F/EXCHANGE` → `arguments`, `policy`; `rabbitmqctl list_policies`.",
        fix="`rabbitmqctl set_policy AE '^EXCHANGE$' '{\"alternate-exchange\":\"unrouted\"}' --apply-to exchanges` "
            "and declare a fanout exchange `unrouted` bound to a durable queue that someone watches.",
        risk="The alternate exchange's queue collects every unroutable message: give it a length limit or a "
             "consumer, and alert on its depth.",
        references=("https://www.rabbitmq.com/docs/ae",),
    ),
)
def no_alternate_exchange(snapshot: Snapshot):
    state = snapshot.rabbitmq
    if state is None or not state.app_exchanges or not require(state, EXCHANGES, POLICIES):
        return
    policies = {p.name: p for p in state.policies}
    for name in state.app_exchanges:
        exchange = state.exchange(name)
        if exchange is None:
            continue
        if exchange.arguments.get("alternate-exchange"):
            continue
        policy = policies.get(exchange.policy or "")
        if policy and policy.definition.get("alternate-exchange"):
            continue
        evidence = [f"{exchange.label}: no `alternate-exchange` argument"
                    + (f", policy {exchange.policy!r} has none either" if exchange.policy else ", no policy applies"),
                    "a message no binding matches is discarded instead of being kept"]
        at_risk = None
        if exchange.publish_in and not exchange.publish_out:
            at_risk = exchange.publish_in
            evidence.insert(1, f"publish_in={exchange.publish_in:,}, publish_out=0: messages are already unroutable")
        yield no_alternate_exchange.finding(subject=f"exchange:{name}", evidence=evidence,
                                            confidence=Confidence.OBSERVED, messages_at_risk=at_risk)
