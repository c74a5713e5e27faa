"""The checks a static linter makes (checks/config_static.py: CD170-CD172), from real app objects and source,
and CD170's claim against a real worker on Redis (db 3)."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from celery import Celery
from kombu import Queue

from celery_doctor.parts.config import example, example_task
from tests.conftest import by_id, findings_of, make_snapshot, write_tree
from tests.test_redis_fixtures import KeyJanitor
from tests.workerproc import worker_factory  # noqa: F401 (fixture)

DB = 3
REDIS = f"redis://127.0.0.1:6379/{DB}"


def app_with(**conf) -> Celery:
    app = Celery(f"cdst_{uuid.uuid4().hex[:6]}", broker=REDIS, set_as_current=False)
    app.conf.update(conf)
    return app


SENDS = {"proj/views.py": """
    from kombu import Queue
    from proj.tasks import work, other
    NIGHTLY = "nightly"

    def go():
        work.apply_async((1,), queue="bulk")
        work.s(2).set(queue=NIGHTLY)
        other.apply_async(queue="default")
        other.signature((), options={"queue": Queue("exports")})
        app.send_task("proj.tasks.work", queue="routed")
"""}


def test_cd170_queue_named_where_the_task_is_sent(tmp_path):
    write_tree(tmp_path, SENDS)
    app = app_with(task_queues=[Queue("default"), Queue("routed")], task_default_queue="default",
                   task_routes={"proj.tasks.other": {"queue": "routed"}})
    found = findings_of(by_id("CD170"), make_snapshot(app, str(tmp_path)))
    assert sorted(f.subject for f in found) == ["queue:bulk", "queue:exports", "queue:nightly"]
    bulk = next(f for f in found if f.subject == "queue:bulk")
    assert bulk.location.path.endswith("proj/views.py") and bulk.location.line == 6
    assert "the producer creates 'bulk'" in " ".join(bulk.evidence)
    strict = app_with(task_queues=[Queue("default")], task_default_queue="default", task_create_missing_queues=False)
    assert "QueueNotFound" in " ".join(findings_of(by_id("CD170"), make_snapshot(strict, str(tmp_path)))[0].evidence)
    no_queues = app_with()  # without task_queues: what a worker consumes depends on its -Q, not known statically
    assert not findings_of(by_id("CD170"), make_snapshot(no_queues, str(tmp_path)))


def test_cd170_decorator_queues_are_cd120s(tmp_path):
    app = app_with(task_queues=[Queue("celery")])

    @app.task(name="proj.tasks.work", queue="bulk", shared=False)
    def work():
        return 1

    snapshot = make_snapshot(app, str(write_tree(tmp_path, SENDS)))
    assert "queue:bulk" in {f.subject for f in findings_of(by_id("CD120"), snapshot)}
    assert "queue:bulk" not in {f.subject for f in findings_of(by_id("CD170"), snapshot)}


def test_cd171_beat_period_shorter_than_the_time_limit():
    from celery_doctor.parts.config import BeatEntry

    def entry(name, task, seconds):
        return BeatEntry(name, task, repr(seconds), seconds, {})

    config = example(tasks=[example_task("p.sync", time_limit=600), example_task("p.quick", time_limit=30),
                            example_task("p.plain")],
                     beat=(entry("sync", "p.sync", 60.0), entry("quick", "p.quick", 60.0),
                           entry("plain", "p.plain", 60.0)))
    from celery_doctor.model import Part, Snapshot, Target

    snapshot = Snapshot(Target("p", None, "redis"), {"config": Part.gathered(config)})
    found = findings_of(by_id("CD171"), snapshot)
    assert [f.subject for f in found] == ["beat:sync"]
    assert "every 60 s" in found[0].evidence[0] and "10 min" in found[0].evidence[1]
    with_global = example(settings={"task_time_limit": 300}, tasks=[example_task("p.plain")],
                          beat=(entry("plain", "p.plain", 60.0),))
    assert findings_of(by_id("CD171"), Snapshot(Target("p", None, "redis"), {"config": Part.gathered(with_global)}))


@pytest.mark.parametrize("conf, fires", [
    ({"result_backend": "redis://127.0.0.1:6379/4", "result_expires": None}, True),
    ({"result_backend": "redis://127.0.0.1:6379/4", "result_expires": 0}, True),
    ({"result_backend": "redis://127.0.0.1:6379/4", "result_expires": timedelta(0)}, True),
    ({"result_backend": "redis://127.0.0.1:6379/4"}, False),  # the default: one day
    ({"result_backend": "redis://127.0.0.1:6379/4", "result_expires": 3600}, False),
    ({"result_expires": None}, False),  # no backend: nothing is stored
    ({"result_backend": "rpc://", "result_expires": None}, False),
    ({"result_backend": "redis://127.0.0.1:6379/4", "result_expires": None, "task_ignore_result": True}, False),
])
def test_cd172_results_that_never_expire(conf, fires):
    found = findings_of(by_id("CD172"), make_snapshot(app_with(**conf)))
    assert bool(found) is fires
    if fires:
        assert found[0].impact.value == "low" and found[0].category.value == "broker"


def test_cd172_claim_redis_backend_stores_results_without_ttl():
    """Celery's own Redis backend, result_expires=None: the result key has no TTL (TTL -1); the default has one."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(db=DB)
    try:
        client.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis")
    ids = []
    for expires, has_ttl in ((None, False), (3600, True)):
        app = app_with(result_backend=REDIS, result_expires=expires)
        task_id = f"cdst-{uuid.uuid4().hex}"
        app.backend.store_result(task_id, 42, "SUCCESS")
        ids.append(task_id)
        key = f"celery-task-meta-{task_id}"
        assert (client.ttl(key) > 0) is has_ttl, (expires, client.ttl(key))
    client.delete(*[f"celery-task-meta-{i}" for i in ids])


def test_cd170_claim_a_worker_without_q_leaves_an_undeclared_queue_alone(tmp_path, worker_factory):
    """task_queues declares one queue; a task sent with apply_async(queue=<another>) is created on the fly and
    stays there: the worker (no -Q) consumes only the declared queue."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(db=DB)
    try:
        client.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis")
    janitor = KeyJanitor(DB)  # the keys the run creates (queues, kombu's bindings) are deleted at the end
    uid = uuid.uuid4().hex[:8]
    declared, stranded = f"cdst-declared-{uid}", f"cdst-stranded-{uid}"
    module = f"cdst_app_{uid}"
    write_tree(tmp_path, {f"{module}.py": f"""
        from celery import Celery
        from kombu import Queue
        app = Celery("{module}", broker="{REDIS}")
        app.conf.task_queues = [Queue("{declared}")]
        app.conf.task_default_queue = "{declared}"

        @app.task(name="cdst.ping")
        def ping():
            return 1
    """})
    worker = worker_factory(module, cwd=tmp_path, broker=REDIS)
    try:
        app = Celery(module, broker=REDIS, set_as_current=False)
        app.conf.task_queues = [Queue(declared)]
        app.conf.task_default_queue = declared
        app.send_task("cdst.ping", queue=stranded)
        app.send_task("cdst.ping")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.llen(declared):
            time.sleep(0.2)
        assert client.llen(declared) == 0  # the declared queue was consumed...
        time.sleep(1)
        assert client.llen(stranded) == 1, worker.tail()  # ...the undeclared one was created and left alone
    finally:
        worker.stop()
        janitor.cleanup()


SUPPRESSED = {"proj/__init__.py": "", "proj/celery.py": """
    from datetime import datetime
    from celery import Celery
    app = Celery('proj', broker='redis://127.0.0.1:6379/3')

    @app.task
    def t():
        return 1

    def go():
        t.apply_async(expires=datetime.utcnow())  # celery-doctor: ignore[CD146]
        t.apply_async(expires=3600)  # celery-doctor: ignore[CD146]
        t.apply_async(expires=3600)  # celery-doctor: ignore[CD9999]
        t.apply_async(expires=3600)  # celery-doctor: ignore
        t.apply_async(expires=3600)  # celery-doctor: ignore[CD4]
        t.apply_async(expires=3600)  # celery-doctor: ignore[CD146, CD174]
"""}


@pytest.mark.parametrize("app", [None, "proj"])
def test_cd174_suppressions_that_silence_nothing(tmp_path, app):
    import json

    from tests.conftest import run_cli

    write_tree(tmp_path, SUPPRESSED)
    args = ["lint", "--format", "json", *(["--app", app] if app else [])]
    data = json.loads(run_cli(*args, cwd=tmp_path).stdout)
    found = [f for f in data["findings"] if f["check"] == "CD174"]
    places = sorted({f["location"]["line"] for f in found}
                    | {o["location"]["line"] for f in found for o in f.get("occurrences", ()) if o.get("location")})
    # line 10 silences the CD146 it names; 11 silences nothing; 12 names an unknown id; a bare ignore (13) and
    # one naming live checks that lint does not run (14) may silence something elsewhere; 15 ignores CD174 itself
    assert places == [11, 12], found
    assert data["summary"]["suppressed"] == 1
    texts = " ".join(e for f in found for e in f["evidence"])
    assert "silences nothing" in texts
    only_cd146 = json.loads(run_cli(*args, "--select", "CD146", cwd=tmp_path).stdout)
    assert not [f for f in only_cd146["findings"] if f["check"] == "CD174"]  # CD174 itself not selected


PASSWORDS = {
    "proj/__init__.py": "",
    "proj/celery.py": """
        import os
        from celery import Celery
        app = Celery("proj", broker=os.environ.get("BROKER", "redis://:Sup3rS3cretPw9@redis.prod.example:6379/0"),
                     backend="redis://:${REDIS_PASSWORD}@redis:6379/1")
        app.conf.result_backend = "db+postgresql://celery:devpass@localhost/celery"
        URL_TEMPLATE = "amqp://{user}:{password}@rabbit//"

        @app.task
        def work(x):
            return x
    """,
    "tests/test_proj.py": 'URL = "amqp://u:Testpw12345x@rabbit//"\n',
}


def test_cd173_password_in_source(tmp_path):
    write_tree(tmp_path, PASSWORDS)
    snapshot = make_snapshot(app_with(), str(tmp_path))
    found = findings_of(by_id("CD173"), snapshot)
    assert sorted((f.location.line, f.impact.value) for f in found) == [(3, "medium"), (5, "low")]
    assert all(f.category.value == "security" for f in found)
    assert any("redis://:***@redis.prod.example" in f.evidence[0] for f in found)
    assert not any("Sup3rS3cretPw9" in e or "devpass" in e for f in found for e in f.evidence)


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "markdown"])
def test_cd173_the_password_appears_in_no_report(tmp_path, fmt):
    """Static mode: the password is in the source (broker URL default), never in any report format."""
    from tests.conftest import run_cli

    write_tree(tmp_path, PASSWORDS)
    run = run_cli("lint", "--format", fmt, "-v", cwd=tmp_path)
    assert run.returncode in (0, 1), run.stderr
    assert "CD173" in run.stdout or "password-in-source" in run.stdout
    assert "Sup3rS3cretPw9" not in run.stdout + run.stderr
