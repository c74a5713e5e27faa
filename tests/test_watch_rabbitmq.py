"""`celery-doctor watch` on RabbitMQ, with real workers in a private vhost.

One incident: a prefork worker SIGKILLed while it runs an early-acked task (lost) and an acks_late one (RabbitMQ
requeues it at once and another worker runs it again); a solo worker blocked in a long task (its exclusive
mailbox queue still consumed: busy, not dead); a route to a queue nobody consumes. Then what a watch leaves:
its exclusive, server-named queue and binding go with its connection, also when it is SIGKILLed, and the
`celeryev` exchange is never declared by it.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from urllib.parse import quote

import pytest

from celery_doctor.collectors.config import collect_config
from celery_doctor.model import Target
from celery_doctor.parts.events import CONNECTED, DEAD
from celery_doctor.watch.engine import WatchOptions, build_report, run_watch, target_for_app
from tests.test_watch_redis import EVENTS_ARGS, Frames, findings
from tests.test_workers_rabbitmq import api, drop_vhost, make_vhost, names
from tests.workerproc import WorkerFactory

pytestmark = [pytest.mark.rabbitmq, pytest.mark.workers]

APP = '''
import time
from celery import Celery

UID = "{uid}"
app = Celery("cdwr_{uid}", broker="{url}")
app.conf.update(
    task_default_queue=f"rdef-{{UID}}", task_send_sent_event=True, worker_send_task_events=True,
    task_routes={{"cdw.kill": {{"queue": f"rkill-{{UID}}"}}, "cdw.late": {{"queue": f"rlate-{{UID}}"}},
                 "cdw.block": {{"queue": f"rblock-{{UID}}"}}, "cdw.noop": {{"queue": f"rblock-{{UID}}"}},
                 "cdw.orphan": {{"queue": f"rorphan-{{UID}}"}}}},
)


def _sleep(seconds=0):
    time.sleep(seconds)


for _name in ("cdw.kill", "cdw.block", "cdw.noop", "cdw.orphan"):
    app.task(name=_name, shared=False)(_sleep)
app.task(name="cdw.late", shared=False, acks_late=True)(_sleep)
'''


def _our_queues(vhost):
    """Queues the watch would have declared: server-named (amq.gen-...)."""
    return [q for q in names("queues", vhost) if q.startswith("amq.gen-")]


def _celeryev_bindings(vhost):
    return api("GET", f"/exchanges/{quote(vhost, safe='')}/celeryev/bindings/source")


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    base = tmp_path_factory.mktemp("watch_rabbitmq")
    uid = uuid.uuid4().hex[:8]
    vhost, url = make_vhost()
    module = f"cdwatchr_{uid}"
    (base / f"{module}.py").write_text(textwrap.dedent(APP).format(uid=uid, url=url))
    sys.path.insert(0, str(base))
    factory = WorkerFactory()
    stop, thread = threading.Event(), None
    try:
        kill, block = factory.start_many([
            dict(app=module, cwd=base, pool="prefork", concurrency=2, queues=[f"rkill-{uid}", f"rlate-{uid}"],
                 name=f"kill-{uid}", fast_start=False, extra_args=EVENTS_ARGS),
            dict(app=module, cwd=base, pool="solo", queues=[f"rblock-{uid}"], name=f"block-{uid}",
                 fast_start=False, extra_args=EVENTS_ARGS),
        ])
        app = __import__(module).app
        target = target_for_app(app, module)
        frames, result = Frames(), {}
        thread = threading.Thread(target=lambda: result.update(
            state=run_watch(target, WatchOptions(bound=3.0, probe_interval=1.0), stop=stop, view=frames)))
        thread.start()
        time.sleep(1.5)
        # a heartbeat of each worker seen before the solo one is blocked (see test_watch_redis.incident)
        assert frames.wait_heard([kill.nodename, block.nodename], 10), frames.describe()
        app.send_task("cdw.noop", queue=f"rblock-{uid}")
        time.sleep(0.3)
        ids = {"block": app.send_task("cdw.block", args=(60,)).id, "kill": app.send_task("cdw.kill", args=(60,)).id,
               "late": app.send_task("cdw.late", args=(60,)).id, "orphan": app.send_task("cdw.orphan").id}
        assert kill.wait_for_log(ids["kill"], 10) and kill.wait_for_log(ids["late"], 10)
        # a second consumer of the acks_late task's queue, for the redelivery (started once K holds the task)
        rescue = factory(module, cwd=base, pool="prefork", concurrency=1, queues=[f"rlate-{uid}"],
                         name=f"rescue-{uid}", fast_start=False, extra_args=EVENTS_ARGS)
        assert frames.wait(block.nodename, "connected", 30), frames.describe()
        during = _our_queues(vhost)
        kill.kill()
        assert frames.wait(kill.nodename, "dead", 30), frames.describe()
        assert rescue.wait_for_log(ids["late"], 10)
        time.sleep(1.0)  # the rescue worker's task-started arrives
        stop.set()
        thread.join(30)
        state = result["state"]
        report, _ = build_report(state, Target(app=module, broker=target.masked, transport="rabbitmq"),
                                 config=collect_config(app))
        yield dict(state=state, report=report, ids=ids, uid=uid, kill=kill, block=block, rescue=rescue,
                   vhost=vhost, url=url, during=during, module=module, base=base)
    finally:
        stop.set()  # the watch ends even when the scenario failed half-way
        if thread is not None:
            thread.join(30)
        for worker in factory.workers:
            worker.kill()  # they run minute-long tasks: a warm shutdown would wait for them
        factory.stop_all()
        sys.path.remove(str(base))
        drop_vhost(vhost)


def test_a_killed_worker_is_told_dead_by_its_mailbox_queue_and_its_early_acked_task_is_lost(incident):
    state, report, ids = incident["state"], incident["report"], incident["ids"]
    kill = state.worker(incident["kill"].nodename)
    assert kill.liveness.verdict == DEAD and kill.liveness.certain
    assert any("exclusive" in e and "gone" in e for e in kill.liveness.evidence)
    [lost] = [f for f in findings(report, "CD702") if f.subject == f"worker:{incident['kill'].nodename}"]
    text = "\n".join(lost.evidence)
    assert ids["kill"] in text and "acks are early" in text
    assert ids["late"] not in text  # it came back: not lost


def test_the_acks_late_task_of_the_killed_worker_ran_again_elsewhere(incident):
    ids = incident["ids"]
    [twice] = findings(incident["report"], "CD703")
    text = "\n".join(twice.evidence)
    assert twice.subject == "task:cdw.late" and ids["late"] in text
    assert incident["kill"].nodename in text and incident["rescue"].nodename in text
    assert "connection or channel closes" in text


def test_a_blocked_solo_worker_keeps_its_mailbox_queue_busy_not_dead(incident):
    state, report = incident["state"], incident["report"]
    block = state.worker(incident["block"].nodename)
    assert block.liveness.verdict == CONNECTED
    assert any("still exists with 1 consumer" in e for e in block.liveness.evidence)
    assert not [f for f in findings(report, "CD702") if f.subject == f"worker:{incident['block'].nodename}"]


def test_a_task_routed_to_a_queue_nobody_consumes(incident):
    [orphan] = [f for f in findings(incident["report"], "CD701") if f.subject == f"queue:rorphan-{incident['uid']}"]
    text = "\n".join(orphan.evidence)
    assert incident["ids"]["orphan"] in text and "1 message waited" in text and "with 0 consumers" in text
    assert orphan.impact.value == "high" and orphan.confidence.value == "observed"


def test_the_watch_queue_was_exclusive_server_named_and_is_gone_with_its_binding(incident):
    assert len(incident["during"]) == 1  # amq.gen-..., while the watch ran
    vhost = incident["vhost"]
    assert _our_queues(vhost) == []
    assert not [b for b in _celeryev_bindings(vhost) if b["destination"].startswith("amq.gen-")]


WATCH_SCRIPT = '''
import sys
from celery import Celery
from celery_doctor.watch.engine import WatchOptions, run_watch, target_for_app
app = Celery("x", broker=sys.argv[1])
print("go", flush=True)
state = run_watch(target_for_app(app), WatchOptions(duration=float(sys.argv[2]), probe_interval=0.5))
print("notes:", " | ".join(state.notes), flush=True)
'''


def test_a_sigkilled_watch_leaves_no_queue_and_never_creates_the_event_exchange():
    vhost, url = make_vhost()
    try:
        # no worker ever ran here: there is no celeryev exchange, and the watch does not create it
        done = subprocess.run([sys.executable, "-c", WATCH_SCRIPT, url, "1.5"], capture_output=True, text=True,
                              timeout=60)
        assert "the event exchange 'celeryev' does not exist" in done.stdout, done.stdout + done.stderr
        assert "celeryev" not in names("exchanges", vhost)
        # with the exchange there (as a worker declares it), a SIGKILLed watch's queue and binding still go
        import pika

        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            conn.channel().exchange_declare("celeryev", exchange_type="topic", durable=True)  # what workers declare
        killed = subprocess.Popen([sys.executable, "-c", WATCH_SCRIPT, url, "60"], stdout=subprocess.PIPE, text=True)
        try:
            assert killed.stdout.readline().strip() == "go"
            end = time.time() + 10
            while time.time() < end and not _our_queues(vhost):
                time.sleep(0.2)
            [queue] = _our_queues(vhost)
            info = api("GET", f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}")
            assert info["exclusive"] and info["auto_delete"] and not info["durable"]
            assert [b["routing_key"] for b in _celeryev_bindings(vhost)] == ["#"]
            killed.kill()
            killed.wait(10)
        finally:
            if killed.poll() is None:
                killed.kill()
        end = time.time() + 10
        while time.time() < end and _our_queues(vhost):
            time.sleep(0.2)
        assert _our_queues(vhost) == [] and _celeryev_bindings(vhost) == []
    finally:
        drop_vhost(vhost)
