"""Live workers on RabbitMQ: real `celery worker` processes (solo and prefork) in a private vhost, a routed
queue nobody consumes, a busy solo worker, an acks_late task held past consumer_timeout, no leftovers."""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pytest

from celery_doctor.broker_target import BrokerTarget
from celery_doctor.collectors import CollectContext, ScanOptions
from celery_doctor.collectors.config import collect_config
from celery_doctor.collectors.workers import collect_workers
from celery_doctor.deadline import Deadline
from celery_doctor.diagnose import RunOptions, diagnose
from tests.conftest import json_places, run_cli
from tests.test_workers_redis import APP_ONLY, write_app
from tests.workerproc import WorkerFactory

pytestmark = [pytest.mark.rabbitmq, pytest.mark.workers]

API = "http://127.0.0.1:15672/api"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, data=data, method=method,
                                     headers={"Authorization": AUTH, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
        return json.loads(text) if text else None


def make_vhost():
    """A private vhost (the test's own setup, deleted at teardown): other suites' workers stay invisible."""
    name = f"cd-workers-{uuid.uuid4().hex[:8]}"
    api("PUT", f"/vhosts/{quote(name, safe='')}", {})
    api("PUT", f"/permissions/{quote(name, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return name, f"amqp://guest:guest@127.0.0.1:5672/{name}"


def drop_vhost(name):
    try:
        api("DELETE", f"/vhosts/{quote(name, safe='')}")
    except urllib.error.HTTPError:
        pass


def names(kind, vhost):
    return sorted(item["name"] for item in api("GET", f"/{kind}/{quote(vhost, safe='')}?columns=name"))


def collect(app, timeout=3.0, **options):
    ctx = CollectContext(app=app, broker=BrokerTarget.of_app(app), config=collect_config(app),
                         deadline=Deadline(timeout), options=ScanOptions(timeout=timeout, **options))
    return collect_workers(ctx)


def findings(report, check_id):
    """Every place a check found, one finding each (a cause in several places is one ranked row)."""
    return [p for r in report.findings for p in r.finding.places if p.check == check_id]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    os.environ["CELERY_DOCTOR_RAISE_CHECK_ERRORS"] = "1"
    base = tmp_path_factory.mktemp("workers_rabbitmq")
    uid = uuid.uuid4().hex[:8]
    vhost, url = make_vhost()
    app_mod = write_app(base, f"cdrapp_{uid}", uid, url, APP_ONLY)
    work_mod = write_app(base, f"cdrwork_{uid}", uid, url)
    factory = WorkerFactory()
    try:
        solo, prefork = factory.start_many([
            dict(app=work_mod, cwd=base, pool="solo", queues=[f"def-{uid}", f"slow-{uid}"], name=f"solo-{uid}"),
            dict(app=work_mod, cwd=base, pool="prefork", concurrency=2, queues=[f"def-{uid}", f"long-{uid}"],
                 name=f"prefork-{uid}", env={"CDT_DRIFT": "1"}),
        ])
        from celery_doctor.target import load_app

        app = load_app(app_mod, str(base))
        yield dict(base=base, uid=uid, app_mod=app_mod, app=app, solo=solo, prefork=prefork, vhost=vhost)
    finally:
        factory.stop_all()
        drop_vhost(vhost)


def test_idle_workers_answer_and_routing_gaps_are_named(env):
    uid, app = env["uid"], env["app"]
    app.send_task("cdt.orphan", queue=f"orphan-{uid}")
    app.send_task("cdt.orphan", queue=f"orphan-{uid}")
    started = time.monotonic()
    part = collect(app, timeout=5)
    assert part.ok, part.reason
    state = part.data
    assert time.monotonic() - started < 1.5
    assert state.discovered and state.addressed, (state.discovery, state.discovery_error)
    solo, prefork = state.by_name(env["solo"].nodename), state.by_name(env["prefork"].nodename)
    assert solo is not None and prefork is not None and solo.known and prefork.known
    assert {w.name for w in state.workers} == {solo.name, prefork.name}  # the private vhost has only these
    assert solo.queue_names == {f"def-{uid}", f"slow-{uid}"} and prefork.queue_names == {f"def-{uid}", f"long-{uid}"}
    assert solo.broker_transport == "amqp" and prefork.conf["task_acks_late"] is True

    # The management API publishes queue counts every few seconds: wait until it shows both messages.
    path = f"/queues/{quote(env['vhost'], safe='')}/{quote(f'orphan-{uid}', safe='')}"
    until = time.monotonic() + 12
    while api("GET", path).get("messages") != 2 and time.monotonic() < until:
        time.sleep(0.25)
    report = scan(env)
    orphan = [f for f in findings(report, "CD401") if f.subject == f"queue:orphan-{uid}"]
    assert len(orphan) == 1 and orphan[0].confidence.value == "observed"
    broker_read = "rabbitmq" not in dict(report.not_checked)
    assert orphan[0].messages_at_risk == (2 if broker_read else None), (orphan[0].evidence, report.not_checked)
    assert "task:cdt.only_in_app" in {f.subject for f in findings(report, "CD402")}
    drift = {f.subject for f in findings(report, "CD403")}
    assert drift == {f"worker:{env['prefork'].nodename}"}
    assert not findings(report, "CD409") and not findings(report, "CD410")


def scan(env, timeout=3.0):
    report, _ = diagnose(RunOptions(mode="scan", app=env["app_mod"], cwd=str(env["base"]), timeout=timeout,
                                    scan=ScanOptions(timeout=timeout)))
    return report


def test_busy_solo_worker_and_consumer_timeout(env):
    uid, app = env["uid"], env["app"]
    app.send_task("cdt.slow", args=(8,), queue=f"slow-{uid}")
    app.send_task("cdt.long", args=(8,), queue=f"long-{uid}")
    app.send_task("cdt.add", args=(1, 2), queue=f"long-{uid}", countdown=30)  # held unacked until due
    assert env["solo"].wait_for_log("cdt.slow[", timeout=10)
    assert env["prefork"].wait_for_log("cdt.long[", timeout=10)
    time.sleep(2.2)  # the acks_late task is now older than the consumer_timeout given below (2 s)
    timeout = 3.0
    started = time.monotonic()
    result = run_cli("scan", "--app", env["app_mod"], "--format", "json", "--timeout", str(timeout),
                     "--consumer-timeout", "2", cwd=env["base"],
                     env={"CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1", "PYTHONPATH": str(env["base"])})
    wall = time.monotonic() - started
    data = json.loads(result.stdout)
    assert data["duration_s"] <= timeout + 1.0 and wall <= timeout + 4.0, (data["duration_s"], wall)
    by_check = {}
    for f in json_places(data["findings"]):
        by_check.setdefault(f["check"], []).append(f)
    assert [f["subject"] for f in by_check.get("CD410", [])] == [f"worker:{env['solo'].nodename}"]
    assert any("not absent" in e for e in by_check["CD410"][0]["evidence"])
    assert "CD409" not in by_check
    held = [f for f in by_check.get("CD407", []) if f["subject"] == f"worker:{env['prefork'].nodename}"]
    assert held, by_check.keys()
    assert any("cdt.long" in e for e in held[0]["evidence"]) and held[0]["messages_at_risk"] >= 1
    evidence = " ".join(held[0]["evidence"])
    assert "consumer_timeout=2 s" in evidence and "not acknowledged" in evidence
    assert "ETA task" in evidence and "cdt.add[" in evidence and held[0]["messages_at_risk"] >= 2


def test_no_reply_queue_or_exchange_of_the_doctor_remains(env):
    vhost = env["vhost"]
    deadline = time.monotonic() + 15
    state = None
    while time.monotonic() < deadline:  # until the busy worker is free (it then replies to a queue that is gone)
        state = collect(env["app"], timeout=2).data
        if state and not state.silent:
            break
    assert state is not None and not state.silent
    time.sleep(0.3)
    assert not [q for q in names("queues", vhost) if "reply" in q], names("queues", vhost)
    assert "reply.celery.pidbox" not in names("exchanges", vhost)  # replies come on the default exchange


def test_no_worker_at_all(tmp_path):
    vhost, url = make_vhost()
    try:
        uid = uuid.uuid4().hex[:8]
        module = write_app(tmp_path, f"cdrnone_{uid}", uid, url)
        started = time.monotonic()
        report, _ = diagnose(RunOptions(mode="scan", app=module, cwd=str(tmp_path), timeout=3.0,
                                        scan=ScanOptions(timeout=3.0)))
        assert time.monotonic() - started < 3.5
        none = findings(report, "CD409")
        assert len(none) == 1 and none[0].confidence.value == "observed", [r.finding for r in report.findings]
        assert not findings(report, "CD410") and not findings(report, "CD401")
        # the doctor declared nothing: no control exchange, no reply queue
        assert "celery.pidbox" not in names("exchanges", vhost)
        assert names("queues", vhost) == []
    finally:
        drop_vhost(vhost)


def test_management_api_unreachable_still_finds_workers(env):
    """Without the management API the doctor cannot name silent workers, but it still hears the others."""
    part = collect(env["app"], timeout=2.5, management_url="http://127.0.0.1:1")
    assert part.ok
    state = part.data
    assert not state.discovered and "connection refused" in (state.discovery_error or "")
    assert not state.addressed
    assert {env["solo"].nodename, env["prefork"].nodename} <= {w.name for w in state.answered}


def test_silent_management_api_leaves_time_for_the_broadcast(env):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts, never answers
    try:
        started = time.monotonic()
        part = collect(env["app"], timeout=3.0, management_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert time.monotonic() - started < 3.0
        assert part.ok and "did not answer within" in part.data.discovery_error
        assert {env["solo"].nodename, env["prefork"].nodename} <= {w.name for w in part.data.answered}
    finally:
        silent.close()
