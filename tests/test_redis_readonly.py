"""A scan leaves Redis exactly as it found it, and no command it sends takes 10 ms or more.

Database 4 holds the app's broker state: a queue of 50,000 messages with priority sub-queues, the unacked
hash/index a SIGKILLed real worker left behind, binding sets and a worker mailbox binding. Scans must leave
every key's type, contents and order identical; while a producer and a real worker are busy on the same
db, the scans must not lose, duplicate or reorder anything either.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.test_redis_fixtures import client, collect, import_app, key_dump, redis_available, uid, wait_for, write_app
from tests.workerproc import WorkerFactory

pytestmark = [pytest.mark.redis, pytest.mark.workers,
              pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB = 4
BIG = 50_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("readonly")
    r = client(DB)
    before = set(r.scan_iter(count=1000))
    tag = uid()
    backlog, crashed, busy = f"backlog-{tag}", f"crashed-{tag}", f"busy-{tag}"
    name = write_app(directory, f"ro_{tag}", DB, conf=f'''
app.conf.task_default_queue = "{backlog}"
app.conf.task_routes = {{"ro_{tag}.slow": {{"queue": "{crashed}"}}, "ro_{tag}.record": {{"queue": "{busy}"}}}}
''')
    app = import_app(directory, name)
    workers = WorkerFactory()
    try:
        # unacked entries of a worker that was killed while holding them
        worker = workers(name, cwd=directory, queues=[crashed], pool="prefork", concurrency=1)
        for _ in range(3):
            app.tasks[f"{name}.slow"].delay(60)
        assert wait_for(lambda: r.hlen("unacked") >= 3, timeout=20), worker.tail()
        worker.kill()
        # a backlog: real messages, replicated with fresh ids to 50,000, a few on priority sub-queues
        add = app.tasks[f"{name}.add"]
        with app.producer_or_acquire() as producer:
            for i in range(10):
                add.apply_async((i, i), producer=producer)
            for i in range(10):
                add.apply_async((i, -i), priority=6, producer=producer)
            add.apply_async((0, 0), countdown=7200, producer=producer)
        template = r.lindex(backlog, 0).decode()
        task_id = template.split('"id": "')[1].split('"')[0]
        pipe = r.pipeline(transaction=False)
        for i in range(BIG - 11):
            pipe.rpush(backlog, template.replace(task_id, str(uuid.uuid4())).replace("(0, 0)", f"({i}, 0)"))
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        assert r.llen(backlog) == BIG
        yield dict(app=app, name=name, dir=directory, backlog=backlog, busy=busy, workers=workers)
    finally:
        workers.stop_all()
        created = [k for k in r.scan_iter(count=1000) if k not in before]
        for i in range(0, len(created), 500):
            r.delete(*created[i:i + 500])


def test_scans_leave_every_key_identical(broker):
    app = broker["app"]
    before = key_dump(DB)
    assert any(kind == "hash" for kind, _ in before.values()) and b"unacked_index" in before
    for deep in (False, True, True):
        part = collect(app, deep=deep, timeout=30)
        assert part.ok, part.reason
        state = part.data
        assert state.queue(broker["backlog"]).depth == BIG + 10
        assert state.unacked.entries >= 3
    assert state.queue(broker["backlog"]).complete and state.queue(broker["backlog"]).sampled == BIG + 10
    after = key_dump(DB)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], f"{key!r} changed"


def test_scans_while_a_producer_and_a_worker_are_busy(broker):
    app, name, busy = broker["app"], broker["name"], broker["busy"]
    r = client(DB)
    static_before = key_dump(DB)
    worker = broker["workers"](name, cwd=broker["dir"], queues=[busy], pool="solo")
    total = 400
    record = app.tasks[f"{name}.record"]

    def produce():
        with app.producer_or_acquire() as producer:
            for i in range(total):
                record.apply_async((i,), producer=producer)
                if i % 20 == 0:
                    time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    scans = 0
    while producer.is_alive() or scans < 3:
        part = collect(app, deep=True, timeout=30)
        assert part.ok, part.reason
        scans += 1
    producer.join()
    assert wait_for(lambda: r.llen(f"{name}:done") >= total, timeout=30), worker.tail()
    time.sleep(0.3)
    done = [int(x) for x in r.lrange(f"{name}:done", 0, -1)]
    assert sorted(done) == list(range(total)), "a scan lost or duplicated a task"
    assert done == sorted(done), "a scan reordered the queue (a solo worker runs them in order)"
    assert r.llen(busy) == 0
    # every key the producer and the worker do not write is untouched
    moving = {b"unacked", b"unacked_index", b"unacked_mutex", busy.encode(), f"{name}:done".encode()}
    after = key_dump(DB)
    for key, value in static_before.items():
        if key in moving or key.startswith(b"_kombu."):
            continue
        assert after.get(key) == value, f"{key!r} changed"
    # the killed worker's entries are still there, untouched
    for key in (b"unacked", b"unacked_index"):
        old = dict(static_before[key][1])
        new = dict(after[key][1])
        assert all(new.get(k) == v for k, v in old.items()), f"{key!r}: an old entry changed"


def test_no_scan_command_takes_10ms(broker):
    app = broker["app"]
    admin = client(DB)
    saved = admin.config_get("slowlog-*")
    try:
        admin.config_set("slowlog-max-len", 100_000)
        # 1. prove the SLOWLOG sees our commands at all (threshold 0 logs every command)
        admin.config_set("slowlog-log-slower-than", 0)
        admin.slowlog_reset()
        assert collect(app, max_messages=100).ok
        admin.config_set("slowlog-log-slower-than", 10_000)
        ours = [e for e in admin.slowlog_get(100_000) if e.get("client_name") == b"celery-doctor"]
        assert len(ours) > 20 and any(b"LRANGE" in e["command"] for e in ours)
        # 2. a deep scan of everything: nothing of ours at or above 10 ms
        admin.slowlog_reset()
        part = collect(app, deep=True, timeout=30)
        assert part.ok and part.data.queue(broker["backlog"]).sampled == BIG + 10
        slow = [e for e in admin.slowlog_get(100_000) if e.get("client_name") == b"celery-doctor"]
        assert slow == [], [(e["command"][:80], e["duration"]) for e in slow]
    finally:
        admin.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        admin.config_set("slowlog-max-len", saved["slowlog-max-len"])
