"""Live workers on Redis: real `celery worker` processes (solo and prefork), a routed queue nobody consumes, a
worker the app's code has outgrown, config drift, a solo worker kept busy by a long task, and no leftovers."""
from __future__ import annotations

import json
import os
import textwrap
import time
import uuid

import pytest
import redis

from celery_doctor.broker_target import BrokerTarget
from celery_doctor.collectors import CollectContext, ScanOptions
from celery_doctor.collectors.config import collect_config
from celery_doctor.collectors.workers import collect_workers
from celery_doctor.deadline import Deadline
from celery_doctor.diagnose import RunOptions, diagnose
from tests.conftest import json_places, run_cli
from tests.workerproc import WorkerFactory, worker_factory  # noqa: F401 (fixture)

pytestmark = [pytest.mark.redis, pytest.mark.workers]

DB = 7  # this module's workers
DB_EMPTY = 8  # a broker with no worker at all
DB_PREFIX = 9  # global_keyprefix

BASE = '''
import os, time
from celery import Celery

UID = "{uid}"
app = Celery("cdt_{uid}", broker="{broker}")
app.conf.update(
    task_default_queue=f"def-{{UID}}",
    task_routes={{"cdt.slow": {{"queue": f"slow-{{UID}}"}}, "cdt.long": {{"queue": f"long-{{UID}}"}},
                 "cdt.orphan": {{"queue": f"orphan-{{UID}}"}}}},
    broker_transport_options={transport_options!r},
)
if os.environ.get("CDT_DRIFT"):
    app.conf.task_acks_late = True
    app.conf.broker_transport_options = {{**app.conf.broker_transport_options, "visibility_timeout": 3}}


@app.task(name="cdt.add", shared=False)
def add(x, y):
    return x + y


@app.task(name="cdt.slow", shared=False)
def slow(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="cdt.long", shared=False)
def long(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="cdt.orphan", shared=False)
def orphan():
    return 1
'''

APP_ONLY = '''

@app.task(name="cdt.only_in_app", shared=False)
def only_in_app():
    return 1
'''


def write_app(path, name, uid, db, extra="", transport_options=None):
    """A test app module; `db` is a Redis database number or a broker URL. Task names are shared by the
    doctor's app and the workers' app (`cdt.*`), so one module can lack a task the other has."""
    broker = db if isinstance(db, str) else f"redis://127.0.0.1:6379/{db}"
    text = textwrap.dedent(BASE).format(uid=uid, broker=broker, transport_options=transport_options or {})
    (path / f"{name}.py").write_text(text + extra)
    return name


def scan(module, cwd, timeout=3.0):
    report, _ = diagnose(RunOptions(mode="scan", app=module, cwd=str(cwd), timeout=timeout,
                                    scan=ScanOptions(timeout=timeout)))
    return report


def findings(report, check_id):
    """Every place a check found, one finding each (a cause in several places is one ranked row)."""
    return [p for r in report.findings for p in r.finding.places if p.check == check_id]


def collect(app, timeout=3.0):
    ctx = CollectContext(app=app, broker=BrokerTarget.of_app(app), config=collect_config(app),
                         deadline=Deadline(timeout), options=ScanOptions(timeout=timeout))
    return collect_workers(ctx)


def reply_keys(client):
    return sorted(k for k in client.scan_iter(match="*reply*", count=1000))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    os.environ["CELERY_DOCTOR_RAISE_CHECK_ERRORS"] = "1"
    base = tmp_path_factory.mktemp("workers_redis")
    uid = uuid.uuid4().hex[:8]
    app_mod = write_app(base, f"cdapp_{uid}", uid, DB, APP_ONLY)
    work_mod = write_app(base, f"cdwork_{uid}", uid, DB)
    client = redis.Redis(db=DB)
    client.flushdb()
    factory = WorkerFactory()
    try:
        solo, prefork = factory.start_many([
            dict(app=work_mod, cwd=base, pool="solo", queues=[f"def-{uid}", f"slow-{uid}"], name=f"solo-{uid}"),
            dict(app=work_mod, cwd=base, pool="prefork", concurrency=2, queues=[f"def-{uid}", f"long-{uid}"],
                 name=f"prefork-{uid}", env={"CDT_DRIFT": "1"}),
        ])
        from celery_doctor.target import load_app

        app = load_app(app_mod, str(base))
        yield dict(base=base, uid=uid, app_mod=app_mod, app=app, solo=solo, prefork=prefork, client=client)
    finally:
        factory.stop_all()
        client.flushdb()


def test_idle_workers_answer_and_routing_gaps_are_named(env):
    uid, app = env["uid"], env["app"]
    app.send_task("cdt.orphan", queue=f"orphan-{uid}")
    app.send_task("cdt.orphan", queue=f"orphan-{uid}")
    started = time.monotonic()
    part = collect(app, timeout=5)
    assert part.ok, part.reason
    state = part.data
    assert time.monotonic() - started < 1.5  # every known worker answered: no waiting for the deadline
    solo, prefork = state.by_name(env["solo"].nodename), state.by_name(env["prefork"].nodename)
    assert solo is not None and prefork is not None
    assert solo.known and prefork.known and not state.silent
    assert set(solo.answered) == set(state.commands)
    assert solo.queue_names == {f"def-{uid}", f"slow-{uid}"}
    assert prefork.queue_names == {f"def-{uid}", f"long-{uid}"}
    assert "cdt.add" in solo.registered and "cdt.only_in_app" not in solo.registered
    assert solo.solo and prefork.concurrency == 2
    assert prefork.conf["task_acks_late"] is True and prefork.visibility_timeout == 3
    assert solo.celery_version and solo.kombu_version

    report = scan(env["app_mod"], env["base"])
    orphan = [f for f in findings(report, "CD401") if f.subject == f"queue:orphan-{uid}"]
    assert len(orphan) == 1, findings(report, "CD401")
    assert orphan[0].confidence.value == "observed" and orphan[0].impact.value == "high"
    assert any("cdt.orphan" in e for e in orphan[0].evidence)
    broker_read = "redis" not in dict(report.not_checked)
    assert orphan[0].messages_at_risk == (2 if broker_read else None), (orphan[0].evidence, report.not_checked)
    consumed = {f"def-{uid}", f"slow-{uid}", f"long-{uid}"}
    assert not [f for f in findings(report, "CD401") if f.subject.split(":", 1)[1] in consumed]

    unregistered = {f.subject: f for f in findings(report, "CD402")}
    assert "task:cdt.only_in_app" in unregistered
    assert any(f"def-{uid}" in e for e in unregistered["task:cdt.only_in_app"].evidence)
    assert "task:cdt.add" not in unregistered

    drift = {f.subject: f for f in findings(report, "CD403")}
    assert f"worker:{env['prefork'].nodename}" in drift and f"worker:{env['solo'].nodename}" not in drift
    text = " ".join(drift[f"worker:{env['prefork'].nodename}"].evidence)
    assert "task_acks_late: app=False, worker=True" in text and "visibility_timeout: app=3600 s, worker=3 s" in text
    assert not findings(report, "CD409") and not findings(report, "CD410")


def test_busy_solo_worker_is_named_busy_not_absent(env):
    uid, app = env["uid"], env["app"]
    app.send_task("cdt.slow", args=(9,), queue=f"slow-{uid}")
    app.send_task("cdt.long", args=(9,), queue=f"long-{uid}")
    app.send_task("cdt.add", args=(1, 2), queue=f"long-{uid}", countdown=60)  # ETA held past the worker's vt (3 s)
    assert env["solo"].wait_for_log("cdt.slow[", timeout=10)
    assert env["prefork"].wait_for_log("cdt.long[", timeout=10)
    time.sleep(3.5)  # the acks_late task on the prefork worker is now older than its visibility_timeout (3 s)
    timeout = 3.0
    started = time.monotonic()
    result = run_cli("scan", "--app", env["app_mod"], "--format", "json", "--timeout", str(timeout),
                     cwd=env["base"], env={"CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1", "PYTHONPATH": str(env["base"])})
    wall = time.monotonic() - started
    data = json.loads(result.stdout)
    assert data["duration_s"] <= timeout + 1.0, data["duration_s"]
    assert wall <= timeout + 4.0, wall  # process start and imports included
    by_check = {}
    for f in json_places(data["findings"]):
        by_check.setdefault(f["check"], []).append(f)
    silent = [f for f in by_check.get("CD410", []) if f["subject"] == f"worker:{env['solo'].nodename}"]
    assert silent, by_check.keys()
    assert any("busy" in e and "not absent" in e for e in silent[0]["evidence"])
    assert "CD409" not in by_check  # never "no worker": the busy one exists
    assert not [f for f in by_check.get("CD410", []) if f["subject"] == f"worker:{env['prefork'].nodename}"]
    held = [f for f in by_check.get("CD406", []) if f["subject"] == f"worker:{env['prefork'].nodename}"]
    assert held, by_check.get("CD406")
    evidence = " ".join(held[0]["evidence"])
    assert "visibility_timeout=3 s on the worker" in evidence
    assert "running task" in evidence and "cdt.long[" in evidence and "not acknowledged" in evidence
    assert "ETA task" in evidence and "cdt.add[" in evidence
    assert held[0]["messages_at_risk"] >= 2
    statuses = {c["id"]: c["status"] for c in data["checks"]}
    assert statuses["CD410"] == "failed" and statuses["CD409"] == "passed"
    # the slow queue is consumed only by the silent worker: not claimed unconsumed with certainty
    slow = [f for f in by_check.get("CD401", []) if f["subject"] == f"queue:slow-{uid}"]
    assert all(f["confidence"] == "inferred" and f["impact"] == "medium" for f in slow)


def test_no_reply_key_or_binding_of_the_doctor_remains(env):
    client = env["client"]
    # Wait until the busy worker is free again: it then answers the commands it received while busy,
    # to a reply queue that must be gone (its binding removed first, so the late replies are dropped).
    assert env["solo"].wait_for_log("cdt.slow[", timeout=5)
    deadline = time.monotonic() + 15
    state = None
    while time.monotonic() < deadline:
        part = collect(env["app"], timeout=2)
        state = part.data
        if state and not state.silent:
            break
    assert state is not None and not state.silent, [w.name for w in state.silent]
    time.sleep(0.3)
    assert reply_keys(client) == []
    assert not client.exists("_kombu.binding.reply.celery.pidbox")
    # the workers' own mailbox bindings are untouched
    members = {m.decode() for m in client.smembers("_kombu.binding.celery.pidbox")}
    assert any(env["solo"].nodename in m for m in members) and any(env["prefork"].nodename in m for m in members)


def test_no_worker_at_all(tmp_path):
    client = redis.Redis(db=DB_EMPTY)
    client.flushdb()
    uid = uuid.uuid4().hex[:8]
    module = write_app(tmp_path, f"cdnone_{uid}", uid, DB_EMPTY)
    try:
        started = time.monotonic()
        report = scan(module, tmp_path, timeout=3.0)
        assert time.monotonic() - started < 3.5
        none = findings(report, "CD409")
        assert len(none) == 1 and none[0].confidence.value == "observed"
        assert any("_kombu.binding.celery.pidbox" in e for e in none[0].evidence)
        assert not findings(report, "CD401") and not findings(report, "CD410")
        assert reply_keys(client) == []
    finally:
        client.flushdb()


def test_global_keyprefix_is_honoured(tmp_path):
    client = redis.Redis(db=DB_PREFIX)
    client.flushdb()
    uid = uuid.uuid4().hex[:8]
    prefix = f"pfx{uid}:"
    module = write_app(tmp_path, f"cdpfx_{uid}", uid, DB_PREFIX, transport_options={"global_keyprefix": prefix})
    factory = WorkerFactory()
    try:
        worker = factory(module, cwd=tmp_path, pool="solo", queues=[f"def-{uid}"])
        assert client.exists(f"{prefix}_kombu.binding.celery.pidbox")
        from celery_doctor.target import load_app

        part = collect(load_app(module, str(tmp_path)), timeout=3)
        assert part.ok, part.reason
        found = part.data.by_name(worker.nodename)
        assert found is not None and found.known and found.queue_names == {f"def-{uid}"}
        assert part.data.elapsed_s < 1.5
        assert reply_keys(client) == []
    finally:
        factory.stop_all()
        client.flushdb()


def test_reserved_piling_on_one_worker_while_another_is_idle(tmp_path, worker_factory):
    client = redis.Redis(db=DB_PREFIX)
    client.flushdb()
    uid = uuid.uuid4().hex[:8]
    module = write_app(tmp_path, f"cdhoard_{uid}", uid, DB_PREFIX)
    queue = f"slow-{uid}"
    try:
        # prefork with one process: its main process keeps answering while the child runs, and it prefetches
        # 4 messages (concurrency 1 x worker_prefetch_multiplier 4)
        hoarder = worker_factory(module, cwd=tmp_path, pool="prefork", concurrency=1, queues=[queue])
        from celery_doctor.target import load_app

        app = load_app(module, str(tmp_path))
        for _ in range(4):
            app.send_task("cdt.slow", args=(6,), queue=queue)
        assert hoarder.wait_for_log("cdt.slow[", timeout=10)
        deadline = time.monotonic() + 5
        while client.llen(queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.llen(queue) == 0  # all four are now in the hoarder's hands
        idle = worker_factory(module, cwd=tmp_path, pool="prefork", concurrency=1, queues=[queue])
        report = scan(module, tmp_path, timeout=3.0)
        hoarding = findings(report, "CD405")
        assert [f.subject for f in hoarding] == [f"worker:{hoarder.nodename}"], [r.finding for r in report.findings]
        text = " ".join(hoarding[0].evidence)
        assert "3 reserved tasks" in text and idle.nodename in text and "prefetch_count=4" in text
        assert hoarding[0].messages_at_risk == 3
    finally:
        worker_factory.stop_all()
        client.flushdb()


def test_killed_worker_is_silent_not_absent(tmp_path, worker_factory):
    """SIGKILL leaves the worker's mailbox binding on Redis: the doctor names it as not answering, with the hint."""
    db = 10
    client = redis.Redis(db=db)
    client.flushdb()
    uid = uuid.uuid4().hex[:8]
    module = write_app(tmp_path, f"cdkill_{uid}", uid, db)
    try:
        worker = worker_factory(module, cwd=tmp_path, pool="solo", queues=[f"def-{uid}"])
        worker.kill()
        started = time.monotonic()
        report = scan(module, tmp_path, timeout=4.0)
        assert time.monotonic() - started < 4.5
        silent = findings(report, "CD410")
        assert [f.subject for f in silent] == [f"worker:{worker.nodename}"], (
            [(r.finding.check, r.finding.subject) for r in report.findings], report.not_checked)
        assert any("killed without a clean shutdown" in e for e in silent[0].evidence)
        assert not findings(report, "CD409")
        assert reply_keys(client) == []
    finally:
        client.flushdb()


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_a_silent_broker_is_a_bounded_reason(scheme):
    """A peer that accepts the connection and never answers: unavailable, named, before the deadline."""
    import socket

    from celery import Celery

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://guest:s3cret-pw@127.0.0.1:{port}//"
    try:
        app = Celery("silent", broker=url, set_as_current=False)
        started = time.monotonic()
        part = collect(app, timeout=2.0)
        assert time.monotonic() - started < 2.0
        assert not part.ok and "did not answer within" in part.reason and "s3cret" not in part.reason
    finally:
        silent.close()


def test_mailbox_counts_single_out_a_worker_only_when_they_leave_no_choice():
    """Receivers of the ping against answering workers: none left for the silent ones = killed, all of them hold
    one = connected, in between = untold (Redis does not say whose a subscription is)."""
    from celery_doctor.collectors.workers import _mailboxes, _Round, _worker
    from celery_doctor.parts.workers import COMMANDS, CONNECTED, GONE, UNTOLD

    workers = [_worker("a@h", True, {key: {"ok": "pong"} for key in COMMANDS}), _worker("b@h", True, {}),
               _worker("c@h", True, {})]

    def verdict(listeners, addressed=True):
        return _mailboxes(_Round(known=["a@h", "b@h", "c@h"], discovery="", discovered=True, addressed=addressed,
                                 listeners=listeners), workers)

    assert verdict([1, 1]) == (1, {"b@h": GONE, "c@h": GONE})
    assert verdict([2, 1]) == (2, {"b@h": UNTOLD, "c@h": UNTOLD})  # the largest count: never too few
    assert verdict([3]) == (3, {"b@h": CONNECTED, "c@h": CONNECTED})
    assert verdict([5]) == (5, {"b@h": CONNECTED, "c@h": CONNECTED})
    assert verdict(None) == (None, {}) and verdict([3], addressed=False) == (None, {})


def test_busy_and_killed_workers_are_told_apart_when_the_broker_can(tmp_path, worker_factory):
    """Real solo workers on one Redis db: one idle, one busy in a long task, one SIGKILLed. Busy alone: connected;
    killed alone: gone; both at once: the counts say one of each, and the report says it cannot tell which."""
    db = 10
    client = redis.Redis(db=db)
    client.flushdb()
    uid = uuid.uuid4().hex[:8]
    module = write_app(tmp_path, f"cdmix_{uid}", uid, db)
    from celery_doctor.parts.workers import CONNECTED, GONE, UNTOLD
    from celery_doctor.target import load_app

    try:
        idle, busy, doomed = worker_factory.start_many([
            dict(app=module, cwd=tmp_path, pool="solo", queues=[f"def-{uid}"]),
            dict(app=module, cwd=tmp_path, pool="solo", queues=[f"slow-{uid}"]),
            dict(app=module, cwd=tmp_path, pool="solo", queues=[f"long-{uid}"]),
        ])
        app = load_app(module, str(tmp_path))
        app.send_task("cdt.slow", args=(20,), queue=f"slow-{uid}")
        assert busy.wait_for_log("cdt.slow[", timeout=10)

        def states(timeout=3.0):
            part = collect(app, timeout=timeout)
            assert part.ok, part.reason
            data = part.data
            return data, {w.name: (bool(w.answered), w.mailbox) for w in data.workers}

        data, seen = states()
        assert seen == {idle.nodename: (True, None), busy.nodename: (False, CONNECTED),
                        doomed.nodename: (True, None)}, seen
        assert data.mailbox_listeners == 3

        doomed.kill()
        time.sleep(0.3)
        data, seen = states()
        assert seen == {idle.nodename: (True, None), busy.nodename: (False, UNTOLD),
                        doomed.nodename: (False, UNTOLD)}, seen
        assert data.mailbox_listeners == 2
        report = scan(module, tmp_path, timeout=3.0)
        # one finding per worker (a report may show findings of one cause as one row with its occurrences)
        silent = {f.subject: f for found in findings(report, "CD410") for f in getattr(found, "occurrences", ()) or (found,)}
        assert set(silent) == {f"worker:{busy.nodename}", f"worker:{doomed.nodename}"}, (
            [(r.finding.check, r.finding.subject) for r in report.findings], report.not_checked)
        for finding in silent.values():
            text = " ".join(finding.evidence)
            assert "1 of the 2 silent workers still hold a subscription" in text and "cannot be told" in text, text
            assert "killed" in finding.title

        assert busy.wait_for_log("succeeded in", timeout=25)
        data, seen = states()
        assert seen == {idle.nodename: (True, None), busy.nodename: (True, None),
                        doomed.nodename: (False, GONE)}, seen
        report = scan(module, tmp_path, timeout=3.0)
        gone = findings(report, "CD410")
        assert [f.subject for f in gone] == [f"worker:{doomed.nodename}"]
        assert gone[0].impact.value == "high" and "killed without a clean shutdown" in " ".join(gone[0].evidence)
        assert reply_keys(client) == []
    finally:
        worker_factory.stop_all()
        client.flushdb()
