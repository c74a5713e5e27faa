"""`celery-doctor watch` on Redis, with real workers: one watch of one incident, several causes at once.

Workers (task events on, heartbeats every 2 s):
- `kill`: prefork; its task is SIGKILLed mid-run (early acks: lost) -> CD702, CD707 dead;
- `block`: solo; blocked in a long task -> silent but connected (busy), not dead -> CD707 connected, no CD702;
- `busy`: prefork, concurrency 2; one child busy in a long task (heartbeats go on: not reported), the other runs
  an acks_late task longer than the 3 s visibility_timeout, which Redis restores and the worker runs again -> CD703.
A task routed to a queue no worker consumes -> CD701 with the message still waiting.
The watch records what it sees; the replay of that recording gives the same report.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
import redis

from celery_doctor.collectors.config import collect_config
from celery_doctor.model import Target
from celery_doctor.parts.events import ALIVE, CONNECTED, DEAD
from celery_doctor.reporters.json import format_json
from celery_doctor.watch.engine import WatchOptions, build_report, replay, run_watch, target_for_app
from celery_doctor.watch.live import View
from celery_doctor.watch.redis_source import event_channels, publish_channel
from tests.workerproc import WorkerFactory, worker_factory  # noqa: F401 (fixture)

pytestmark = [pytest.mark.redis, pytest.mark.workers]

DB = 6  # this module's database (grep tests for `DB =`: 6 is used by no other module)
EVENTS_ARGS = ["--without-mingle", "--without-gossip"]  # heartbeats stay on (WorkerProcess's fast start turns them off)

APP = '''
import time
from celery import Celery

UID = "{uid}"
app = Celery("cdw_{uid}", broker="redis://127.0.0.1:6379/{db}")
app.conf.update(
    task_default_queue=f"wdef-{{UID}}",
    task_send_sent_event=True,
    worker_send_task_events=True,
    task_routes={{"cdw.kill": {{"queue": f"wkill-{{UID}}"}}, "cdw.block": {{"queue": f"wblock-{{UID}}"}},
                 "cdw.noop": {{"queue": f"wblock-{{UID}}"}}, "cdw.busy": {{"queue": f"wbusy-{{UID}}"}},
                 "cdw.orphan": {{"queue": f"worphan-{{UID}}"}}}},
)
# The redelivery runs in its own key space (global_keyprefix) with a 3 s visibility timeout, so that the sweep
# (any worker of the db restores every message unacknowledged for longer than ITS visibility timeout) only
# touches it; its events go to the prefixed channel.
twice_app = Celery("cdw2_{uid}", broker="redis://127.0.0.1:6379/{db}")
twice_app.conf.update(
    task_default_queue=f"wtwice-{{UID}}", task_send_sent_event=True, worker_send_task_events=True,
    broker_transport_options={{"global_keyprefix": f"cdw-{{UID}}:", "visibility_timeout": 3,
                              "unacked_restore_interval": 1, "unacked_restore_throttle": 1}},
)


def _sleep(seconds=0):
    time.sleep(seconds)


for _name in ("cdw.kill", "cdw.block", "cdw.busy", "cdw.noop", "cdw.orphan"):
    app.task(name=_name, shared=False)(_sleep)
twice_app.task(name="cdw.twice", shared=False, acks_late=True)(_sleep)
'''


def write_app(path, uid, db=DB):
    name = f"cdwatch_{uid}"
    (path / f"{name}.py").write_text(textwrap.dedent(APP).format(uid=uid, db=db))
    return name


class Frames(View):
    """A view that keeps the watch's last frame, so a test can wait for what the watch sees."""

    def __init__(self):
        self.last = None

    def update(self, frame):
        self.last = frame

    def close(self, frame):
        pass

    def describe(self):
        frame = self.last
        if frame is None:
            return "no frame yet"
        return f"frame {time.time() - frame.now:.1f} s old: " + ", ".join(
            f"{w.hostname} {w.status} (heartbeat {w.last_heartbeat_age} s ago)" for w in frame.workers)

    def wait(self, hostname, status, timeout):
        end = time.time() + timeout
        while time.time() < end:
            frame = self.last
            if frame and any(w.hostname == hostname and w.status == status for w in frame.workers):
                return True
            time.sleep(0.1)
        return False

    def wait_heard(self, hostnames, timeout):
        """Until the watch has seen a heartbeat of each worker (only then can it see their heartbeats stop)."""
        end = time.time() + timeout
        while time.time() < end:
            frame = self.last
            heard = {w.hostname for w in frame.workers if w.last_heartbeat_age is not None} if frame else set()
            if set(hostnames) <= heard:
                return True
            time.sleep(0.1)
        return False


def findings(report, check_id):
    """Every place of a check's findings: a ranked row stands for the places of one cause (Finding.occurrences)."""
    return [f for r in report.findings if r.finding.check == check_id for f in (r.finding.occurrences or (r.finding,))]


def _watch_connections(client):
    return {c["id"] for c in client.client_list() if c.get("name", "").startswith("celery-doctor")}


def _cleanup(client, uid):
    """Remove what this module's workers and tasks left in the database, and only that (other runs may share it):
    keys named with the run's id (queues, prefixed keys), and members, fields and entries that name it in kombu's
    shared keys (mailbox bindings of killed workers, unacknowledged messages)."""
    mark = uid.encode()
    for key in list(client.scan_iter(match=f"*{uid}*", count=1000)):
        client.delete(key)
    for key in [*list(client.scan_iter(match="_kombu*", count=1000)), b"unacked", b"unacked_index"]:
        kind = client.type(key)
        if kind == b"set":
            members = [m for m in client.smembers(key) if mark in m]
            if members:
                client.srem(key, *members)
        elif kind == b"zset":
            members = [m for m in client.zrange(key, 0, -1) if mark in m]
            if members:
                client.zrem(key, *members)
    stale = [tag for tag, payload in client.hscan_iter("unacked") if mark in payload]
    if stale:
        client.hdel("unacked", *stale)
        client.zrem("unacked_index", *stale)


def test_the_subscription_patterns_receive_what_kombu_publishes():
    """For each set of transport options, the channel kombu's own Redis channel publishes a fanout message to
    (Channel._get_publish_topic, with the global key prefix its client adds) reaches a PSUBSCRIBE on
    event_channels(): PUBLISH answers how many subscribers received it."""
    from kombu import Connection

    client = redis.Redis(db=DB)
    exchange = f"celeryev-{uuid.uuid4().hex[:8]}"  # its own channels: another watch of this db receives nothing
    for options in ({}, {"global_keyprefix": "app1:"}, {"fanout_prefix": False}, {"fanout_prefix": "/x{db}."},
                    {"fanout_patterns": False}, {"global_keyprefix": "p[1]*?:"}):
        with Connection(f"redis://127.0.0.1:6379/{DB}", transport_options=options) as conn:
            channel = conn.default_channel
            _ = channel.pool  # formats keyprefix_fanout with the database, as the first publish does
            topic = channel.global_keyprefix + channel._get_publish_topic(exchange, "worker.heartbeat")
        assert topic == publish_channel(options, DB, exchange, "worker.heartbeat"), options
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(*event_channels(options, DB, exchange))
        try:
            while pubsub.get_message(timeout=0.05):
                pass
            assert client.publish(topic, "{}") == 1, (options, topic)
            assert client.publish(topic + "x" if "/" not in topic else "other:" + topic, "{}") == 0
        finally:
            pubsub.close()


def test_a_watch_writes_nothing_and_leaves_nothing_even_when_killed():
    """A watch runs as a Redis ACL user that may read, subscribe and list clients but not write: it works (no note
    says a probe failed), Redis denied it nothing (ACL LOG), and when it ends, or is SIGKILLed, none of its
    connections (and so no subscription) remains. kombu's own EventReceiver would have needed SADD (the
    `_kombu.binding.celeryev` member) at once. Other test runs may use this database meanwhile: nothing here
    depends on what they write."""
    client = redis.Redis(db=DB)
    user, password = f"cdwatch-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    client.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                       categories=["-@all", "+@read", "+@pubsub", "+@connection"],
                       commands=["+info", "+client|list", "+client|setname"])
    earlier = _watch_connections(client)
    script = textwrap.dedent(f'''
        import sys
        from celery import Celery
        from celery_doctor.watch.engine import WatchOptions, run_watch, target_for_app
        app = Celery("x", broker="redis://{user}:{password}@127.0.0.1:6379/{DB}")
        print("go", flush=True)
        state = run_watch(target_for_app(app), WatchOptions(duration=float(sys.argv[1]), probe_interval=0.5))
        print("notes:", state.notes, "live:", [w.liveness.verdict for w in state.workers], flush=True)
    ''')
    try:
        done = subprocess.run([sys.executable, "-c", script, "1.5"], capture_output=True, text=True, timeout=60)
        assert "notes: ()" in done.stdout, done.stdout + done.stderr  # CLIENT LIST and INFO were allowed and read
        killed = subprocess.Popen([sys.executable, "-c", script, "60"], stdout=subprocess.PIPE, text=True)
        try:
            assert killed.stdout.readline().strip() == "go"
            deadline = time.time() + 10
            while time.time() < deadline and not _watch_connections(client) - earlier:
                time.sleep(0.1)
            mine = _watch_connections(client) - earlier
            assert mine
            killed.kill()
            killed.wait(10)
        finally:
            if killed.poll() is None:
                killed.kill()
        time.sleep(0.3)
        assert not mine & _watch_connections(client)
        denied = [entry for entry in client.acl_log(count=100) if entry.get("username") == user
                  and entry.get("object") != "client|no-touch"]  # asked for where Redis 7.2 has it: not a write
        assert denied == []
    finally:
        client.acl_deluser(user)


ENABLE_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from celery_doctor.watch.engine import WatchOptions, run_watch, target_for_app
app = __import__(sys.argv[2]).app
print("go", flush=True)
state = run_watch(target_for_app(app), WatchOptions(enable_events=bool(int(sys.argv[3])), duration=60))
print("kinds", sorted(state.kinds), "enable", state.enable_events, "notes", state.notes, flush=True)
"""


def test_enable_events_turns_task_events_on_for_the_watch_and_off_again_even_on_ctrl_c(tmp_path, worker_factory):
    """A worker started without -E sends heartbeats only. `--enable-events` (celery's enable_events control
    command) makes it send task events during the watch; Ctrl-C (SIGINT) ends the watch with its report and
    disable_events, after which the worker sends none again (a later watch sees heartbeats `processed` grow,
    no task event: CD708 says what to turn on)."""
    uid = uuid.uuid4().hex[:8]
    module = f"cdwe_{uid}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f'''
        from celery import Celery
        app = Celery("cdwe_{uid}", broker="redis://127.0.0.1:6379/{DB}")
        app.conf.task_default_queue = "we-{uid}"

        @app.task(name="cdwe.add", shared=False)
        def add(x, y):
            return x + y
    '''))
    worker = worker_factory(module, cwd=tmp_path, pool="solo", queues=[f"we-{uid}"], fast_start=False,
                            extra_args=EVENTS_ARGS)
    sys.path.insert(0, str(tmp_path))
    try:
        app = __import__(module).app
        watch = subprocess.Popen([sys.executable, "-c", ENABLE_SCRIPT, str(tmp_path), module, "1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert watch.stdout.readline().strip() == "go"
        assert worker.wait_for_log("Events of group {task} enabled by remote.", 10), worker.tail()
        app.send_task("cdwe.add", args=(1, 2))
        assert worker.wait_for_log("succeeded", 10)
        time.sleep(0.5)
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
        assert "'task-received'" in out and "'task-succeeded'" in out, out
        assert "disabled_at=" in out and "interrupted (Ctrl-C)" in out, out
        assert worker.wait_for_log("Events of group {task} disabled by remote.", 10), worker.tail()
        # no reply was asked for: no reply queue or binding was written (as `celery inspect` would leave)
        assert not [k for k in redis.Redis(db=DB).scan_iter(count=1000) if b"reply" in k]
        # afterwards: heartbeats only, and the report says what to turn on
        stop, result = threading.Event(), {}
        thread = threading.Thread(target=lambda: result.update(state=run_watch(
            target_for_app(app), WatchOptions(), stop=stop)))
        thread.start()
        time.sleep(2.5)
        app.send_task("cdwe.add", args=(2, 3))
        time.sleep(2.5)
        stop.set()
        thread.join(30)
        state = result["state"]
        assert not [k for k in state.kinds if k.startswith("task-") and k != "task-sent"], state.kinds
        report, _ = build_report(state, Target(app=module, broker="redis", transport="redis"))
        [off] = findings(report, "CD708")
        assert "processed 1 task(s)" in "\n".join(off.evidence) and "-E" in "\n".join(off.evidence)
    finally:
        sys.path.remove(str(tmp_path))
        worker_factory.stop_all()
        _cleanup(redis.Redis(db=DB), uid)


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    base = tmp_path_factory.mktemp("watch_redis")
    uid = uuid.uuid4().hex[:8]
    module = write_app(base, uid)
    client = redis.Redis(db=DB)
    sys.path.insert(0, str(base))
    factory = WorkerFactory()
    stop, threads = threading.Event(), []
    try:
        kill, block, busy, _twice = factory.start_many([
            dict(app=module, cwd=base, pool="prefork", concurrency=1, queues=[f"wkill-{uid}"], name=f"kill-{uid}",
                 fast_start=False, extra_args=EVENTS_ARGS),
            dict(app=module, cwd=base, pool="solo", queues=[f"wblock-{uid}"], name=f"block-{uid}",
                 fast_start=False, extra_args=EVENTS_ARGS),
            dict(app=module, cwd=base, pool="prefork", concurrency=1, queues=[f"wbusy-{uid}"], name=f"busy-{uid}",
                 fast_start=False, extra_args=EVENTS_ARGS),
            dict(app=f"{module}:twice_app", cwd=base, pool="prefork", concurrency=1, queues=[f"wtwice-{uid}"],
                 name=f"twice-{uid}", fast_start=False, extra_args=EVENTS_ARGS),
        ])
        mod = __import__(module)
        app = mod.app
        record = str(base / "incident.jsonl")
        target = target_for_app(app, module)
        twice_target = target_for_app(mod.twice_app, f"{module}:twice_app")
        stop = threading.Event()
        result = {}

        frames = Frames()

        def watch(key, what, options, view=None):
            result[key] = run_watch(what, options, stop=stop, view=view)

        threads += [threading.Thread(target=watch, args=("state", target, WatchOptions(bound=3.0, record=record,
                                                                                      probe_interval=1.0), frames)),
                    threading.Thread(target=watch, args=("twice", twice_target, WatchOptions(bound=3.0)))]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # subscribed, first CLIENT LIST in
        # a heartbeat of each worker seen before the solo one is blocked: workers that went online before the watch
        # subscribed are heard at their next heartbeat, up to 2 s later, and a blocked solo worker sends none
        assert frames.wait_heard([kill.nodename, block.nodename, busy.nodename], 10), frames.describe()
        app.send_task("cdw.noop", queue=f"wblock-{uid}")  # the block worker is seen consuming its queue
        time.sleep(0.3)
        ids = {
            "kill": app.send_task("cdw.kill", args=(60,)).id,
            "block": app.send_task("cdw.block", args=(60,)).id,
            "busy": app.send_task("cdw.busy", args=(60,)).id,
            "orphan": app.send_task("cdw.orphan").id,
            "twice": mod.twice_app.send_task("cdw.twice", args=(6,)).id,
        }
        assert kill.wait_for_log(ids["kill"], 10)
        # the block worker's heartbeats stop now: once the watch sees it silent (and still connected), kill the
        # other one, a little later, so that the two silences fall in different CLIENT LIST windows
        assert frames.wait(block.nodename, "connected", 30), frames.describe()
        time.sleep(1.5)
        kill.kill()
        killed_at = time.time()
        time.sleep(5.0)  # its heartbeat expires (2 x 2 s), CLIENT LIST sees the connections gone; the twice task reruns
        stop.set()
        for thread in threads:
            thread.join(30)
        state = result["state"]
        assert not client.exists("_kombu.binding.celeryev")  # nothing bound the event exchange
        config = collect_config(app)
        report, _registry = build_report(state, Target(app=module, broker=target.masked, transport="redis"),
                                        config=config)
        twice_config = collect_config(mod.twice_app)
        twice_report, _ = build_report(result["twice"], Target(app=module, broker=target.masked, transport="redis"),
                                       config=twice_config)
        yield dict(state=state, report=report, ids=ids, uid=uid, kill=kill, block=block, busy=busy, record=record,
                   config=config, killed_at=killed_at, module=module, base=base, twice=result["twice"],
                   twice_report=twice_report)
    finally:
        stop.set()  # the watches end even when the scenario failed half-way
        for thread in threads:
            thread.join(30)
        for worker in factory.workers:
            worker.kill()  # they run minute-long tasks: a warm shutdown would wait for them
        factory.stop_all()
        sys.path.remove(str(base))
        _cleanup(client, uid)


def test_a_worker_killed_mid_task_loses_it_and_is_told_dead(incident):
    state, report, ids = incident["state"], incident["report"], incident["ids"]
    kill = state.worker(incident["kill"].nodename)
    assert kill.liveness.verdict == DEAD and kill.liveness.certain, kill.liveness
    assert any("connections closed" in e for e in kill.liveness.evidence)
    lost = [f for f in findings(report, "CD702") if f.subject == f"worker:{incident['kill'].nodename}"]
    assert len(lost) == 1, findings(report, "CD702")
    text = "\n".join(lost[0].evidence)
    assert ids["kill"] in text and "started on" in text
    assert "acks are early" in text  # from the app's configuration: the message was acked at start
    assert lost[0].impact.value == "high" and lost[0].confidence.value == "observed"
    dead = [f for f in findings(report, "CD707") if f.subject == f"worker:{incident['kill'].nodename}"]
    assert dead and dead[0].impact.value == "high"


def test_a_blocked_solo_worker_is_busy_not_dead(incident):
    state, report = incident["state"], incident["report"]
    block = state.worker(incident["block"].nodename)
    assert block.liveness.verdict == CONNECTED, block.liveness
    assert not [f for f in findings(report, "CD702") if f.subject == f"worker:{incident['block'].nodename}"]
    silent = [f for f in findings(report, "CD707") if f.subject == f"worker:{incident['block'].nodename}"]
    assert silent and silent[0].impact.value == "medium" and "busy" in silent[0].title


def test_a_prefork_worker_with_busy_children_keeps_heart_beating(incident):
    state, report = incident["state"], incident["report"]
    busy = state.worker(incident["busy"].nodename)
    assert busy.liveness.verdict == ALIVE and busy.active and busy.active >= 1
    assert not [p for f in report.findings for p in f.finding.places if p.subject == f"worker:{incident['busy'].nodename}"]


def test_a_task_routed_to_a_queue_nobody_consumes(incident):
    report, ids, uid = incident["report"], incident["ids"], incident["uid"]
    orphan = [f for f in findings(report, "CD701") if f.subject == f"queue:worphan-{uid}"]
    assert len(orphan) == 1
    text = "\n".join(orphan[0].evidence)
    assert ids["orphan"] in text and "1 message waited" in text and "no worker was seen taking" in text
    assert orphan[0].impact.value == "high" and orphan[0].confidence.value == "observed"
    # the block worker's long task was taken (its queue is empty): a solo worker reports it only at its end
    taken = [f for f in findings(report, "CD701") if f.subject == f"queue:wblock-{uid}"]
    assert taken and taken[0].impact.value == "medium", taken
    assert "silent but connected" in "\n".join(taken[0].evidence)


def test_a_task_redelivered_after_the_visibility_timeout_ran_twice(incident):
    report, ids = incident["twice_report"], incident["ids"]
    assert f"PSUBSCRIBE cdw-{incident['uid']}:/6.celeryev/*" in incident["twice"].source  # global_keyprefix
    assert not findings(incident["report"], "CD703")
    twice = findings(report, "CD703")
    assert len(twice) == 1 and twice[0].subject == "task:cdw.twice", twice
    text = "\n".join(twice[0].evidence)
    assert ids["twice"] in text and "visibility_timeout=3 s" in text


def test_the_replay_of_the_recording_gives_the_same_report(incident):
    state, _ = replay(incident["record"])
    report, _ = build_report(state, incident["report"].target, config=incident["config"])
    live = json.loads(format_json(incident["report"]))
    again = json.loads(format_json(report))
    assert again["findings"] == live["findings"]
    with open(incident["record"]) as handle:
        lines = handle.read()
    assert '"args"' not in lines and '"kwargs"' not in lines and '"result"' not in lines  # no bodies kept
