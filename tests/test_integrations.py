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
    (["serve", "--port", "0"], ["serve", "--app", "proj", "--port", "0"]),
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


def test_action_passes_the_baseline_so_only_new_findings_fail(tmp_path):
    baseline = tmp_path / "baseline.json"
    written = run_cli("lint", "--app", "examples.shop", "--write-baseline", str(baseline), "--fail-on", "never")
    assert written.returncode == 0 and baseline.exists(), written.stderr
    result, values, _ = run_action(tmp_path, CD_APP="examples.shop", CD_FAIL_ON="low", CD_BASELINE=str(baseline))
    assert result.returncode == 0 and values["exit-code"] == "0", result.stdout + result.stderr
    assert json.loads(Path(values["sarif-file"]).read_text())["runs"][0]["results"] == []
    assert "baselined" in result.stdout


def test_action_stops_before_the_upload_when_lint_cannot_run(tmp_path):
    result, values, _ = run_action(tmp_path, CD_APP="no_such_module_xyz")
    assert result.returncode == 2 and values["exit-code"] == "2"
    assert "::error title=celery-doctor::" in result.stdout and "could not load app" in result.stderr


def test_action_yml_runs_the_script_with_its_inputs_as_environment():
    text = (ROOT / "action.yml").read_text()
    assert 'run: bash "$GITHUB_ACTION_PATH/scripts/github_action.sh"' in text
    assert "github/codeql-action/upload-sarif@" in text and "steps.lint.outputs.exit-code == '1'" in text
    script = (ROOT / "scripts" / "github_action.sh").read_text()
    for name in ("CD_APP", "CD_FAIL_ON", "CD_ARGS", "CD_BASELINE"):
        assert f"{name}: ${{{{ inputs." in text and name in script
    # no input is pasted into a shell script (a workflow's values stay data)
    assert not [line for line in text.splitlines() if "run:" in line and "${{" in line]
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed here")
    action = yaml.safe_load(text)
    assert action["runs"]["using"] == "composite"
    assert {s.get("id") for s in action["runs"]["steps"]} >= {"lint"}


# --------------------------------------------------------------------------- Prometheus / OpenMetrics


def parse_metrics(text: str) -> dict:
    """{(sample name, frozenset(labels)): value}, parsed by prometheus_client's own OpenMetrics parser (which also
    rejects a malformed exposition)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_openmetrics_of_a_rabbitmq_snapshot_has_queues_workers_and_parts():
    from celery import Celery

    from celery_doctor.model import Part
    from celery_doctor.parts import rabbitmq, workers
    from celery_doctor.reporters.openmetrics import format_openmetrics
    from tests.conftest import make_snapshot

    app = Celery("om", broker="amqp://guest:guest@127.0.0.1:5672//", set_as_current=False)
    queues = {"celery": rabbitmq.example_queue(ready=4, messages_unacknowledged=2, consumers=0),
              "bulk": rabbitmq.example_queue("bulk", ready=0)}
    state = workers.example(transport="rabbitmq",
                            workers=(workers.example_worker(), workers.example_worker("celery@w2", answered=())))
    snapshot = make_snapshot(app, mode="scan", rabbitmq=Part.gathered(rabbitmq.example(queues=queues)),
                             workers=Part.gathered(state), redis=Part.not_applicable("the broker is rabbitmq"))
    report = run_lint_report()
    metrics = parse_metrics(format_openmetrics(report, snapshot))
    assert metrics[("celery_doctor_queue_depth", frozenset({("queue", "celery")}))] == 4
    assert metrics[("celery_doctor_queue_unacked", frozenset({("queue", "celery")}))] == 2
    assert metrics[("celery_doctor_queue_consumers", frozenset({("queue", "celery")}))] == 0
    assert metrics[("celery_doctor_queue_consumers", frozenset({("queue", "bulk")}))] == 2
    assert metrics[("celery_doctor_unacked", frozenset())] == 2
    assert metrics[("celery_doctor_workers", frozenset({("state", "answered")}))] == 1
    assert metrics[("celery_doctor_workers", frozenset({("state", "silent")}))] == 1
    assert metrics[("celery_doctor_workers", frozenset({("state", "dead")}))] == 0
    assert metrics[("celery_doctor_part", frozenset({("part", "redis"), ("status", "not_applicable")}))] == 1


def test_openmetrics_tells_redis_workers_silent_dead_or_unknown_as_cd410_does():
    from celery_doctor.parts import workers
    from celery_doctor.parts.workers import CONNECTED, GONE, UNTOLD
    from celery_doctor.reporters.openmetrics import worker_state

    silent = {"connected": workers.example_worker("a", answered=(), mailbox=CONNECTED),
              "gone": workers.example_worker("b", answered=(), mailbox=GONE),
              "untold": workers.example_worker("c", answered=(), mailbox=UNTOLD),
              "unread": workers.example_worker("d", answered=())}
    redis = workers.example(workers=(workers.example_worker(), *silent.values()))
    assert [worker_state(redis, w) for w in redis.workers] == ["answered", "silent", "dead", "unknown", "unknown"]
    rabbit = workers.example(transport="rabbitmq", workers=tuple(silent.values()))
    assert {worker_state(rabbit, w) for w in rabbit.workers} == {"silent"}


def run_lint_report():
    from celery_doctor.diagnose import diagnose
    from celery_doctor.options import resolve, run_options

    # Read statically (no --app): importing examples.shop here would register its tasks, which app.task shares with
    # every Celery app created later in this process (Celery's shared tasks), and change other tests' apps.
    options = run_options(resolve("lint", {"sources": [str(ROOT / "examples" / "shop")]}), "lint")
    options.cwd = str(ROOT)
    report = diagnose(options)[0]
    assert "examples.shop.tasks" not in sys.modules
    return report


def test_openmetrics_format_of_lint_counts_findings_by_check_impact_category_subject(tmp_path):
    result = run_cli("lint", "--app", "examples.shop", "--format", "openmetrics", "-o", str(tmp_path / "r.json"),
                     "-o", str(tmp_path / "r.prom"), "--fail-on", "never")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    metrics = parse_metrics((tmp_path / "r.prom").read_text())
    findings = {k: v for k, v in metrics.items() if k[0] == "celery_doctor_findings"}
    assert sum(findings.values()) == len(report["findings"]) + len(report.get("security", []))
    first = report["findings"][0]
    labels = dict(next(iter(k[1] for k in findings if dict(k[1])["check"] == first["check"])))
    assert labels["impact"] == first["impact"] and labels["category"] == first["category"]
    assert metrics[("celery_doctor_not_checked", frozenset({("part", "redis")}))] == 1  # lint reads no broker
    assert metrics[("celery_doctor_scan_duration_seconds", frozenset())] >= 0
    info = [dict(k[1]) for k in metrics if k[0] == "celery_doctor_run_info"]
    assert info == [{"version": report["tool"]["version"], "app": "examples.shop",
                     "broker": "redis://127.0.0.1:6379/15", "transport": "redis", "mode": "lint"}]


def test_trace_and_checks_have_no_openmetrics():
    traced = run_cli("trace", "abc", "--broker", REDIS_DB2, "--format", "openmetrics")
    assert traced.returncode == 2 and "no SARIF or openmetrics" in traced.stderr
    listed = run_cli("checks", "--format", "openmetrics")
    assert listed.returncode == 2 and "text or json" in listed.stderr


@pytest.fixture
def redis_db2():
    import redis

    client = redis.Redis.from_url(REDIS_DB2)
    client.flushdb()
    yield client
    client.flushdb()


def publish(queue: str, count: int) -> None:
    from celery import Celery

    app = Celery("om-publisher", broker=REDIS_DB2, set_as_current=False)
    for i in range(count):
        app.send_task("om.unknown_task", args=(i,), queue=queue)


class Served:
    """`celery-doctor serve` as a subprocess on a free port."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, COLUMNS="200")
        env.pop("CELERY_BROKER_URL", None)
        self.process = subprocess.Popen([str(Path(sys.executable).with_name("celery-doctor")), "serve", "--port", "0",
                                         *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        first = self.process.stderr.readline()
        import re

        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", first)
        assert match, first + self.process.stderr.read()
        self.url = f"http://127.0.0.1:{match.group(1)}/metrics"

    def get(self, accept: str = "application/openmetrics-text") -> tuple[str, str]:
        import urllib.request

        request = urllib.request.Request(self.url, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Content-Type"], response.read().decode()

    def scraped_after_scans(self, scans: int, deadline_s: float = 30) -> str:
        import time

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            _, text = self.get()
            if parse_metrics(text).get(("celery_doctor_scans_total", frozenset()), 0) >= scans:
                return text
            time.sleep(0.2)
        raise AssertionError(f"fewer than {scans} scans in {deadline_s} s")

    def stop(self, signum) -> tuple[int, str, float]:
        import time

        started = time.monotonic()
        self.process.send_signal(signum)
        rest = self.process.communicate(timeout=20)[1]
        return self.process.returncode, rest, time.monotonic() - started


def test_serve_exposes_a_real_redis_and_stops_on_sigterm(redis_db2):
    import signal

    queue = "cd_om_q\x1bcolor"
    publish(queue, 7)
    served = Served("--broker", "redis://:hunter2-s3cret@127.0.0.1:6379/2", "--interval", "0.5", "--timeout", "8")
    try:
        text = served.scraped_after_scans(1)
        metrics = parse_metrics(text)
        assert metrics[("celery_doctor_queue_depth", frozenset({("queue", "cd_om_q\\x1bcolor")}))] == 7
        assert metrics[("celery_doctor_scan_success", frozenset())] == 1
        assert metrics[("celery_doctor_unacked", frozenset())] == 0
        assert sum(v for k, v in metrics.items() if k[0] == "celery_doctor_workers") == 0  # no worker runs on db 2
        assert metrics[("celery_doctor_findings", frozenset({
            ("check", "CD206"), ("slug", "redis-backlog-no-consumer"), ("impact", "high"), ("category", "routing"),
            ("subject", "queue:cd_om_q\\x1bcolor")}))] == 1
        assert metrics[("celery_doctor_scan_duration_seconds", frozenset())] > 0
        # secrets and control characters: never in the exposition
        assert "hunter2" not in text and "s3cret" not in text and "\x1b" not in text
        assert 'broker="redis://:***@127.0.0.1:6379/2"' in text
        # a new reading each interval: the depth follows the broker
        publish(queue, 3)
        text = served.scraped_after_scans(3)
        assert parse_metrics(text)[("celery_doctor_queue_depth", frozenset({("queue", "cd_om_q\\x1bcolor")}))] == 10
        content_type, plain = served.get(accept="text/plain")
        assert content_type.startswith("text/plain") and "# EOF" not in plain and "celery_doctor_queue_depth" in plain
    finally:
        code, stderr, took = served.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert took < 10 and "stopped after" in stderr and "Traceback" not in stderr
    assert "hunter2" not in stderr
    # read-only: the queue holds what was published, nothing else was written
    assert redis_db2.llen(queue) == 10
    assert {k.decode() for k in redis_db2.scan_iter()} == {queue, f"_kombu.binding.{queue}",
                                                           f"_kombu.binding_permanent.{queue}"}


def test_serve_reports_a_failed_scan_and_keeps_serving_then_stops_on_ctrl_c():
    import signal

    served = Served("--app", "no_such_module_for_serve", "--interval", "0.3", "--timeout", "5")
    try:
        metrics = parse_metrics(served.scraped_after_scans(2))
        assert metrics[("celery_doctor_scan_success", frozenset())] == 0
        assert metrics[("celery_doctor_scan_failures_total", frozenset())] >= 2
        assert not [k for k in metrics if k[0] == "celery_doctor_findings"]  # no stale or empty findings
    finally:
        code, stderr, _ = served.stop(signal.SIGINT)
    assert code == 130 and "could not load app" in stderr and "Traceback" not in stderr


def test_serve_refuses_a_bad_port():
    result = run_cli("serve", "--broker", REDIS_DB2, "--port", "70000")
    assert result.returncode == 2 and "--port must be" in result.stderr


def test_the_example_alerts_use_metrics_and_checks_that_exist():
    import re

    from celery_doctor.registry import load_registry

    sources = (ROOT / "celery_doctor" / "reporters" / "openmetrics.py").read_text() + (
        ROOT / "celery_doctor" / "serve.py").read_text()
    served = {f"celery_doctor_{n}" for n in re.findall(r'_gauge\("(\w+)"', sources)}
    served |= {f"celery_doctor_{n}" for n in re.findall(r'f"\{PREFIX\}_(\w+)"', sources)}
    served |= {f"{n}_total" for n in served} | {f"{n}_info" for n in served}
    alerts = (ROOT / "docs" / "alerts.yml").read_text()
    used = set(re.findall(r"\bcelery_doctor_\w+", alerts))
    assert used and not used - served, sorted(used - served)
    registry = load_registry()
    for check_id, slug in re.findall(r"(CD\d{3}) ([a-z-]+):", alerts):
        assert registry.get(check_id).slug == slug
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed here")
    assert len(yaml.safe_load(alerts)["groups"][0]["rules"]) >= 5


def test_serve_counts_a_real_worker_answering_then_dead_after_sigkill(redis_db2, tmp_path):
    import signal

    from tests.workerproc import start_worker

    worker = start_worker("examples.shop", cwd=ROOT, log_dir=tmp_path, broker=REDIS_DB2, queues=["cd_om_workers"])
    served = None
    try:
        served = Served("--broker", REDIS_DB2, "--interval", "0.3", "--timeout", "4")

        def workers(text: str) -> dict:
            return {dict(k[1])["state"]: v for k, v in parse_metrics(text).items() if k[0] == "celery_doctor_workers"}

        assert workers(served.scraped_after_scans(1)) == {"answered": 1, "silent": 0, "dead": 0, "unknown": 0}
        worker.kill()  # SIGKILL: its mailbox binding stays on Redis, its connections close
        scans = parse_metrics(served.get()[1])[("celery_doctor_scans_total", frozenset())]
        seen = workers(served.scraped_after_scans(scans + 2, deadline_s=40))
        assert seen == {"answered": 0, "silent": 0, "dead": 1, "unknown": 0}, seen
    finally:
        worker.stop(term_timeout=1.0)
        if served is not None:
            code, stderr, _ = served.stop(signal.SIGTERM)
            assert code == 0, stderr


def test_openmetrics_labels_are_masked_escaped_and_bounded():
    import dataclasses

    from celery_doctor.masking import SECRETS
    from celery_doctor.reporters.openmetrics import MAX_LABEL, format_openmetrics

    report = run_lint_report()
    SECRETS.add("Tr0ub4dor&3-hostile")
    hostile = 'queue:"q" Tr0ub4dor&3-hostile\n# EOF\u202e\x1b[31m\\' + "x" * 500
    first = report.findings[0]
    report = dataclasses.replace(report, security=(), findings=(
        dataclasses.replace(first, finding=dataclasses.replace(first.finding, subject=hostile, occurrences=())),))
    text = format_openmetrics(report)
    metrics = parse_metrics(text)  # still a valid exposition: the quote, newline and backslash are escaped
    [subject] = [dict(k[1])["subject"] for k in metrics if k[0] == "celery_doctor_findings"]
    assert len(subject) <= MAX_LABEL and subject.startswith('queue:"q"')
    assert "\n" not in subject and "\u202e" not in subject and "\x1b" not in subject
    assert "\\u202e" in subject and "\\x1b" in subject and 'queue:"q" ***' in subject
    assert "Tr0ub4dor" not in text
    assert [line for line in text.splitlines() if line.startswith("# EOF")] == ["# EOF"]  # the label's stays inside


def test_openmetrics_of_a_real_rabbitmq_queue_with_a_consumer_holding_a_message():
    import base64
    import time
    import urllib.request
    import uuid
    from urllib.parse import quote

    import pika

    auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def api(method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request("http://127.0.0.1:15672/api" + path, data=data, method=method,
                                         headers={"Authorization": auth, "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read()
            return json.loads(text) if text else None

    vhost = f"cd-om-{uuid.uuid4().hex[:8]}"
    api("PUT", f"/vhosts/{quote(vhost, safe='')}", {})
    api("PUT", f"/permissions/{quote(vhost, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, vhost, pika.PlainCredentials("guest", "guest"), socket_timeout=5))
    try:
        channel = connection.channel()
        channel.queue_declare("om-queue", durable=True)
        for i in range(3):
            channel.basic_publish("", "om-queue", json.dumps([i]).encode())
        channel.basic_qos(prefetch_count=1)
        channel.basic_consume("om-queue", lambda *args: None)  # holds one message, never acks
        deadline = time.monotonic() + 30
        while True:  # the management API's statistics lag by a few seconds, its listing longer than one queue's GET
            connection.process_data_events(time_limit=0.5)
            [stats] = api("GET", f"/queues/{quote(vhost, safe='')}?page=1&page_size=500&sort=messages&sort_reverse=true"
                                 "&columns=name,messages_ready,messages_unacknowledged,consumers")["items"]
            if (stats.get("messages_ready") == 2 and stats.get("messages_unacknowledged") == 1
                    and stats.get("consumers") == 1):
                break
            assert time.monotonic() < deadline, stats
        result = run_cli("scan", "--broker", f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "--format",
                         "openmetrics", "--fail-on", "never", "--timeout", "10")
        assert result.returncode == 0, result.stderr
        metrics = parse_metrics(result.stdout)
        queue = frozenset({("queue", "om-queue")})
        assert metrics[("celery_doctor_queue_depth", queue)] == 2
        assert metrics[("celery_doctor_queue_unacked", queue)] == 1
        assert metrics[("celery_doctor_queue_consumers", queue)] == 1
        assert metrics[("celery_doctor_part", frozenset({("part", "rabbitmq"), ("status", "gathered")}))] == 1
        assert "guest:guest" not in result.stdout
    finally:
        connection.close()
        api("DELETE", f"/vhosts/{quote(vhost, safe='')}")


def test_openmetrics_of_a_real_redis_worker_busy_in_an_acks_late_task(redis_db2, tmp_path):
    import time
    import uuid

    from tests.workerproc import start_worker

    module = f"cd_om_slow_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import time\n"
        "from celery import Celery\n"
        f"app = Celery('{module}', broker='{REDIS_DB2}')\n"
        "app.conf.task_acks_late = True\n"
        "@app.task(name='om.slow')\n"
        "def slow():\n"
        "    time.sleep(60)\n")
    worker = start_worker(module, cwd=tmp_path, broker=REDIS_DB2, queues=["cd_om_slow"])
    try:
        from celery import Celery

        sender = Celery("om-sender", broker=REDIS_DB2, set_as_current=False)
        for _ in range(3):
            sender.send_task("om.slow", queue="cd_om_slow")
        deadline = time.monotonic() + 20
        # the solo pool runs the task in its only loop: one delivered (running, acks_late), two left queued
        while not (redis_db2.hlen("unacked") == 1 and redis_db2.llen("cd_om_slow") == 2):
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        time.sleep(1.1)  # an age of at least a second
        result = run_cli("scan", "--broker", REDIS_DB2, "--format", "openmetrics", "--fail-on", "never",
                         "--timeout", "10")
        assert result.returncode == 0, result.stderr
        metrics = parse_metrics(result.stdout)
        queue = frozenset({("queue", "cd_om_slow")})
        assert metrics[("celery_doctor_queue_unacked", queue)] == 1
        assert metrics[("celery_doctor_queue_depth", queue)] == 2
        assert metrics[("celery_doctor_unacked", frozenset())] == 1
        assert 1 <= metrics[("celery_doctor_unacked_oldest_age_seconds", frozenset())] < 60
        # busy in its task, the solo worker cannot answer: connected and silent, as CD410 says
        assert metrics[("celery_doctor_workers", frozenset({("state", "silent")}))] == 1
    finally:
        worker.kill()
