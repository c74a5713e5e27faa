"""The log checks (CD601-CD615) on the logs part's example factory, and the report they make: the timeline
within the width, nothing secret and no message body printed, every value shown as text."""
from __future__ import annotations

import json
import re

import pytest

from celery_doctor.logs.run import diagnose_logs
from celery_doctor.model import Confidence, Impact, Part, Snapshot, Target
from celery_doctor.parts import logs as P
from celery_doctor.registry import load_registry
from celery_doctor.reporters.json import format_json
from celery_doctor.reporters.markdown import format_markdown
from celery_doctor.reporters.text import format_text
from tests.test_logs_formats import ID, kill_story, line, write

DETAILS = {
    P.POOL_PROCESS_KILLED: {},
    P.OOM_KILL: {"pids": (4321,), "processes": {"celery": 1}, "matched": ("ForkPoolWorker-3 of celery@worker1",)},
    P.HARD_TIME_LIMIT: {"limits": {"300 s": 1}, "process_exits": 1},
    P.SOFT_TIME_LIMIT: {"limits": {"60 s": 1}, "outcomes": {"hard": 1}},
    P.UNREGISTERED: {},
    P.REJECTED_MESSAGE: {"reasons": {"content type not accepted: pickle (application/x-python-serialize)": 1}},
    P.REVOKED_DISCARDED: {"how": {"revoked elsewhere or expired": 1}},
    P.ACK_TIMEOUT: {"timeout_ms": 1800000, "open_tasks": 1},
    P.CONNECTION_LOST: {"most_open": 3, "restored": 2, "received_again": 1, "longest_s": 4.2},
    P.MISSED_HEARTBEAT: {"nodes": {"celery@worker2": 3}},
    P.CLOCK_DRIFT: {"nodes": {"celery@worker2": 1}, "max_drift_s": 120.0},
    P.STOPPED_WITH_TASKS: {"how": {"warm shutdown": 1}, "restored": 4},
    P.RETRIES_EXHAUSTED: {"how": {"MaxRetriesExceededError": 1}},
    P.BEAT_DUPLICATE: {"entry": "nightly", "task": "proj.tasks.sync", "origins": {"beat-a": 60, "beat-b": 59},
                       "period_s": 60.0},
    P.NEVER_FINISHED: {"oldest_s": 1200.0, "last_minute": 0},
}
CHECK_OF = {kind: f"CD6{i:02d}" for i, kind in enumerate(P.KINDS, 1)}


def snapshot(state):
    return Snapshot(target=Target(None, None, None), parts={"logs": Part.gathered(state)}, mode="logs")


def run(check_id, state):
    check = load_registry().get(check_id)
    return list(check.run(snapshot(state)))


def test_one_check_per_signature_kind_with_a_complete_runbook():
    registry = load_registry()
    checks = [c for c in registry.checks if c.id.startswith("CD6")]
    assert [c.id for c in checks] == list(CHECK_OF.values())
    for check in checks:
        assert check.needs == frozenset({"logs"})
        why = check.runbook.why + " ".join(check.runbook.references)
        assert re.search(r"(celery|kombu|billiard|amqp)/[\w/]+\.py|mm/oom_kill\.c", why), check.id  # cites the source


@pytest.mark.parametrize("kind", P.KINDS)
def test_each_check_fires_on_its_signature_and_passes_on_a_quiet_log(kind):
    check_id = CHECK_OF[kind]
    assert run(check_id, P.example()) == []
    signature = P.example_signature(kind, details=DETAILS[kind] or P.example_signature().details)
    found = run(check_id, P.example(signatures=[signature]))
    assert len(found) == 1, (kind, found)
    finding = found[0]
    assert finding.check == check_id
    assert finding.confidence is (Confidence.INFERRED if kind == P.NEVER_FINISHED else Confidence.OBSERVED)
    text = " ".join(finding.evidence)
    if kind not in (P.MISSED_HEARTBEAT, P.CLOCK_DRIFT, P.BEAT_DUPLICATE):
        assert "3f2c9a4e-0001" in text and "proj.tasks.charge" in text, text  # names the task and its id
    assert "2024-05-01 10:10:00" in text  # when
    subject = {P.OOM_KILL: "host:celery@worker1", P.BEAT_DUPLICATE: "beat-entry:nightly"}.get(kind,
                                                                                             "worker:celery@worker1")
    assert finding.subject == subject


def test_impacts_follow_what_happened():
    benign_soft = P.example_signature(P.SOFT_TIME_LIMIT, details={"limits": {"60 s": 2}, "outcomes": {"finished": 2}})
    assert run("CD604", P.example(signatures=[benign_soft]))[0].impact is Impact.LOW
    idle_kill = P.example_signature(tasks=(), tasks_total=0, names=(), details={"signals": {"exitcode 1": 1}})
    assert run("CD601", P.example(signatures=[idle_kill]))[0].impact is Impact.MEDIUM
    recent = P.example_signature(P.NEVER_FINISHED, details={"oldest_s": 20.0, "last_minute": 1})
    assert run("CD615", P.example(signatures=[recent]))[0].impact is Impact.LOW


HOSTILE_NAME = "evil\x1b[2J\u202eTask"


def hostile_log(tmp_path):
    lines = [
        *kill_story(),
        line(5, "INFO", "MainProcess", f"Task {HOSTILE_NAME}[{ID[7]}] received"),
        line(5.5, "WARNING", "ForkPoolWorker-5", f"{HOSTILE_NAME}[{ID[7]}]: working"),
        line(5.8, "ERROR", "MainProcess", "Process 'ForkPoolWorker-5' pid:99 exited with 'signal 9 (SIGKILL)'"),
        line(6, "ERROR", "MainProcess", "Received unregistered task of type 'redis://:Hunter2-pass@db:6379/0'."),
        "The message has been ignored and discarded.",
        "",
        "The full contents of the message body was:",
        "b'[[\"card=4111-1111-1111-1111\", \"password=Hunter2-pass\"], {}, {}]' (60b)",
        "",
        "The full contents of the message headers:",
        f"{{'lang': 'py', 'task': 'redis://:Hunter2-pass@db:6379/0', 'id': '{ID[8]}', "
        "'argsrepr': \"('card=4111-1111-1111-1111',)\"}",
        line(7, "ERROR", "MainProcess", "Received invalid task message: Refusing to deserialize untrusted content of "
                                        "type pickle (application/x-python-serialize)"),
        "The full contents of the message body was:",
        "b'\\x80\\x04\\x95secret-pickle' (40b)",
        line(7.5, "INFO", "MainProcess", f"Task shop.mail[{ID[6]}] received"),
        line(8, "WARNING", "MainProcess", "consumer: Connection to broker lost. Trying to re-establish the "
                                          "connection... (ConnectionError('Error 111 connecting to "
                                          "redis://:Hunter2-pass@db:6379/0'))"),
        line(8, "INFO", "MainProcess", "Restoring 2 unacknowledged message(s)"),
        line(9, "INFO", "MainProcess", "Connected to redis://:**@db:6379/0"),
        line(9.5, "INFO", "MainProcess", f"Task shop.mail[{ID[6]}] received"),
    ]
    for i in range(30):  # a long incident: more events than the text timeline shows
        lines.append(line(100 + i * 90, "ERROR", "MainProcess", f"Received unregistered task of type 'shop.old{i}'."))
    return write(tmp_path / "worker.log", lines)


@pytest.mark.parametrize("width", [40, 80, 120])
def test_text_report_timeline_fits_the_width_and_prints_nothing_secret(tmp_path, width):
    report, _ = diagnose_logs([hostile_log(tmp_path)])
    text = format_text(report, width=width)
    assert "Timeline (UTC, 2024-05-01;" in text
    for out in text.split("\n"):
        assert len(out) <= width, (width, out)
    block = text[text.index("Timeline"):text.index("\n\n", text.index("Timeline"))].split("\n")
    assert len(block) <= 1 + 20 * 4 + 1  # at most 20 events (wrapped), a line for the rest
    assert "  … 16 more events …" in block and any("17 events not shown" in text for text in block)
    for continued in (text for text in block[1:] if text.startswith("  ") and not text[2].isdigit() and text[2] not in "(…"):
        assert continued.startswith("     ") and not continued.startswith("      ")  # continuation: 5 columns in
    for secret in ("Hunter2-pass", "4111", "secret-pickle", "\x1b", "\u202e"):
        assert secret not in text
    assert "evil\\x1b[2J\\u202eTask" in text  # the killed task's name, shown escaped
    assert "redis://:***@db:6379/0" in text


def test_json_and_markdown_carry_the_timeline_without_secrets(tmp_path):
    report, _ = diagnose_logs([hostile_log(tmp_path)])
    data = json.loads(format_json(report))
    assert data["mode"] == "logs" and data["inputs"].endswith("UTC")
    kinds = [e["kind"] for e in data["timeline"]]
    assert kinds[:2] == ["worker-ready", P.POOL_PROCESS_KILLED] and data["timeline"][1]["at"].startswith("2024-05-01T10:00:03")
    received_again = next(f for f in data["findings"] if f["check"] == "CD609")
    assert ID[6] in " ".join(received_again["evidence"])  # received again after the reconnection
    markdown = format_markdown(report)
    for out in (format_json(report), markdown):
        for secret in ("Hunter2-pass", "4111", "secret-pickle"):
            assert secret not in out
    assert "## Timeline (UTC)" in markdown and "\x1b" not in markdown
