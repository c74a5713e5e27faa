"""The command line end to end, as a user runs it: formats, exit codes, options, errors, plugins."""
from __future__ import annotations

import json
import re
import sys

import pytest

from tests.conftest import ROOT, run_cli, write_tree

EXAMPLE = ["--app", "examples.shop"]


def normalized_json(text: str) -> dict:
    data = json.loads(text)
    data.pop("started_at")
    data.pop("duration_s")
    return data


def test_lint_example_ranks_causes_and_fails_on_high():
    result = run_cli("lint", *EXAMPLE, "--format", "json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 2
    assert data["tool"]["name"] == "celery-doctor"
    assert data["target"] == {"app": "examples.shop", "broker": "redis://127.0.0.1:6379/15", "transport": "redis"}
    ranks = [f["rank"] for f in data["findings"]]
    assert ranks == list(range(1, len(ranks) + 1))
    scores = [f["score"] for f in data["findings"]]
    assert scores == sorted(scores, reverse=True)
    found = {f["check"] for f in data["findings"]}
    assert {"CD102", "CD110", "CD120", "CD121", "CD141", "CD146"} <= found
    first = data["findings"][0]
    for key in ("rank", "check", "slug", "title", "category", "impact", "confidence", "subject", "evidence",
                "messages_at_risk", "fix", "docs", "location", "why_ranked"):
        assert key in first
    statuses = {c["id"]: c["status"] for c in data["checks"]}
    assert statuses["CD102"] == "failed" and statuses["CD101"] == "passed"
    assert {p["part"] for p in data["not_checked"]} == {"redis", "rabbitmq", "workers"}
    assert data["summary"]["total"] == len(data["findings"])


def test_json_is_byte_identical_across_runs_apart_from_times():
    first = run_cli("lint", *EXAMPLE, "--format", "json")
    second = run_cli("lint", *EXAMPLE, "--format", "json")
    assert normalized_json(first.stdout) == normalized_json(second.stdout)
    strip = lambda t: re.sub(r'"(started_at|duration_s)": [^,\n]+', "", t)  # noqa: E731
    assert strip(first.stdout) == strip(second.stdout)


def test_text_report_has_verdict_details_status_lines_and_footer():
    result = run_cli("lint", *EXAMPLE, "--fail-on", "never", "-v")  # -v: a status line per check too
    assert result.returncode == 0
    out = result.stdout
    assert "Verdict: " in out and "Ranked causes" in out
    assert re.search(r"^1\. ", out, re.M) and "fix:" in out and "runbook: celery-doctor explain" in out
    assert re.search(r"CD101 acks-early-crash-loss \.+ passed", out)
    assert re.search(r"CD102 acks-late-acked-on-worker-lost \.+ failed \(1\)", out)
    assert re.search(r"\d+ findings \(\d+ high, \d+ medium, \d+ low\) · \d+ checks: \d+ passed", out)
    assert "Traceback" not in out + result.stderr


def test_sarif_has_rules_and_rule_ids_with_locations():
    result = run_cli("lint", *EXAMPLE, "--format", "sarif")
    sarif = json.loads(result.stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert "CD102" in rule_ids and rule_ids == sorted(rule_ids)
    assert run["results"]
    for res in run["results"]:
        assert res["ruleId"] in rule_ids
        assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] and loc["region"]["startLine"] >= 1
        assert res["level"] in ("error", "warning", "note")


def test_markdown_report_for_incident_tickets():
    result = run_cli("lint", *EXAMPLE, "--format", "markdown")
    assert result.stdout.startswith("# celery-doctor lint report")
    assert "## Likely causes (ranked)" in result.stdout and "| 1 |" in result.stdout
    assert "## Not checked" in result.stdout


def test_select_ignore_and_fail_on(tmp_path):
    only = json.loads(run_cli("lint", *EXAMPLE, "--format", "json", "--select", "CD12").stdout)
    assert {f["check"] for f in only["findings"]} == {"CD120", "CD121"}
    ignored = [c for c in only["checks"] if c["status"] == "ignored"]
    assert ignored and all(not c["id"].startswith("CD12") for c in ignored)
    result = run_cli("lint", *EXAMPLE, "--select", "CD121", "--fail-on", "high")
    assert result.returncode == 0  # CD121 is medium
    assert run_cli("lint", *EXAMPLE, "--select", "CD121", "--fail-on", "medium").returncode == 1
    narrowed = json.loads(run_cli("lint", *EXAMPLE, "--format", "json", "--select", "CD1", "--ignore", "CD12",
                                  "--select", "CD121").stdout)
    assert {f["check"] for f in narrowed["findings"]} >= {"CD121", "CD102"} and "CD120" not in {
        f["check"] for f in narrowed["findings"]}


def test_several_outputs_in_one_run(tmp_path):
    result = run_cli("lint", *EXAMPLE, "-o", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.sarif"),
                     "-o", str(tmp_path / "r.md"), "--fail-on", "never")
    assert result.returncode == 0 and result.stdout == ""
    assert json.loads((tmp_path / "r.json").read_text())["schema_version"] == 2
    assert json.loads((tmp_path / "r.sarif").read_text())["version"] == "2.1.0"
    assert (tmp_path / "r.md").read_text().startswith("# celery-doctor")


def test_pyproject_options_and_unknown_keys(tmp_path):
    project = write_tree(tmp_path, {
        "pyproject.toml": '[tool.celery-doctor]\napp = "examples.shop"\nselect = ["CD121"]\nformat = "json"\n',
    })
    result = run_cli("lint", "--config", str(project / "pyproject.toml"))
    data = json.loads(result.stdout)
    assert {f["check"] for f in data["findings"]} == {"CD121"}
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\napp = "examples.shop"\nfail_level = "x"\n')
    bad = run_cli("lint", "--config", str(tmp_path / "pyproject.toml"))
    assert bad.returncode == 2
    assert "unknown key 'fail_level'" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\ntimeout = "soon"\n')
    wrong_type = run_cli("lint", "--config", str(tmp_path / "pyproject.toml"))
    assert wrong_type.returncode == 2 and "timeout must be a number" in wrong_type.stderr


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz", "could not load app 'no_such_module_xyz': ModuleNotFoundError"),
    ("brokenapp", "could not load app 'brokenapp': RuntimeError: database is down"),
    ("notanapp:thing", "is a int, not a Celery app"),
])
def test_app_that_does_not_load_is_one_line_and_exit_2(tmp_path, spec, message):
    write_tree(tmp_path, {"brokenapp.py": "raise RuntimeError('database is down')\n",
                          "notanapp.py": "thing = 3\n"})
    result = run_cli("lint", "--app", spec, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_user_project_with_its_own_checks_package(tmp_path):
    write_tree(tmp_path, {
        "checks/__init__.py": "MARKER = 'the user project checks package'\n",
        "proj/__init__.py": "",
        "proj/celery.py": """
            from celery import Celery
            import checks
            assert checks.MARKER == 'the user project checks package'
            app = Celery('proj', broker='redis://127.0.0.1:6379/0')
            app.conf.task_always_eager = True

            @app.task
            def ping():
                return checks.MARKER
        """,
    })
    result = run_cli("lint", "--app", "proj", "--format", "json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert "CD123" in {f["check"] for f in data["findings"]}
    assert all(c["status"] != "error" for c in data["checks"])


def test_lint_opens_no_network_connection(tmp_path):
    guard = write_tree(tmp_path / "guard", {"sitecustomize.py": """
        import socket
        def refuse(*args, **kwargs):
            raise OSError("GUARD-TRIPPED: a network connection was attempted")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
    """})
    env = {"PYTHONPATH": f"{guard}:{ROOT}"}
    result = run_cli("lint", *EXAMPLE, "--format", "json", env=env)
    assert result.returncode == 1, result.stderr
    assert "GUARD-TRIPPED" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert not [c for c in data["checks"] if c["status"] == "error"]
    # the guard is real: a connection attempt under it trips it
    import subprocess
    probe = subprocess.run([sys.executable, "-c", "import redis; redis.Redis(socket_connect_timeout=1).ping()"],
                           env={**__import__("os").environ, **env}, capture_output=True, text=True)
    assert "GUARD-TRIPPED" in probe.stderr


def test_broker_only_without_app(tmp_path):
    # in a directory without a Celery app: the broker's defaults (with an app there, lint reads it statically)
    result = run_cli("lint", "--broker", "amqp://guest:s3cr3tpw@127.0.0.1:5672//", "--format", "json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["target"]["broker"] == "amqp://guest:***@127.0.0.1:5672//"
    assert "CD130" in {f["check"] for f in data["findings"]}
    assert "s3cr3tpw" not in result.stdout + result.stderr
    env_result = run_cli("lint", "--format", "json", env={"CELERY_BROKER_URL": "redis://:pw123456@127.0.0.1:6379/3"},
                         cwd=tmp_path)
    assert json.loads(env_result.stdout)["target"]["broker"] == "redis://:***@127.0.0.1:6379/3"


def test_usage_errors_exit_2(tmp_path):
    nothing = run_cli("lint", cwd=tmp_path)  # no --app, and no Celery app in the source (the current directory)
    assert nothing.returncode == 2 and "no Celery app found" in nothing.stderr and "give --app" in nothing.stderr
    assert run_cli("scan", "--broker", "bogus://x", "--timeout", "2").returncode == 2
    assert run_cli("lint", *EXAMPLE, "--format", "yaml").returncode == 2
    assert run_cli("explain", "CD999").returncode == 2
    assert run_cli("scan", *EXAMPLE, "--timeout", "0").returncode == 2


def test_checks_and_explain():
    listing = json.loads(run_cli("checks", "--format", "json").stdout)
    ids = [c["id"] for c in listing]
    assert "CD101" in ids and ids == sorted(ids)
    assert all(set(c) >= {"id", "slug", "title", "category", "impact", "needs"} for c in listing)
    page = run_cli("explain", "CD102").stdout
    assert page == (ROOT / "docs" / "checks" / "CD102.md").read_text()
    assert run_cli("explain", "acks-late-acked-on-worker-lost").stdout == page


PLUGIN = {
    "good_plugin.py": """
        from celery_doctor.model import Category, Runbook, check
        RB = Runbook(symptom="s", why="w", confirm="c", fix="f", risk="r")

        @check(id="ACME001", slug="acme-always", title="Acme finds something", category=Category.TASK_CODE,
               needs=("config",), runbook=RB)
        def always(snapshot):
            yield always.finding(subject="setting:acme", evidence="acme saw it")

        @check(id="ACME002", slug="acme-crash", title="Acme crashes", category=Category.BROKER,
               needs=("config",), runbook=RB)
        def crash(snapshot):
            raise ValueError("acme bug")

        @check(id="CD999", slug="acme-squat", title="Takes a built-in id", category=Category.BROKER,
               needs=(), runbook=RB)
        def squat(snapshot):
            return []

        CHECKS = [always, crash, squat]
    """,
    "acme_plugin-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n",
    "acme_plugin-1.0.dist-info/entry_points.txt": """
        [celery_doctor.checks]
        acme = good_plugin:CHECKS
        broken = missing_module_abc:CHECKS
    """,
}


def test_plugins_load_through_entry_points_and_failures_are_report_entries(tmp_path):
    plugin_dir = write_tree(tmp_path, PLUGIN)
    env = {"PYTHONPATH": f"{plugin_dir}:{ROOT}", "CELERY_DOCTOR_RAISE_CHECK_ERRORS": "0"}
    result = run_cli("lint", *EXAMPLE, "--format", "json", env=env)
    data = json.loads(result.stdout)
    checks = {c["id"]: c for c in data["checks"]}
    assert checks["ACME001"]["status"] == "failed"
    assert "ACME001" in {f["check"] for f in data["findings"]}
    assert checks["ACME002"]["status"] == "error" and "ValueError: acme bug" in checks["ACME002"]["reason"]
    assert checks["acme-plugin[broken]"]["status"] == "error"
    assert "missing_module_abc" in checks["acme-plugin[broken]"]["reason"]
    assert "CD999" not in checks
    assert any("reserved for built-in" in c["reason"] for c in data["checks"] if c["status"] == "error")
    assert checks["CD102"]["status"] == "failed"  # the built-ins still ran
    listing = run_cli("checks", env=env).stdout
    assert "ACME001" in listing and "acme-plugin[broken]  failed to load" in listing


def test_crashing_check_raises_in_test_mode(tmp_path):
    plugin_dir = write_tree(tmp_path, PLUGIN)
    crash_dir = tmp_path / "tmp"
    crash_dir.mkdir()
    env = {"PYTHONPATH": f"{plugin_dir}:{ROOT}", "CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1", "TMPDIR": str(crash_dir)}
    result = run_cli("lint", *EXAMPLE, "--select", "ACME002", env=env)
    assert result.returncode == 3 and "acme bug" in result.stderr and "Traceback" not in result.stderr
    assert len(list(crash_dir.glob("celery-doctor-crash-*.log"))) == 1  # the crash log, in the test's own tmp


def test_inline_ignore_is_counted(tmp_path):
    write_tree(tmp_path, {"proj/__init__.py": "", "proj/celery.py": """
        from datetime import datetime
        from celery import Celery
        app = Celery('proj', broker='redis://127.0.0.1:6379/0')

        @app.task
        def t():
            return 1

        def go():
            t.apply_async(expires=datetime.utcnow())  # celery-doctor: ignore[CD146]
            t.apply_async(eta=datetime.utcnow())
    """})
    data = json.loads(run_cli("lint", "--app", "proj", "--format", "json", "--select", "CD146", cwd=tmp_path).stdout)
    assert [f["location"]["line"] for f in data["findings"]] == [11]
    assert data["summary"]["suppressed"] == 1


def test_django_project_with_celery_namespace(tmp_path):
    pytest.importorskip("django")
    write_tree(tmp_path, {
        "proj/__init__.py": "from .celery import app as celery_app\n",
        "proj/settings.py": """
            SECRET_KEY = "not-a-secret"
            INSTALLED_APPS = ["shopapp"]
            CELERY_BROKER_URL = "redis://:djangopw42@127.0.0.1:6379/5"
            CELERY_TASK_ACKS_LATE = True
        """,
        "proj/celery.py": """
            import os
            from celery import Celery
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
            app = Celery("proj")
            app.config_from_object("django.conf:settings", namespace="CELERY")
            app.autodiscover_tasks()
        """,
        "shopapp/__init__.py": "",
        "shopapp/tasks.py": """
            from celery import shared_task

            @shared_task
            def place_order(order_id):
                return order_id
        """,
    })
    result = run_cli("lint", "--app", "proj", "--format", "json", "--select", "CD102",
                     cwd=tmp_path, env={"DJANGO_SETTINGS_MODULE": "proj.settings"})
    data = json.loads(result.stdout)
    assert data["target"]["broker"] == "redis://:***@127.0.0.1:6379/5"
    finding = data["findings"][0]
    assert finding["check"] == "CD102"
    assert "shopapp.tasks.place_order" in finding["evidence"][0]  # found by autodiscover_tasks
    assert "djangopw42" not in result.stdout + result.stderr


def test_broker_option_wins_over_the_environment_variable():
    """Celery's conf.broker_url reads $CELERY_BROKER_URL first: --broker must still be the broker read."""
    env = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    for target in (("--broker", "redis://127.0.0.1:6379/13"), ("--app", "examples.shop", "--broker",
                                                                 "redis://127.0.0.1:6379/13")):
        result = run_cli("scan", *target, "--format", "json", "--timeout", "10", "--fail-on", "never", env=env)
        report = json.loads(result.stdout)
        assert report["target"]["broker"] == "redis://127.0.0.1:6379/13", report["target"]
        assert not [f for f in report["findings"] if f["check"] == "CD001"], "the environment's broker was read"
