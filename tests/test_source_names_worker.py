"""The mechanism CD541 rests on, with a real worker and Redis (db 9): a message naming a task the worker does not
register is rejected without requeue and so discarded (celery/worker/consumer/consumer.py Consumer.on_unknown_task
-> kombu Message.reject_log_error(requeue=False)), and its result is FAILURE NotRegistered. Nothing is left in the
queue or among the unacked messages: the task is gone for good."""
from __future__ import annotations

import time

import redis
from celery import Celery

from tests.conftest import write_tree
from tests.workerproc import unique_name, worker_factory  # noqa: F401 (fixture)

REDIS = "redis://127.0.0.1:6379/9"


def test_a_task_name_the_worker_does_not_register_is_discarded(tmp_path, worker_factory):
    module = unique_name("cdunreg").replace("-", "_")
    queue = unique_name("q-cd541")
    write_tree(tmp_path, {f"{module}.py": f"""
        from celery import Celery

        app = Celery("{module}", broker="{REDIS}", backend="{REDIS}")


        @app.task(name="{module}.charge_order")
        def charge_order(order_id):
            return order_id
        """})
    client = redis.Redis(db=9)
    app = Celery(module, broker=REDIS, backend=REDIS, set_as_current=False)
    result = None
    worker = worker_factory(module, cwd=tmp_path, broker=REDIS, queues=[queue])
    try:
        result = app.send_task(f"{module}.charge_ordr", args=(7,), queue=queue)  # the typo CD541 reports
        assert worker.wait_for_log("Received unregistered task", timeout=20), worker.tail()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and result.state != "FAILURE":
            time.sleep(0.2)
        assert result.state == "FAILURE" and type(result.result).__name__ == "NotRegistered", result.state
        assert client.llen(queue) == 0  # not requeued
        assert not any(result.id.encode() in value for value in client.hvals("unacked")), "left unacked"
        assert "The message has been ignored and discarded" in worker.log_text()
    finally:
        worker.stop()
        keys = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
        client.delete(*keys, *([f"celery-task-meta-{result.id}"] if result is not None else []))
        client.zrem("_kombu.binding_deadlines", queue, "celery.pidbox")  # the worker's bindings (db 9 is ours)
        left = [k for k in client.scan_iter(match="*") if queue.encode() in k or k.startswith(b"_kombu.binding")]
        assert not left, left
        app.close()
