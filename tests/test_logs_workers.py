"""Logs written by a real prefork `celery worker` (Redis db 5): a task that SIGKILLs its own pool process, a
hard time limit, an unregistered task, a revoked id, a task that gives up after retrying, a broker connection
dropped with CLIENT KILL, and a warm shutdown cut short by SIGKILL while a task runs. The log engine must
name each of those tasks by id, and nothing of their arguments."""
from __future__ import annotations

import os
import signal
import textwrap
import time
import uuid

import pytest
import redis

from celery_doctor.logs.run import diagnose_logs
from celery_doctor.parts import logs as P
from celery_doctor.reporters.text import format_text
from tests.workerproc import WorkerFactory

pytestmark = [pytest.mark.redis, pytest.mark.workers]

DB = 5  # this module's worker (no other test uses db 5 with a connection); every key is prefixed and deleted
SECRET_ARG = "card-4111-1111-1111-1111"

APP = '''
import os, signal, time
from celery import Celery
from celery.utils.log import get_task_logger

app = Celery("cdlogs_{uid}", broker="redis://127.0.0.1:6379/{db}")
app.conf.update(task_default_queue="cdlogs-{uid}", broker_transport_options={{"global_keyprefix": "{prefix}"}},
                broker_connection_retry_on_startup=True)
log = get_task_logger(__name__)


@app.task(name="cdlogs.die", shared=False)
def die(secret):
    log.warning("about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="cdlogs.slow", shared=False, time_limit=1)
def slow(secret):
    time.sleep(30)


@app.task(name="cdlogs.flaky", bind=True, shared=False, max_retries=1)
def flaky(self, secret):
    raise self.retry(countdown=0, exc=ValueError("still failing"))


@app.task(name="cdlogs.ok", shared=False)
def ok(secret):
    return 1


@app.task(name="cdlogs.sleep", shared=False)
def sleep(seconds):
    time.sleep(seconds)
'''


def wait_for(predicate, timeout=15.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    base = tmp_path_factory.mktemp("logs_workers")
    uid = uuid.uuid4().hex[:8]
    prefix = f"cdlogs-{uid}:"
    module = f"cdlogs_{uid}"
    (base / f"{module}.py").write_text(textwrap.dedent(APP).format(uid=uid, db=DB, prefix=prefix))
    client = redis.Redis(db=DB)
    factory = WorkerFactory()
    try:
        worker = factory(module, cwd=base, pool="prefork", concurrency=2, queues=[f"cdlogs-{uid}"],
                         name=f"logs-{uid}")
        import importlib
        import sys

        sys.path.insert(0, str(base))
        try:
            app = importlib.import_module(module).app
        finally:
            sys.path.remove(str(base))
        ids = {}
        ids["die"] = app.send_task("cdlogs.die", args=(SECRET_ARG,)).id
        ids["slow"] = app.send_task("cdlogs.slow", args=(SECRET_ARG,)).id
        ids["unknown"] = app.send_task("cdlogs.not_deployed_yet", args=(SECRET_ARG,)).id
        ids["flaky"] = app.send_task("cdlogs.flaky", args=(SECRET_ARG,)).id
        revoked = app.send_task("cdlogs.ok", args=(SECRET_ARG,), countdown=1)
        ids["revoked"] = revoked.id
        assert worker.wait_for_log(f"[{revoked.id}] received")
        app.control.revoke(revoked.id)
        log = worker.log_text
        assert wait_for(lambda: "exited with 'signal 9 (SIGKILL)'" in log() and "Hard time limit" in log()
                        and "Discarding revoked task" in log() and "raised unexpected" in log()), worker.tail()
        # the broker drops the worker's connections (as a Redis restart or a proxy would)
        me = client.client_id()
        for entry in client.client_list():
            if int(entry["db"]) == DB and int(entry["id"]) != me:
                client.client_kill_filter(_id=entry["id"])
        assert wait_for(lambda: "Connection to broker lost" in log() and log().count("Connected to") >= 2), worker.tail()
        ids["running"] = app.send_task("cdlogs.sleep", args=(30,)).id
        assert worker.wait_for_log(f"[{ids['running']}] received")
        time.sleep(0.3)
        os.kill(worker.pid, signal.SIGTERM)  # the process manager's stop: the main process only
        assert worker.wait_for_log("Warm shutdown")
        time.sleep(0.5)
        worker.kill()  # its grace period is over
        app.close()
        yield dict(log=str(worker.log_path), ids=ids, worker=worker)
    finally:
        factory.stop_all()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        keys += list(client.scan_iter(match="*cdlogs*", count=1000))
        keys += list(client.scan_iter(match=f"*logs-{uid}*", count=1000))
        if keys:
            client.delete(*set(keys))


def only(state, kind):
    found = state.of(kind)
    assert len(found) == 1, (kind, [(s.kind, s.where) for s in state.signatures])
    return found[0]


def test_a_real_worker_log_names_every_lost_task(incident):
    ids, node = incident["ids"], incident["worker"].nodename
    report, _ = diagnose_logs([incident["log"]])
    from celery_doctor.logs import scan_paths

    state = scan_paths([incident["log"]])
    killed = only(state, P.POOL_PROCESS_KILLED)
    assert killed.where == node and killed.tasks == (("cdlogs.die", ids["die"]),)
    assert killed.details["identified"] == 1 and killed.details["worker_lost_errors"] == 1
    hard = only(state, P.HARD_TIME_LIMIT)
    assert hard.tasks == (("cdlogs.slow", ids["slow"]),) and hard.details["process_exits"] == 1
    assert only(state, P.UNREGISTERED).tasks == (("cdlogs.not_deployed_yet", ids["unknown"]),)
    revoked = only(state, P.REVOKED_DISCARDED)
    assert revoked.tasks == (("cdlogs.ok", ids["revoked"]),)
    assert revoked.details["how"] == {"revoked (revoke seen in this log)": 1}
    assert only(state, P.RETRIES_EXHAUSTED).tasks == (("cdlogs.flaky", ids["flaky"]),)
    lost = only(state, P.CONNECTION_LOST)
    assert lost.count >= 1 and lost.details["longest_s"] < 15
    stopped = only(state, P.STOPPED_WITH_TASKS)
    assert stopped.tasks == (("cdlogs.sleep", ids["running"]),)
    assert stopped.details["how"] == {"warm shutdown": 1}
    assert not state.of(P.NEVER_FINISHED)

    checks = {r.finding.check for r in report.findings}
    assert {"CD601", "CD603", "CD605", "CD607", "CD609", "CD612", "CD613"} <= checks
    text = format_text(report, width=100)
    assert SECRET_ARG not in text and SECRET_ARG not in repr(state)  # arguments are in the log; never in the report
    kinds = [e.kind for e in report.timeline]
    assert kinds[0] == "worker-ready" and kinds[-1] == P.STOPPED_WITH_TASKS
    assert kinds.index(P.POOL_PROCESS_KILLED) < kinds.index(P.CONNECTION_LOST) < kinds.index("shutdown")
