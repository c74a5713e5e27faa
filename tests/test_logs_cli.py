"""`celery-doctor logs` and `scan --logs` as a user runs them: the options of the table, every format with scan's
exit codes, standard input, one-line usage errors, log evidence ranked with a live scan (Redis db 5, read only),
and a log too long for --timeout said under Not checked."""
from __future__ import annotations

import gzip
import json

import pytest

from celery_doctor.options import OPTIONS
from tests.conftest import run_cli
from tests.test_logs_formats import ID, kill_story, line, write
from tests.test_options import _help

BROKER = "redis://127.0.0.1:6379/5"  # tests/test_logs_workers.py's database; a scan only reads it


def test_logs_has_exactly_the_flags_and_help_of_the_table():
    text = _help("logs")
    assert "PATH..." in text
    for option in OPTIONS:
        if "logs" in option.commands:
            for flag in option.flags:
                assert f"{flag} " in text, flag
            assert option.help_text("logs") in text, option.name
        else:
            assert f"{option.flag} " not in text, option.flag
    assert "--logs " in _help("scan") and "--logs " not in _help("lint") and "--logs " not in _help("trace")


def test_every_format_and_scans_exit_codes(tmp_path):
    log = write(tmp_path / "worker.log", kill_story())
    result = run_cli("logs", log, "-o", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.sarif"),
                     "-o", str(tmp_path / "r.md"))
    assert result.returncode == 1 and result.stdout == "", result.stderr  # a high finding, --fail-on high
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["mode"] == "logs" and [f["check"] for f in data["findings"]] == ["CD601"]
    assert {c["id"] for c in data["checks"]} == {f"CD6{i:02d}" for i in range(1, 16)}  # the log checks only
    assert data["timeline"][1]["kind"] == "pool-process-killed" and data["inputs"].startswith(log)
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["CD601"]
    assert "## Timeline (UTC)" in (tmp_path / "r.md").read_text()
    assert run_cli("logs", log, "--fail-on", "never").returncode == 0
    assert json.loads(run_cli("logs", log, "--ignore", "CD601", "--format", "json").stdout)["findings"] == []
    text = run_cli("logs", log).stdout
    assert text.startswith(f"celery-doctor 0.1.0 logs: {log}, 12 lines") and "Timeline (UTC, 2024-05-01;" in text
    assert all(len(out) <= 120 for out in text.splitlines())


def test_standard_input():
    result = run_cli("logs", "-", "--format", "json", input="\n".join(kill_story()) + "\n")
    data = json.loads(result.stdout)
    assert result.returncode == 1 and data["inputs"].startswith("-, 12 lines")
    assert data["findings"][0]["evidence"][-1].endswith(ID[0])


@pytest.mark.parametrize("args, message", [
    (("logs",), "give at least one log"),
    (("logs", "/nonexistent/worker.log"), "log file not found: /nonexistent/worker.log"),
    (("logs", "/nonexistent/*.log"), "no log file matches '/nonexistent/*.log'"),
    (("logs", "/tmp"), "/tmp is a directory"),
    (("scan", "--broker", BROKER, "--logs", "/nonexistent/worker.log"), "log file not found"),
])
def test_bad_paths_are_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.redis
def test_scan_ranks_log_evidence_with_the_live_state(tmp_path):
    log = write(tmp_path / "worker.log", kill_story())
    result = run_cli("scan", "--broker", BROKER, "--logs", log, "--format", "json", "--timeout", "5")
    data = json.loads(result.stdout)
    checks = [f["check"] for f in data["findings"]]
    assert "CD601" in checks and "CD409" in checks, checks  # the log's kill, and the live scan's missing worker
    assert data["timeline"] and data["inputs"].startswith(f"logs: {log}")
    text = run_cli("scan", "--broker", BROKER, "--logs", log, "--timeout", "5").stdout
    assert "Timeline (UTC, 2024-05-01; 2 events on celery@w1)" in text and ", logs:" in text.splitlines()[0]
    lint = json.loads(run_cli("lint", "--broker", BROKER, "--format", "json", cwd=tmp_path).stdout)
    skipped = {c["id"]: c["reason"] for c in lint["checks"] if c["id"].startswith("CD6")}
    assert set(skipped.values()) == {"needs logs: lint reads no logs (scan --logs, or celery-doctor logs)"}
    assert not [n for n in lint["not_checked"] if n["part"].startswith("logs")] and lint["timeline"] == []


@pytest.mark.redis
def test_a_log_longer_than_the_timeout_is_read_partly_and_said(tmp_path):
    path = tmp_path / "huge.log.gz"
    with gzip.open(path, "wt", compresslevel=1) as out:
        out.write(line(0, "INFO", "MainProcess", "celery@big ready.") + "\n")
        chunk = "".join(line(1, "INFO", "MainProcess", f"Task shop.t[{i}] received") + "\n" +
                        line(1, "INFO", "ForkPoolWorker-1", f"Task shop.t[{i}] succeeded in 0.1s: None") + "\n"
                        for i in range(2000))
        for _ in range(400):  # 1.6 million lines (gzipped): more than a second's reading
            out.write(chunk)
    result = run_cli("scan", "--broker", BROKER, "--logs", str(path), "--format", "json", "--timeout", "1")
    data = json.loads(result.stdout)
    partly = [n["reason"] for n in data["not_checked"] if n["part"] == "logs (partly read)"]
    assert partly and partly[0].startswith("reading stopped at the deadline in"), data["not_checked"]
    assert not [f for f in data["findings"] if f["check"] == "CD615"]  # a cut log is not a lost task
    assert data["duration_s"] < 3
