"""Security is not loss: a `security` finding (CD142, pickle accepted) is reported apart from the ranked causes,
in every format, and still counts for --fail-on by its own impact."""
from __future__ import annotations

import json

import pytest

from celery_doctor.model import Category, Confidence, Finding, Impact, Runbook, check
from celery_doctor.ranking import rank, rank_security
from tests.conftest import run_cli

RUNBOOK = Runbook(symptom="s" * 5, why="w" * 5, confirm="c" * 5, fix="f" * 5, risk="r" * 5)

PICKLE_APP = {
    "pickleproj/__init__.py": "",
    "pickleproj/app.py": """
        from celery import Celery

        app = Celery("pickleproj", broker="redis://127.0.0.1:6379/7")
        app.conf.accept_content = ["json", "pickle"]
        app.conf.task_default_queue = "pickleproj"


        @app.task
        def add(x, y):
            return x + y
    """,
}


def _finding(check_id: str, category: Category, impact: Impact = Impact.HIGH) -> Finding:
    return Finding(check=check_id, title="t", category=category, impact=impact, confidence=Confidence.CONFIGURED,
                   subject="setting:x", evidence=("e",), fix="f")


def test_rank_leaves_security_out_and_rank_security_ranks_it_alone():
    findings = [_finding("CD142", Category.SECURITY), _finding("CD101", Category.WORKER, Impact.MEDIUM)]
    causes, security = rank(findings), rank_security(findings)
    assert [r.finding.check for r in causes] == ["CD101"] and causes[0].rank == 1
    assert [r.finding.check for r in security] == ["CD142"] and security[0].rank == 1
    assert "not a cause of task loss" in security[0].why


def test_a_security_check_must_declare_its_impact():
    with pytest.raises(ValueError, match="declares its impact"):
        check(id="SEC001", slug="sec", title="t", category=Category.SECURITY, needs=("config",), runbook=RUNBOOK)
    made = check(id="SEC001", slug="sec", title="t", category=Category.SECURITY, needs=("config",),
                 runbook=RUNBOOK, impact=Impact.LOW)(lambda snapshot: ())
    assert made.impact is Impact.LOW and not made.category.is_loss
    assert all(c.is_loss for c in Category if c is not Category.SECURITY)


def test_pickle_accepted_is_a_security_finding_in_every_format_not_a_cause(tree):
    root = tree(PICKLE_APP)
    args = ("lint", "--app", "pickleproj.app", "--select", "CD142", "--select", "CD122")
    result = run_cli(*args, "--format", "json", cwd=root)
    assert result.returncode == 1, result.stderr  # CD142 is high: it fails --fail-on high (the default)
    data = json.loads(result.stdout)
    assert data["findings"] == []
    assert [f["check"] for f in data["security"]] == ["CD142"]
    assert data["security"][0]["category"] == "security" and data["security"][0]["rank"] == 1
    assert data["summary"]["total"] == 0 and data["summary"]["security"] == 1
    assert run_cli(*args, "--fail-on", "never", cwd=root).returncode == 0

    text = run_cli(*args, cwd=root).stdout
    assert "Verdict: no likely cause of task loss found" in text
    assert "1 security finding(s) below" in text
    security_at = text.index("Security (not causes of lost tasks")
    assert "CD142 unsafe-serializer-accepted" in text[security_at:]
    assert "Ranked causes" not in text
    flat = " ".join(text.split())  # the footer may wrap
    assert "0 findings (0 high" in flat and "1 security finding (not causes of loss)" in flat

    markdown = run_cli(*args, "--format", "markdown", cwd=root).stdout
    causes_at, security_at = markdown.index("## Likely causes"), markdown.index("## Security (not causes")
    assert causes_at < security_at and "CD142" not in markdown[causes_at:security_at]
    assert "CD142" in markdown[security_at:]

    sarif = json.loads(run_cli(*args, "--format", "sarif", cwd=root).stdout)
    results = sarif["runs"][0]["results"]
    assert [r["ruleId"] for r in results] == ["CD142"] and results[0]["properties"]["category"] == "security"
    rule = next(r for r in sarif["runs"][0]["tool"]["driver"]["rules"] if r["id"] == "CD142")
    assert rule["properties"]["security-severity"] == "8.0"
    loss_rule = next(r for r in sarif["runs"][0]["tool"]["driver"]["rules"] if r["id"] == "CD122")
    assert "security-severity" not in loss_rule["properties"]


def test_a_loss_cause_ranks_while_the_security_finding_stays_apart(tree):
    files = dict(PICKLE_APP)
    files["pickleproj/app.py"] += """
        app.conf.beat_schedule = {"nightly": {"task": "pickleproj.app.missing", "schedule": 60.0}}
    """
    root = tree(files)
    data = json.loads(run_cli("lint", "--app", "pickleproj.app", "--select", "CD142", "--select", "CD122",
                              "--format", "json", cwd=root).stdout)
    assert [f["check"] for f in data["findings"]] == ["CD122"]
    assert [f["check"] for f in data["security"]] == ["CD142"]
