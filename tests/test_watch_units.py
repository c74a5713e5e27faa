"""celery-doctor watch without a broker: decoding, the ledger and its bounds, busy-versus-dead evidence, the
checks (each fires with one thing wrong and passes on the quiet example), recordings and their replay (a real
recorded incident), and the live view's lines."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from celery_doctor.model import Part, Snapshot, Target
from celery_doctor.parts import events as ev
from celery_doctor.parts.events import (
    ALIVE,
    AMBIGUOUS,
    CONNECTED,
    DEAD,
    OFFLINE,
    UNKNOWN,
    Liveness,
    QueueProbe,
    Step,
    example,
    example_task,
    example_worker,
)
from celery_doctor.watch.decode import Undecoded, decode_amqp, decode_redis
from celery_doctor.watch.engine import build_report, not_checked, replay
from celery_doctor.watch.evidence import ClientTracker, MailboxProbe, WorkerView, rabbitmq_verdicts, redis_verdicts
from celery_doctor.watch.ledger import Ledger
from celery_doctor.watch.live import Frame, PlainView, WorkerLine, frame_lines
from celery_doctor.watch.recording import Recorder, RecordingError, read
from tests.conftest import by_id, findings_of

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "watch"
T0 = ev.T0


# -- decoding -----------------------------------------------------------------------------------------------

def _envelope(body, content_type="application/json", encoding="base64", routing_key="task.multi"):
    raw = json.dumps(body).encode()
    return json.dumps({
        "body": base64.b64encode(raw).decode() if encoding == "base64" else raw.decode(),
        "content-encoding": "utf-8", "content-type": content_type, "headers": {"hostname": "celery@w1"},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
                       "priority": 0, "body_encoding": encoding, "delivery_tag": "x"}}).encode()


def test_a_redis_batch_is_decoded_and_argument_result_and_traceback_values_are_dropped():
    batch = [{"type": "task-received", "uuid": "a1", "name": "proj.charge", "args": "('4111-1111',)",
              "kwargs": "{'pw': 'x'}", "hostname": "celery@w1", "pid": 7, "timestamp": 1.0, "retries": 0},
             {"type": "task-succeeded", "uuid": "a1", "result": "'secret result'", "runtime": 0.5,
              "hostname": "celery@w1"},
             {"type": "task-failed", "uuid": "b2", "exception": "ValueError('amqp://u:hunter2pw@h//')",
              "traceback": "Traceback ...", "hostname": "celery@w1"},
             "not an event"]
    events, bad = decode_redis(_envelope(batch))
    assert bad == 1 and [e["type"] for e in events] == ["task-received", "task-succeeded", "task-failed"]
    text = json.dumps(events)
    assert "4111" not in text and "secret result" not in text and "Traceback" not in text and "pw" not in text
    assert events[2]["exception"] == "ValueError('amqp://u:***@h//')"  # masked
    assert events[0] == {"type": "task-received", "uuid": "a1", "name": "proj.charge", "hostname": "celery@w1",
                         "pid": 7, "retries": 0, "timestamp": 1.0}


def test_a_body_that_is_not_json_is_never_loaded():
    import pickle

    with pytest.raises(Undecoded, match="x-python-serialize"):
        decode_amqp(pickle.dumps({"type": "worker-heartbeat"}), "application/x-python-serialize", "binary")
    with pytest.raises(Undecoded):
        decode_redis(_envelope({"type": "x"}, content_type="application/x-yaml"))
    assert decode_redis(b"\x00garbage") == ([], 1)
    assert decode_amqp(b'{"type": "worker-heartbeat", "hostname": "h", "freq": 2}', "application/json") == (
        [{"type": "worker-heartbeat", "hostname": "h", "freq": 2.0}], 0)
    assert decode_amqp(b"[" * 100000, "application/json") == ([], 1)  # too deeply nested: not a crash


# -- the ledger ------------------------------------------------------------------------------------------

def _sent(task_id, t, name="proj.work", queue="celery"):
    return {"type": "task-sent", "uuid": task_id, "name": name, "queue": queue, "hostname": "gen1@app", "pid": 9}, t


def test_a_sent_event_arriving_after_the_workers_is_put_first():
    ledger = Ledger()
    ledger.apply({"type": "task-received", "uuid": "a", "name": "n", "hostname": "w1"}, 10.0)
    ledger.apply(*_sent("a", 10.2))
    ledger.apply({"type": "task-started", "uuid": "a", "hostname": "w1"}, 10.3)
    task = ledger.state(transport="redis", source="", started_at=0, ended_at=20, bound_s=5).tasks[0]
    assert [s.state for s in task.steps] == ["sent", "received", "started"]
    assert ledger.consumers == {"celery": ["w1"]}


def test_finished_tasks_are_summarised_and_memory_stays_bounded():
    ledger = Ledger(max_open=100, max_notable=10, recent_finished=50)
    for i in range(5000):
        tid = f"t{i}"
        ledger.apply(*_sent(tid, float(i)))
        ledger.apply({"type": "task-started", "uuid": tid, "hostname": "w1"}, i + 0.1)
        if i % 2:
            ledger.apply({"type": "task-succeeded", "uuid": tid, "hostname": "w1", "runtime": 0.1}, i + 0.2)
        if i % 100 == 0:
            ledger.apply({"type": "task-failed", "uuid": tid, "hostname": "w1", "exception": "E()"}, i + 0.3)
    assert len(ledger.open) <= 100 and ledger.open_dropped >= 2450 - 100  # 2,450 tasks left open, oldest dropped
    assert len(ledger.notable) == 10 and ledger.notable_dropped == 40  # 50 failures
    assert len(ledger.recent) == 50 and ledger.finished["succeeded"] == 2500
    state = ledger.state(transport="redis", source="", started_at=0, ended_at=6000, bound_s=5)
    assert state.open_dropped == ledger.open_dropped and len(state.tasks) <= 110
    assert any(f"{state.open_dropped:,} open tasks were dropped" in reason for _, reason in not_checked(state))


def test_a_task_that_finished_quietly_and_runs_again_is_remembered():
    ledger = Ledger()
    ledger.apply({"type": "task-started", "uuid": "a", "hostname": "w1"}, 1.0)
    ledger.apply({"type": "task-succeeded", "uuid": "a", "hostname": "w1"}, 2.0)
    assert not ledger.open and ledger.finished["succeeded"] == 1
    ledger.apply({"type": "task-started", "uuid": "a", "hostname": "w2"}, 30.0)
    task = ledger.state(transport="redis", source="", started_at=0, ended_at=40, bound_s=5).tasks[0]
    assert task.ran_twice and [s.node for s in task.started] == ["w1", "w2"]
    assert ledger.finished["succeeded"] == 0
    assert [why for _, tid, why in ledger.suspicious] == ["ran twice"]


def test_a_retry_is_not_a_redelivery():
    steps = (Step("sent", "p", 1), Step("received", "w1", 2), Step("started", "w1", 2.1), Step("retried", "w1", 3),
             Step("sent", "w1", 3.1), Step("received", "w2", 4), Step("started", "w2", 4.1))
    assert not example_task(steps=steps).ran_twice
    again = (*steps[:3], Step("received", "w1", 9), Step("started", "w1", 9.1))
    assert [(a.t, b.t) for a, b in example_task(steps=again).redeliveries()] == [(2, 9)]


def test_a_worker_restart_is_seen_from_its_pid():
    ledger = Ledger()
    ledger.apply({"type": "worker-heartbeat", "hostname": "w1", "pid": 10, "freq": 2.0, "processed": 50}, 1.0)
    ledger.apply({"type": "worker-online", "hostname": "w1", "pid": 11, "freq": 2.0, "processed": 0}, 9.0)
    worker = ledger.workers["w1"]
    assert worker.restarted_at == [9.0] and worker.processed_first == 0


# -- busy or dead ------------------------------------------------------------------------------------------

def _rows(*ids, mailbox=()):
    return [{"id": i, "addr": f"10.0.0.1:{i}", "name": "", "db": "0", "flags": "P" if i in mailbox else "b",
             "psub": "1" if i in mailbox else "0", "sub": "0", "cmd": "psubscribe" if i in mailbox else "brpop"}
            for i in ids]


def _tracker(polls):
    tracker = ClientTracker(db=0)
    for t, rows in polls:
        tracker.observe(t, rows)
    return tracker


def test_the_worker_whose_connections_closed_when_it_stopped_is_dead_the_other_connected():
    """w1 blocked at 100 (connections stay), w2 killed at 106 (its two connections gone by the next poll)."""
    workers = [WorkerView("w1", 100.0, 2.0, None), WorkerView("w2", 106.0, 2.0, None), WorkerView("w3", 119.0, 2.0, None)]
    polls = [(t, _rows("1", "2", "3", "4", "5", mailbox=("1", "3", "5"))) for t in range(95, 107)]
    polls += [(t, _rows("1", "2", "5", mailbox=("1", "5"))) for t in range(107, 121)]
    verdicts = redis_verdicts(workers, _tracker(polls), now=120.0)
    assert verdicts["w1"].verdict == CONNECTED and "busy" in verdicts["w1"].evidence[-1]
    assert verdicts["w2"].verdict == DEAD and verdicts["w2"].certain
    assert "between" in verdicts["w2"].evidence[1]
    assert verdicts["w3"].verdict == ALIVE


def test_when_the_evidence_cannot_single_out_which_silent_worker_is_gone_it_says_so():
    workers = [WorkerView("w1", 100.0, 2.0, None), WorkerView("w2", 100.5, 2.0, None)]
    polls = [(t, _rows("1", "2", mailbox=("1", "2"))) for t in range(95, 101)]
    polls += [(t, _rows("2", mailbox=("2",))) for t in range(101, 110)]
    verdicts = redis_verdicts(workers, _tracker(polls), now=110.0)
    assert {v.verdict for v in verdicts.values()} == {AMBIGUOUS}
    assert verdicts["w1"].others == ("w2",) and "cannot single out which" in verdicts["w1"].evidence[1]
    # two mailboxes gone in that window: both are dead
    polls = [(t, _rows("1", "2", mailbox=("1", "2"))) for t in range(95, 101)] + [(t, []) for t in range(101, 110)]
    assert {v.verdict for v in redis_verdicts(workers, _tracker(polls), 110.0).values()} == {DEAD}


def test_workers_without_remote_control_have_no_mailbox_and_one_silent_worker_is_still_singled_out():
    workers = [WorkerView("w1", 100.0, 2.0, None)]
    polls = [(t, _rows("1", "2")) for t in range(95, 101)] + [(t, _rows("2")) for t in range(101, 110)]
    assert redis_verdicts(workers, _tracker(polls), 110.0)["w1"].verdict == DEAD


def test_a_worker_killed_while_already_silent_is_probably_dead_and_unread_clients_are_unknown():
    workers = [WorkerView("w1", 100.0, 2.0, None)]
    polls = [(t, _rows("1", mailbox=("1",))) for t in range(95, 115)] + [(t, []) for t in range(115, 120)]
    verdict = redis_verdicts(workers, _tracker(polls), 120.0)["w1"]
    assert verdict.verdict == DEAD and not verdict.certain and "killed while it was blocked" in verdict.evidence[1]
    tracker = ClientTracker(db=0)
    tracker.failed(100.0, "CLIENT LIST refused: NOPERM")
    verdict = redis_verdicts(workers, tracker, 120.0)["w1"]
    assert verdict.verdict == UNKNOWN and "NOPERM" in verdict.evidence[1]
    offline = redis_verdicts([WorkerView("w1", 100.0, 2.0, 101.0)], tracker, 120.0)["w1"]
    assert offline.verdict == OFFLINE


def test_rabbitmq_tells_busy_from_dead_by_the_workers_exclusive_mailbox_queue():
    workers = [WorkerView("w1", 100.0, 2.0, None), WorkerView("w2", 100.0, 2.0, None), WorkerView("w3", 100.0, 2.0, None)]
    probes = [MailboxProbe(105.0, "w1", "w1.celery.pidbox", True, 1), MailboxProbe(105.0, "w2", "w2.celery.pidbox", False),
              MailboxProbe(105.0, "w3", "w3.celery.pidbox", True, 1), MailboxProbe(112.0, "w3", "w3.celery.pidbox", False),
              MailboxProbe(112.0, "w1", "w1.celery.pidbox", True, 1)]
    verdicts = rabbitmq_verdicts(workers, probes, 115.0)
    assert verdicts["w1"].verdict == CONNECTED
    assert verdicts["w2"].verdict == DEAD and verdicts["w2"].certain and "exclusive" in verdicts["w2"].evidence[1]
    assert verdicts["w3"].verdict == DEAD and "still consumed" in verdicts["w3"].evidence[1]
    api_down = rabbitmq_verdicts(workers[:1], [MailboxProbe(105.0, "w1", "q", None, error="HTTP 500")], 115.0)
    assert api_down["w1"].verdict == UNKNOWN and "HTTP 500" in api_down["w1"].evidence[1]


# -- the checks ----------------------------------------------------------------------------------------------

def _snap(state, config=None):
    parts = {"events": Part.gathered(state)}
    if config is not None:
        parts["config"] = Part.gathered(config)
    return Snapshot(target=Target(app="t", broker="redis://127.0.0.1:6379/0", transport="redis"), parts=parts,
                    mode="watch", now=state.ended_at)


def _worker(name, verdict, **kw):
    return example_worker(name, liveness=Liveness(verdict, since=T0 + 20, evidence=(f"{name} is {verdict}",)), **kw)


DEAD_W = _worker("celery@worker2", DEAD, last_heartbeat=T0 + 20, active=1)
STARTED_ON_2 = example_task("t-lost", steps=(Step("sent", "gen1@a", T0 + 10), Step("received", "celery@worker2", T0 + 10.1),
                                            Step("started", "celery@worker2", T0 + 10.2)))
ORPHAN = example_task("t-orphan", steps=(Step("sent", "gen1@a", T0 + 5),), queue="reports", routing_key="reports")
TWICE = example_task("t-twice", steps=(Step("sent", "g", T0 + 1), Step("received", "celery@worker1", T0 + 2),
                                       Step("started", "celery@worker1", T0 + 2.1),
                                       Step("received", "celery@worker2", T0 + 40),
                                       Step("started", "celery@worker2", T0 + 40.1),
                                       Step("succeeded", "celery@worker2", T0 + 41)))
FAILED = example_task("t-failed", steps=(Step("started", "celery@worker1", T0 + 3), Step("failed", "celery@worker1", T0 + 4)),
                      exception="WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)')")
EXPIRED = example_task("t-expired", steps=(Step("received", "celery@worker1", T0 + 3), Step("revoked", "celery@worker1", T0 + 3.1)),
                       revoke="expired", expires="2027-01-15T10:00:00+00:00")
LONG = example_task("t-long", steps=(Step("received", "celery@worker1", T0 + 3), Step("started", "celery@worker1", T0 + 3.1)))

FIRES = {
    "CD701": (example(tasks=(ORPHAN,), queues=(QueueProbe("reports", 1, 0, "AMQP passive declare"),)),
              "queue:reports", "high"),
    "CD702": (example(tasks=(STARTED_ON_2,), workers=(example_worker(), DEAD_W)), "worker:celery@worker2", "high"),
    "CD703": (example(tasks=(TWICE,)), "task:proj.tasks.work", "high"),
    "CD704": (example(tasks=(EXPIRED,)), "task:proj.tasks.work", "medium"),
    "CD705": (example(tasks=(FAILED,)), "task:proj.tasks.work", "medium"),
    "CD706": (example(tasks=(LONG,), time_limits={"proj.tasks.work": 10.0}), "task:proj.tasks.work", "medium"),
    "CD707": (example(workers=(example_worker(), DEAD_W)), "worker:celery@worker2", "high"),
    "CD708": (example(kinds={"worker-heartbeat": 60}, finished={}, workers=(example_worker(task_events=0),)),
              "events:workers", "low"),
}


@pytest.mark.parametrize("check_id", sorted(FIRES))
def test_each_events_check_fires_with_one_thing_wrong(check_id):
    state, subject, impact = FIRES[check_id]
    found = findings_of(by_id(check_id), _snap(state))
    assert [(f.subject, f.impact.value) for f in found] == [(subject, impact)], found


@pytest.mark.parametrize("check_id", sorted(FIRES))
def test_each_events_check_passes_on_the_quiet_example(check_id):
    assert findings_of(by_id(check_id), _snap(example())) == []


def test_every_events_check_is_covered_here():
    from celery_doctor.registry import load_registry

    assert {c.id for c in load_registry().checks if "events" in c.needs} == set(FIRES)


def test_a_task_on_a_busy_connected_worker_is_not_lost_and_one_on_an_ambiguous_one_is_inferred():
    busy = example(tasks=(STARTED_ON_2,), workers=(example_worker(), _worker("celery@worker2", CONNECTED)))
    assert findings_of(by_id("CD702"), _snap(busy)) == []
    [silent] = findings_of(by_id("CD707"), _snap(busy))
    assert silent.impact.value == "medium" and "busy" in silent.title and "t-lost" in "\n".join(silent.evidence)
    unsure = example(tasks=(STARTED_ON_2,), workers=(example_worker(), _worker("celery@worker2", AMBIGUOUS)))
    [lost] = findings_of(by_id("CD702"), _snap(unsure))
    assert lost.confidence.value == "inferred"


def test_the_acks_setting_says_whether_a_started_task_is_lost(tmp_path):
    from celery import Celery

    from celery_doctor.collectors.config import collect_config

    state = example(tasks=(STARTED_ON_2,), workers=(example_worker(), DEAD_W))
    app = Celery("acks", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.task_acks_late = True
    [late] = findings_of(by_id("CD702"), _snap(state, collect_config(app)))
    assert "stays unacknowledged and is delivered again" in "\n".join(late.evidence)
    app.conf.task_acks_late = False
    [early] = findings_of(by_id("CD702"), _snap(state, collect_config(app)))
    assert "the task is lost" in "\n".join(early.evidence)


def test_task_events_off_says_exactly_what_to_turn_on():
    off = example(kinds={"worker-heartbeat": 60}, workers=(example_worker(task_events=0),), tasks=(), finished={})
    [finding] = findings_of(by_id("CD708"), _snap(off))
    text = "\n".join(finding.evidence)
    assert "worker_send_task_events = True" in text and "-E" in text and "--enable-events" in text
    assert "processed 10 task(s)" in text
    assert any("worker_send_task_events" in reason for _, reason in not_checked(off))
    producers = example(kinds={"task-received": 3, "task-started": 3, "task-succeeded": 3, "worker-heartbeat": 60})
    [finding] = findings_of(by_id("CD708"), _snap(producers))
    assert finding.subject == "events:producers" and "task_send_sent_event = True" in "\n".join(finding.evidence)
    [nothing] = findings_of(by_id("CD708"), _snap(example(events=0, kinds={}, workers=())))
    assert "no event at all" in nothing.evidence[0]


# -- recordings and replay ----------------------------------------------------------------------------------

def _ids_by_name(path):
    ids = {}
    with open(path) as handle:
        items = [json.loads(line) for line in handle]
    for item in items:
        event = item.get("event") or {}
        if event.get("type") == "task-sent":
            ids[event["name"]] = event["uuid"]
    return ids


def test_the_recorded_redis_incident_replays_to_its_findings():
    """A recording made by tests/test_watch_redis.py (one worker SIGKILLed mid-task, a solo worker blocked in a
    long task, a prefork worker with a busy child, a task routed to a queue nobody consumes)."""
    path = FIXTURES / "redis_incident.jsonl"
    state, header = replay(str(path))
    report, _ = build_report(state, Target(app=header["app"], broker=header["broker"], transport="redis"))
    ids = _ids_by_name(path)
    by_check: dict = {}
    for ranked in report.findings:
        by_check.setdefault(ranked.finding.check, []).append(ranked.finding)
    assert sorted(by_check) == ["CD701", "CD702", "CD707"]
    [lost] = by_check["CD702"]
    assert lost.subject.startswith("worker:kill-") and ids["cdw.kill"] in "\n".join(lost.evidence)
    assert {f.title.split(":")[0] for f in by_check["CD707"]} == {
        "A worker died", "A worker stopped heart-beating but is still connected"}
    orphan = [f for f in by_check["CD701"] if f.subject.startswith("queue:worphan-")]
    assert orphan and ids["cdw.orphan"] in "\n".join(orphan[0].evidence)
    assert state.replayed_from == "redis_incident.jsonl"
    again, _ = replay(str(path))
    assert again == state  # deterministic


def test_a_recording_is_masked_bounded_and_unreadable_lines_are_counted(tmp_path):
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(str(path), {"transport": "redis", "broker": "redis://:s3cretpw99@h:6379/0", "db": 0,
                                    "started_at": T0, "bound": 5})
    recorder.item(T0 + 1, "event", {"type": "worker-heartbeat", "hostname": "celery@w1", "freq": 2.0})
    recorder.item(T0 + 2, "note", "lost amqp://u:s3cretpw99@h//")
    recorder.close()
    with open(path, "a") as handle:
        handle.write("{not json\n" + json.dumps({"t": "x", "event": {}}) + "\n" + json.dumps({"t": T0 + 3, "end": {}}) + "\n")
    assert "s3cretpw99" not in path.read_text()
    state, _header = replay(str(path))
    assert state.workers[0].hostname == "celery@w1" and state.ended_at == T0 + 3
    assert any("2 line(s) of the recording could not be read" in n for n in state.notes)
    (tmp_path / "other.json").write_text('{"a": 1}\n')
    with pytest.raises(RecordingError):
        read(str(tmp_path / "other.json"))


# -- the live view -------------------------------------------------------------------------------------------

HOSTILE = "w\x1b[2J\x1b]0;pwned\x07\u202e\nfake line@host"


@pytest.mark.parametrize("width", [40, 80, 200])
def test_every_live_line_fits_the_width_and_untrusted_text_stays_text(width):
    frame = Frame(now=T0 + 30, elapsed=30, duration=60, events=12345, rate=411.5,
                  counts={"sent": 3, "started": 2, "succeeded": 1000},
                  workers=[WorkerLine(HOSTILE * 3, "dead", 12.0, 1), WorkerLine("celery@w2", "alive", 0.4, 0)],
                  suspicious=[(T0 + 20, "id-" + HOSTILE, "ran twice")], dropped=2, behind=0, task_events=False)
    lines = frame_lines(frame, width)
    assert all(len(line) <= width for line in lines)
    joined = "\n".join(lines)
    assert "\x1b" not in joined and "\u202e" not in joined and "\x07" not in joined
    assert len(lines) == len(joined.split("\n"))  # no value starts a line of its own
    out = io.StringIO()
    view = PlainView(out, interval=0, width=width)
    view.update(frame)
    view.close(frame)
    assert all(len(line) <= width for line in out.getvalue().splitlines())
    assert "\x1b" not in out.getvalue()
