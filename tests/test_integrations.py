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


# --------------------------------------------------------------------------- the GitHub action


def run_action(tmp_path, **env):
    """scripts/github_action.sh as action.yml runs it, with the runner's files in tmp_path."""
    outputs, summary = tmp_path / "github_output", tmp_path / "step_summary"
    full = dict(os.environ, RUNNER_TEMP=str(tmp_path), GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary),
                CD_PROGRAM=str(Path(sys.executable).with_name("celery-doctor")), COLUMNS="200")
    full.pop("CELERY_BROKER_URL", None)
    full.update(env)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "github_action.sh")], cwd=ROOT, env=full,
                            capture_output=True, text=True, timeout=120)
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines()) if outputs.exists() else {}
    return result, values, summary


def test_action_writes_sarif_summary_and_log_and_reports_findings_for_the_last_step(tmp_path):
    result, values, summary = run_action(tmp_path, CD_APP="examples.shop", CD_FAIL_ON="low", CD_ARGS="--ignore CD147")
    assert result.returncode == 0, result.stderr  # the upload step still runs; the last step fails the job
    assert values["exit-code"] == "1"
    sarif = json.loads(Path(values["sarif-file"]).read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
    assert not [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "CD147"]  # CD_ARGS reached the lint
    assert summary.read_text().startswith("# celery-doctor")
    assert "findings" in result.stdout  # the text report in the job log

    clean, values, _ = run_action(tmp_path, CD_APP="examples.shop", CD_FAIL_ON="never")
    assert clean.returncode == 0 and values["exit-code"] == "0"


def test_action_stops_before_the_upload_when_lint_cannot_run(tmp_path):
    result, values, _ = run_action(tmp_path, CD_APP="no_such_module_xyz")
    assert result.returncode == 2 and values["exit-code"] == "2"
    assert "::error title=celery-doctor::" in result.stdout and "could not load app" in result.stderr


def test_action_yml_runs_the_script_with_its_inputs_as_environment():
    text = (ROOT / "action.yml").read_text()
    assert 'run: bash "$GITHUB_ACTION_PATH/scripts/github_action.sh"' in text
    assert "github/codeql-action/upload-sarif@" in text and "steps.lint.outputs.exit-code == '1'" in text
    script = (ROOT / "scripts" / "github_action.sh").read_text()
    for name in ("CD_APP", "CD_FAIL_ON", "CD_ARGS"):
        assert f"{name}: ${{{{ inputs." in text and name in script
    # no input is pasted into a shell script (a workflow's values stay data)
    assert not [line for line in text.splitlines() if "run:" in line and "${{" in line]
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed here")
    action = yaml.safe_load(text)
    assert action["runs"]["using"] == "composite"
    assert {s.get("id") for s in action["runs"]["steps"]} >= {"lint"}
