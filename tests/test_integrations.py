"""celery-doctor where Celery users already work: `celery doctor`, pre-commit, the GitHub action, Prometheus."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

CELERY = str(Path(sys.executable).with_name("celery"))
REDIS_DB2 = "redis://127.0.0.1:6379/2"


def run_celery(*args, env=None, timeout=120):
    full_env = dict(os.environ)
    full_env.pop("CELERY_BROKER_URL", None)
    full_env.pop("CELERY_APP", None)
    full_env["COLUMNS"] = "200"
    full_env.update(env or {})
    return subprocess.run([CELERY, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def comparable(text: str) -> dict:
    data = json.loads(text)
    data.pop("started_at")
    data.pop("duration_s")
    return data


# --------------------------------------------------------------------------- celery -A proj doctor


def test_celery_doctor_lint_is_celery_doctor_lint_on_the_app_celery_loaded():
    ours = run_cli("lint", "--app", "examples.shop", "--format", "json")
    theirs = run_celery("-A", "examples.shop", "doctor", "lint", "--format", "json")
    assert theirs.returncode == ours.returncode, theirs.stderr
    assert comparable(theirs.stdout) == comparable(ours.stdout)
    assert comparable(theirs.stdout)["target"]["app"] == "examples.shop"


def test_celery_doctor_takes_the_app_from_celery_app_env_and_broker_from_celery_b():
    # `celery -b URL` exports $CELERY_BROKER_URL, which the app's broker_url setting yields to (Celery's own rule)
    result = run_celery("-b", REDIS_DB2, "doctor", "scan", "--format", "json", "--fail-on", "never",
                        "--timeout", "8", env={"CELERY_APP": "examples.shop"})
    assert result.returncode == 0, result.stderr
    target = json.loads(result.stdout)["target"]
    assert target == {"app": "examples.shop", "broker": REDIS_DB2, "transport": "redis"}


def test_celery_doctor_help_errors_and_app_option():
    listed = run_celery("--help")
    assert "doctor" in listed.stdout
    helped = run_celery("-A", "examples.shop", "doctor", "scan", "--help")
    assert helped.returncode == 0 and "Usage: celery doctor scan" in helped.stdout
    bad = run_celery("-A", "examples.shop", "doctor", "lint", "--no-such-option")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "celery-doctor: error: No such option: --no-such-option" in bad.stderr
    assert "Traceback" not in bad.stderr
    twice = run_celery("-A", "examples.shop", "doctor", "lint", "-A", "other")
    assert twice.returncode == 2 and "global option of celery" in twice.stderr
    listing = run_celery("-A", "examples.shop", "doctor", "checks", "--format", "json")
    assert listing.returncode == 0 and {"CD101", "CD201"} <= {c["id"] for c in json.loads(listing.stdout)}


@pytest.mark.parametrize("args, expected", [
    (["scan", "-f", "json"], ["scan", "--app", "proj", "-f", "json"]),
    (["logs", "x.log"], ["logs", "x.log"]),
    (["explain", "CD101"], ["explain", "CD101"]),
    ([], []),
])
def test_with_app_adds_the_spec_to_the_commands_that_load_an_app(args, expected):
    from celery_doctor.celery_command import with_app

    assert with_app(args, "proj") == expected
    assert with_app(args, None) == args


# --------------------------------------------------------------------------- pre-commit


def hooks() -> list[dict]:
    """.pre-commit-hooks.yaml's hooks (its simple `- key: value` lists, read without a YAML library)."""
    out: list[dict] = []
    for line in (ROOT / ".pre-commit-hooks.yaml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("- "):
            out.append({})
        key, _, value = line[2:].partition(":")
        out[-1][key.strip()] = value.strip()
    return out


def test_pre_commit_hooks_run_lint_once_per_commit():
    found = {hook["id"]: hook for hook in hooks()}
    assert set(found) == {"celery-doctor-lint", "celery-doctor-lint-system"}
    for hook in found.values():
        assert hook["entry"] == "celery-doctor lint" and hook["pass_filenames"] == "false"
    assert found["celery-doctor-lint"]["language"] == "python"
    assert found["celery-doctor-lint-system"]["language"] == "system"
    # what pre-commit runs: the entry, then the hook's args (no file names)
    entry = found["celery-doctor-lint"]["entry"].split()
    program = str(Path(sys.executable).with_name(entry[0]))
    clean = subprocess.run([program, *entry[1:], "--app", "examples.shop", "--fail-on", "never"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert "celery-doctor" in clean.stdout and "findings" in clean.stdout


def test_pre_commit_accepts_the_manifest():
    clientlib = pytest.importorskip("pre_commit.clientlib", reason="pre-commit is not installed here")
    manifest = clientlib.load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))
    assert [hook["id"] for hook in manifest] == ["celery-doctor-lint", "celery-doctor-lint-system"]
