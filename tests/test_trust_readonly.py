"""Read-only under live load: a producer publishing and real workers consuming on the same broker while scans
and traces run repeatedly (the real CLI, --deep scans). Afterwards every published task was executed exactly
once (counted in Redis db 13 by the tasks themselves), the queue one solo worker consumes was executed in
publish order, and the doctor left no key (Redis) or queue, exchange or binding (RabbitMQ) behind.

Redis: broker db 11, counters db 13. RabbitMQ: a private vhost. The figures (published, executed, scans,
traces) are printed with -s.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time

import pytest

from tests.test_trust_support import (
    cli,
    delete_new_keys,
    drop_vhost,
    make_vhost,
    rabbit_available,
    redis_available,
    redis_client,
    uid,
    vhost_bindings,
    vhost_names,
)
from tests.workerproc import WorkerFactory

pytestmark = [pytest.mark.workers]

BROKER_DB, COUNTER_DB = 11, 13
ORDERED, BULK, DELAYED = 150, 130, 20  # published per broker: 300

APP = '''
import redis
from celery import Celery

TAG = {tag!r}
app = Celery(__name__, broker={broker!r})
app.conf.task_default_queue = {bulk!r}
app.conf.task_ignore_result = True
_counter = redis.Redis(db={counter})


@app.task(name="trust.ro.record", acks_late=True, shared=False)
def record(kind, seq):
    _counter.hincrby(TAG + ":runs", f"{{kind}}:{{seq}}", 1)
    if kind == "ordered":
        _counter.rpush(TAG + ":order", seq)
'''

FIGURES: dict[str, dict] = {}


def _setup(tmp_path, kind, broker):
    tag = uid()
    name = f"trust_ro_{kind}_{tag}"
    ordered, bulk = f"ordered-{tag}", f"bulk-{tag}"
    (tmp_path / f"{name}.py").write_text(APP.format(tag=tag, broker=broker, bulk=bulk, counter=COUNTER_DB))
    sys.path.insert(0, str(tmp_path))
    try:
        app = importlib.import_module(name).app
    finally:
        sys.path.remove(str(tmp_path))
    return dict(tag=tag, name=name, ordered=ordered, bulk=bulk, app=app, dir=tmp_path)


def _load(setup, workers: WorkerFactory):
    """Start the workers, run producer + repeated scans/traces, wait for the work to drain; return figures."""
    app, name, directory = setup["app"], setup["name"], setup["dir"]
    counter = redis_client(COUNTER_DB)
    workers.start_many([
        dict(app=name, cwd=directory, queues=[setup["ordered"]], pool="solo", name=f"ordered-{setup['tag']}"),
        dict(app=name, cwd=directory, queues=[setup["bulk"]], pool="prefork", concurrency=2,
             name=f"bulk-{setup['tag']}"),
    ])
    before = setup["snapshot"]()
    record = app.tasks["trust.ro.record"]
    published: list[str] = []
    ids: list[str] = []

    def produce():
        with app.producer_or_acquire() as producer:
            for seq in range(max(ORDERED, BULK)):
                if seq < ORDERED:
                    ids.append(record.apply_async(("ordered", seq), queue=setup["ordered"], producer=producer).id)
                    published.append(f"ordered:{seq}")
                if seq < BULK:
                    ids.append(record.apply_async(("bulk", seq), queue=setup["bulk"], producer=producer).id)
                    published.append(f"bulk:{seq}")
                if seq < DELAYED:
                    ids.append(record.apply_async(("delayed", seq), queue=setup["bulk"], countdown=1.5,
                                                  producer=producer).id)
                    published.append(f"delayed:{seq}")
                time.sleep(0.03)

    runs = {"scan": [], "trace": []}
    during = {"scan": 0, "trace": 0}  # runs that started while the producer was publishing

    def doctor(kind):
        while producer.is_alive() or len(runs[kind]) < 3:
            during[kind] += producer.is_alive()
            if kind == "scan":
                run = cli("scan", "--app", name, "--deep", "--format", "json", "--timeout", "8", cwd=directory)
            else:
                target = ids[len(ids) // 2] if ids else "none"
                run = cli("trace", target, "--app", name, "--format", "json", "--timeout", "8", cwd=directory)
            runs[kind].append(run)

    producer = threading.Thread(target=produce)
    producer.start()
    doctors = [threading.Thread(target=doctor, args=(k,)) for k in ("scan", "trace")]
    for t in doctors:
        t.start()
    producer.join()
    for t in doctors:
        t.join()
    for run in runs["scan"] + runs["trace"]:
        assert run.code in (0, 1) and not run.crash_logs and "Traceback" not in run.stderr, str(run)
        report = run.json()
        assert not [c for c in report.get("checks", []) if c["status"] == "error"], str(run)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and counter.hlen(f"{setup['tag']}:runs") < len(published):
        time.sleep(0.1)
    time.sleep(0.5)  # anything executed twice would show up now
    executions = {k.decode(): int(v) for k, v in counter.hgetall(f"{setup['tag']}:runs").items()}
    order = [int(x) for x in counter.lrange(f"{setup['tag']}:order", 0, -1)]
    after = setup["snapshot"]()
    figures = dict(published=len(published), executed=sum(executions.values()), distinct=len(executions),
                   scans=len(runs["scan"]), traces=len(runs["trace"]))
    FIGURES[setup["kind"]] = figures
    assert set(executions) == set(published), ("lost", sorted(set(published) - set(executions))[:10])
    assert all(count == 1 for count in executions.values()), ("executed twice", [k for k, c in executions.items() if c > 1])
    assert order == list(range(ORDERED)), "the solo worker's queue was not executed in publish order"
    assert figures["scans"] >= 3 and figures["traces"] >= 3
    assert during["scan"] >= 2 and during["trace"] >= 2, during
    return before, after


@pytest.mark.redis
def test_redis_live_load_nothing_lost_duplicated_reordered_or_left(tmp_path):
    if not redis_available():
        pytest.skip("no Redis")
    broker_keys = set(redis_client(BROKER_DB).scan_iter(count=1000))
    counter_keys = set(redis_client(COUNTER_DB).scan_iter(count=1000))
    setup = _setup(tmp_path, "redis", f"redis://127.0.0.1:6379/{BROKER_DB}")
    setup["kind"] = "redis"
    mine = (setup["ordered"], setup["bulk"])

    def snapshot():
        r = redis_client(BROKER_DB)
        keys = {k.decode("utf-8", "replace") for k in r.scan_iter(count=1000)} - {k.decode() for k in broker_keys}
        members = {k: sorted(r.smembers(k)) for k in keys if k.startswith("_kombu.binding.") and r.type(k) == b"set"}
        return keys, members

    setup["snapshot"] = snapshot
    workers = WorkerFactory()
    try:
        (keys_before, _), (keys_after, members_after) = _load(setup, workers)
        doctor_keys = {k for k in keys_after if "reply" in k}
        assert not doctor_keys, f"the doctor left keys behind: {doctor_keys}"
        expected = {*mine, "unacked", "unacked_index", "unacked_mutex", "_kombu.binding.celery.pidbox",
                    *(f"_kombu.binding.{q}" for q in mine), *(f"{q}\x06\x16{p}" for q in mine for p in (3, 6, 9))}
        assert keys_after <= expected | keys_before, keys_after - expected - keys_before
        pidbox = members_after.get("_kombu.binding.celery.pidbox", [])
        assert all(b".reply." not in m for m in pidbox), pidbox
    finally:
        workers.stop_all()
        delete_new_keys(BROKER_DB, broker_keys)
        delete_new_keys(COUNTER_DB, counter_keys)
        setup["app"].pool.force_close_all()


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_rabbitmq_live_load_nothing_lost_duplicated_reordered_or_left(tmp_path):
    if not (rabbit_available() and redis_available()):
        pytest.skip("needs RabbitMQ (broker) and Redis (counters)")
    counter_keys = set(redis_client(COUNTER_DB).scan_iter(count=1000))
    vhost = make_vhost("cd-trust-load")
    setup = _setup(tmp_path, "rabbitmq", f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
    setup["kind"] = "rabbitmq"

    def snapshot():
        return (vhost_names("queues", vhost), vhost_names("exchanges", vhost), vhost_bindings(vhost))

    setup["snapshot"] = snapshot
    workers = WorkerFactory()
    try:
        before, after = _load(setup, workers)
        assert after == before, f"queues/exchanges/bindings changed:\nbefore {before}\nafter  {after}"
        assert not [q for q in after[0] if "reply" in q]
    finally:
        workers.stop_all()
        setup["app"].pool.force_close_all()
        drop_vhost(vhost)
        delete_new_keys(COUNTER_DB, counter_keys)


def test_load_figures():
    """Runs last: the figures of the two load tests (-s shows them)."""
    if not FIGURES:
        pytest.skip("no load test ran")
    for kind, f in sorted(FIGURES.items()):
        print(f"\n{kind}: published {f['published']}, executed {f['executed']} ({f['distinct']} distinct, each once) "
              f"while {f['scans']} --deep scans and {f['traces']} traces ran")
        assert f["published"] == f["executed"] == f["distinct"]
