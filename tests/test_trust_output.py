"""Where the report goes: a full or closed stdout, and formats a command does not have.

- stdout that cannot take the report (`> /dev/full`): one line on stderr, exit 2 (like an unwritable
  `--output`), no "internal error", no crash log, no traceback.
- a reader that goes away (`| head -1`) for scan and trace too: quiet, exit 141.
- `trace --format sarif` (or `-o x.sarif`) is a usage error before anything is looked up; an options file's
  `format = "sarif"` (meant for lint/scan) leaves trace in text.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_trust_support import ROOT, cli, redis_available, refused_port

REDIS = "redis://127.0.0.1:6379/10"


def _run_to(stdout, args, tmp_path: Path):
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    env.pop("CELERY_BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "celery_doctor", *args], stdout=stdout, stderr=subprocess.PIPE,
                            cwd=tmp_path, env=env)
    return proc


COMMANDS = [("checks",), ("checks", "--format", "json"), ("explain", "CD101"), ("lint", "--broker", REDIS, "--format", "json"),
            ("scan", "--broker", REDIS, "--timeout", "5"), ("trace", "no-such-task-id", "--broker", REDIS, "--timeout", "5"),
            ("trace", "no-such-task-id", "--broker", REDIS, "--timeout", "5", "--format", "markdown")]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_a_full_stdout_is_a_one_line_error_exit_2(tmp_path, args):
    if args[0] in ("scan", "trace") and not redis_available():
        pytest.skip("no Redis")
    with open("/dev/full", "w") as full:
        proc = _run_to(full, args, tmp_path)
        _, stderr = proc.communicate(timeout=60)
    stderr = stderr.decode()
    assert proc.returncode == 2, (proc.returncode, stderr)
    assert stderr.strip() == "celery-doctor: error: cannot write to stdout: No space left on device", stderr
    assert not list(tmp_path.glob("celery-doctor-crash-*.log"))


@pytest.mark.parametrize("args", COMMANDS[4:6], ids=lambda a: a[0])
def test_a_reader_that_goes_away_from_scan_or_trace_is_not_a_crash(tmp_path, args):
    if not redis_available():
        pytest.skip("no Redis")
    proc = _run_to(subprocess.PIPE, args, tmp_path)
    proc.stdout.close()  # before the doctor has written anything
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 141, (proc.returncode, stderr)
    assert not stderr.strip(), stderr
    assert not list(tmp_path.glob("celery-doctor-crash-*.log"))


def test_trace_refuses_sarif_before_looking_anywhere(tmp_path):
    unreachable = f"redis://127.0.0.1:{refused_port()}/0"
    for args in (("--format", "sarif"), ("-f", "sarif"), ("--output", str(tmp_path / "t.sarif")),
                 ("--output", str(tmp_path / "t.json"), "--output", str(tmp_path / "t.sarif"))):
        run = cli("trace", "some-task-id", "--broker", unreachable, "--timeout", "5", *args, cwd=tmp_path)
        assert run.code == 2, str(run)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "SARIF" in lines[0] and "text, json or markdown" in lines[0], run.stderr
        assert not run.stdout and not run.crash_logs and run.seconds < 5
        assert not list(tmp_path.glob("t.*")), "a refused trace wrote a file"


def test_trace_with_an_options_file_format_sarif_writes_text(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\nformat = "sarif"\ntimeout = 3\n')
    unreachable = f"redis://127.0.0.1:{refused_port()}/0"
    run = cli("trace", "some-task-id", "--broker", unreachable, cwd=tmp_path)
    assert run.code == 1 and run.stdout.startswith("celery-doctor trace some-task-id"), str(run)
    json_run = cli("trace", "some-task-id", "--broker", unreachable, "--format", "json", cwd=tmp_path)
    assert json_run.code == 1 and json_run.json()["found"] is False, str(json_run)
