"""Partial failure: when one piece cannot be read, the rest of the scan still runs, within the deadline, and
the report says what was not checked and why.

- RabbitMQ with its management API down (refused and silent): the broker is still read over AMQP (passive
  declares), live findings still come out, the API is listed as not checked, and the checks that need it are
  skipped with that reason.
- Redis with CONFIG forbidden by an ACL (a real ACL user created for the test): settings come from INFO, the
  queue checks still run, the CONFIG refusal is listed.
- One worker silent (a solo worker busy in a long task) beside one that answers, on Redis and on RabbitMQ:
  scan and trace end within the deadline, the answering worker is read, the silent one is named with the time
  waited (CD410), and a task the silent worker holds is reported as not findable there.
"""
from __future__ import annotations

import importlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from tests.conftest import json_places
from tests.test_trust_support import (
    AclUser,
    Blackholes,
    api,
    canary,
    cli,
    delete_new_keys,
    drop_vhost,
    make_vhost,
    rabbit_available,
    redis_available,
    redis_client,
    refused_port,
    uid,
    write_module,
)
from tests.workerproc import WorkerFactory

DB = 12
TIMEOUT, MARGIN = 4.0, 2.5

APP = '''
import time
from celery import Celery
app = Celery(__name__, broker={broker!r})
app.conf.task_default_queue = {busy!r}
app.conf.task_routes = {{"{name}.quick": {{"queue": {idle!r}}}, "{name}.orphan": {{"queue": {orphan!r}}}}}

@app.task
def block(seconds):
    time.sleep(seconds)

@app.task
def quick():
    return 1

@app.task
def orphan():
    return 1
'''


def _import(directory, name):
    sys.path.insert(0, str(directory))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name).app
    finally:
        sys.path.remove(str(directory))


def _parallel(jobs):
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _not_checked(run):
    return [(n.get("part") or n.get("where"), n["reason"]) for n in run.json()["not_checked"]]


# ----------------------------------------------------------------------------------- live workers

@pytest.fixture(scope="module")
def busy_workers(tmp_path_factory):
    """Per broker: an app, a solo worker busy in a 60 s task (silent), a solo worker idle (answers)."""
    if not (redis_available() and rabbit_available()):
        pytest.skip("needs Redis and RabbitMQ")
    directory = tmp_path_factory.mktemp("partial")
    before = set(redis_client(DB).scan_iter(count=1000))
    vhost = make_vhost("cd-trust-partial")
    factory = WorkerFactory()
    setups = {}
    try:
        specs = []
        for kind, broker in (("redis", f"redis://127.0.0.1:6379/{DB}"),
                             ("rabbitmq", f"amqp://guest:guest@127.0.0.1:5672/{vhost}")):
            tag = uid()
            name = f"trust_partial_{kind}_{tag}"
            busy, idle, orphan = f"busy-{tag}", f"idle-{tag}", f"orphan-{tag}"
            (directory / f"{name}.py").write_text(APP.format(broker=broker, busy=busy, idle=idle, orphan=orphan,
                                                             name=name))
            setups[kind] = dict(name=name, busy=busy, idle=idle, orphan=orphan, broker=broker)
            specs += [dict(app=name, cwd=directory, queues=[busy], pool="solo", name=f"silent-{tag}"),
                      dict(app=name, cwd=directory, queues=[idle], pool="solo", name=f"idle-{tag}")]
        started = factory.start_many(specs)
        for index, kind in enumerate(("redis", "rabbitmq")):
            setup = setups[kind]
            silent, idle = started[2 * index], started[2 * index + 1]
            app = _import(directory, setup["name"])
            held = app.tasks[f"{setup['name']}.block"].delay(60)
            app.tasks[f"{setup['name']}.orphan"].delay()
            app.tasks[f"{setup['name']}.orphan"].delay()
            assert silent.wait_for_log(f"{setup['name']}.block[{held.id}] received", timeout=20), silent.tail()
            app.pool.force_close_all()
            setup.update(silent=silent, idle=idle, held=held.id)
        time.sleep(0.5)  # the solo pool is inside the task now
        _wait_until_the_api_lists_mailboxes(vhost, [setups["rabbitmq"]["silent"], setups["rabbitmq"]["idle"]])
        yield directory, setups
    finally:
        for worker in factory.workers:
            worker.kill()  # the busy ones would wait 60 s for a warm shutdown
        factory.stop_all()
        delete_new_keys(DB, before)
        drop_vhost(vhost)


def _wait_until_the_api_lists_mailboxes(vhost: str, workers, timeout: float = 20) -> None:
    """The management API's consumer counts lag behind the broker by a stats interval; the doctor discovers
    RabbitMQ workers from them, so wait until both mailboxes show a consumer before scanning."""
    wanted = {f"{w.nodename}.celery.pidbox" for w in workers}
    deadline = time.time() + timeout
    while time.time() < deadline:
        queues = api("GET", f"/queues/{quote(vhost, safe='')}") or []
        if wanted <= {q.get("name") for q in queues if q.get("consumers")}:
            return
        time.sleep(0.5)
    raise AssertionError(f"the management API never listed consumers on {sorted(wanted)}")


@pytest.mark.workers
@pytest.mark.redis
@pytest.mark.rabbitmq
def test_one_silent_worker_does_not_stop_the_rest(busy_workers):
    import pika

    directory, setups = busy_workers
    # Another client's broadcast in progress (`celery inspect`, another doctor): its reply queue,
    # `<oid>.reply.celery.pidbox`, with a consumer. It is not a worker.
    connection = pika.BlockingConnection(pika.URLParameters(setups["rabbitmq"]["broker"]))
    channel = connection.channel()
    reply = f"{uid()}.reply.celery.pidbox"
    channel.queue_declare(reply, exclusive=True, auto_delete=True)
    channel.basic_consume(reply, lambda *a: None, auto_ack=True)
    time.sleep(0.2)
    try:
        _silent_worker_runs(directory, setups)
    finally:
        connection.close()


def _silent_worker_runs(directory, setups):
    jobs = []
    for kind in ("redis", "rabbitmq"):
        s = setups[kind]
        jobs += [lambda s=s: cli("scan", "--app", s["name"], "--format", "json", "--timeout", f"{TIMEOUT:g}",
                                 cwd=directory),
                 lambda s=s: cli("trace", s["held"], "--app", s["name"], "--format", "json", "--timeout",
                                 f"{TIMEOUT:g}", cwd=directory)]
    runs = _parallel(jobs)
    for index, kind in enumerate(("redis", "rabbitmq")):
        s = setups[kind]
        scan, trace = runs[2 * index], runs[2 * index + 1]
        for run in (scan, trace):
            assert run.code in (0, 1) and not run.crash_logs and "Traceback" not in run.stderr, str(run)
            assert run.seconds <= TIMEOUT + MARGIN, f"{kind}: {run.seconds:.2f} s\n{run}"
        report = scan.json()
        assert not [c for c in report["checks"] if c["status"] == "error"]
        silent_name, idle_name = s["silent"].nodename, s["idle"].nodename
        # the silent worker is named, with the time waited, as a finding and in "not checked"
        cd410 = [f for f in json_places(report["findings"]) if f["check"] == "CD410"]
        assert [f["subject"] for f in cd410] == [f"worker:{silent_name}"], (kind, cd410)
        assert any(w == "workers (partly read)" and silent_name in r and "did not answer within" in r
                   for w, r in _not_checked(scan)), (kind, _not_checked(scan))
        # the rest still ran: the answering worker was read, the orphan queue (routed, consumed by nobody) found
        assert f"1 other worker answered: {idle_name}" in " ".join(cd410[0]["evidence"]), cd410[0]["evidence"]
        cd401 = [f for f in json_places(report["findings"]) if f["check"] == "CD401" and f["subject"] == f"queue:{s['orphan']}"]
        assert cd401, (kind, [(f["check"], f["subject"]) for f in report["findings"]])
        statuses = {c["id"]: c["status"] for c in report["checks"]}
        assert statuses["CD403"] in ("passed", "failed") and statuses["CD101"] in ("passed", "failed")
        # the held task: on Redis it is in the unacked hash; on RabbitMQ only its worker could tell, and it is silent
        data = trace.json()
        if kind == "redis":
            assert trace.code == 0 and [loc["where"] for loc in data["locations"]] == ["redis unacked"], data
        else:
            assert trace.code == 1 and not data["locations"], (kind, data["locations"])
        assert any(w.startswith("workers") and silent_name in r for w, r in _not_checked(trace)), _not_checked(trace)


# ------------------------------------------------------------------------------ management API down

@pytest.mark.rabbitmq
def test_management_api_down_the_broker_is_still_read(tmp_path):
    if not rabbit_available():
        pytest.skip("no RabbitMQ")
    import pika

    vhost = make_vhost("cd-trust-noapi")
    holes = Blackholes()
    try:
        tag = uid()
        name = f"trust_noapi_{tag}"
        orphan = f"orphan-{tag}"
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        write_module(tmp_path, name, f'''
            from celery import Celery
            app = Celery(__name__, broker={url!r})
            app.conf.task_default_queue = {orphan!r}

            @app.task
            def add(x, y):
                return x + y
        ''')
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.queue_declare(orphan, durable=True)
        for i in range(3):
            channel.basic_publish("", orphan, b"[[1, 2], {}, {}]",
                                  pika.BasicProperties(headers={"lang": "py", "task": f"{name}.add", "id": f"t{i}"},
                                                       content_type="application/json", delivery_mode=2))
        connection.close()
        runs = _parallel([
            lambda: cli("scan", "--app", name, "--management-url", f"http://127.0.0.1:{refused_port()}",
                        "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=tmp_path),
            lambda: cli("scan", "--app", name, "--management-url", f"http://127.0.0.1:{holes.silent}",
                        "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=tmp_path),
        ])
        for run, why in zip(runs, ("connection refused", "did not answer within")):
            assert run.code == 1 and not run.crash_logs, str(run)
            assert run.seconds <= TIMEOUT + MARGIN, str(run)
            report = run.json()
            not_checked = _not_checked(run)
            assert any(w == "rabbitmq management API" and why in r for w, r in not_checked), not_checked
            assert "rabbitmq" not in dict(not_checked), not_checked  # the broker itself was read
            statuses = {c["id"]: c for c in report["checks"]}
            skipped = [c for c in report["checks"] if c["status"] == "skipped" and "management API" in (c["reason"] or "")]
            assert skipped and statuses["CD319"]["status"] == "failed", statuses["CD319"]
            assert not [c for c in report["checks"] if c["status"] == "error"]
            # read over AMQP: the 3 waiting messages of a queue nobody consumes are counted
            waiting = [f for f in json_places(report["findings"]) if f["check"] in ("CD301", "CD401")
                       and f["subject"] == f"queue:{orphan}" and f["messages_at_risk"] == 3]
            assert waiting, [(f["check"], f["subject"], f["messages_at_risk"]) for f in report["findings"]]
            assert statuses["CD101"]["status"] in ("passed", "failed")  # static checks ran as usual
    finally:
        holes.close()
        drop_vhost(vhost)


# ---------------------------------------------------------------------------------- CONFIG forbidden

@pytest.mark.redis
def test_config_forbidden_settings_from_info_and_queues_still_read(tmp_path):
    if not redis_available():
        pytest.skip("no Redis")
    password = canary("C")
    user = AclUser([password], rules=("~*", "&*", "+@all", "-config", "-client"))
    before = set(redis_client(DB).scan_iter(count=1000))
    try:
        tag = uid()
        name = f"trust_noconfig_{tag}"
        orphan = f"orphan-{tag}"
        write_module(tmp_path, name, f'''
            from celery import Celery
            app = Celery(__name__, broker={user.url(DB)!r})
            app.conf.task_default_queue = {orphan!r}

            @app.task
            def add(x, y):
                return x + y
        ''')
        app = _import(tmp_path, name)
        for i in range(4):
            app.tasks[f"{name}.add"].delay(i, i)
        app.pool.force_close_all()
        run = cli("scan", "--app", name, "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=tmp_path)
        assert run.code == 1 and not run.crash_logs and password not in run.everything(), str(run)
        report = run.json()
        not_checked = _not_checked(run)
        assert "redis" not in dict(not_checked), not_checked
        assert any(w == "redis (partly read)" and "CONFIG GET is not available" in r and "no permissions" in r
                   for w, r in not_checked), not_checked
        assert any(w == "redis (partly read)" and "CLIENT LIST not read" in r for w, r in not_checked), not_checked
        assert not [c for c in report["checks"] if c["status"] == "error"]
        cd401 = [f for f in json_places(report["findings"]) if f["check"] == "CD401" and f["subject"] == f"queue:{orphan}"]
        assert cd401 and cd401[0]["messages_at_risk"] == 4, [(f["check"], f["subject"]) for f in report["findings"]]
        evidence = " ".join(e for f in report["findings"] for e in f["evidence"])
        assert "CONFIG" in evidence or "INFO" in evidence, "the persistence/memory evidence does not say its source"
    finally:
        user.delete()
        delete_new_keys(DB, before)
