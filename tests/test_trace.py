"""`celery-doctor trace`: one task id found where it really is, on the real Redis and RabbitMQ."""
from __future__ import annotations

import json
import os
import time
import uuid

import pytest
import redis

from tests.conftest import run_cli, write_tree
from tests.workerproc import worker_factory  # noqa: F401 (fixture)

DB = 0  # trace tests use db 0 with uniquely named queues, and delete what they create
REDIS_URL = f"redis://127.0.0.1:6379/{DB}"
APP = """
    import os, time
    from celery import Celery
    app = Celery("traceapp", broker=os.environ["TRACE_BROKER"], backend=os.environ.get("TRACE_BACKEND"))
    app.conf.task_default_queue = os.environ["TRACE_QUEUE"]
    app.conf.task_acks_late = True
    app.conf.result_expires = 600

    @app.task(name="traceapp.add", shared=False)
    def add(x, y):
        return x + y

    @app.task(name="traceapp.slow", shared=False)
    def slow(seconds):
        time.sleep(seconds)
        return seconds
"""


@pytest.fixture
def redis_app(tmp_path):
    queue = f"trace-{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path, {"traceapp.py": APP})
    env = {"TRACE_BROKER": REDIS_URL, "TRACE_BACKEND": REDIS_URL, "TRACE_QUEUE": queue}
    os.environ.update(env)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    module = importlib.import_module("traceapp")
    client = redis.Redis(db=DB)
    before = set(client.keys("*"))
    yield module, queue, env, tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("traceapp", None)
    module.app.close()
    created = set(client.keys("*")) - before
    for key in created:
        client.delete(key)
    forget_traces_of(client, queue.encode(), *[w.encode() for w in _started_workers])
    _started_workers.clear()


_started_workers: list[str] = []


def forget_traces_of(client, *needles: bytes) -> None:
    """Remove what our queue and workers left in shared keys: binding members and unacked entries."""
    for key in client.scan_iter(match="_kombu.binding*"):
        if client.type(key) == b"set":
            for member in client.smembers(key):
                if any(n in member for n in needles):
                    client.srem(key, member)
    for tag, payload in client.hscan_iter("unacked"):
        if any(n in payload for n in needles):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def trace(task_id, cwd, env, *extra, timeout=8):
    result = run_cli("trace", task_id, "--app", "traceapp", "--format", "json", "--timeout", str(timeout),
                     *extra, cwd=cwd, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result, json.loads(result.stdout)


@pytest.mark.redis
def test_queued_task_is_found_with_its_position_and_fate(redis_app):
    module, queue, env, cwd = redis_app
    ids = [module.add.apply_async((i, i)).id for i in range(3)]
    result, data = trace(ids[1], cwd, env)
    assert result.returncode == 0 and data["found"] is True
    [location] = data["locations"]
    assert location["where"] == "redis queue" and location["name"] == f"queue:{queue}"
    assert location["state"] == "queued" and location["task"] == "traceapp.add"
    assert "1 message ahead of it in this list" in location["details"]
    assert "no live worker consumes" in location["next"]
    assert data["likely_causes"] and data["likely_causes"][0]["check"] in ("CD409", "CD206", "CD401")


@pytest.mark.redis
def test_priority_sub_queue(redis_app):
    module, _queue, env, cwd = redis_app
    task_id = module.add.apply_async((1, 2), priority=7).id
    _, data = trace(task_id, cwd, env)
    [location] = data["locations"]
    assert any("priority 6 sub-queue" in d for d in location["details"])


@pytest.mark.redis
def test_not_found_lists_what_was_checked_and_ranks_causes(redis_app):
    module, _queue, env, cwd = redis_app
    module.add.apply_async((1, 2))
    result, data = trace(str(uuid.uuid4()), cwd, env)
    assert result.returncode == 1 and data["found"] is False and data["locations"] == []
    assert "redis unacked" in data["checked"] and any("result backend" in c for c in data["checked"])
    assert data["likely_causes"]
    text = run_cli("trace", str(uuid.uuid4()), "--app", "traceapp", "--timeout", "5", cwd=cwd, env=env).stdout
    assert "Where it is: not found" in text and "Likely causes" in text
    markdown = run_cli("trace", str(uuid.uuid4()), "--app", "traceapp", "--timeout", "5", "--format", "markdown",
                       cwd=cwd, env=env).stdout
    assert markdown.startswith("# Trace of task") and "## Not checked" in markdown


@pytest.mark.redis
@pytest.mark.workers
def test_held_running_and_finished_tasks(redis_app, worker_factory):
    module, queue, env, cwd = redis_app
    worker = worker_factory("traceapp", cwd=cwd, broker=REDIS_URL, queues=[queue], pool="solo", env=env)
    _started_workers.append(worker.nodename)
    held = module.add.apply_async((2, 3), countdown=120).id
    done = module.add.apply_async((4, 5)).id
    assert module.app.AsyncResult(done).get(timeout=20) == 9
    running = module.slow.apply_async((30,)).id
    deadline = time.time() + 15
    while time.time() < deadline and running not in worker.log_text():
        time.sleep(0.2)
    time.sleep(0.5)
    # the ETA task: in the unacked hash (delivered, not acked) and in the worker's scheduled list
    _, data = trace(held, cwd, env, timeout=6)
    where = {(loc["where"], loc["state"]) for loc in data["locations"]}
    assert ("redis unacked", "unacked") in where
    unacked = next(loc for loc in data["locations"] if loc["where"] == "redis unacked")
    assert "re-queued about" in unacked["next"] and any("eta" in d for d in unacked["details"])
    # the finished task: in the result backend
    _, data = trace(done, cwd, env, timeout=6)
    assert [(loc["where"], loc["state"]) for loc in data["locations"]] == [("result backend", "SUCCESS")]
    # the running task on a busy solo worker: unacked (acks_late); the worker cannot answer while busy
    result, data = trace(running, cwd, env, timeout=4)
    assert ("redis unacked", "unacked") in {(loc["where"], loc["state"]) for loc in data["locations"]}, data
    assert any(item["where"] == "workers" and "did not answer" in item["reason"] for item in data["not_checked"])
    assert result.returncode == 0


@pytest.mark.redis
def test_large_queue_parses_only_the_match_and_stops_there(redis_app):
    from celery_doctor import trace_redis
    from celery_doctor.broker_target import BrokerTarget
    from celery_doctor.collectors import CollectContext
    from celery_doctor.collectors.config import collect_config
    from celery_doctor.deadline import Deadline
    from tests.conftest import make_snapshot

    module, queue, _env, _cwd = redis_app
    client = redis.Redis(db=DB)
    template = module.add.apply_async((0, 0)).id
    payload = client.lindex(queue, 0)
    client.delete(queue)
    fillers = [payload.replace(template.encode(), str(uuid.uuid4()).encode()) for _ in range(20000)]
    target = str(uuid.uuid4())
    client.rpush(queue, *fillers[:10000], payload.replace(template.encode(), target.encode()), *fillers[10000:])
    decoded = []
    original = trace_redis.decode_payload
    trace_redis.decode_payload = lambda raw: decoded.append(raw) or original(raw)
    try:
        snapshot = make_snapshot(module.app, mode="scan")
        ctx = CollectContext(app=module.app, broker=BrokerTarget.parse(REDIS_URL), config=collect_config(module.app),
                             deadline=Deadline(10))
        locations, _checked, _not_checked = trace_redis.trace_search(ctx, target, snapshot)
    finally:
        trace_redis.decode_payload = original
    assert len(decoded) == 1  # only the matching message was parsed
    assert locations[0].name == f"queue:{queue}"
    assert "10,000 messages ahead of it in this list" in locations[0].details
    assert client.llen(queue) == 20001  # nothing consumed


@pytest.mark.rabbitmq
def test_rabbitmq_trace_needs_peek_and_peek_leaves_the_queue_as_it_was(tmp_path):
    import urllib.request

    queue = f"trace-{uuid.uuid4().hex[:8]}"
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    write_tree(tmp_path, {"traceapp.py": APP})
    env = {"TRACE_BROKER": amqp, "TRACE_QUEUE": queue}
    from celery import Celery

    producer = Celery("producer", broker=amqp, set_as_current=False)
    producer.conf.task_default_queue = queue
    ids = [producer.send_task("traceapp.add", (i, i)).id for i in range(3)]

    def depth(expected=(3, 0, 0)):
        """The queue's (ready, unacked, consumers), waiting for the management API's counters to catch up."""
        request = urllib.request.Request(f"http://127.0.0.1:15672/api/queues/%2F/{queue}")
        request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
        seen = None
        for _ in range(60):
            data = json.load(urllib.request.urlopen(request, timeout=5))
            seen = (data.get("messages_ready"), data.get("messages_unacknowledged"), data.get("consumers"))
            if seen == expected:
                return seen
            time.sleep(0.25)
        return seen

    try:
        assert depth() == (3, 0, 0)
        result, data = trace(ids[1], tmp_path, env)
        assert result.returncode == 1 and not data["found"]
        assert any("--peek" in item["reason"] for item in data["not_checked"])
        result, data = trace(ids[1], tmp_path, env, "--peek")
        assert data["found"], data
        [location] = data["locations"]
        assert location["where"] == "rabbitmq queue" and location["name"] == f"queue:{queue}"
        assert "nothing consumes this queue" in location["next"]
        assert depth() == (3, 0, 0)  # requeued: nothing consumed, nothing left unacked
    finally:
        with producer.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        producer.close()


@pytest.mark.redis
def test_result_backend_with_pickle_is_not_read(redis_app, tmp_path):
    """A result stored with pickle would be unpickled by get_task_meta: trace must not read it."""
    import pickle

    _module, _queue, env, cwd = redis_app
    marker = tmp_path / "unpickled"
    task_id = str(uuid.uuid4())

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    client = redis.Redis(db=DB)
    client.set(f"celery-task-meta-{task_id}", pickle.dumps({"status": "SUCCESS", "result": Boom(),
                                                            "task_id": task_id}), ex=60)
    (cwd / "pickleapp.py").write_text(
        "import os\nfrom celery import Celery\n"
        "app = Celery('pickleapp', broker=os.environ['TRACE_BROKER'], backend=os.environ['TRACE_BACKEND'])\n"
        "app.conf.result_serializer = 'pickle'\napp.conf.accept_content = ['json', 'pickle']\n")
    result = run_cli("trace", task_id, "--app", "pickleapp", "--format", "json", "--timeout", "5", cwd=cwd, env=env)
    data = json.loads(result.stdout)
    assert not marker.exists()
    assert any(item["where"] == "result backend" and "pickle" in item["reason"] for item in data["not_checked"])
    client.delete(f"celery-task-meta-{task_id}")
