"""Baselines for CI adoption, from the command line as users run them: write a baseline, move lines, add a problem.

A baseline's fingerprints survive line moves (they hash the code of the line, not its number), count identical
occurrences (a second identical one is new), and the file holds no secret."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_tree

SECRET = "hunter2-not-in-any-baseline"

PROJECT = {
    "proj/__init__.py": "",
    "proj/celery.py": """
        from celery import Celery

        app = Celery("proj", broker="redis://:%s@127.0.0.1:6379/7", include=["proj.tasks"])
        app.conf.beat_schedule = {
            "nightly": {"task": "proj.tasks.sync", "schedule": 86400.0},
            "hourly": {"task": "proj.tasks.report", "schedule": 3600.0},
        }
    """ % SECRET,
    "proj/tasks.py": """
        import datetime

        from proj.celery import app


        @app.task
        def sync():
            try:
                report.apply_async(("%s",), expires=datetime.datetime.now() + datetime.timedelta(minutes=5))
            except Exception:
                pass


        @app.task
        def report():
            try:
                sync.delay()
            except Exception:
                pass
    """ % SECRET,
}

NEW_TASK = """


@app.task
def fresh():
    try:
        sync.delay()
    except Exception:
        pass
"""


@pytest.fixture
def project(tmp_path) -> Path:
    return write_tree(tmp_path, PROJECT)


def lint(root: Path, *args: str):
    return run_cli("lint", "--app", "proj.celery", "--format", "json", "--fail-on", "low", *args, cwd=root)


def places(data: dict) -> list[tuple[str, str]]:
    return sorted((row["check"], o["subject"]) for row in data["findings"] + data["security"]
                  for o in row["occurrences"])


def test_write_move_lines_and_add_a_problem(project):
    before = lint(project)
    assert before.returncode == 1, before.stderr
    everything = places(json.loads(before.stdout))
    assert ("CD502", "task:proj.tasks.sync") in everything and ("CD141", "beat:hourly") in everything

    # adopting: the run that writes the baseline passes, every finding counted as baselined
    written = lint(project, "--write-baseline", "baseline.json")
    assert written.returncode == 0, written.stdout
    data = json.loads(written.stdout)
    assert data["findings"] == [] and data["summary"]["baselined"] == len(everything)
    baseline = json.loads((project / "baseline.json").read_text())
    assert baseline["version"] == 1
    entries = baseline["findings"]
    assert sum(e["count"] for e in entries) == len(everything)
    assert entries == sorted(entries, key=lambda e: (e["check"], e["path"] or "", e["subject"], e["fingerprint"]))
    assert all(set(e) == {"fingerprint", "check", "subject", "path", "count"} for e in entries)

    # lines move: comments and blank lines above every finding, in both files
    for name in ("proj/tasks.py", "proj/celery.py"):
        path = project / name
        path.write_text("# a comment added above everything\n\n\n" + path.read_text())
    moved = lint(project, "--baseline", "baseline.json")
    assert moved.returncode == 0, moved.stdout
    assert json.loads(moved.stdout)["summary"]["baselined"] == len(everything)
    text = run_cli("lint", "--app", "proj.celery", "--baseline", "baseline.json", "--fail-on", "low", cwd=project).stdout
    assert f"{len(everything)} baselined" in " ".join(text.split())

    # a new problem: exit 1 and only the new one reported
    with open(project / "proj/tasks.py", "a") as handle:
        handle.write(NEW_TASK)
    added = lint(project, "--baseline", "baseline.json")
    assert added.returncode == 1, added.stdout
    data = json.loads(added.stdout)
    assert places(data) == [("CD502", "task:proj.tasks.fresh")]
    assert data["summary"]["baselined"] == len(everything)


def test_a_second_identical_occurrence_is_new(project):
    assert lint(project, "--write-baseline", "baseline.json").returncode == 0
    tasks = project / "proj/tasks.py"
    text = tasks.read_text()
    # the same swallowing `except Exception: pass` once more in the same task: same check, subject, file, code
    tasks.write_text(text.replace("        sync.delay()\n    except Exception:\n        pass\n",
                                  "        sync.delay()\n    except Exception:\n        pass\n"
                                  "    try:\n        sync.delay()\n    except Exception:\n        pass\n"))
    result = lint(project, "--baseline", "baseline.json")
    assert result.returncode == 1, result.stdout
    assert places(json.loads(result.stdout)) == [("CD502", "task:proj.tasks.report")]


def test_a_changed_line_is_new_but_the_baseline_holds_no_secret(project):
    assert lint(project, "--write-baseline", "baseline.json").returncode == 0
    content = (project / "baseline.json").read_text()
    assert SECRET not in content  # masked subjects, code only hashed
    tasks = project / "proj/tasks.py"
    tasks.write_text(tasks.read_text().replace(f'(("{SECRET}",)', '(("other",)'))
    result = lint(project, "--baseline", "baseline.json")
    assert result.returncode == 1, result.stdout
    assert places(json.loads(result.stdout)) == [("CD146", "file:proj/tasks.py")]  # its line changed: new


def test_the_baseline_from_pyproject_and_bad_baselines(project):
    assert lint(project, "--write-baseline", "baseline.json").returncode == 0
    (project / "pyproject.toml").write_text('[tool.celery-doctor]\nbaseline = "baseline.json"\n')
    result = lint(project)
    assert result.returncode == 0 and json.loads(result.stdout)["summary"]["baselined"] > 0, result.stdout
    for content, message in (("{", "is not JSON"), ('{"version": 99}', "version 1"),
                             ('{"version": 1, "findings": [{"count": 1}]}', "without a fingerprint")):
        (project / "bad.json").write_text(content)
        bad = lint(project, "--baseline", "bad.json")
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    missing = lint(project, "--baseline", "nowhere.json")
    assert missing.returncode == 2 and "cannot read baseline nowhere.json" in missing.stderr


def test_a_line_number_in_the_subject_does_not_break_the_fingerprint(tmp_path, monkeypatch):
    from celery_doctor.baseline import _Lines, fingerprint
    from celery_doctor.model import Category, Confidence, Finding, Impact, Location

    monkeypatch.chdir(tmp_path)

    def place(line: int) -> Finding:  # a check that names the line in its subject (CD173: file:path:line)
        return Finding(check="CD173", title="t", category=Category.SECURITY, impact=Impact.LOW,
                       confidence=Confidence.CONFIGURED, subject=f"file:proj/celery.py:{line}", evidence=("e",),
                       fix="f", location=Location("proj/celery.py", line))

    (tmp_path / "proj").mkdir()
    code = 'app = Celery("proj", broker="redis://:***@127.0.0.1:6379/7")\n'
    (tmp_path / "proj/celery.py").write_text("from celery import Celery\n\n" + code)
    before = fingerprint(place(3), _Lines())
    (tmp_path / "proj/celery.py").write_text("from celery import Celery\n\n# moved\n\n" + code)
    assert fingerprint(place(5), _Lines()) == before
    (tmp_path / "proj/celery.py").write_text("from celery import Celery\n\n# moved\n\n" + code.replace("6379", "6380"))
    assert fingerprint(place(5), _Lines()) != before
