"""One finding per root cause: a check that sees the same cause in many places reports it once, with every place.

The project below has 40 beat entries without expires (and 10 for tasks that do not exist), 30 tasks with the same
five problems, 30 routes to nothing, 30 sends of unknown names and three settings of the wrong type; every built-in
config and source check runs over it (lint, as a user runs it) and each cause must come out as one ranked row."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from celery_doctor.model import Category, Confidence, Finding, Impact, Location
from celery_doctor.ranking import cause_key, group, messages_at_risk, rank
from tests.conftest import run_cli

TASKS, BEAT, GHOSTS, ROUTES = 30, 40, 10, 30


def many_project(root: Path) -> Path:
    """A project where every problem is repeated in many places."""
    package = root / "proj"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    tasks = ["import datetime\nimport urllib.request\n\nfrom proj.celery import app\n"]
    for i in range(TASKS):
        tasks.append(f'''

@app.task(bind=True, autoretry_for=(Exception,), max_retries=None, acks_late=True)
def job_{i}(self, x):
    try:
        urllib.request.urlopen("https://example.com/{i}")
    except Exception:
        pass
    other = job_{(i + 1) % TASKS}.apply_async((x,), expires=datetime.datetime.now() + datetime.timedelta(minutes=5))
    other.get()
    app.send_task("proj.tasks.missing_{i}")
''')
    (package / "tasks.py").write_text("".join(tasks))
    beat = [f'    "every-{i}": {{"task": "proj.tasks.job_{i % TASKS}", "schedule": {60 + i}.0}},' for i in range(BEAT)]
    beat += [f'    "ghost-{i}": {{"task": "proj.tasks.ghost_{i}", "schedule": 300.0}},' for i in range(GHOSTS)]
    routes = [f'    "proj.tasks.gone_{i}": {{"queue": "q{i}"}},' for i in range(ROUTES)]
    (package / "celery.py").write_text("\n".join([
        "from celery import Celery",
        "",
        'app = Celery("proj", broker="redis://127.0.0.1:6379/7", include=["proj.tasks"])',
        'app.conf.task_acks_late = "yes"',
        'app.conf.worker_prefetch_multiplier = "4"',
        'app.conf.broker_pool_limit = "10"',
        "app.conf.beat_schedule = {", *beat, "}",
        "app.conf.task_routes = {", *routes, "}",
        "",
    ]))
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return many_project(tmp_path_factory.mktemp("many"))


@pytest.fixture(scope="module")
def report(project) -> dict:
    result = run_cli("lint", "--app", "proj.celery", "--format", "json", cwd=project)
    assert result.returncode == 1, result.stderr
    return json.loads(result.stdout)


# The causes the project repeats, and in how many places at least.
REPEATED = {"CD141": BEAT, "CD122": GHOSTS, "CD121": ROUTES, "CD541": TASKS, "CD146": TASKS, "CD501": TASKS,
            "CD503": TASKS, "CD520": TASKS, "CD521": TASKS, "CD148": 3}


def test_every_check_reports_each_cause_once_with_every_place(report):
    rows = report["findings"] + report["security"]
    per_check = collections.Counter(row["check"] for row in rows)
    assert {check: n for check, n in per_check.items() if n > 1} == {}, [(r["check"], r["title"]) for r in rows]
    by_check = {row["check"]: row for row in rows}
    assert set(REPEATED) <= set(by_check), sorted(by_check)
    for check, least in REPEATED.items():
        row = by_check[check]
        assert len(row["occurrences"]) >= least, (check, len(row["occurrences"]))
        assert row["subjects"] == list(dict.fromkeys(o["subject"] for o in row["occurrences"]))
        assert row["subject"] == row["subjects"][0]
    beat = by_check["CD141"]
    assert beat["subjects"][:3] == ["beat:every-0", "beat:every-1", "beat:every-2"]  # natural order
    assert {f"beat:every-{i}" for i in range(BEAT)} <= set(beat["subjects"])
    assert "the same cause at" in beat["evidence"][-1]
    # no place is lost by the grouping: the checks' own counts are the places of their rows
    counted = {c["id"]: c["findings"] for c in report["checks"] if c["status"] == "failed"}
    assert {row["check"]: len(row["occurrences"]) for row in rows} == counted


def test_a_fix_that_names_its_place_is_kept_per_place(report):
    wrong_type = next(row for row in report["findings"] if row["check"] == "CD148")
    fixes = {o["subject"]: o["fix"] for o in wrong_type["occurrences"]}
    assert set(fixes) == {"setting:task_acks_late", "setting:worker_prefetch_multiplier", "setting:broker_pool_limit"}
    assert all(subject.split(":")[1] in fix for subject, fix in fixes.items())
    assert "each has its own fix" in wrong_type["fix"]


def test_text_markdown_and_sarif_show_one_row_and_every_place(project, report):
    text = run_cli("lint", "--app", "proj.celery", cwd=project).stdout
    assert "beat:every-0 and 49 more (50 places) · CD141" in text  # 40 entries, and the 10 ghosts lack expires too
    ranked = text[text.index("Ranked causes"):text.index("Details of the top")]
    assert ranked.count("CD141") == 1 and ranked.count("CD501") == 1
    markdown = run_cli("lint", "--app", "proj.celery", "--format", "markdown", cwd=project).stdout
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "CD141" in line]
    assert len(table) == 1 and "and 49 more" in table[0]
    assert "- **Places (50):**" in markdown
    sarif = json.loads(run_cli("lint", "--app", "proj.celery", "--format", "sarif", cwd=project).stdout)
    results = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "CD141"]
    assert len(results) == 50 and len({r["partialFingerprints"]["celeryDoctor/v1"] for r in results}) == 50
    assert {r["properties"]["rank"] for r in results} == {next(f["rank"] for f in report["findings"]
                                                                if f["check"] == "CD141")}


def routes_and_retries_project(root: Path, count: int = 20) -> Path:
    """Another project where each problem repeats: routes to undeclared queues, sends to undeclared queues,
    fixed-interval retries, add_periodic_task without expires."""
    package = root / "proj2"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    code = ["from proj2.celery import app\n"]
    for i in range(count):
        code.append(f'''

@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=5, retry_kwargs={{"countdown": 5}})
def send_{i}(self):
    work_{i}.apply_async((1,), queue="nowhere_{i}")


@app.task
def work_{i}(x):
    return x
''')
    code.append("\n\n@app.on_after_configure.connect\ndef setup(sender, **kwargs):\n")
    code += [f'    sender.add_periodic_task({30 + i}.0, work_{i}.s(1), name="periodic-{i}")\n' for i in range(count)]
    (package / "tasks.py").write_text("".join(code))
    routes = ", ".join(f'"proj2.tasks.work_{i}": {{"queue": "undeclared_{i}"}}' for i in range(count))
    (package / "celery.py").write_text("\n".join([
        "from celery import Celery",
        "from kombu import Queue",
        "",
        'app = Celery("proj2", broker="redis://127.0.0.1:6379/7", include=["proj2.tasks"])',
        'app.conf.task_queues = [Queue("celery")]',
        f"app.conf.task_routes = {{{routes}}}",
        "",
    ]))
    return root


def test_routes_and_retries_repeated_twenty_times_are_one_row_each(tmp_path):
    root = routes_and_retries_project(tmp_path)
    result = run_cli("lint", "--app", "proj2.celery", "--format", "json", "--fail-on", "never", cwd=root)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data["findings"] + data["security"]
    per_check = collections.Counter(row["check"] for row in rows)
    assert {check: n for check, n in per_check.items() if n > 1} == {}, [(r["check"], r["title"]) for r in rows]
    places = {row["check"]: len(row["occurrences"]) for row in rows}
    assert {"CD120": 20, "CD170": 20, "CD522": 20, "CD540": 20}.items() <= places.items(), places


# --------------------------------------------------------------------------------------------- units

def finding(subject: str, at_risk=None, impact=Impact.HIGH, confidence=Confidence.OBSERVED, check="CD206",
            title="Queue has a backlog and no consumer", fix="start a worker", line=None) -> Finding:
    return Finding(check=check, title=title, category=Category.ROUTING, impact=impact, confidence=confidence,
                   subject=subject, evidence=(f"{subject} waits",), fix=fix, messages_at_risk=at_risk,
                   location=Location("proj/celery.py", line) if line else None)


def test_messages_at_risk_are_never_counted_twice():
    # distinct queues add up
    assert messages_at_risk([finding("queue:a", 10), finding("queue:b", 5)]) == 15
    # one queue seen twice (two settings point at it) is the same messages: the larger count
    assert messages_at_risk([finding("queue:a", 10, line=3), finding("queue:a", 7, line=9)]) == 10
    # a vhost total and one of its exchanges are two views of the same messages: the larger kind's total
    assert messages_at_risk([finding("server:vhost /", 100), finding("exchange:x", 60), finding("exchange:y", 30)]) == 100
    assert messages_at_risk([finding("queue:a"), finding("queue:b")]) is None
    assert messages_at_risk([finding("queue:a", 0), finding("queue:b")]) == 0


def test_group_merges_one_cause_and_keeps_different_causes_apart():
    rows = group([finding("queue:b", 5, impact=Impact.MEDIUM), finding("queue:a", 10),
                  finding("queue:c", title="Another conclusion"), finding("queue:d", check="CD207")])
    assert len(rows) == 3
    merged = next(r for r in rows if r.check == "CD206" and r.title.startswith("Queue"))
    assert merged.subjects == ("queue:a", "queue:b")  # the most severe place first
    assert merged.impact is Impact.HIGH and merged.messages_at_risk == 15
    assert [p.impact for p in merged.places] == [Impact.HIGH, Impact.MEDIUM]
    assert len({cause_key(r) for r in rows}) == len(rows)
    # regrouping a row (or a row with more places) gives the same row: places are never nested or doubled
    assert group(rows) == rows
    again = group([merged, finding("queue:a", 10)])
    assert len(again) == 1 and again[0].subjects == ("queue:a", "queue:b") and again[0].messages_at_risk == 15


def test_the_row_takes_no_grade_from_another_place():
    rows = rank([finding("queue:a", impact=Impact.HIGH, confidence=Confidence.INFERRED),
                 finding("queue:b", impact=Impact.MEDIUM, confidence=Confidence.OBSERVED)])
    assert len(rows) == 1
    row = rows[0].finding
    assert (row.impact, row.confidence, row.subject) == (Impact.HIGH, Confidence.INFERRED, "queue:a")
    assert rows[0].score == 30  # 60 x inferred 0.5: not 60 x observed 1


def test_a_declared_cause_groups_findings_whose_titles_differ():
    a = finding("worker:a", title="Worker a drifted")
    b = finding("worker:b", title="Worker b drifted")
    assert len(group([a, b])) == 2
    from dataclasses import replace

    rows = group([replace(a, cause="drift"), replace(b, cause="drift")])
    assert len(rows) == 1 and rows[0].subjects == ("worker:a", "worker:b")


def test_trace_puts_first_a_cause_whose_later_place_is_the_traced_queue():
    from celery_doctor.trace import _relevant_first

    rows = rank([finding("queue:a", 50), finding("queue:traced", 1), finding("setting:x", 900, check="CD999",
                                                                           title="Something else")])
    assert [r.finding.check for r in rows] == ["CD999", "CD206"]
    ordered = _relevant_first(rows, None, "traced")
    assert [r.finding.check for r in ordered] == ["CD206", "CD999"] and ordered[0].rank == 1
