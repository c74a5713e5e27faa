"""Every live check (CD2xx Redis, CD3xx RabbitMQ, CD4xx workers), without a broker: each one fires on a snapshot
built from the part factories (celery_doctor.parts.*.example) with one thing wrong, and passes on the healthy
example. The configuration comes from a real Celery app object (tests/conftest.py's make_snapshot)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Callable, Optional

import pytest
from celery import Celery

from celery_doctor.model import Finding, Impact, Part, SkipCheck, Snapshot
from celery_doctor.parts import rabbitmq as rabbit
from celery_doctor.parts import redis as red
from celery_doctor.parts import workers as wrk
from celery_doctor.parts.broker import QueueView
from celery_doctor.parts.messages import DuplicateGroup
from celery_doctor.registry import load_registry
from tests.conftest import by_id, findings_of, make_snapshot

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"
TASK = "proj.tasks.work"
REDIS_SERVER = "server:redis://127.0.0.1:6379/0"


def app_of(broker: str = REDIS_URL, task_options: Optional[dict] = None, **conf) -> Celery:
    """A real app object with one task, `proj.tasks.work`, routed to the default queue unless `conf` says otherwise."""
    app = Celery("units", broker=broker, set_as_current=False)
    app.conf.update(conf)

    @app.task(name=TASK, shared=False, **(task_options or {}))
    def work():
        return 1

    return app


def on_redis(state: Optional[red.RedisState] = None, app: Optional[Celery] = None) -> Snapshot:
    return make_snapshot(app or app_of(), mode="scan", redis=Part.gathered(state or red.example()))


def on_rabbit(state: Optional[rabbit.RabbitState] = None, app: Optional[Celery] = None) -> Snapshot:
    return make_snapshot(app or app_of(RABBIT_URL), mode="scan", rabbitmq=Part.gathered(state or rabbit.example()))


def with_workers(state: Optional[wrk.WorkersState] = None, app: Optional[Celery] = None, **parts: Part) -> Snapshot:
    return make_snapshot(app or app_of(), mode="scan", workers=Part.gathered(state or installed_workers()), **parts)


def installed_workers(**overrides) -> wrk.WorkersState:
    """The workers example with the celery/kombu versions of this environment (the app's, as CD404 compares)."""
    versions = dict(celery_version=version("celery"), kombu_version=version("kombu"))
    workers = tuple(wrk.example_worker(name, **versions) for name in ("celery@worker1", "celery@worker2"))
    return wrk.example(**{"workers": workers, **overrides})


def server(**changes) -> red.RedisState:
    return red.example(server=red.example_server(**changes))


def redis_queue_summary(**changes) -> red.RedisState:
    """The example Redis state whose `celery` queue's messages say `changes` (MessageSummary fields)."""
    depth = changes.pop("depth", 3)
    summary = red.example_summary({TASK: depth}, **changes)
    return red.example(queues=(red.example_queue(depth=depth, summary=summary),))


def rabbit_queue(**changes) -> rabbit.RabbitState:
    """The example RabbitMQ state whose `celery` queue differs by `changes` (RabbitQueue fields)."""
    return rabbit.example(queues={"celery": rabbit.example_queue(**changes)})


def workers_with(*workers: wrk.WorkerInfo, **overrides) -> wrk.WorkersState:
    versions = dict(celery_version=version("celery"), kombu_version=version("kombu"))
    return wrk.example(workers=tuple(w if isinstance(w, wrk.WorkerInfo) else wrk.example_worker(w, **versions)
                                     for w in workers), **overrides)


def worker(name: str = "celery@worker1", **changes) -> wrk.WorkerInfo:
    return wrk.example_worker(name, **{"celery_version": version("celery"), "kombu_version": version("kombu"),
                                       **changes})


@dataclass(frozen=True)
class Fires:
    check: str
    build: Callable[[], Snapshot]
    subject: str
    impact: Impact
    evidence: str  # a fragment of one evidence line

    def __str__(self) -> str:
        return self.check


@dataclass(frozen=True)
class Passes:
    check: str
    build: Callable[[], Snapshot]

    def __str__(self) -> str:
        return self.check


NOW = time.time()
HIGH, MEDIUM, LOW = Impact.HIGH, Impact.MEDIUM, Impact.LOW

FIRES = [
    # -- Redis: the server
    Fires("CD201", lambda: on_redis(server(maxmemory_policy="allkeys-lru")), REDIS_SERVER, HIGH,
          "maxmemory-policy=allkeys-lru (from CONFIG GET)"),
    Fires("CD202", lambda: on_redis(server(used_memory=int(0.95 * (1 << 30)))), REDIS_SERVER, HIGH,
          "is 95% of maxmemory=1,073,741,824"),
    Fires("CD203", lambda: on_redis(server(evicted_keys=42)), REDIS_SERVER, HIGH, "INFO stats evicted_keys=42"),
    Fires("CD204", lambda: on_redis(server(aof_enabled=False, rdb_save="")), REDIS_SERVER, HIGH,
          "save='' (no RDB snapshots)"),
    Fires("CD205", lambda: on_redis(red.example(failover=(
        red.FailoverURL("redis://127.0.0.1:6379/0", True, "master"),
        red.FailoverURL("redis://10.0.0.9:6379/0", False, None, "connection refused")))),
          "setting:broker_url", HIGH, "redis://10.0.0.9:6379/0: did not answer (connection refused)"),
    Fires("CD217", lambda: on_redis(server(cluster_enabled=True, mode="cluster")), REDIS_SERVER, HIGH,
          "cluster_enabled=1 (redis_mode=cluster)"),
    # -- Redis: queues and what their messages say
    Fires("CD218", lambda: on_redis(red.example(wrong_type=(("celery", "celery\x06\x163"),))), "queue:celery", HIGH,
          "is not a list (LLEN answered WRONGTYPE)"),
    Fires("CD206", lambda: on_redis(red.example(clients=red.example_clients(consumers_by_db={}))), "queue:celery",
          HIGH, "no client on db 0 is blocked in BRPOP"),
    Fires("CD209", lambda: on_redis(redis_queue_summary(
        eta_count=2, eta_beyond_vt=2, eta_max=red.EXAMPLE_NOW + 7200,
        eta_examples=((TASK, "2026-01-01T02:00:00+00:00"),))), "queue:celery", HIGH,
          "2 of 3 messages have an ETA more than 1 h away"),
    Fires("CD210", lambda: on_redis(redis_queue_summary(
        expires_count=1, expired=1, expired_examples=((TASK, "2025-12-31T23:00:00+00:00"),))), "queue:celery",
          MEDIUM, "1 of 3 messages are past their `expires` time"),
    Fires("CD211", lambda: on_redis(red.example(queues=(red.example_queue(
        summary=red.example_summary({"proj.tasks.renamed": 3})),))), "queue:celery", HIGH,
          "for tasks the app does not register: proj.tasks.renamed (3)"),
    Fires("CD212", lambda: on_redis(redis_queue_summary(
        depth=12, duplicate_copies=11, duplicate_calls=1, duplicates=(DuplicateGroup(TASK, "(1,)", "{}", 12),))),
          "queue:celery", MEDIUM, "proj.tasks.work(1,) kwargs={}: 12 copies"),
    Fires("CD213", lambda: on_redis(redis_queue_summary(
        malformed=1, malformed_reasons=(("no task name in headers", 1),))), "queue:celery", HIGH,
          "1 × no task name in headers"),
    Fires("CD214", lambda: on_redis(redis_queue_summary(unsafe=(("pickle", 3),))), "queue:celery", MEDIUM,
          "are serialized with pickle (3)"),
    # -- Redis: unacked messages, keys elsewhere
    Fires("CD207", lambda: on_redis(red.example(unacked=red.example_unacked(
        older_than_vt=2, older_than_vt_slack=2, oldest_age_s=7300.0, stale_by_queue={"celery": 2}))),
          "queue:unacked", HIGH, "2 of 2 unacked messages were delivered more than 1 h"),
    Fires("CD208", lambda: on_redis(red.example(clients=red.example_clients(consumers_by_db={}))), "queue:unacked",
          HIGH, "no client on db 0 is consuming (no BRPOP in CLIENT LIST)"),
    Fires("CD215", lambda: on_redis(red.example(foreign=(
        red.ForeignKeys(db=1, prefix="", queues={"celery": 5}, bindings=("celery",), unacked=0),))),
          "server:redis://127.0.0.1:6379/0 db 1 (no prefix)", HIGH,
          "the app's own queue name(s) celery hold messages there"),
    Fires("CD216", lambda: on_redis(red.example(missing_bindings=("events",))), "exchange:events", HIGH,
          "no key _kombu.binding.events on db 0"),

    # -- RabbitMQ: queues
    Fires("CD301", lambda: on_rabbit(rabbit_queue(consumers=0)), "queue:celery", HIGH,
          "3 ready messages, 0 consumers (management API)"),
    Fires("CD302", lambda: on_rabbit(rabbit_queue(messages=7, messages_unacknowledged=4,
                                                  idle_since="2025-12-31 23:00:00", idle_since_epoch=NOW - 3600)),
          "queue:celery", HIGH, "4 unacknowledged deliveries, 2 consumers"),
    Fires("CD318", lambda: on_rabbit(rabbit_queue(message_stats={"deliver_get": 117, "redeliver": 5})),
          "queue:celery", MEDIUM, "message_stats.redeliver=5 of deliver_get=117"),
    # -- RabbitMQ: routing
    Fires("CD303", lambda: on_rabbit(rabbit.example(missing_queues=("reports",), app_queues=("reports",)),
                                     app_of(RABBIT_URL, task_routes={TASK: {"queue": "reports"}})),
          "queue:reports", HIGH, "queue 'reports' does not exist in vhost '/'"),
    Fires("CD304", lambda: on_rabbit(rabbit.example(missing_exchanges=("events",), app_exchanges=("events",)),
                                     app_of(RABBIT_URL, task_routes={TASK: {"exchange": "events",
                                                                            "routing_key": "work.created"}})),
          "exchange:events", HIGH, "exchange 'events' does not exist in vhost '/'"),
    Fires("CD305", lambda: on_rabbit(rabbit.example(vhost_message_stats={"publish": 120, "drop_unroutable": 7})),
          "server:vhost /", HIGH, "drop_unroutable=7, return_unroutable=0"),
    Fires("CD306", lambda: on_rabbit(rabbit.example(
        app_exchanges=("events",), exchanges={"events": rabbit.example_exchange("events", "topic")})),
          "exchange:events", LOW, "exchange 'events' (topic): no `alternate-exchange` argument, no policy applies"),
    # -- RabbitMQ: queue limits
    Fires("CD307", lambda: on_rabbit(rabbit_queue(arguments={"x-max-length": 10})), "queue:celery", HIGH,
          "when full, RabbitMQ silently discards the oldest messages"),
    Fires("CD308", lambda: on_rabbit(rabbit_queue(arguments={"x-message-ttl": 60000})), "queue:celery", HIGH,
          "argument x-message-ttl=60000 = 60000 ms"),
    Fires("CD309", lambda: on_rabbit(rabbit_queue(type="quorum", arguments={"x-queue-type": "quorum",
                                                                            "x-delivery-limit": 5})),
          "queue:celery", HIGH, "quorum queue 'celery': argument x-delivery-limit=5"),
    Fires("CD310", lambda: on_rabbit(rabbit_queue(arguments={"x-consumer-timeout": 60000}),
                                     app_of(RABBIT_URL, task_options={"acks_late": True, "time_limit": 600})),
          "queue:celery", HIGH, "acks_late task proj.tasks.work time_limit 10 min"),
    # -- RabbitMQ: declarations and replication
    Fires("CD311", lambda: on_rabbit(rabbit_queue(type="quorum", arguments={"x-queue-type": "quorum"}),
                                     app_of(RABBIT_URL, task_options={"autoretry_for": (ValueError,)})),
          "queue:celery", HIGH, "native delayed delivery is not in effect"),
    Fires("CD312", lambda: on_rabbit(rabbit_queue(arguments={"x-max-priority": 10})), "queue:celery", HIGH,
          "x-max-priority: app none, broker 10"),
    Fires("CD313", lambda: on_rabbit(rabbit_queue(durable=False)), "queue:celery", HIGH,
          "durable=false: deleted with its messages when the broker restarts"),
    Fires("CD314", lambda: on_rabbit(rabbit.example(policies=(rabbit.example_policy("ha-all", {"ha-mode": "all"}),),
                                                    queues={"celery": rabbit.example_queue(policy="ha-all")})),
          "server:policy ha-all", MEDIUM, "policy 'ha-all' (pattern '.*', apply-to queues): ha-mode='all'"),
    # -- RabbitMQ: nodes, the API, limits, --peek
    Fires("CD315", lambda: on_rabbit(rabbit.example(nodes=(rabbit.example_node(mem_alarm=True),))),
          "server:rabbit@mq1", HIGH, "node rabbit@mq1: mem_alarm=true"),
    Fires("CD316", lambda: on_rabbit(rabbit.example(nodes=(rabbit.example_node(partitions=("rabbit@mq2",)),))),
          "server:rabbit@mq1", HIGH, "reports a partition with rabbit@mq2"),
    Fires("CD317", lambda: on_rabbit(rabbit.example(nodes=(rabbit.example_node(),
                                                           rabbit.example_node("rabbit@mq2", running=False)))),
          "server:rabbit@mq2", HIGH, "node rabbit@mq2: running=false"),
    Fires("CD319", lambda: on_rabbit(rabbit.example_passive()), "server:http://127.0.0.1:15672", LOW,
          "management API: management API at http://127.0.0.1:15672: 401 Unauthorized"),
    Fires("CD320", lambda: on_rabbit(rabbit.example(vhost_limits={"max-queues": 1})), "server:vhost /", HIGH,
          "vhost '/': max-queues=1, 1 queues exist"),
    Fires("CD321", lambda: on_rabbit(rabbit.example(peeked=True, peek={"celery": rabbit.example_peek()},
                                                    warnings=("--peek read 3 message(s) from 1 queue(s)",))),
          "server:vhost /", LOW, "queue 'celery': --peek sample of 3: proj.tasks.work (3)"),

    # -- workers
    Fires("CD401", lambda: with_workers(workers_with(
        worker(queues=(wrk.WorkerQueue("other", "other", "direct", "other"),)),
        worker("celery@worker2", queues=(wrk.WorkerQueue("other", "other", "direct", "other"),)))),
          "queue:celery", HIGH, "2 workers answered, consuming other; none consumes 'celery'"),
    Fires("CD402", lambda: with_workers(workers_with(worker(registered=frozenset(wrk.BUILTIN_TASKS)))),
          "task:proj.tasks.work", HIGH, "no worker consuming 'celery' registers it"),
    Fires("CD403", lambda: with_workers(workers_with(worker(conf={**wrk.DEFAULT_CONF, "task_acks_late": True}))),
          "worker:celery@worker1", HIGH, "task_acks_late: app=False, worker=True"),
    Fires("CD404", lambda: with_workers(workers_with(worker(celery_version="5.5.0"), "celery@worker2")),
          "worker:celery@worker1", MEDIUM, "celery@worker1 runs celery 5.5.0"),
    Fires("CD405", lambda: with_workers(workers_with(
        worker(active_total=4, reserved_total=8,
               reserved=tuple(wrk.example_task(id=f"3f2c9a4e-{i:04d}") for i in range(8))),
        "celery@worker2")), "worker:celery@worker1", MEDIUM, "celery@worker1 holds 8 reserved tasks behind 4 active"),
    Fires("CD406", lambda: with_workers(workers_with(worker(
        active=(wrk.example_task(time_start=NOW - 7200),), active_total=1))), "worker:celery@worker1", HIGH,
          "1 running task past it"),
    Fires("CD407", lambda: with_workers(workers_with(worker(
        scheduled=(wrk.example_task(eta="2030-01-01T00:00:00+00:00", eta_ts=NOW + 7200),), scheduled_total=1),
        transport="rabbitmq", discovery="rabbitmq pidbox queues (management API)"), app_of(RABBIT_URL)),
          "worker:celery@worker1", HIGH, "1 ETA task will be held past it"),
    Fires("CD409", lambda: with_workers(installed_workers(workers=())), "server:redis://127.0.0.1:6379/0", HIGH,
          "no worker on the broker: no mailbox bindings in _kombu.binding.celery.pidbox"),
    Fires("CD410", lambda: with_workers(workers_with("celery@worker1", worker("celery@worker2", answered=()))),
          "worker:celery@worker2", MEDIUM, "it answered none of the 10 control commands within 8.7 s"),
]

PASSES = [
    *(Passes(check, on_redis) for check in ("CD201", "CD202", "CD203", "CD204", "CD205", "CD217", "CD218", "CD206",
                                            "CD209", "CD210", "CD211", "CD212", "CD213", "CD214", "CD207", "CD208",
                                            "CD215", "CD216")),
    *(Passes(check, on_rabbit) for check in ("CD301", "CD302", "CD318", "CD303", "CD304", "CD305", "CD307", "CD308",
                                             "CD309", "CD310", "CD311", "CD312", "CD313", "CD314", "CD315", "CD316",
                                             "CD317", "CD319", "CD320", "CD321")),
    Passes("CD306", lambda: on_rabbit(rabbit.example(app_exchanges=("events",), exchanges={
        "events": rabbit.example_exchange("events", "topic", arguments={"alternate-exchange": "unrouted"})}))),
    *(Passes(check, with_workers) for check in ("CD401", "CD402", "CD403", "CD404", "CD405", "CD406", "CD409",
                                                "CD410")),
    Passes("CD407", lambda: with_workers(installed_workers(transport="rabbitmq"), app_of(RABBIT_URL))),
]


def _matching(case: Fires) -> list[Finding]:
    return [f for f in findings_of(by_id(case.check), case.build()) if f.subject == case.subject]


@pytest.mark.parametrize("case", FIRES, ids=str)
def test_fires(case: Fires):
    found = _matching(case)
    assert len(found) == 1, (case.check, case.subject, found)
    finding = found[0]
    assert (finding.check, finding.impact) == (case.check, case.impact), finding
    assert any(case.evidence in line for line in finding.evidence), finding.evidence


@pytest.mark.parametrize("case", PASSES, ids=str)
def test_passes(case: Passes):
    assert findings_of(by_id(case.check), case.build()) == []


def test_every_live_check_fires_and_passes_here():
    live = {c.id for c in load_registry().checks if c.needs & {"redis", "rabbitmq", "workers"}}
    assert live == {case.check for case in FIRES} == {case.check for case in PASSES}


def test_the_examples_are_what_their_collectors_would_return():
    """The factories' states hang together: queue views agree with the parts, consumers, versions and counts."""
    redis_state = red.example()
    assert redis_state.consumers == 2 and redis_state.at_risk == 5 and redis_state.server.persistence is True
    assert redis_state.queue_views() == {"celery": QueueView("celery", 3, unacked=2, consumers=None,
                                                             task_counts={TASK: 3}, sampled=3)}
    rabbit_state = rabbit.example()
    assert rabbit_state.version_tuple() == (3, 13, 7) and rabbit_state.has(*rabbit.ALL_DATA)
    assert rabbit_state.queue_views()["celery"] == QueueView("celery", 3, unacked=0, consumers=2)
    assert not rabbit.example_passive().has(rabbit.QUEUE_DETAILS)
    workers = wrk.example()
    assert [w.name for w in workers.consumers_of("celery")] == ["celery@worker1", "celery@worker2"]
    assert workers.workers[0].answered == wrk.COMMANDS and not workers.silent


def test_a_worker_check_reads_queue_depths_from_either_broker_part():
    """CD401's evidence counts the waiting messages from whichever broker part was gathered (a consumer the
    broker sees, e.g. a worker the broadcast did not reach, is a consumer)."""
    unconsumed = workers_with(worker(queues=(wrk.WorkerQueue("other"),)))
    on_redis_broker = with_workers(unconsumed, redis=Part.gathered(red.example()))
    on_rabbit_broker = with_workers(unconsumed, app_of(RABBIT_URL),
                                    rabbitmq=Part.gathered(rabbit_queue(consumers=0)))
    consumed = with_workers(unconsumed, app_of(RABBIT_URL), rabbitmq=Part.gathered(rabbit.example()))
    assert findings_of(by_id("CD401"), consumed) == []
    for snapshot in (on_redis_broker, on_rabbit_broker):
        found = findings_of(by_id("CD401"), snapshot)
        assert [f.subject for f in found] == ["queue:celery"] and found[0].messages_at_risk == 3
        assert "3 messages waiting in 'celery'" in found[0].evidence


@pytest.mark.parametrize("check,snapshot,reason", [
    ("CD201", lambda: on_redis(server(info_refused="NOPERM this user has no permissions to run the 'info' command")),
     "INFO was not allowed: NOPERM"),
    ("CD209", lambda: on_redis(red.example(queues=(red.example_queue(
        summary=None, sampled=0, complete=False, cut="messages not read: the deadline was near"),))),
     "messages of celery were only partly read"),
    ("CD302", lambda: on_rabbit(rabbit.example_passive()), "needs RabbitMQ queue details: the management API"),
], ids=["redis-info-refused", "redis-messages-cut", "rabbitmq-no-api"])
def test_a_check_without_its_data_skips_and_says_why(check, snapshot, reason):
    with pytest.raises(SkipCheck, match=reason):
        findings_of(by_id(check), snapshot())


def test_parts_are_pure_data_and_live_checks_import_no_collector():
    """The part modules load without a collector or a broker client; the live checks import parts, not collectors."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import sys; import celery_doctor.parts.redis, celery_doctor.parts.rabbitmq, celery_doctor.parts.workers, "
             "celery_doctor.parts.broker; print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.startswith(("celery_doctor.collectors", "redis", "pika", "kombu", "amqp"))]
    checks = Path(__file__).resolve().parent.parent / "checks"
    for path in [checks / "engine.py", *checks.glob("redis*.py"), *checks.glob("rabbitmq*.py"), *checks.glob("workers*.py")]:
        imported = [node.module or "" for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)]
        assert not [m for m in imported if "collectors" in m], (path.name, imported)


# -- the live checks answer Celery questions with the facts (celery_doctor.facts), not by themselves

QUORUM = dict(type="quorum", arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})


def _requeue_line(app: Celery) -> list[str]:
    found = [f for f in findings_of(by_id("CD309"), on_rabbit(rabbit_queue(**QUORUM), app))
             if f.subject == "queue:celery"]
    assert len(found) == 1
    return [line for line in found[0].evidence if "requeue" in line]


@pytest.mark.parametrize("task_options,requeued", [
    # acks_on_failure_or_timeout=False rejects a failed task WITHOUT requeue (Request.on_failure: reject(requeue=False)):
    # it is dropped, not looped; without a hard time limit nothing requeues it
    ({"acks_late": True, "acks_on_failure_or_timeout": False}, None),
    # ... with one, the timeout is requeued (acks_on_timeout falls back to it: Request.on_timeout reject(requeue=True))
    ({"acks_late": True, "acks_on_failure_or_timeout": False, "time_limit": 600},
     "proj.tasks.work (hard time limit 10 min: acks_on_timeout=False)"),
    ({"acks_late": True, "acks_on_timeout": False, "time_limit": 600},
     "proj.tasks.work (hard time limit 10 min: acks_on_timeout=False)"),
    ({"acks_late": True, "reject_on_worker_lost": True},
     "proj.tasks.work (pool process killed: reject_on_worker_lost)"),
    # retry_on_worker_lost resends a new message (a retry) before reject_on_worker_lost could requeue this one
    ({"acks_late": True, "reject_on_worker_lost": True, "retry_on_worker_lost": True}, None),
    ({"reject_on_worker_lost": True, "time_limit": 600, "acks_on_timeout": False}, None),  # early acks
], ids=["failure-dropped", "timeout-via-either", "timeout", "worker-lost", "retried", "early-acks"])
def test_quorum_delivery_limit_names_only_the_tasks_celery_requeues(task_options, requeued):
    lines = _requeue_line(app_of(RABBIT_URL, task_options=task_options))
    if requeued is None:
        assert lines == []
    else:
        assert lines == [f"acks_late tasks whose message Celery requeues (each return counts): {requeued}"]


def test_queue_consumer_timeout_reads_the_time_limit_and_server_timeout_facts():
    """CD310: a per-task time_limit of 0 falls back to task_time_limit (facts.limits), and on a server that ignores
    per-queue timeouts the --consumer-timeout given applies (facts.timeouts)."""
    app = app_of(RABBIT_URL, task_options={"acks_late": True, "time_limit": 0}, task_time_limit=7200)
    state = rabbit.example(version="3.10.0", queues={"celery": rabbit.example_queue(
        arguments={"x-consumer-timeout": 60000})})
    found = findings_of(by_id("CD310"), make_snapshot(app, mode="scan", options={"consumer_timeout": 3600},
                                                      rabbitmq=Part.gathered(state)))
    assert len(found) == 1
    assert "server consumer_timeout=1 h (given with --consumer-timeout) applies" in "\n".join(found[0].evidence)
    assert "acks_late task proj.tasks.work time_limit 2 h" in found[0].evidence
    shorter = app_of(RABBIT_URL, task_options={"acks_late": True, "time_limit": 1800})
    assert findings_of(by_id("CD310"), make_snapshot(shorter, mode="scan", options={"consumer_timeout": 3600},
                                                     rabbitmq=Part.gathered(state))) == []


@pytest.mark.filterwarnings("ignore::celery.exceptions.CDeprecationWarning")
def test_a_beat_entry_naming_a_kombu_queue_is_routed_there():
    """facts.routing.beat_queue reads `options={'queue': Queue('emails')}` as apply_async does: CD401 sees the queue
    nobody consumes, CD402 the consumers of that queue that lack the task."""
    from kombu import Queue

    app = app_of(beat_schedule={"nightly": {"task": TASK, "schedule": 3600, "options": {"queue": Queue("emails")}}})
    found = [f for f in findings_of(by_id("CD401"), with_workers(installed_workers(), app)) if f.subject == "queue:emails"]
    assert len(found) == 1 and "beat entries publishing there: nightly" in found[0].evidence
    lacking = workers_with(worker(queues=(wrk.WorkerQueue("emails"),), registered=frozenset(wrk.BUILTIN_TASKS)))
    found = findings_of(by_id("CD402"), with_workers(lacking, app))
    assert [f.subject for f in found] == ["task:proj.tasks.work"]
    assert found[0].evidence[0] == "proj.tasks.work goes to 'emails': beat entry 'nightly'"


LONG_RUN = dict(active=(wrk.example_task(time_start=NOW - 7200),), active_total=1)


@pytest.mark.parametrize("changes,app_conf,text", [
    ({"transport_options": {"visibility_timeout": 600}}, {}, "visibility_timeout=600 s on the worker"),
    ({}, {"broker_transport_options": {"visibility_timeout": 86400}}, "visibility_timeout=3600 s (kombu default on the worker)"),
    ({"broker_transport": None, "conf": {}}, {"broker_transport_options": {"visibility_timeout": 1800}},
     "visibility_timeout=1800 s (the app's; the worker did not report its own)"),
], ids=["worker", "kombu-default", "app"])
def test_held_past_visibility_timeout_reads_the_timeout_fact(changes, app_conf, text):
    found = findings_of(by_id("CD406"), with_workers(workers_with(worker(**LONG_RUN, **changes)), app_of(**app_conf)))
    assert len(found) == 1 and found[0].evidence[0] == text


def test_held_past_consumer_timeout_reads_the_timeout_fact():
    state = workers_with(worker(active=(wrk.example_task(time_start=NOW - 900),), active_total=1), transport="rabbitmq",
                         discovery="rabbitmq pidbox queues (management API)")
    snapshot = make_snapshot(app_of(RABBIT_URL), mode="scan", options={"consumer_timeout": 600},
                             workers=Part.gathered(state))
    found = findings_of(by_id("CD407"), snapshot)
    assert len(found) == 1 and found[0].evidence[0] == "consumer_timeout=10 min (given with --consumer-timeout)"
    assert findings_of(by_id("CD407"), with_workers(state, app_of(RABBIT_URL))) == []  # 30 min by default


def test_worker_config_drift_says_a_failed_late_ack_task_is_dropped_not_requeued():
    """acks_on_failure_or_timeout=False rejects a failed task without requeue (Request.on_failure)."""
    drifted = worker(conf={**wrk.DEFAULT_CONF, "task_acks_on_failure_or_timeout": False})
    found = findings_of(by_id("CD403"), with_workers(workers_with(drifted)))
    line = next(line for line in found[0].evidence if line.startswith("task_acks_on_failure_or_timeout"))
    assert line == ("task_acks_on_failure_or_timeout: app=True, worker=False (decides whether failed late-ack tasks are "
                    "acked or dropped (rejected without requeue), and timed-out ones acked or requeued (Celery 5.7))")


def test_missing_binding_set_names_the_tasks_routed_through_the_exchange():
    """CD216 and the Redis collector read the exchange routes from facts.routing.exchange_routes."""
    app = app_of(task_routes={TASK: {"exchange": "events", "routing_key": "work.created"},
                              "audit.*": {"exchange": "audit", "routing_key": "audit.any"}})
    state = red.example(missing_bindings=("events", "audit"))
    found = {f.subject: f.evidence[1] for f in findings_of(by_id("CD216"), on_redis(state, app))}
    assert found == {"exchange:events": "tasks routed through exchange 'events' without a queue: proj.tasks.work",
                     "exchange:audit": "tasks routed through exchange 'audit' without a queue: by task_routes patterns"}


def test_queue_argument_drift_counts_the_max_priority_celery_adds():
    """Celery declares every queue with x-max-priority=task_queue_max_priority when it sets none
    (celery/app/amqp.py, Queues._set_max_priority): facts.routing.declared_queue_arguments, so no drift here."""
    prioritised = rabbit_queue(arguments={"x-max-priority": 10})
    assert findings_of(by_id("CD312"), on_rabbit(prioritised, app_of(RABBIT_URL, task_queue_max_priority=10))) == []
    found = findings_of(by_id("CD312"), on_rabbit(prioritised, app_of(RABBIT_URL, task_queue_max_priority=5)))
    assert "x-max-priority: app 5, broker 10" in found[0].evidence[0]


def test_cd410_names_the_busy_workers_that_answered_apart_from_the_silent_one():
    """A prefork worker running a long task still answers (its main process is free): the silent worker's finding
    says which answering workers are busy, so a busy worker is not taken for the dead one."""
    busy = worker("celery@busy", active=(wrk.example_task("proj.tasks.long", time_start=NOW - 60),), active_total=1)
    snapshot = with_workers(workers_with("celery@idle", busy, worker("celery@gone", answered=())))
    findings = findings_of(by_id("CD410"), snapshot)
    assert [f.subject for f in findings] == ["worker:celery@gone"]
    assert "busy and alive (they answered while running tasks): celery@busy (running proj.tasks.long)" in \
        findings[0].evidence, findings[0].evidence
    quiet = with_workers(workers_with("celery@idle", worker("celery@gone", answered=())))
    assert not any("busy and alive" in line for f in findings_of(by_id("CD410"), quiet) for line in f.evidence)
