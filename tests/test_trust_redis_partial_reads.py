"""Never claim more than was read, on Redis (issue: trust, parts 2, 3 and 5).

Restricted users run what their permissions allow and list what they did not; a queue whose length may not be
read is not shown as empty; a queue key of the wrong type is reported; a trace cut short by its deadline says
where and how far it got, and "not found" only follows a complete search. Real Redis (db 12), real CLI.
"""
from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import json_places
from tests.test_trust_support import AclUser, canary, cli, delete_new_keys, redis_available, redis_client, uid

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB = 12
SEP = "\x06\x16"


def _message(task: str = "proj.tasks.add", task_id: str | None = None, queue: str = "celery") -> bytes:
    task_id = task_id or str(uuid.uuid4())
    return json.dumps({
        "body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "retries": 0,
                    "eta": None, "expires": None, "argsrepr": "()", "kwargsrepr": "{}", "origin": "gen1@test"},
        "properties": {"correlation_id": task_id, "reply_to": "r", "delivery_mode": 2, "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())}}).encode()


@pytest.fixture
def db():
    before = set(redis_client(DB).scan_iter(count=1000))
    yield redis_client(DB)
    delete_new_keys(DB, before)


def _not_checked(run) -> list[tuple[str, str]]:
    return [(e["part"], e["reason"]) for e in run.json()["not_checked"]]


def _status(run, check: str) -> dict:
    return next(c for c in run.json()["checks"] if c["id"] == check)


def test_acl_without_dangerous_commands_still_reads_queues_and_skips_only_server_checks(db, tmp_path):
    queue = f"acl-{uid()}"
    db.lpush(queue, *[_message(queue=queue) for _ in range(5)])
    password = canary("A")
    user = AclUser([password], rules=("~*", "&*", "+@all", "-@dangerous"))  # INFO is dangerous in Redis 7
    try:
        run = cli("scan", "--broker", user.url(DB), "--format", "json", "--timeout", "10", "--fail-on", "never",
                  cwd=tmp_path)
        assert run.code == 0 and not run.crash_logs and password not in run.everything(), str(run)
        not_checked = _not_checked(run)
        assert "redis" not in dict(not_checked), not_checked  # the part is gathered, not "collector failed"
        assert any("INFO is not allowed" in reason for _, reason in not_checked), not_checked
        for server_check in ("CD201", "CD202", "CD203", "CD204"):
            status = _status(run, server_check)
            assert status["status"] == "skipped" and "INFO was not allowed" in status["reason"], status
        backlog = [f for f in json_places(run.json()["findings"]) if f["subject"] == f"queue:{queue}"]
        assert backlog, "the queue the user may read was not read"
    finally:
        user.delete()


def test_a_queue_whose_length_may_not_be_read_is_not_shown_empty(db, tmp_path):
    tag = uid()
    allowed, hidden = f"open-{tag}", f"hidden-{tag}"
    db.lpush(allowed, _message(queue=allowed))
    db.lpush(hidden, *[_message(queue=hidden) for _ in range(3)])
    db.sadd("_kombu.binding.celery", f"{allowed}{SEP}{SEP}{allowed}", f"{hidden}{SEP}{SEP}{hidden}")
    password = canary("K")
    user = AclUser([password], rules=(f"~open-{tag}*", "~_kombu.*", "~unacked*", "&*", "+@all"))
    try:
        run = cli("scan", "--broker", user.url(DB), "--format", "json", "--timeout", "10", "--fail-on", "never",
                  cwd=tmp_path)
        assert run.code == 0 and not run.crash_logs, str(run)
        reasons = " ".join(reason for _, reason in _not_checked(run))
        assert f"queue '{hidden}'" in reasons and "may not be empty" in reasons, reasons
        assert "NOPERM" in reasons or "no permissions" in reasons, reasons
    finally:
        user.delete()


def test_a_priority_key_of_the_wrong_type_is_reported(db, tmp_path):
    queue = f"wrongtype-{uid()}"
    db.lpush(queue, _message(queue=queue))
    db.set(f"{queue}{SEP}3", "not a list")
    db.sadd("_kombu.binding.celery", f"{queue}{SEP}{SEP}{queue}")
    run = cli("scan", "--broker", f"redis://127.0.0.1:6379/{DB}", "--format", "json", "--timeout", "10",
              "--fail-on", "never", cwd=tmp_path)
    assert run.code == 0 and not run.crash_logs, str(run)
    found = [f for f in json_places(run.json()["findings"]) if f["check"] == "CD218"]
    assert found and found[0]["subject"] == f"queue:{queue}", run.stdout
    assert "WRONGTYPE" in " ".join(found[0]["evidence"])
    # ... and trace still searches the list keys around it
    task_id = str(uuid.uuid4())
    db.lpush(queue, _message(queue=queue, task_id=task_id))
    trace = cli("trace", task_id, "--broker", f"redis://127.0.0.1:6379/{DB}", "--format", "json", "--timeout", "10",
                cwd=tmp_path)
    assert trace.code == 0, str(trace)
    assert trace.json()["found"] and trace.json()["locations"][0]["name"] == f"queue:{queue}"


def test_a_trace_cut_short_says_where_and_how_far_never_not_found(db, tmp_path):
    queue = f"long-{uid()}"
    filler = _message(queue=queue)
    pipe = db.pipeline(transaction=False)
    for _ in range(60):
        pipe.lpush(queue, *([filler] * 5000))
    pipe.execute()  # 300,000 messages: more than a 1 s trace can read
    db.sadd("_kombu.binding.celery", f"{queue}{SEP}{SEP}{queue}")
    missing = str(uuid.uuid4())
    run = cli("trace", missing, "--broker", f"redis://127.0.0.1:6379/{DB}", "--format", "json", "--timeout", "1",
              cwd=tmp_path)
    assert run.code in (0, 1), str(run)
    assert run.seconds < 6, f"took {run.seconds:.1f} s with --timeout 1"
    report = run.json()
    assert not report["found"]
    assert not any("redis queues" in c for c in report["checked"]), report["checked"]
    where = [e for e in report["not_checked"] if queue in e["where"] or queue in e["reason"]]
    assert where, report["not_checked"]
    assert "searched" in where[0]["reason"] or "not searched" in where[0]["reason"], where
    # CD001 is for an unreachable broker, never for a slow search
    assert not any(c["check"] == "CD001" for c in report["likely_causes"]), report["likely_causes"]


def test_a_deep_read_whose_connection_is_killed_says_so_and_checks_skip(db, tmp_path):
    import subprocess
    import sys
    import threading
    import time

    queue = f"killed-{uid()}"
    filler = _message(queue=queue)
    pipe = db.pipeline(transaction=False)
    for _ in range(40):
        pipe.lpush(queue, *([filler] * 5000))
    pipe.execute()  # 200,000 messages: the deep read uses a second, read-ahead connection
    db.sadd("_kombu.binding.celery", f"{queue}{SEP}{SEP}{queue}")
    killed = []
    stop = threading.Event()

    def kill_readers() -> None:
        admin = redis_client(DB)
        while not stop.is_set():
            for client in admin.client_list():
                if client.get("name") == "celery-doctor" and client.get("cmd") == "lrange":
                    try:
                        admin.client_kill_filter(_id=client["id"])
                        killed.append(client["id"])
                    except Exception:  # noqa: BLE001 - already gone
                        pass
            time.sleep(0.01)

    env = dict(__import__("os").environ, PYTHONPATH=str(tmp_path))
    env.pop("CELERY_BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "celery_doctor", "scan", "--deep", "--broker",
                             f"redis://127.0.0.1:6379/{DB}", "--format", "json", "--timeout", "20", "--fail-on",
                             "never"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killer = threading.Thread(target=kill_readers, daemon=True)
    time.sleep(0.8)
    killer.start()
    out, err = proc.communicate(timeout=60)
    stop.set()
    killer.join(5)
    assert proc.returncode == 0, err
    assert killed, "no LRANGE of celery-doctor was caught in flight"
    report = json.loads(out)
    reasons = [e["reason"] for e in report["not_checked"] if queue in e["reason"]]
    assert reasons and "then stopped" in reasons[0], report["not_checked"]
    status = next(c for c in report["checks"] if c["id"] == "CD213")
    assert status["status"] == "skipped" and "partly read" in status["reason"], status
