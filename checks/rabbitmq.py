"""Live RabbitMQ checks (CD301-CD349): read the rabbitmq snapshot part (management API, or passive declares).

Every check is a pure function of the snapshot. A check whose data the scan could not read (the management
API was down, or the user may not read /api/nodes) does not pretend to pass: it raises `SkipCheck`,
and CD319 lists it in any case.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from celery_doctor import model
from celery_doctor.parts.rabbitmq import (BINDINGS, EXCHANGES, NODES, OVERVIEW, POLICIES, QUEUE_DETAILS, VHOST_LIMITS,
                                          RabbitState, scope_queues)
from celery_doctor.model import Category, Confidence, Impact, Location, Runbook, Snapshot, check
from celery_doctor.pyast import Delay, literal_delays
from celery_doctor.settings import RABBITMQ_DEFAULT_CONSUMER_TIMEOUT, as_seconds, human_seconds

from ._util import plural, preview

LONG_UNACKED_S = 600  # unacked deliveries and no queue activity for this long are "long"
QUORUM_DEFAULT_DELIVERY_LIMIT = 20  # RabbitMQ 4.0+
PER_QUEUE_CONSUMER_TIMEOUT_SINCE = (3, 11, 15)
MIRRORING_REMOVED_IN = (4, 0)
# Arguments RabbitMQ compares when a queue is declared again: a difference is 406 PRECONDITION_FAILED.
DECLARE_ARGS = ("x-queue-type", "x-max-priority", "x-max-length", "x-max-length-bytes", "x-overflow",
                "x-message-ttl", "x-expires", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                "x-dead-letter-strategy", "x-delivery-limit", "x-single-active-consumer", "x-queue-mode",
                "x-queue-version", "x-queue-master-locator", "x-queue-leader-locator", "x-max-age",
                "x-quorum-initial-group-size", "x-initial-cluster-size", "x-max-in-memory-length",
                "x-max-in-memory-bytes", "x-stream-max-segment-size-bytes")
MGMT = "curl -s -u USER:PASS http://HOST:15672/api"
REF_CELERY_AMQP = "https://docs.celeryq.dev/en/stable/userguide/routing.html"


# --------------------------------------------------------------------------- helpers


def _require(state: RabbitState, *data: str) -> bool:
    """True when the data is there; otherwise the check is skipped with the reason."""
    if state.has(*data):
        return True
    raise model.SkipCheck(state.why_missing(*data))


def _routed(snapshot: Snapshot) -> dict[str, list[str]]:
    config = snapshot.config
    if config is None:
        return {}
    try:
        return config.routed_queues()
    except Exception:  # noqa: BLE001
        return {}


def _tasks_text(tasks: Iterable[str]) -> str:
    tasks = list(tasks)
    return f"tasks routed here: {preview(tasks)}" if tasks else "no task of the app is routed here"


def _ms(value: Any) -> str:
    seconds = as_seconds(value)
    if seconds is None:
        return repr(value)
    return f"{value} ms ({human_seconds(seconds / 1000)})"


def _count(value: Optional[int]) -> str:
    return "unknown" if value is None else f"{value:,}"


def _anchor(snapshot: Snapshot, setting: str = "task_queues") -> Optional[Location]:
    config = snapshot.config
    return config.located(setting) if config is not None else None


def _confirms_on(snapshot: Snapshot) -> bool:
    config = snapshot.config
    return bool(config and config.transport_options.get("confirm_publish"))


def _version_text(state: RabbitState) -> str:
    return f"RabbitMQ {state.version}" if state.version else "RabbitMQ (version unknown)"


def _sample_text(state: RabbitState, queue: str) -> Optional[str]:
    sample = state.peek.get(queue)
    if not sample or not sample.read:
        return None
    tasks = ", ".join(f"{name} ({count})" for name, count in list(sample.task_counts.items())[:6]) or "no Celery task headers"
    return f"--peek sample of {sample.read}: {tasks}"


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
        elif route.exchange:
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


def _delay_task(delay: Delay, config: Any, by_short: Mapping[str, str]) -> Optional[str]:
    """Which registered task a literal delay is for, when the code says so."""
    if delay.kind in ("retry countdown", "default_retry_delay"):
        best = None
        for task in config.tasks.values():
            loc = task.location
            if loc and loc.path == delay.location.path and (loc.line or 0) <= (delay.location.line or 0):
                if best is None or (loc.line or 0) > (best.location.line or 0):
                    best = task
        return best.name if best else None
    match = re.search(r"send_task\(\s*['\"]([^'\"]+)['\"]", delay.code)
    if match:
        return match.group(1)
    match = re.match(r"^([\w.]+?)\.(apply_async|apply_async_on_commit|s|si|signature|set|retry)\(", delay.code)
    if match:
        return by_short.get(match.group(1).split(".")[-1])
    return None


def _delays_by_queue(snapshot: Snapshot) -> dict[str, list[tuple[Delay, str]]]:
    """queue -> [(delay, task)] for the literal countdowns/ETAs whose task (and so queue) is known."""
    config = snapshot.config
    if config is None or snapshot.source is None:
        return {}
    shorts: dict[str, list[str]] = {}
    for name in config.tasks:
        shorts.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    by_short = {short: names[0] for short, names in shorts.items() if len(names) == 1}
    out: dict[str, list[tuple[Delay, str]]] = {}
    for delay in literal_delays(snapshot.source):
        task = _delay_task(delay, config, by_short)
        route = config.routes.get(task) if task else None
        if route is not None and route.queue:
            out.setdefault(route.queue, []).append((delay, task))
    return out


def _time_limit(snapshot: Snapshot, task_name: str) -> Optional[float]:
    config = snapshot.config
    task = config.tasks.get(task_name)
    if task is None:
        return None
    return as_seconds(task.time_limit) or as_seconds(config.value("task_time_limit"))


def _server_consumer_timeout(snapshot: Snapshot) -> tuple[float, str]:
    given = as_seconds(snapshot.options.get("consumer_timeout"))
    if given:
        return given, f"server consumer_timeout={human_seconds(given)} (given with --consumer-timeout)"
    default = float(RABBITMQ_DEFAULT_CONSUMER_TIMEOUT)
    return default, (f"server consumer_timeout assumed {human_seconds(default)} (RabbitMQ's default; the API does "
                     "not show it, pass --consumer-timeout SECONDS)")


# --------------------------------------------------------------------------- queues: depth, consumers, acks


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
    routed = _routed(snapshot)
    for queue in scope_queues(state):
        if queue.consumers != 0 or queue.ready <= 0:
            continue
        evidence = [f"queue {queue.describe()} in vhost {state.vhost!r}: {queue.ready:,} ready messages, "
                    f"0 consumers ({'passive declare' if queue.source == 'passive' else 'management API'})",
                    _tasks_text(routed.get(queue.name, []))]
        if queue.idle_since:
            evidence.append(f"idle since {queue.idle_since}"
                            + (f" ({human_seconds(round(snapshot.now - queue.idle_since_epoch))} before the scan)"
                               if queue.idle_since_epoch and snapshot.now > queue.idle_since_epoch else ""))
        sample = _sample_text(state, queue.name)
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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    timeout, timeout_text = _server_consumer_timeout(snapshot)
    for queue in scope_queues(state):
        if queue.unacked <= 0 or queue.idle_since_epoch is None:
            continue
        idle = snapshot.now - queue.idle_since_epoch
        if idle < LONG_UNACKED_S:
            continue
        per_queue = queue.setting("consumer-timeout")
        evidence = [f"queue {queue.describe()}: {queue.unacked:,} unacknowledged deliveries, "
                    f"{_count(queue.consumers)} consumers",
                    f"no delivery or ack on the queue for {human_seconds(round(idle))} (idle since {queue.idle_since}): "
                    "every unacked delivery is at least that old",
                    (f"queue consumer timeout: {per_queue}" if per_queue else timeout_text)]
        if queue.redeliver:
            evidence.append(f"message_stats.redeliver={queue.redeliver:,}: deliveries already came back before")
        evidence.append("when the channel closes these deliveries are redelivered: the tasks run again")
        yield long_unacked.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                   messages_at_risk=queue.unacked)


# --------------------------------------------------------------------------- routing


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
    routed = _routed(snapshot)
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
                                             confidence=Confidence.OBSERVED, location=_anchor(snapshot, "task_routes"))


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
                          + ("publisher confirms are on, so the publish raises" if _confirms_on(snapshot)
                             else "without publisher confirms the producer never sees it")],
                confidence=Confidence.OBSERVED, location=_anchor(snapshot, "task_routes"))
            continue
        if not state.has(EXCHANGES, BINDINGS):
            continue
        exchange = state.exchange(pub.exchange)
        if exchange is None:
            continue
        bindings = state.bindings_from(pub.exchange)
        verdicts = [(b, _binding_matches(exchange.type, b.routing_key, pub.routing_key)) for b in bindings]
        if any(v is None for _, v in verdicts):
            continue  # headers or plugin exchange: cannot tell
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
                confidence=Confidence.OBSERVED, messages_at_risk=at_risk, location=_anchor(snapshot, "task_queues"))
        elif pub.queue and not any(b.destination == pub.queue or b.destination_type == "exchange" for b in matched):
            where = preview(f"{b.destination_type} {b.destination!r}" for b in matched)
            yield route_unroutable.finding(
                subject=f"queue:{pub.queue}",
                evidence=[f"{tasks} are meant for queue {pub.queue!r} and publish to {target}",
                          f"{exchange.label} routes {pub.routing_key!r} to {where}, not to {pub.queue!r}{stats}",
                          f"queue {pub.queue!r} is not bound for this key: its consumers never see these tasks"],
                confidence=Confidence.OBSERVED, location=_anchor(snapshot, "task_queues"))


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
    if state is None or not _require(state, OVERVIEW):
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
                        f"bindings from it: {_count(bound)}",
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
    if state is None or not state.app_exchanges or not _require(state, EXCHANGES, POLICIES):
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


# --------------------------------------------------------------------------- queue arguments and policies


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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    confirms = _confirms_on(snapshot)
    routed = _routed(snapshot)
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
        evidence.append(_tasks_text(routed.get(queue.name, [])))
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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    routed = _routed(snapshot)
    for queue in scope_queues(state):
        ttl = queue.setting("message-ttl")
        dlx = queue.setting("dead-letter-exchange")
        tasks = _tasks_text(routed.get(queue.name, []))
        if ttl is not None and not dlx:
            yield ttl_expiry.finding(
                subject=f"queue:{queue.name}",
                evidence=[f"queue {queue.describe()}: {ttl} = {_ms(ttl.value)}",
                          "no dead-letter-exchange (argument or policy)",
                          f"{queue.ready:,} ready messages; {tasks}",
                          "a message waiting longer than the TTL is discarded before any worker sees it"],
                confidence=Confidence.OBSERVED, messages_at_risk=queue.ready)
        expires = queue.setting("expires")
        if expires is not None:
            yield ttl_expiry.finding(
                subject=f"queue:{queue.name}",
                evidence=[f"queue {queue.describe()}: {expires} = {_ms(expires.value)}",
                          f"{queue.total:,} messages, {_count(queue.consumers)} consumers; {tasks}",
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
            "consumer_timeout) reach that limit quickly.",
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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    routed = _routed(snapshot)
    config = snapshot.config
    for queue in scope_queues(state):
        if queue.type != "quorum":
            continue
        limit = queue.setting("delivery-limit")
        if limit is None:
            if state.version_tuple() >= (4, 0):
                text = f"delivery-limit {QUORUM_DEFAULT_DELIVERY_LIMIT} ({_version_text(state)} default: not set)"
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
                    f"{queue.total:,} messages ({queue.ready:,} ready, {queue.unacked:,} unacked); {_tasks_text(tasks)}"]
        if queue.redeliver:
            evidence.append(f"message_stats.redeliver={queue.redeliver:,}: messages are already coming back")
        loops = []
        if config is not None:
            for name in tasks:
                task = config.tasks.get(name)
                if task and task.acks_late and (task.reject_on_worker_lost or task.acks_on_failure_or_timeout is False):
                    loops.append(name)
        if loops:
            evidence.append(f"acks_late tasks that requeue on failure/worker loss: {preview(loops)}")
        evidence.append(f"a message returned more than {value} times is dropped")
        yield quorum_delivery_limit.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                            confidence=Confidence.OBSERVED, messages_at_risk=queue.total)


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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    config = snapshot.config
    routed = _routed(snapshot)
    delays = _delays_by_queue(snapshot)
    server, server_text = _server_consumer_timeout(snapshot)
    honoured = state.version_tuple() >= PER_QUEUE_CONSUMER_TIMEOUT_SINCE if state.version else True
    for queue in scope_queues(state):
        per_queue = queue.setting("consumer-timeout")
        if per_queue is None:
            continue  # the server-wide value: the static check (CD134) covers it
        per_queue_s = as_seconds(per_queue.value)
        per_queue_s = per_queue_s / 1000 if per_queue_s is not None else None
        effective = per_queue_s if honoured and per_queue_s else server
        needs: list[tuple[float, str, Optional[Location]]] = []
        for task_name in routed.get(queue.name, []):
            task = config.tasks.get(task_name)
            limit = _time_limit(snapshot, task_name)
            if task and task.acks_late and limit:
                needs.append((limit, f"acks_late task {task_name} time_limit {human_seconds(limit)}", task.location))
        for delay, task_name in delays.get(queue.name, []):
            needs.append((delay.seconds, f"{delay.kind} {human_seconds(delay.seconds)} for {task_name} at "
                                         f"{delay.location}: {delay.code}", delay.location))
        over = sorted((n for n in needs if n[0] > effective), key=lambda n: -n[0])
        if not over:
            continue
        evidence = [f"queue {queue.describe()}: {per_queue} = {_ms(per_queue.value)}"]
        if not honoured:
            evidence.append(f"{_version_text(state)} ignores per-queue consumer timeouts (3.11.15+): {server_text} applies")
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
    if state is None or not _require(state, QUEUE_DETAILS, EXCHANGES, BINDINGS):
        return
    config = snapshot.config
    routed = _routed(snapshot)
    delays = _delays_by_queue(snapshot)
    declared = {q.name: q for q in config.queues}
    celery_version = tuple(int(p) for p in re.findall(r"\d+", config.celery_version or "")[:2]) or (0,)
    for queue in scope_queues(state):
        if queue.type != "quorum":
            continue
        uses = [f"{d.kind} {human_seconds(d.seconds)} for {t} at {d.location}" for d, t in delays.get(queue.name, [])]
        for name in routed.get(queue.name, []):
            task = config.tasks.get(name)
            if task and task.autoretry_for:
                uses.append(f"{name} retries automatically (countdown {human_seconds(as_seconds(task.default_retry_delay))})")
        if not uses:
            continue
        info = declared.get(queue.name)
        reasons = []
        if celery_version < (5, 5):
            reasons.append(f"Celery {config.celery_version} has no native delayed delivery (5.5+)")
        app_quorum = (info.arguments.get("x-queue-type") == "quorum") if info else (
            queue.name == config.default_queue and not config.queues and config.value("task_default_queue_type") == "quorum")
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
        if not reasons:
            continue
        evidence = [f"queue {queue.name!r} is a quorum queue on the broker; {queue.ready:,} ready, "
                    f"{queue.unacked:,} unacked, {_count(queue.consumers)} consumers",
                    f"delayed tasks routed here: {preview(uses, 4)}",
                    "native delayed delivery is not in effect: " + "; ".join(reasons),
                    "held ETA messages fill the worker's prefetch window (no global QoS on quorum queues): it stops "
                    "fetching until they are due"]
        yield quorum_eta.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                 messages_at_risk=queue.ready, location=_anchor(snapshot, "task_queues"))


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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    config = snapshot.config
    routed = _routed(snapshot)
    expected: dict[str, tuple[Mapping[str, Any], Optional[bool], Optional[bool], str]] = {}
    for info in config.queues:
        args = dict(info.arguments)
        if info.max_priority is not None and "x-max-priority" not in args:
            args["x-max-priority"] = info.max_priority
        expected[info.name] = (args, info.durable, info.auto_delete, "task_queues")
    if not config.queues:
        default = config.default_queue
        args = {"x-queue-type": "quorum"} if config.value("task_default_queue_type") == "quorum" else {}
        expected[default] = (args, True, False, "the default queue Celery declares")
    for name, (args, durable, auto_delete, origin) in sorted(expected.items()):
        queue = state.queue(name)
        if queue is None or queue.source != "api":
            continue
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
        if not diffs:
            continue
        evidence = [f"queue {queue.describe()} differs from {origin}: {'; '.join(diffs)}",
                    f"{queue.ready:,} ready, {_count(queue.consumers)} consumers; {_tasks_text(routed.get(name, []))}",
                    "a worker (or producer) declaring it gets 406 PRECONDITION_FAILED inequivalent arg and cannot "
                    "consume (or publish)"]
        if queue.consumers:
            evidence.append("the current consumers declared it before the change; the next restart or deploy fails")
        yield queue_argument_drift.finding(subject=f"queue:{name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                           messages_at_risk=queue.ready, location=_anchor(snapshot, "task_queues"))


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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    routed = _routed(snapshot)
    for queue in scope_queues(state):
        tasks = _tasks_text(routed.get(queue.name, []))
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
    if state is None or not _require(state, POLICIES):
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
            evidence.append(f"{_version_text(state)} removed classic mirroring: these queues are not replicated, "
                            "a node loss takes them and their messages")
        else:
            evidence.append(f"{_version_text(state)}: classic mirroring is deprecated and is removed in 4.0; an "
                            "upgrade silently leaves these queues unreplicated")
        yield classic_mirroring.finding(subject=f"server:policy {policy.name}", evidence=evidence,
                                        confidence=Confidence.OBSERVED, messages_at_risk=messages,
                                        impact=Impact.HIGH if removed else Impact.MEDIUM)


# --------------------------------------------------------------------------- nodes


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
    if state is None or not _require(state, NODES):
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
    if state is None or not _require(state, NODES):
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
    if state is None or not _require(state, NODES):
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


# --------------------------------------------------------------------------- redeliveries, limits, the scan itself


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
    if state is None or not _require(state, QUEUE_DETAILS):
        return
    routed = _routed(snapshot)
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
        evidence += [_tasks_text(routed.get(queue.name, [])),
                     "a redelivered task runs again from the start: duplicates unless the task is idempotent"]
        yield redeliveries.finding(subject=f"queue:{queue.name}", evidence=evidence, confidence=Confidence.OBSERVED,
                                   messages_at_risk=count or (sample.redelivered if sample else None))


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
                f"fell back to passive declares over AMQP ({_version_text(state)}):"]
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
    if state is None or not _require(state, VHOST_LIMITS):
        return
    max_queues = state.vhost_limits.get("max-queues")
    if isinstance(max_queues, int) and max_queues >= 0 and state.queue_count is not None:
        if state.queue_count >= max_queues:
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
            text = _sample_text(state, name)
            if sample.unsafe:
                text = f"{text}; unsafe serializers: {', '.join(f'{k} ({v})' for k, v in sample.unsafe.items())}"
            if sample.malformed:
                text = (f"{text}; {sample.malformed} malformed (not Celery task messages a worker can run: "
                        "it rejects them, they are lost)")
            evidence.append(f"queue {name!r}: {text}")
    yield peek_side_effects.finding(subject=f"server:vhost {state.vhost}", evidence=evidence,
                                    confidence=Confidence.OBSERVED)


CHECKS = [backlog_no_consumers, long_unacked, route_to_missing_queue, route_unroutable, unroutable_drops,
          no_alternate_exchange, max_length_overflow, ttl_expiry, quorum_delivery_limit, queue_consumer_timeout,
          quorum_eta, queue_argument_drift, non_durable, classic_mirroring, resource_alarm, network_partition,
          node_down, redeliveries, api_unavailable, vhost_limit, peek_side_effects]
