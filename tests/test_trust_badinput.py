"""Bad input never gives a traceback: a clear one-line error and exit 2, or a report that names the problem.

Every input below is tried as a user would give it (the real CLI in a subprocess, or, for the configuration
matrix, the same collector and checks the CLI runs, with crashing checks raising). The module-level counter
`TRIED` adds them up; `test_count_of_bad_inputs` prints the total (-s) and fails if the list shrinks.

Redis db 14 is used as the target of reachable-broker cases (nothing is written to it).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import json_places
from tests.test_trust_support import (
    AclUser,
    Blackholes,
    RabbitUser,
    canary,
    cli,
    rabbit_available,
    redis_available,
    refused_port,
    uid,
    write_module,
)

DB = 14
REDIS = f"redis://127.0.0.1:6379/{DB}"
TRIED: dict[str, int] = {}


def _count(group: str, n: int) -> None:
    TRIED[group] = TRIED.get(group, 0) + n


def _parallel(jobs, workers: int = 4):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


def assert_one_line_usage_error(run, *needles):
    assert run.code == 2, str(run)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("celery-doctor: error: "), str(run)
    for needle in needles:
        assert needle in lines[0], (needle, str(run))
    assert not run.crash_logs and not run.stdout.strip(), str(run)


def assert_no_crash(run):
    assert run.code in (0, 1, 2), str(run)
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, str(run)
    assert not run.crash_logs, str(run)


# ------------------------------------------------------------------------------------ usage errors

USAGE = [
    # (args, words the one-line error must contain)
    (("scan", "--broker", "redis//x"), ("no scheme",)),
    (("scan", "--broker", "foo://h"), ("unknown broker scheme 'foo'",)),
    (("scan", "--broker", "http://x"), ("unknown broker scheme 'http'",)),
    (("scan", "--broker", "redis://h:abc/0"), ("malformed broker URL", "abc")),
    (("scan", "--broker", "redis://127.0.0.1:99999/0"), ("malformed broker URL", "out of range")),
    (("scan", "--broker", "redis://[::1/0"), ("malformed broker URL", "IPv6")),
    (("scan", "--broker", "amqp://u:p@[::1:5672//"), ("malformed broker URL",)),
    (("scan", "--broker", ""), ("nothing to diagnose",)),
    (("scan",), ("nothing to diagnose",)),
    (("trace", "x"), ("nothing to diagnose",)),
    (("scan", "--broker", REDIS, "--management-url", "ftp://x"), ("--management-url", "not an http(s) URL")),
    (("scan", "--broker", REDIS, "--management-url", "http://[::1"), ("malformed --management-url",)),
    (("scan", "--broker", REDIS, "--management-url", "http://127.0.0.1:abc"), ("malformed --management-url",)),
    (("trace", "x", "--broker", REDIS, "--management-url", "http://"), ("--management-url",)),
    (("scan", "--broker", REDIS, "--timeout", "0"), ("--timeout",)),
    (("scan", "--broker", REDIS, "--timeout", "-3"), ("--timeout",)),
    (("scan", "--broker", REDIS, "--timeout", "abc"), ("--timeout",)),
    (("scan", "--broker", REDIS, "--timeout", "nan"), ("--timeout",)),
    (("trace", "x", "--broker", REDIS, "--timeout", "inf"), ("--timeout",)),
    (("scan", "--broker", REDIS, "--max-messages", "-1"), ("--max-messages",)),
    (("scan", "--broker", REDIS, "--format", "xml"), ("--format",)),
    (("scan", "--broker", REDIS, "--fail-on", "sometimes"), ("--fail-on",)),
    (("scan", "--bogus-option"), ("No such option",)),
    (("nosuchcommand",), ("No such command",)),
    (("scan", "--broker", REDIS, "--output", "/nonexistent-dir/x/report.json"), ("cannot write",)),
    (("lint", "--source", "/nonexistent/source/dir", "--broker", REDIS), ("--source path does not exist",)),
    (("lint", "--broker", REDIS, "--config", "/nonexistent/pyproject.toml"), ("cannot read",)),
    (("trace", "a b", "--broker", REDIS), ("TASK_ID",)),
    (("trace", " ", "--broker", REDIS), ("TASK_ID",)),
    (("trace", "x" * 300, "--broker", REDIS), ("TASK_ID",)),
    (("trace", "bad\x01id", "--broker", REDIS), ("TASK_ID",)),
    (("trace",), ("Missing argument",)),
    (("explain", "CD999"), ("no check 'CD999'",)),
    (("explain", ""), ("no check",)),
]


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    runs = _parallel([lambda a=args: cli(*a, "--timeout", "3", cwd=tmp_path) if a[0] in ("scan", "trace") and
                      "--timeout" not in a and len(a) > 1 else cli(*a, cwd=tmp_path) for args, _ in USAGE])
    for (args, needles), run in zip(USAGE, runs):
        assert_one_line_usage_error(run, *needles)
    _count("usage errors", len(USAGE))


OPTIONS_FILES = [
    ('timeout = "abc"', "timeout must be a number"),
    ("timeout = [1]", "timeout must be a number"),
    ('select = 5', "select must be a list"),
    ("ignore = [1, 2]", "list of strings"),
    ('max-messages = "x"', "max-messages must be"),
    ('format = "xml"', "format must be one of"),
    ('fail-on = "x"', "fail-on must be one of"),
    ("fail-on = 3", "fail-on must be"),
    ('deep = "yes"', "deep must be a bool"),
    ("broker = 5", "broker must be"),
    ("app = 5", "app must be"),
    ('unknown-key = 1', "unknown key"),
    ("[[[", "cannot read"),
    ('source = ["/nonexistent/src"]', "--source path does not exist"),
    ('consumer-timeout = "x"', "consumer-timeout must be a number"),
]


def test_options_file_errors_are_one_line_and_exit_2(tmp_path):
    jobs = []
    for index, (text, _) in enumerate(OPTIONS_FILES):
        directory = tmp_path / f"o{index}"
        directory.mkdir()
        (directory / "pyproject.toml").write_text(f"[tool.celery-doctor]\n{text}\n")
        jobs.append(lambda d=directory: cli("lint", "--broker", REDIS, cwd=d))
    for (text, needle), run in zip(OPTIONS_FILES, _parallel(jobs)):
        assert_one_line_usage_error(run, needle)
    _count("options file values", len(OPTIONS_FILES))


# ------------------------------------------------------------------------------------ the app path

APP_MODULES = {
    # module name suffix -> (source, words in the one-line error)
    "raises": ("raise RuntimeError('config server down')", ("could not load app", "config server down")),
    "syntax": ("def broken(:\n    pass", ("could not load app", "SyntaxError")),
    "exits": ("import sys\nsys.exit(3)", ("could not load app", "SystemExit")),
    "imports_missing": ("import module_that_does_not_exist_xyz", ("could not load app", "module_that_does_not_exist_xyz")),
    "not_an_app": ("app = 42", ("not a Celery app",)),
    "bad_include": (f"from celery import Celery\napp = Celery('x', broker='{REDIS}', include=['no_such_tasks_mod_q'])",
                    ("importing its task modules failed", "no_such_tasks_mod_q")),
    "bad_imports_type": (f"from celery import Celery\napp = Celery('x', broker='{REDIS}')\napp.conf.imports = 5",
                         ("importing its task modules failed",)),
    "keyerror_env": ("import os\nBROKER = os.environ['SURELY_NOT_SET_ENV_VAR']", ("could not load app", "KeyError")),
    "bad_broker_in_app": ("from celery import Celery\napp = Celery('x', broker='redis://h:port/0')",
                          ("malformed broker URL",)),
}


def test_app_paths_that_do_not_import_or_raise(tmp_path):
    tag = uid()
    specs = []
    for suffix, (source, needles) in APP_MODULES.items():
        name = f"trust_bad_{suffix}_{tag}"
        (tmp_path / f"{name}.py").write_text(source + "\n")
        specs.append((f"{name}", needles))
    specs.append((f"trust_no_such_module_{tag}", ("could not load app",)))
    specs.append((f"trust_bad_not_an_app_{tag}:missing_attr", ("could not load app",)))
    specs.append((f"trust_bad_raises_{tag}:app:extra", ("could not load app",)))
    jobs = [lambda s=spec: cli("scan", "--app", s, "--timeout", "5", cwd=tmp_path) for spec, _ in specs]
    jobs += [lambda s=specs[0][0]: cli("lint", "--app", s, cwd=tmp_path),
             lambda s=specs[0][0]: cli("trace", "some-id", "--app", s, cwd=tmp_path)]
    runs = _parallel(jobs)
    for (spec, needles), run in zip(specs, runs):
        assert_one_line_usage_error(run, *needles)
    for run in runs[len(specs):]:
        assert_one_line_usage_error(run, "config server down")
    _count("app paths", len(jobs))


def test_an_app_that_hangs_on_import_is_bounded_by_timeout(tmp_path):
    name = write_module(tmp_path, f"trust_hangs_{uid()}", "import time\ntime.sleep(120)\n")
    run = cli("scan", "--app", name, "--timeout", "2", cwd=tmp_path)
    assert_one_line_usage_error(run, "did not finish within 2 s")
    assert run.seconds < 2 + 2.5, run.seconds
    _count("app paths", 1)


def test_an_app_that_prints_on_import_keeps_stdout_a_valid_report(tmp_path):
    name = write_module(tmp_path, f"trust_chatty_{uid()}", f'''
        print("hello from the app module")
        from celery import Celery
        app = Celery(__name__, broker="{REDIS}")
    ''')
    run = cli("lint", "--app", name, "--format", "json", cwd=tmp_path)
    assert_no_crash(run)
    assert run.json()["target"]["app"] == name and "hello from the app module" in run.stderr
    _count("app paths", 1)


# ---------------------------------------------------------------------- configuration of the wrong type

WRONG_TYPES = [
    # (setting, value, expected: a CD148 finding naming it, or None when Celery itself copes)
    ("broker_transport_options", "x", "not a dict"),
    ("task_routes", 5, "cannot be read as routes"),
    ("worker_prefetch_multiplier", "4", "not a number"),
    ("beat_schedule", [], None),  # an empty list: beat has nothing to run, Celery copes
    ("beat_schedule", ["x"], "not a dict"),
    ("beat_schedule", {"x": 5}, "entry 'x'"),
    ("beat_schedule", {"x": {"task": 5, "schedule": 10}}, "no task name"),
    ("beat_schedule", {"x": {"task": "t.add", "schedule": "every minute"}}, "not a number of seconds"),
    ("task_queues", "q", "not a list of kombu.Queue"),
    ("task_queues", [5, None], "not a kombu.Queue"),
    ("task_queues", 7, "not a list of kombu.Queue"),
    ("task_default_queue", 5, "not a string"),
    ("task_default_queue", None, None),
    ("accept_content", "json", "letter by letter"),
    ("accept_content", ["json", 5], "not strings"),
    ("task_acks_late", "False", "means True"),
    ("task_reject_on_worker_lost", [], "not True/False"),
    ("task_time_limit", "x", "not a number"),
    ("task_soft_time_limit", [], "not a number"),
    ("broker_connection_max_retries", "x", "not a number"),
    ("broker_pool_limit", {"a": 1}, "not a number"),
    ("broker_transport", 5, "not a string"),
    ("task_serializer", 5, "not a string"),
    ("timezone", 5, "not a string"),
    ("timezone", "Mars/Olympus", None),
    ("task_routes", [5, "x", None], None),
    ("task_routes", {"t.add": 5}, None),
    ("task_routes", ("a", "b", "c"), None),
    ("task_annotations", 5, None),
    ("result_backend", 5, None),
    ("broker_url", 5, None),
    ("broker_transport_options", {"visibility_timeout": "x", "priority_steps": "abc", "global_keyprefix": 5,
                                  "sep": 5, "queue_order_strategy": [1]}, None),
    ("task_publish_retry_policy", "x", "not a dict"),
    ("task_default_exchange_type", 5, "not a string"),
    ("worker_concurrency", "x", "not a number"),
    ("result_expires", "x", None),
    ("task_track_started", "no", "means True"),
    ("include", "tasks", None),  # Celery fails importing it: a usage error at load time, tested above
]


@pytest.mark.parametrize("mode", ["lint", "scan"])
def test_config_values_of_the_wrong_type_are_findings_not_crashes(mode):
    """Each wrong value in an app object; the config collector and every check run on it (a crashing check
    raises here); scan mode also runs the Redis collector against the live (empty) db 14."""
    from celery import Celery

    from celery_doctor.broker_target import BrokerTarget
    from celery_doctor.collectors import CollectContext, ScanOptions
    from celery_doctor.collectors.config import collect_config
    from celery_doctor.deadline import Deadline
    from celery_doctor.model import Part, Snapshot, Target
    from celery_doctor.registry import load_registry
    from celery_doctor.runner import run_checks
    from celery_doctor.sources import REDIS as REDIS_SOURCE
    from celery_doctor.sources import gather_live

    if mode == "scan" and not redis_available():
        pytest.skip("no Redis")
    registry = load_registry()
    tried = 0
    for setting, value, expected in WRONG_TYPES:
        if setting == "include":
            continue
        app = Celery(f"trust_types_{uid()}", broker=REDIS, set_as_current=False)
        app.conf[setting] = value

        @app.task(name="t.add", shared=False)
        def add(x, y):
            return x + y

        config = collect_config(app)
        parts = {"config": Part.gathered(config), "source": Part.unavailable("not in this test")}
        if mode == "scan":
            ctx = CollectContext(app=app, broker=BrokerTarget.parse(REDIS), config=config, deadline=Deadline(5),
                                 options=ScanOptions(timeout=5))
            parts.update(gather_live(ctx, config.transport or "redis", [REDIS_SOURCE]))
            assert not parts["redis"].reason.startswith("collector failed"), (setting, value, parts["redis"].reason)
        snapshot = Snapshot(target=Target(app="t", broker=REDIS, transport=config.transport), parts=parts,
                            mode=mode, now=time.time())
        result = run_checks(registry, snapshot, raise_errors=True)
        assert all(r.status.value != "error" for r in result.results), (setting, value)
        named = [f for f in result.findings if f.check == "CD148" and f.subject == f"setting:{setting}"]
        if expected is None:
            assert not named, (setting, value, named[0].evidence if named else None)
        else:
            assert named and expected in " ".join(named[0].evidence), (setting, value, [f.evidence for f in named])
        tried += 1
    _count(f"config values ({mode})", tried)


def test_wrong_types_through_the_cli(tmp_path):
    """The same through the real command line: the finding, the exit code, no traceback."""
    name = write_module(tmp_path, f"trust_cfg_{uid()}", f'''
        from celery import Celery
        app = Celery(__name__, broker="{REDIS}")
        app.conf.task_routes = 5
        app.conf.accept_content = "json"
        app.conf.worker_prefetch_multiplier = "4"
        app.conf.broker_transport_options = "x"
        app.conf.beat_schedule = []
        app.conf.task_default_queue = 5

        @app.task
        def add(x, y):
            return x + y
    ''')
    runs = _parallel([lambda: cli("lint", "--app", name, "--format", "json", cwd=tmp_path),
                      lambda: cli("scan", "--app", name, "--format", "json", "--timeout", "5", cwd=tmp_path)])
    for run in runs:
        assert_no_crash(run)
        assert run.code == 1, str(run)
        report = run.json()
        assert not [c for c in report["checks"] if c["status"] == "error"]
        flagged = {f["subject"] for f in json_places(report["findings"]) if f["check"] == "CD148"}
        assert flagged == {"setting:task_routes", "setting:accept_content", "setting:worker_prefetch_multiplier",
                           "setting:broker_transport_options", "setting:task_default_queue"}, flagged
        assert not [n for n in report["not_checked"] if n["part"] == "config"]
    _count("config values (cli)", 6)


# ------------------------------------------------------------------------------- network bad input

@pytest.mark.redis
@pytest.mark.rabbitmq
def test_unreachable_wrong_and_refusing_targets_are_named_not_crashes(tmp_path):
    if not (redis_available() and rabbit_available()):
        pytest.skip("needs Redis and RabbitMQ")
    holes = Blackholes()
    acl = AclUser([canary("G")])
    rabbit = RabbitUser(canary("H"))
    port = refused_port()
    cases = [
        # (broker, part that must be listed as not checked, words in its reason)
        (f"redis://127.0.0.1:{port}/0", "redis", "Connection refused"),
        (f"redis://nosuchhost-{uid()}.invalid:6379/0", "redis", "cannot reach"),
        (f"redis://127.0.0.1:{holes.silent}/0", "redis", "did not answer"),
        (f"redis://127.0.0.1:{holes.unconnectable}/0", "redis", "did not answer"),
        (acl.url(DB, "wrong-password"), "redis", "invalid username-password"),
        (f"redis://:nopass-needed@127.0.0.1:{port}/0", "redis", "refused"),
        (f"rediss://127.0.0.1:6379/{DB}", "redis", "did not answer"),
        ("redis://127.0.0.1:6379/x", "redis", "not a number"),
        ("redis://127.0.0.1:6379/999", "redis", "DB index is out of range"),
        ("sentinel://127.0.0.1:1;sentinel://127.0.0.1:2", "redis", "master_name"),
        (f"amqp://guest:guest@127.0.0.1:{port}//", "workers", "refused"),
        (rabbit.url("wrong-password"), "rabbitmq", "refused"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost-" + uid(), "rabbitmq", "vhost"),
        ("amqps://guest:guest@127.0.0.1:5672//", "workers", "SSL"),
        (f"amqp://guest:guest@nosuchhost-{uid()}.invalid:5672//", "rabbitmq", ""),
    ]
    try:
        runs = _parallel([lambda b=broker: cli("scan", "--broker", b, "--format", "json", "--timeout", "3",
                                               cwd=tmp_path) for broker, _, _ in cases])
        for (broker, part, words), run in zip(cases, runs):
            assert_no_crash(run)
            assert run.code in (0, 1), str(run)
            reasons = {n["part"]: n["reason"] for n in run.json()["not_checked"]}
            assert part in reasons and words in reasons[part], (broker, reasons)
            assert run.seconds < 3 + 2.5, (broker, run.seconds)
    finally:
        holes.close()
        acl.delete()
        rabbit.delete()
    _count("unreachable / refusing / wrong targets", len(cases))


@pytest.mark.parametrize("args", [("checks",), ("explain", "CD101"), ("lint", "--broker", REDIS, "--format", "json")])
def test_a_reader_that_goes_away_is_not_a_crash(tmp_path, args):
    """`celery-doctor checks | head -1`: the pipe closes before the report is written."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "celery_doctor", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()  # before the doctor has written anything: every write fails with EPIPE
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 141, (proc.returncode, stderr)
    assert not stderr.strip(), stderr
    assert not list(tmp_path.glob("celery-doctor-crash-*.log"))
    _count("closed pipes", 1)


def test_count_of_bad_inputs():
    """Runs last in this module: the number of bad inputs tried above (-s shows it)."""
    total = sum(TRIED.values())
    print(f"\nbad inputs tried: {total} ({', '.join(f'{k}: {v}' for k, v in sorted(TRIED.items()))})")
    if len(TRIED) >= 8:  # the whole module ran (not a -k selection)
        assert total >= 150, TRIED
