"""Secrets never leave the process: a canary password in every place a URL can carry one (broker URL
`:pw@` and `user:pw@`, `?password=`, result backend, --management-url, the options file, the environment),
through every command (lint, scan, trace, checks, explain) and every format (text, json, sarif, markdown),
on stdout, stderr, --output files, -v logs and crash logs; and in the error texts redis-py, kombu, amqp,
pika and urllib produce for wrong passwords, refused ports and TLS spoken to a plain port.

Each canary is a fresh random string; a leak of any part of it (its second half alone too) fails.
Redis: a real ACL user that has the canaries as passwords (created and deleted here), dbs 11 and 12.
RabbitMQ: real users with canary passwords and a private vhost (created and deleted here).
"""
from __future__ import annotations

import importlib
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.test_trust_support import (
    AclUser,
    RabbitUser,
    assert_clean,
    canary,
    cli,
    delete_new_keys,
    drop_vhost,
    make_vhost,
    rabbit_available,
    redis_available,
    redis_client,
    refused_port,
    uid,
    write_module,
)

BROKER_DB, BACKEND_DB = 11, 12


def _parallel(jobs):
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


PLUGIN_FILES = {
    # A third-party check that crashes with the broker URL and the bare password in its message: the
    # runner's error entry and (with CELERY_DOCTOR_RAISE_CHECK_ERRORS=1) the crash log must mask both.
    "leaky_plugin.py": '''
        import os
        from celery_doctor.model import Category, Runbook, check

        @check(id="LEAK001", slug="leaky", title="Leaky plugin", category=Category.TASK_CODE, needs=("config",),
               runbook=Runbook(symptom="s", why="w", confirm="c", fix="f", risk="r"))
        def leaky(snapshot):
            raise RuntimeError("cannot reach " + os.environ["TRUST_LEAK_URL"] + " with password "
                               + os.environ["TRUST_LEAK_PASSWORD"])
            yield

        CHECKS = [leaky]
    ''',
    "broken_plugin.py": '''
        import os
        raise ImportError("plugin config says broker=" + os.environ.get("TRUST_LEAK_URL", ""))
    ''',
    "trust_leaky-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: trust-leaky\nVersion: 1.0\n",
    "trust_leaky-1.0.dist-info/entry_points.txt": '''
        [celery_doctor.checks]
        leaky = leaky_plugin:CHECKS
        broken = broken_plugin:CHECKS
    ''',
}


def _write_plugins(directory: Path) -> Path:
    plugin_dir = directory / "plugins"
    for name, text in PLUGIN_FILES.items():
        path = plugin_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return plugin_dir


# --------------------------------------------------------------------------------------------- redis

@pytest.fixture(scope="module")
def redis_target(tmp_path_factory):
    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    directory = tmp_path_factory.mktemp("secrets-redis")
    secrets = {
        "broker": canary("B"),
        "backend": canary("R"),
        "at": canary("A").replace("-", "@", 1),  # an unencoded '@' inside the password (kombu accepts it)
        "slash": canary("S").replace("-", "/", 1),  # a percent-encoded '/' in the URL
        "query": canary("Q"),
    }
    user = AclUser([secrets["broker"], secrets["backend"], secrets["at"], secrets["slash"]])
    before = {db: set(redis_client(db).scan_iter(count=1000)) for db in (BROKER_DB, BACKEND_DB)}
    tag = uid()
    queue = f"trust-secret-{tag}"
    broker = user.url(BROKER_DB, secrets["broker"])
    backend = user.url(BACKEND_DB, secrets["backend"])
    module = write_module(directory, f"trust_secret_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker={broker!r}, backend={backend!r})
        app.conf.task_default_queue = {queue!r}
        app.conf.broker_transport_options = {{"visibility_timeout": 3600}}

        @app.task
        def add(x, y):
            return x + y
    ''')
    # the at-sign, encoded-slash and query variants of the broker URL
    at_module = write_module(directory, f"trust_secret_at_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker="redis://{user.name}:{secrets['at']}@127.0.0.1:6379/{BROKER_DB}")
        app.conf.task_default_queue = {queue!r}
    ''')
    slash_module = write_module(directory, f"trust_secret_slash_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker="redis://{user.name}:{quote(secrets['slash'], safe='')}@127.0.0.1:6379/{BROKER_DB}",
                     backend="redis://127.0.0.1:6379/{BACKEND_DB}?password={secrets['query']}")
        app.conf.task_default_queue = {queue!r}
    ''')
    # a real queued task and a stored result to trace
    sys.path.insert(0, str(directory))
    try:
        app = importlib.import_module(module).app
        queued = app.tasks[f"{module}.add"].apply_async((1, 2))
        done_id = f"done-{tag}"
        redis_client(BACKEND_DB).set(app.backend.get_key_for_task(done_id),
                                     app.backend.encode({"status": "SUCCESS", "result": 3, "task_id": done_id}))
        app.pool.force_close_all()
    finally:
        sys.path.remove(str(directory))
    yield dict(dir=directory, module=module, at_module=at_module, slash_module=slash_module, user=user,
               secrets=secrets, broker=broker, queued=queued.id, done=done_id, queue=queue)
    user.delete()
    for db, keys in before.items():
        delete_new_keys(db, keys)


@pytest.mark.redis
def test_canaries_in_redis_urls_never_leak_from_any_command_or_format(redis_target):
    t = redis_target
    d, secrets = t["dir"], list(t["secrets"].values())
    out = d / f"out-{uid()}"
    out.mkdir()
    reports = [out / "r.json", out / "r.sarif", out / "r.md", out / "r.txt"]
    options_dir = d / f"options-{uid()}"
    options_dir.mkdir()
    (options_dir / "pyproject.toml").write_text(
        f'[tool.celery-doctor]\nbroker = "{t["broker"]}"\ntimeout = 5\nformat = "markdown"\n')
    env_url = {"CELERY_BROKER_URL": t["broker"]}
    jobs = [
        lambda: cli("lint", "--app", t["module"], "-v", cwd=d, outputs=reports[:1] + reports[1:2]),
        lambda: cli("lint", "--app", t["module"], "-v", cwd=d, outputs=reports[2:]),
        lambda: cli("scan", "--app", t["module"], "-v", "--timeout", "5", cwd=d),
        lambda: cli("scan", "--app", t["module"], "-v", "--timeout", "5", "--deep", cwd=d,
                    outputs=[out / "s.json", out / "s.sarif", out / "s.md", out / "s.txt"]),
        lambda: cli("scan", "--app", t["at_module"], "-v", "--format", "json", "--timeout", "5", cwd=d),
        lambda: cli("scan", "--app", t["slash_module"], "-v", "--format", "sarif", "--timeout", "5", cwd=d),
        lambda: cli("trace", t["queued"], "--app", t["slash_module"], "-v", "--timeout", "5", cwd=d),
        lambda: cli("trace", t["queued"], "--app", t["module"], "-v", "--timeout", "5", cwd=d,
                    outputs=[out / "t.json", out / "t.md", out / "t.txt"]),
        lambda: cli("trace", t["done"], "--app", t["module"], "--format", "json", "--timeout", "5", cwd=d),
        lambda: cli("trace", t["done"], "--app", t["at_module"], "--format", "markdown", "-v", "--timeout", "5", cwd=d),
        lambda: cli("scan", "-v", cwd=options_dir),  # broker from the options file
        lambda: cli("scan", "--format", "json", "--timeout", "5", cwd=options_dir / "..", env=env_url),
        lambda: cli("checks", "--format", "json", cwd=d, env=env_url),
        lambda: cli("explain", "CD001", cwd=d, env=env_url),
    ]
    runs = _parallel(jobs)
    for run in runs:
        assert_clean(run, *secrets)
        assert run.code in (0, 1), str(run)
    lint_a, lint_b, scan_text, scan_files, scan_at, _scan_slash, _trace_slash, trace_files, trace_done, trace_at, \
        scan_options, scan_env, _, _ = runs
    # the runs really went through the paths they claim to test
    assert len(lint_a.files) + len(lint_b.files) == 4 and len(scan_files.files) == 4 and len(trace_files.files) == 3
    assert "DEBUG" in scan_text.stderr, "-v logged nothing"
    assert "redis://" in scan_text.stdout and "***" in scan_text.stdout, scan_text
    assert t["queue"] in scan_files.files[str(out / "s.json")], "the scan did not read the queue"
    assert "Redis at" not in scan_at.stdout, f"the '@' password variant did not connect:\n{scan_at}"
    assert trace_files.code == 0 and t["queued"] in trace_files.files[str(out / "t.json")]
    assert trace_done.code == 0 and "SUCCESS" in trace_done.stdout, trace_done
    assert trace_at.code == 1, trace_at  # no backend in that app: not found
    assert scan_options.stdout.lstrip().startswith("#"), "the options file's markdown format was not used"
    assert scan_env.json()["target"]["broker"].startswith("redis://"), scan_env


@pytest.mark.redis
def test_canaries_in_redis_error_messages_never_leak(redis_target, tmp_path):
    """Wrong password (WRONGPASS from a real ACL user), refused port, TLS to a plain port, wrong backend
    password: the texts come from redis-py, kombu and Celery's backend."""
    t = redis_target
    user = t["user"]
    wrong, wrong_backend = canary("W"), canary("X")
    port = refused_port()
    module = write_module(tmp_path, f"trust_wrong_backend_{uid()}", f'''
        from celery import Celery
        app = Celery(__name__, broker="redis://127.0.0.1:6379/{BROKER_DB}",
                     backend={user.url(BACKEND_DB, wrong_backend)!r})
    ''')
    cases = [
        ("scan", "--broker", user.url(BROKER_DB, wrong), "--format", "json"),
        ("trace", "some-id", "--broker", user.url(BROKER_DB, wrong), "--format", "json"),
        ("scan", "--broker", user.url(BROKER_DB, wrong, port=port), "--format", "markdown"),
        ("scan", "--broker", user.url(BROKER_DB, wrong, scheme="rediss"), "--format", "text", "--timeout", "2"),
        ("trace", "some-id", "--app", module, "--format", "json"),
        ("scan", "--broker", f"redis://127.0.0.1:6379/{BROKER_DB}?password={wrong}", "--format", "sarif"),
    ]
    runs = _parallel([lambda c=c: cli(*c, "-v", "--timeout", "4", cwd=tmp_path) if "--timeout" not in c
                      else cli(*c, "-v", cwd=tmp_path) for c in cases])
    for run in runs:
        assert_clean(run, wrong, wrong_backend)
        assert run.code in (0, 1), str(run)
    wrongpass, wrongpass_trace, refused, tls, backend, _ = runs
    reasons = " ".join(n["reason"] for n in wrongpass.json()["not_checked"])
    assert "refused the credentials" in reasons and "invalid username-password pair" in reasons, wrongpass
    assert "invalid username-password pair" in wrongpass_trace.stdout, wrongpass_trace
    assert "Connection refused" in refused.stdout or "connection refused" in refused.stdout.lower(), refused
    assert "not checked" in tls.stdout.lower(), tls
    backend_notes = " ".join(n["reason"] for n in backend.json()["not_checked"] if n["where"] == "result backend")
    assert "invalid username-password pair" in backend_notes, backend


@pytest.mark.redis
def test_crash_logs_and_plugin_errors_mask_the_password(redis_target, tmp_path):
    """A third-party check that raises with the URL and the bare password: the error entry, and with
    CELERY_DOCTOR_RAISE_CHECK_ERRORS=1 the crash log and its one-line summary, show neither."""
    t = redis_target
    secret = t["secrets"]["broker"]
    plugin_dir = _write_plugins(tmp_path)
    leak_env = {"PYTHONPATH": str(plugin_dir), "TRUST_LEAK_URL": t["broker"], "TRUST_LEAK_PASSWORD": secret}
    runs = _parallel([
        lambda: cli("scan", "--app", t["module"], "--format", "json", "--timeout", "5", cwd=t["dir"],
                    env={**leak_env, "CELERY_DOCTOR_RAISE_CHECK_ERRORS": "0"}),
        lambda: cli("lint", "--app", t["module"], "-v", cwd=t["dir"],
                    env={**leak_env, "CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1"}),
        lambda: cli("checks", cwd=t["dir"], env=leak_env),
        lambda: cli("checks", "--format", "json", cwd=t["dir"], env=leak_env),
    ])
    for run in runs:
        assert_clean(run, secret)
    reported, crashed, listing, listing_json = runs
    checks = {c["id"]: c for c in reported.json()["checks"]}
    assert checks["LEAK001"]["status"] == "error" and "cannot reach redis://" in checks["LEAK001"]["reason"], reported
    assert "***" in checks["LEAK001"]["reason"]
    assert crashed.code == 3 and crashed.crash_logs, crashed
    assert "RuntimeError" in next(iter(crashed.crash_logs.values()))
    assert "failed to load" in listing.stdout and "broker=redis://" in listing.stdout, listing
    assert "ImportError" in listing_json.stdout


# ------------------------------------------------------------------------------------------ rabbitmq

@pytest.fixture(scope="module")
def rabbit_target(tmp_path_factory):
    if not rabbit_available():
        pytest.skip("no RabbitMQ management API on 127.0.0.1:15672")
    directory = tmp_path_factory.mktemp("secrets-rabbit")
    vhost = make_vhost("cd-trust-secrets")
    broker_user = RabbitUser(canary("M"), vhost=vhost)
    api_user = RabbitUser(canary("P"), vhost=vhost)
    tag = uid()
    queue = f"trust-secret-{tag}"
    broker = broker_user.url()
    management = f"http://{api_user.name}:{api_user.password}@127.0.0.1:15672"
    module = write_module(directory, f"trust_rsecret_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker={broker!r})
        app.conf.task_default_queue = {queue!r}

        @app.task
        def add(x, y):
            return x + y
    ''')
    sys.path.insert(0, str(directory))
    try:
        app = importlib.import_module(module).app
        queued = app.tasks[f"{module}.add"].apply_async((1, 2))
        app.pool.force_close_all()
    finally:
        sys.path.remove(str(directory))
    yield dict(dir=directory, module=module, vhost=vhost, broker_user=broker_user, api_user=api_user,
               management=management, queued=queued.id, queue=queue)
    broker_user.delete()
    api_user.delete()
    drop_vhost(vhost)


@pytest.mark.rabbitmq
def test_canaries_in_rabbitmq_urls_never_leak_from_any_command_or_format(rabbit_target):
    t = rabbit_target
    d = t["dir"]
    secrets = [t["broker_user"].password, t["api_user"].password]
    out = d / f"out-{uid()}"
    out.mkdir()
    m = ("--management-url", t["management"])
    runs = _parallel([
        lambda: cli("lint", "--app", t["module"], "-v", cwd=d,
                    outputs=[out / "l.json", out / "l.sarif", out / "l.md", out / "l.txt"]),
        lambda: cli("scan", "--app", t["module"], *m, "-v", "--timeout", "6", cwd=d),
        lambda: cli("scan", "--app", t["module"], *m, "--peek", "-v", "--timeout", "6", cwd=d,
                    outputs=[out / "s.json", out / "s.sarif", out / "s.md", out / "s.txt"]),
        lambda: cli("trace", t["queued"], "--app", t["module"], "--format", "markdown", "--timeout", "6", cwd=d),
    ])
    # Not beside the scan's --peek: a message another channel holds between its get and requeue is unacked, not
    # ready, and a trace reads ready messages only (it says so), so the two would race for the one message.
    # Its own deadline is generous: what it tests is masking, and a trace cut short by a slow management API under
    # the full suite's load would be "not found" (exit 1) for a reason that has nothing to do with secrets.
    runs.insert(3, cli("trace", t["queued"], "--app", t["module"], *m, "--peek", "-v", "--timeout", "20", cwd=d,
                       outputs=[out / "t.json", out / "t.md", out / "t.txt"]))
    for run in runs:
        assert_clean(run, *secrets)
        assert run.code in (0, 1), str(run)
    _, scan_text, scan_files, trace_files, _ = runs
    assert "DEBUG" in scan_text.stderr
    report = scan_files.files[str(out / "s.json")]
    assert t["queue"] in report and '"rabbitmq"' not in report.split('"not_checked"')[1][:200], report
    assert trace_files.code == 0, (trace_files.code, trace_files.stdout[-4000:], trace_files.stderr[-2000:])
    assert t["queued"] in trace_files.files[str(out / "t.json")]


@pytest.mark.rabbitmq
def test_canaries_in_rabbitmq_error_messages_never_leak(rabbit_target, tmp_path):
    """amqp/kombu (wrong password, refused port, amqps to a plain port), pika (--peek with a wrong password)
    and urllib (management API: wrong password, refused, https to a plain port, a malformed URL)."""
    t = rabbit_target
    user, api_user = t["broker_user"], t["api_user"]
    wrong, wrong_api = canary("V"), canary("U")
    port = refused_port()
    vhost = quote(t["vhost"], safe="")
    good_broker = user.url()
    cases = [
        ("scan", "--broker", user.url(wrong), "--format", "json"),
        ("scan", "--broker", user.url(wrong), "--peek", "--format", "markdown"),
        ("trace", "an-id", "--broker", user.url(wrong), "--peek", "--format", "json"),
        ("scan", "--broker", user.url(wrong, port=port), "--format", "text"),
        ("scan", "--broker", user.url(wrong, scheme="amqps"), "--format", "sarif"),
        ("scan", "--broker", good_broker, "--management-url",
         f"http://{api_user.name}:{wrong_api}@127.0.0.1:15672", "--format", "json"),
        ("scan", "--broker", good_broker, "--management-url", f"http://{api_user.name}:{wrong_api}@127.0.0.1:{port}",
         "--format", "json"),
        ("scan", "--broker", good_broker, "--management-url", f"https://{api_user.name}:{wrong_api}@127.0.0.1:15672",
         "--format", "json"),
        ("trace", "an-id", "--broker", good_broker, "--management-url",
         f"http://{api_user.name}:{wrong_api}@127.0.0.1:15672/api/", "--format", "json"),
        ("scan", "--broker", good_broker, "--management-url", f"http://{api_user.name}:{wrong_api}@127.0.0.1:port",
         "--format", "json"),
    ]
    runs = _parallel([lambda c=c: cli(*c, "-v", "--timeout", "4", cwd=tmp_path) for c in cases])
    for run in runs:
        assert_clean(run, wrong, wrong_api, user.password)
    scan_wrong, peek_wrong, _trace_wrong, refused, _tls, api_wrong, api_refused, api_tls, _trace_api, malformed = runs
    for run in runs[:-1]:
        assert run.code in (0, 1), str(run)
    assert "refused" in scan_wrong.stdout.lower() and "401" in scan_wrong.stdout, scan_wrong
    assert "ACCESS_REFUSED" in peek_wrong.stdout or "login refused" in peek_wrong.stdout.lower(), peek_wrong
    assert "refused" in refused.stdout.lower(), refused
    assert "401" in api_wrong.stdout and vhost not in ("%2F",), api_wrong
    assert "refused" in api_refused.stdout.lower(), api_refused
    assert "management API" in api_tls.stdout, api_tls
    assert malformed.code == 2 and len(malformed.stderr.strip().splitlines()) == 1, malformed
    assert "--management-url" in malformed.stderr, malformed


@pytest.mark.redis
def test_a_password_sent_to_a_redis_without_one_is_read_as_the_workers_do(tmp_path):
    """Redis with no password lets in clients that authenticate with HELLO (kombu, RESP3) whatever they send;
    the doctor must read it too (not report the broker unreachable), and still never print the password."""
    if not redis_available():
        pytest.skip("no Redis")
    secret = canary("N")
    run = cli("scan", "--broker", f"redis://:{secret}@127.0.0.1:6379/{BROKER_DB}", "--format", "json",
              "--timeout", "4", "-v", cwd=tmp_path)
    assert_clean(run, secret)
    parts = {n["part"] for n in run.json()["not_checked"]}
    assert "redis" not in parts and "workers" not in parts, run.json()["not_checked"]
    assert "CD001" not in {f["check"] for f in run.json()["findings"]}
