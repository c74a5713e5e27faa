"""`celery-doctor watch` as a user runs it: its options from the table, the replay of a recording in every format
with scan's exit codes, one-line usage errors, a live watch ended by --duration or by Ctrl-C with its report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from celery_doctor.options import OPTIONS
from tests.conftest import ROOT, run_cli
from tests.test_options import _help

RECORDING = str(Path(__file__).resolve().parent / "fixtures" / "watch" / "redis_incident.jsonl")
BROKER = "redis://127.0.0.1:6379/6"  # tests/test_watch_redis.py's database; nothing here writes to it


def test_watch_has_exactly_the_flags_and_help_of_the_table():
    text = _help("watch")
    for option in OPTIONS:
        if "watch" in option.commands:
            for flag in option.flags:
                assert f"{flag} " in text, flag
            assert option.help_text("watch") in text, option.name
        else:
            assert f"{option.flag} " not in text, option.flag


def test_a_replay_reports_in_every_format_with_scans_exit_codes(tmp_path):
    result = run_cli("watch", "--replay", RECORDING, "--format", "json", "-o", str(tmp_path / "r.sarif"),
                     "-o", str(tmp_path / "r.md"), "-o", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stderr  # high findings, --fail-on high
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["mode"] == "watch" and data["target"]["transport"] == "redis"
    assert {f["check"] for f in data["findings"]} == {"CD701", "CD702", "CD707"}
    assert {c["id"] for c in data["checks"]} == {f"CD70{i}" for i in range(1, 9)}  # the events checks only
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"CD701", "CD702", "CD707"}
    assert "CD702" in (tmp_path / "r.md").read_text()
    assert run_cli("watch", "--replay", RECORDING, "--fail-on", "never").returncode == 0
    only = run_cli("watch", "--replay", RECORDING, "--select", "CD707", "--format", "json")
    assert {f["check"] for f in json.loads(only.stdout)["findings"]} == {"CD707"}
    text = run_cli("watch", "--replay", RECORDING).stdout
    assert text.startswith("celery-doctor ") and " watch: app cdwatch_" in text.splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (("--broker", BROKER, "--duration", "-1"), "--duration must be a positive number of seconds"),
    (("--broker", BROKER, "--lost-after", "0"), "--lost-after must be a positive number of seconds"),
    (("--broker", BROKER, "--max-open", "0"), "--max-open must be 1 or more"),
    (("--replay", "/etc/hostname"), "is not a celery-doctor watch recording"),
    (("--replay", RECORDING, "--record", "x.jsonl"), "--replay reads a recording"),
    (("--broker", "memory://"), "watch reads Celery events from Redis or RabbitMQ brokers, not memory"),
    (("--broker", "redis://:s3cretpw@127.0.0.1:1/0", "--duration", "1"), "cannot reach Redis at 127.0.0.1:1/0"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    result = run_cli("watch", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "s3cretpw" not in result.stderr


@pytest.mark.redis
def test_a_live_watch_ends_at_its_duration_with_progress_lines_on_a_pipe(tmp_path):
    result = run_cli("watch", "--broker", BROKER, "--duration", "1.5", "--record", str(tmp_path / "w.jsonl"),
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(f["check"], f["subject"]) for f in data["findings"]] == [("CD708", "events:workers")]
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("celery-doctor: watch ") and len(line) <= 120 for line in lines), lines
    header = json.loads((tmp_path / "w.jsonl").read_text().splitlines()[0])
    assert header["celery_doctor_watch"] == 1 and header["broker"] == BROKER


@pytest.mark.redis
def test_ctrl_c_ends_a_live_watch_with_its_report():
    env = dict(os.environ, COLUMNS="200")
    env.pop("CELERY_BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "celery_doctor", "watch", "--broker", BROKER, "--format", "json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline().startswith("celery-doctor: watch ")  # it is watching
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["mode"] == "watch"
    assert any("interrupted (Ctrl-C)" in item["reason"] for item in data["not_checked"]), data["not_checked"]


def test_the_options_file_gives_watch_its_keys(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\nfail-on = "never"\nselect = ["cd707"]\n')
    result = run_cli("watch", "--replay", RECORDING, "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {f["check"] for f in json.loads(result.stdout)["findings"]} == {"CD707"}
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\nfail-on = "sometimes"\n')
    result = run_cli("watch", "--replay", RECORDING, cwd=tmp_path)
    assert result.returncode == 2 and "fail-on must be one of" in result.stderr
