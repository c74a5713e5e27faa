"""Static checks for the Redis transport: the visibility timeout, exchange routes, unsupported setups."""
from __future__ import annotations

from urllib.parse import urlsplit

from celery_doctor.facts.acks import all_task_acks
from celery_doctor.facts.limits import global_time_limits, task_time_limits
from celery_doctor.facts.routing import route_exchange, rule_exchange
from celery_doctor.facts.timeouts import describe_visibility_timeout, redis_visibility_timeout
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.pyast import Delay, literal_delays
from celery_doctor.settings import as_seconds, human_seconds

from ._util import plural, preview, setting_location
from .config_context import impact_line

VT_SUBJECT = "setting:broker_transport_options.visibility_timeout"


def visibility_timeout(config) -> tuple[float, str]:
    return redis_visibility_timeout(config)[0], describe_visibility_timeout(config)


def _is_redis(snapshot: Snapshot) -> bool:
    return snapshot.config.transport == "redis"


@check(
    id="CD110",
    slug="redis-visibility-timeout-shorter-than-eta",
    title="ETA/countdown longer than Redis' visibility timeout: the task is redelivered and runs several times",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="A task scheduled with a countdown/ETA (or a retry with a long countdown) runs two, three or more "
                "times; the worker log shows the same task id received again every visibility_timeout seconds.",
        why="On Redis, a worker holds ETA/countdown tasks unacknowledged in memory until they are due. Kombu indexes "
            "unacked messages by delivery time, and any consumer restores those older than `visibility_timeout` "
            "to the queue. A delay longer than the visibility timeout therefore gets the message re-delivered, and "
            "each copy is executed when its ETA arrives. Source: kombu/transport/redis.py, QoS.append (scores the "
            "delivery tag with `time()` at delivery) and QoS.restore_visible (restores tags scored before `time() - "
            "visibility_timeout`); reproduced: vt=10 s, countdown=30 s gave 3 executions of one task id.",
        confirm="`redis-cli -n <db> ZRANGE unacked_index 0 -1 WITHSCORES` (scores are delivery times); "
                "`celery -A proj inspect scheduled` shows the same task id on several workers or several times; "
                "compare with `broker_transport_options['visibility_timeout']`.",
        fix="Raise `broker_transport_options = {'visibility_timeout': N}` above the longest countdown/ETA/retry delay "
            "(set the same value on every producer and worker: the shortest one wins), or schedule far-future work "
            "with beat or a database instead of long countdowns.",
        risk="A longer visibility timeout delays the recovery of tasks whose worker crashed: they wait that long "
             "before being redelivered (see CD112).",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout",
                    "https://github.com/celery/kombu/issues/337"),
    ),
)
def redis_vt_eta(snapshot: Snapshot):
    if not _is_redis(snapshot):
        return
    config = snapshot.config
    vt, vt_text = visibility_timeout(config)
    delays = _delays_over(snapshot, vt)
    beat_delays = [(e.name, as_seconds(e.options.get("countdown"))) for e in config.beat]
    beat_delays = [(n, s) for n, s in beat_delays if s and s > vt]
    if not delays and not beat_delays:
        return
    evidence = [vt_text]
    for delay in delays[:8]:
        where = f" at {delay.location}" if delay.location else ""
        evidence.append(f"{delay.kind} {human_seconds(delay.seconds)}{where}: {delay.code}")
    for name, seconds in beat_delays:
        evidence.append(f"beat entry {name!r}: options.countdown {human_seconds(seconds)}")
    if len(delays) > 8:
        evidence.append(f"... and {len(delays) - 8} more delays above the visibility timeout")
    evidence.append("each such task is restored to the queue every visibility_timeout and executed once per copy")
    first = delays[0].location if delays else None
    yield redis_vt_eta.finding(subject=VT_SUBJECT, evidence=evidence, location=first)


def _delays_over(snapshot: Snapshot, vt: float) -> list[Delay]:
    """Literal countdowns/ETAs in the source, and default_retry_delay the app's tasks set, longer than `vt`."""
    delays = [d for d in literal_delays(snapshot.source) if d.seconds > vt and d.kind != "default_retry_delay"]
    for task in snapshot.config.tasks.values():
        delay = as_seconds(task.default_retry_delay)
        if delay and delay > vt and "default_retry_delay" in task.options:
            delays.append(Delay("default_retry_delay", delay, task.location, f"{task.name}: default_retry_delay={delay:g}"))
    return delays


@check(
    id="CD111",
    slug="redis-visibility-timeout-shorter-than-runtime",
    title="acks_late tasks may run longer than Redis' visibility timeout: they are redelivered while still running",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Long acks_late tasks run twice in parallel on two workers, roughly visibility_timeout seconds apart.",
        why="An acks_late task stays in kombu's `unacked` hash until it finishes. When it has been unacked longer than "
            "`visibility_timeout`, any consumer's restore sweep puts it back on the queue, and another worker starts "
            "it while the first is still running. A task without a hard time limit can run for any length of time. Source: kombu/transport/redis.py, "
            "QoS.append and QoS.restore_visible (delivery time against the visibility timeout, running or not); the "
            "ack comes after the run for acks_late (celery/worker/request.py, Request.on_success).",
        confirm="`celery -A proj inspect active` (look at `time_start` of acks_late tasks vs the visibility timeout); "
                "`redis-cli -n <db> HLEN unacked`; the same task id in two workers' logs.",
        fix="Give acks_late tasks a hard `time_limit` below the visibility timeout, or raise the visibility timeout above "
            "the longest run; `worker_deduplicate_successful_tasks = True` skips redeliveries of tasks that already "
            "succeeded (needs a persistent result backend).",
        risk="A hard time limit kills tasks that legitimately run long; a longer visibility timeout delays recovery "
             "after crashes.",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#caveats",),
    ),
)
def redis_vt_runtime(snapshot: Snapshot):
    if not _is_redis(snapshot):
        return
    config = snapshot.config
    vt, vt_text = visibility_timeout(config)
    unbounded, too_long = _runs_against_vt(config, vt)
    if too_long:
        yield redis_vt_runtime.finding(
            subject=VT_SUBJECT,
            evidence=[vt_text, f"{plural(len(too_long), 'acks_late task')} may run longer: {preview(too_long)}",
                      "a run longer than the visibility timeout is restored to the queue and started again elsewhere"],
            location=setting_location(config, "broker_transport_options", "task_time_limit"),
        )
    if unbounded:
        yield redis_vt_runtime.finding(
            subject=VT_SUBJECT,
            confidence=Confidence.INFERRED,
            impact=Impact.MEDIUM,
            evidence=[vt_text, "task_time_limit is not set" if config.value("task_time_limit") is None else
                      f"{config.setting('task_time_limit').describe()}: no limit",
                      f"{plural(len(unbounded), 'acks_late task')} without a hard time limit: {preview(unbounded)}"
                      if config.tasks else "no task is registered in the app as loaded: task_acks_late=True and "
                      "the global limits decide for every task",
                      "any run longer than the visibility timeout is redelivered and runs twice",
                      impact_line(Impact.MEDIUM, "a duplicate, and only for runs longer than the visibility timeout; "
                                                 "nothing in the configuration says runs are that long")],
            location=setting_location(config, "task_acks_late", "broker_transport_options"),
        )


def _runs_against_vt(config, vt: float) -> tuple[list[str], list[str]]:
    """acks_late tasks without a hard time limit, and those whose limit exceeds the visibility timeout. With no task
    registered (the app as loaded imports none), the global settings stand for every task, as in CD101."""
    if not config.tasks:
        if not config.value("task_acks_late"):
            return [], []
        limit = global_time_limits(config).hard
        if limit is None:
            return ["every task (task_acks_late=True)"], []
        return ([], [f"every task (task_time_limit {human_seconds(limit)})"]) if limit > vt else ([], [])
    unbounded, too_long = [], []
    for acks in all_task_acks(config):
        if not acks.acks_late:
            continue
        limit = task_time_limits(config, config.tasks[acks.task]).hard
        if limit is None:
            unbounded.append(acks.task)
        elif limit > vt:
            too_long.append(f"{acks.task} (time_limit {human_seconds(limit)})")
    return unbounded, too_long


@check(
    id="CD112",
    slug="redis-long-visibility-timeout-delays-recovery",
    title="A very long Redis visibility timeout strands tasks of crashed workers for hours",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="After a worker was OOM-killed, SIGKILLed or its host died, its tasks \"disappear\" and only run hours "
                "later, or appear lost.",
        why="Tasks a dead worker held (running acks_late tasks and every prefetched message) sit in kombu's `unacked` "
            "hash until a live consumer's restore sweep finds them older than `visibility_timeout`. With a timeout of "
            "many hours, that is how long they are stranded.",
        confirm="`redis-cli -n <db> HLEN unacked` and `ZRANGE unacked_index 0 -1 WITHSCORES` (delivery epochs) after "
                "a crash; compare the oldest score with now.",
        fix="Keep the visibility timeout just above your longest task run or ETA (see CD110/CD111) rather than "
            "days; lower `worker_prefetch_multiplier` so a crash strands fewer messages.",
        risk="A visibility timeout shorter than a task's run or ETA makes Redis redeliver it while it is still held: "
             "duplicates. Measure the longest run first.",
    ),
)
def redis_long_vt(snapshot: Snapshot):
    if not _is_redis(snapshot):
        return
    config = snapshot.config
    vt, vt_text = visibility_timeout(config)
    if vt < 6 * 3600:
        return
    yield redis_long_vt.finding(
        subject=VT_SUBJECT,
        confidence=Confidence.INFERRED,
        evidence=[vt_text, f"after a worker crash its unacked and prefetched messages wait {human_seconds(vt)} "
                           f"(plus the restore sweep period) before any worker sees them again"],
        location=setting_location(config, "broker_transport_options"),
    )


@check(
    id="CD113",
    slug="redis-route-exchange-without-queue",
    title="Route gives an exchange and routing key but no queue: on Redis it can publish to no queue, silently",
    category=Category.ROUTING,
    needs=("config",),
    runbook=Runbook(
        symptom="`.delay()` succeeds, no worker ever receives the task, and no Redis list grows.",
        why="Celery turns routes that name a queue into direct publishes to that queue. A route that gives only "
            "`exchange` + `routing_key` is resolved by kombu through the binding set `_kombu.binding.<exchange>`, "
            "which exists only after some consumer declared a queue bound to it. If the set is missing (no worker "
            "started yet, Redis restarted without persistence, key evicted), the message is delivered to zero queues "
            "and kombu (5.2+) raises nothing. Source: kombu/transport/redis.py, Channel.get_table (a missing set "
            "returns `[]`), and celery/app/amqp.py, AMQP.send_task_message (only a queue route becomes a direct "
            "publish to that queue).",
        confirm="`redis-cli -n <db> SMEMBERS _kombu.binding.<exchange>`: empty or missing means messages routed "
                "through that exchange go nowhere; `celery-doctor scan` checks it live.",
        fix="Route by queue: `task_routes = {'proj.tasks.x': {'queue': 'reports'}}` (optionally with `task_queues` "
            "declaring the Queue with its exchange and routing key).",
        risk="None for delivery; if other consumers rely on the exchange's fan-out semantics, declare those queues in "
             "`task_queues` so routing by queue still reaches them.",
        references=("https://github.com/celery/kombu/issues/429",),
    ),
)
def redis_exchange_route(snapshot: Snapshot):
    if not _is_redis(snapshot):
        return
    config = snapshot.config
    seen = set()
    for rule in config.route_rules:
        exchange = rule_exchange(rule)
        if exchange:
            tasks = [name for name in config.tasks if rule.matches(name)]
            seen.update(tasks)
            yield redis_exchange_route.finding(
                subject=f"route:{rule.pattern}",
                evidence=[f"task_routes[{rule.pattern!r}] = {dict(rule.options)!r}",
                          f"tasks sent this way: {preview(tasks) if tasks else 'none registered (pattern matches no task)'}",
                          f"publishes resolve through _kombu.binding.{exchange}; without it they reach no queue"],
                location=setting_location(config, "task_routes"),
            )
    for name, route in sorted(config.routes.items()):
        if name not in seen and route_exchange(route):
            yield redis_exchange_route.finding(
                subject=f"task:{name}",
                evidence=[f"the app's router sends {name} to exchange {route.exchange!r} with routing key "
                          f"{route.routing_key!r} and no queue",
                          f"publishes resolve through _kombu.binding.{route.exchange}; without it they reach no queue"],
            )


@check(
    id="CD114",
    slug="redis-cluster-broker",
    title="Redis Cluster as a broker: kombu has no cluster transport",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Publishing or consuming fails intermittently with `CROSSSLOT` or `MOVED` errors, or some queues "
                "are never consumed.",
        why="kombu's Redis transport issues multi-key commands (BRPOP over the priority sub-queues, pipelines over "
            "unacked and the queue) that Redis Cluster rejects when the keys hash to different slots. There is no "
            "cluster-aware transport in kombu. Source: kombu/transport/redis.py, Channel._brpop_start "
            "(one BRPOP over every queue key) and QoS.append/restore_visible (pipelines over unacked and the queue).",
        confirm="`redis-cli -h <host> INFO cluster` shows `cluster_enabled:1`.",
        fix="Use a standalone Redis (with a replica and Sentinel for failover: `sentinel://` URLs) or RabbitMQ as the "
            "broker.",
        risk="Moving brokers needs a drain: stop producers, let workers empty the old broker's queues, then switch.",
        references=("https://github.com/celery/celery/issues/2852",),
    ),
)
def redis_cluster(snapshot: Snapshot):
    config = snapshot.config
    url = config.broker_url or ""
    options = config.transport_options
    reasons = []
    scheme = urlsplit(url.split(";")[0]).scheme.lower() if "://" in url else ""
    if "cluster" in scheme:
        reasons.append(f"broker URL scheme {scheme!r}")
    if options.get("cluster") or options.get("redis_cluster"):
        reasons.append("broker_transport_options asks for cluster mode")
    netloc = urlsplit(url.split(";")[0]).netloc if "://" in url else ""
    if _is_redis(snapshot) and "," in netloc:
        reasons.append(f"several comma-separated hosts in one URL ({netloc.split('@')[-1]}): cluster seed list")
    if reasons:
        yield redis_cluster.finding(subject="setting:broker_url", evidence=[*reasons, f"broker {url}"],
                                    location=setting_location(config, "broker_url"))


CHECKS = [redis_vt_eta, redis_vt_runtime, redis_long_vt, redis_exchange_route, redis_cluster]
