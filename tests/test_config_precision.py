"""Precision of the config checks on real-project shapes: impacts follow the loss mechanism, beat findings follow
the entry's period, findings are conditional outside production, and a default app gets only low advice."""
from __future__ import annotations

import datetime as dt

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from celery_doctor.model import Confidence, Impact
from tests.conftest import by_id, findings_of, make_snapshot, run_cli, write_tree
from tests.workerproc import worker_factory  # noqa: F401 (fixture)

REDIS = "redis://127.0.0.1:6379/8"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def make_app(broker=REDIS, tasks=None, **conf):
    app = Celery("t", broker=broker, set_as_current=False)
    app.conf.update(conf)
    for name, options in (tasks or {"t.work": {}}).items():
        def body(*args, **kwargs):
            return None
        app.task(name=name, shared=False, **options)(body)
    return app


def found(check_id, app, **kw):
    return findings_of(by_id(check_id), make_snapshot(app, **kw))


def config_findings(snapshot):
    """Every finding of the checks that read the configuration (and maybe the source), by check id."""
    from celery_doctor.registry import load_registry

    out = {}
    for check in load_registry().checks:
        if "config" in check.needs and check.needs <= {"config", "source"}:
            got = findings_of(check, snapshot)
            if got:
                out[check.id] = got
    return out


# ----- a default app: only low, justified advice ---------------------------------------------------------------

# What a bare default app is told, and why each stays: both are real mechanisms, both are Celery's (kombu's)
# defaults, so both are low and do not fail the default --fail-on.
DEFAULT_APP_ADVICE = {
    # early acks: a SIGKILL/OOM of a pool process loses the task it runs (Request.on_accepted acks at start)
    "CD101": Impact.LOW,
    # RabbitMQ only: without confirms a publish the broker refuses is never reported (amqp Channel._basic_publish)
    "CD130": Impact.LOW,
}


def test_a_default_app_gets_only_low_advice(tree):
    src = tree({"proj/__init__.py": "", "proj/celery.py": """
        from celery import Celery
        app = Celery()
        @app.task
        def work(x):
            return x
        """})
    for app in (Celery(set_as_current=False), make_app(broker=REDIS), make_app(broker=AMQP)):
        got = config_findings(make_snapshot(app, source_dir=str(src)))
        assert {k: {f.impact for f in v} for k, v in got.items()} == {
            k: {v} for k, v in DEFAULT_APP_ADVICE.items() if k in got}, got
        assert set(got) <= set(DEFAULT_APP_ADVICE)
        for findings in got.values():
            assert any(e.startswith("impact low: ") for f in findings for e in f.evidence)


def test_default_app_exits_0_with_the_default_fail_on(tmp_path):
    write_tree(tmp_path, {"plainapp.py": """
        from celery import Celery
        app = Celery("plain", broker="amqp://guest:guest@127.0.0.1:5672//")
        @app.task
        def work(x):
            return x
        """})
    result = run_cli("lint", "-A", "plainapp:app", "--color", "never", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CD101" in result.stdout and "impact low: Celery's default" in result.stdout
    strict = run_cli("lint", "-A", "plainapp:app", "--fail-on", "low", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert strict.returncode == 1


# ----- impacts follow the mechanism ----------------------------------------------------------------------------

def test_early_acks_are_medium_only_with_project_evidence():
    [default] = found("CD101", make_app())
    assert default.impact is Impact.LOW
    [mixed] = found("CD101", make_app(tasks={"t.a": {}, "t.b": {"acks_late": True}}))
    assert mixed.impact is Impact.MEDIUM and any("acks some tasks late" in e for e in mixed.evidence)
    [long] = found("CD101", make_app(tasks={"t.slow": {"time_limit": 1800}}))
    assert long.impact is Impact.MEDIUM and any("t.slow" in e for e in long.evidence)
    assert any("acked when they start" in e for e in default.evidence)


def test_prefetch_is_latency_and_duplicates_not_loss():
    [finding] = found("CD140", make_app(tasks={"t.slow": {"time_limit": 900}}, worker_prefetch_multiplier=4))
    assert finding.impact is Impact.MEDIUM
    text = " ".join(finding.evidence)
    assert "loses" not in text and "delayed, not lost" in text and "runs twice" in text
    assert "lost if the worker is killed" not in by_id("CD140").runbook.why
    assert "Request.on_accepted" in by_id("CD140").runbook.why


def test_confirms_off_is_low_unless_the_project_makes_refusals_likely():
    [plain] = found("CD130", make_app(broker=AMQP))
    assert plain.impact is Impact.LOW and plain.confidence is Confidence.INFERRED
    [quorum] = found("CD130", make_app(broker=AMQP, task_default_queue_type="quorum"))
    assert quorum.impact is Impact.MEDIUM
    full = make_app(broker=AMQP, task_queues=[Queue("celery", queue_arguments={"x-max-length": 1000,
                                                                             "x-overflow": "reject-publish"})])
    [refusing] = found("CD130", full)
    assert refusing.impact is Impact.HIGH and any("reject-publish" in e for e in refusing.evidence)


def test_revokes_need_a_revoke_call_in_the_project(tree):
    quiet = tree({"p/__init__.py": "", "p/views.py": "def f(t):\n    return t.delay(1)\n"})
    assert found("CD147", make_app(), source_dir=str(quiet)) == []
    assert found("CD147", make_app()) == []  # no source: no evidence
    loud = tree({"q/__init__.py": "", "q/views.py": "def cancel(result):\n    result.revoke(terminate=True)\n"})
    [finding] = found("CD147", make_app(), source_dir=str(loud))
    assert finding.location.line == 2 and any("revokes tasks" in e for e in finding.evidence)
    assert found("CD147", make_app(worker_state_db="/var/run/celery/%n.state"), source_dir=str(loud)) == []


def test_time_limit_evidence_names_the_real_outcome():
    [finding] = found("CD145", make_app(tasks={"t.a": {"soft_time_limit": 600, "time_limit": 300}}))
    assert any("TimeLimitExceeded" in e for e in finding.evidence)
    assert not any("WorkerLostError" in e for e in finding.evidence)


def test_task_queues_as_a_dict_of_options_is_accepted_as_celery_accepts_it():
    app = make_app(task_queues={"celery": {"exchange": "celery", "routing_key": "celery"},
                                "low": {"exchange": "low", "exchange_type": "topic", "binding_key": "low.#"}})
    assert found("CD148", app) == []
    snapshot = make_snapshot(app)
    declared = {q.name: (q.exchange, q.routing_key, q.exchange_type) for q in snapshot.config.queues}
    assert declared == {n: (q.exchange.name, q.routing_key, q.exchange.type) for n, q in app.amqp.queues.items()}
    assert [f.subject for f in found("CD148", make_app(task_queues="celery"))] == ["setting:task_queues"]


# ----- beat: frequency-aware ----------------------------------------------------------------------------------

def test_missing_expires_scales_with_the_period_crontabs_included():
    app = make_app(tasks={"t.report": {}}, beat_schedule={
        "minutely": {"task": "t.report", "schedule": 60.0},
        "every-5-cron": {"task": "t.report", "schedule": crontab(minute="*/5")},
        "hourly-cron": {"task": "t.report", "schedule": crontab(minute=0)},
        "daily": {"task": "t.report", "schedule": crontab(minute=0, hour=3)},
        "monthly": {"task": "t.report", "schedule": crontab(minute=0, hour=0, day_of_month=1)},
    })
    got = {f.subject: f for f in found("CD141", app)}
    assert sorted(got) == ["beat:every-5-cron", "beat:hourly-cron", "beat:minutely"]
    assert got["beat:minutely"].impact is Impact.MEDIUM and got["beat:every-5-cron"].impact is Impact.MEDIUM
    assert got["beat:hourly-cron"].impact is Impact.LOW
    assert any("runs at most every 5 min" in e and "crontab" in e for e in got["beat:every-5-cron"].evidence)
    assert any(e.startswith("impact medium: an outage of 1 h queues 60 runs") for e in got["beat:minutely"].evidence)


def test_a_task_level_expires_covers_its_beat_entries():
    app = make_app(tasks={"t.report": {"expires": 50}}, beat_schedule={"m": {"task": "t.report", "schedule": 60.0}})
    assert found("CD141", app) == []


def test_expires_far_longer_than_the_period():
    app = make_app(tasks={"t.report": {}}, beat_schedule={
        "week-valid": {"task": "t.report", "schedule": 60.0, "options": {"expires": dt.timedelta(days=7)}},
        "hour-valid": {"task": "t.report", "schedule": crontab(minute="*/5"), "options": {"expires": 3600}},
        "fine": {"task": "t.report", "schedule": 300.0, "options": {"expires": 240}},
    })
    got = {f.subject: f for f in found("CD150", app)}
    assert sorted(got) == ["beat:hour-valid", "beat:week-valid"]
    assert got["beat:week-valid"].impact is Impact.MEDIUM
    assert any("10,080 queued runs" in e for e in got["beat:week-valid"].evidence)
    assert got["beat:hour-valid"].impact is Impact.LOW
    assert found("CD141", app) == []


# ----- context gates ------------------------------------------------------------------------------------------

def test_eager_mode_makes_broker_and_ack_findings_conditional():
    normal = found("CD133", make_app(broker=AMQP, task_default_delivery_mode="transient"))
    eager = found("CD133", make_app(broker=AMQP, task_default_delivery_mode="transient", task_always_eager=True))
    assert normal[0].impact is Impact.HIGH and normal[0].confidence is Confidence.CONFIGURED
    assert eager[0].impact is Impact.MEDIUM and eager[0].confidence is Confidence.INFERRED
    assert any("task_always_eager=True" in e and "conditional" in e for e in eager[0].evidence)
    # CD122: beat sends a name it does not know with send_task, which eager mode does not cover
    beat = make_app(task_always_eager=True, beat_schedule={"x": {"task": "t.nope", "schedule": 60.0}})
    assert found("CD122", beat)[0].impact is Impact.HIGH


def test_test_settings_make_findings_conditional(tmp_path):
    settings = write_tree(tmp_path, {"proj/settings/test.py": "task_default_delivery_mode = 'transient'\n"}) / "proj/settings/test.py"
    app = make_app(broker=AMQP)
    app.config_from_object({"task_default_delivery_mode": "transient"})
    snapshot = make_snapshot(app)
    from dataclasses import replace

    from celery_doctor.model import Part

    config = replace(snapshot.config, config_origin=str(settings))
    test_snapshot = snapshot.with_parts(config=Part.gathered(config))
    [finding] = findings_of(by_id("CD133"), test_snapshot)
    assert finding.impact is Impact.MEDIUM and any("test settings module" in e for e in finding.evidence)
    assert findings_of(by_id("CD133"), snapshot)[0].impact is Impact.HIGH


# ----- new causes ---------------------------------------------------------------------------------------------

def test_broker_that_cannot_cross_processes():
    assert [f.impact for f in found("CD151", make_app(broker="memory://"))] == [Impact.HIGH]
    assert found("CD151", make_app(broker="memory://", task_always_eager=True)) == []
    assert [f.impact for f in found("CD151", make_app(broker="sqla+sqlite://"))] == [Impact.HIGH]
    [sqlite_file] = found("CD151", make_app(broker="sqla+sqlite:////var/lib/celery/broker.db"))
    assert sqlite_file.impact is Impact.MEDIUM and any("database is locked" in e for e in sqlite_file.evidence)
    assert found("CD151", make_app(broker="sqla+postgresql://u:p@db/celery")) == []
    [split] = found("CD151", make_app(broker="filesystem://"))
    assert split.impact is Impact.HIGH and any("'data_out'" in e for e in split.evidence)
    shared = make_app(broker="filesystem://", broker_transport_options={"data_folder_in": "/srv/q",
                                                                        "data_folder_out": "/srv/q"})
    assert [f.impact for f in found("CD151", shared)] == [Impact.MEDIUM]
    assert found("CD151", make_app()) == [] and found("CD151", make_app(broker=AMQP)) == []


def test_connection_timeout_too_short():
    assert [f.subject for f in found("CD152", make_app(broker_connection_timeout=0.1))] == [
        "setting:broker_connection_timeout"]
    assert found("CD152", make_app(broker_connection_timeout=1)) == []
    [no_pool] = found("CD152", make_app(broker_connection_timeout=1, broker_pool_limit=0))
    assert any("every publish opens a new connection" in e for e in no_pool.evidence)
    assert found("CD152", make_app(broker_connection_timeout=3, broker_pool_limit=0)) == []
    assert found("CD152", make_app()) == []


def test_acks_late_without_time_limit_falls_back_to_global_settings_with_no_tasks():
    app = Celery("t", broker=REDIS, set_as_current=False)
    app.conf.update(task_acks_late=True)
    [finding] = findings_of(by_id("CD111"), make_snapshot(app))
    assert finding.impact is Impact.MEDIUM and any("no task is registered" in e for e in finding.evidence)
    app.conf.update(task_time_limit=7200)
    [longer] = findings_of(by_id("CD111"), make_snapshot(app))
    assert any("every task (task_time_limit 2 h)" in e for e in longer.evidence)
    app.conf.update(task_time_limit=600)
    assert findings_of(by_id("CD111"), make_snapshot(app)) == []


def test_always_eager_in_test_settings_is_not_reported(tmp_path):
    from dataclasses import replace

    from celery_doctor.model import Part

    snapshot = make_snapshot(make_app(task_always_eager=True))
    assert [f.subject for f in findings_of(by_id("CD123"), snapshot)] == ["setting:task_always_eager"]
    config = replace(snapshot.config, config_origin=str(tmp_path / "proj" / "settings" / "testing.py"))
    assert findings_of(by_id("CD123"), snapshot.with_parts(config=Part.gathered(config))) == []


# ----- the mechanism behind CD101/CD140, with a real worker and Redis (db 8) -----------------------------------

PREFETCH_APP = """
    import os
    import time

    import redis
    from celery import Celery

    PREFIX = os.environ["CD_PRECISION_PREFIX"]
    app = Celery("precisionapp", broker="redis://127.0.0.1:6379/8", set_as_current=False)
    app.conf.update(
        broker_transport_options={"visibility_timeout": 4, "unacked_restore_interval": 1,
                                  "unacked_restore_throttle": 1, "global_keyprefix": PREFIX},
        worker_prefetch_multiplier=4, task_default_queue=PREFIX + "q", task_ignore_result=True,
        broker_connection_retry_on_startup=True)
    marks = redis.Redis(db=8)

    @app.task(name="precision.block")
    def block():
        marks.incr(PREFIX + "ran:block")
        time.sleep(60)

    @app.task(name="precision.mark")
    def mark(i):
        marks.incr(PREFIX + f"ran:mark:{i}")
    """


def _wait(predicate, timeout: float) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_killed_worker_loses_its_running_early_acked_task_not_its_prefetched_ones(tmp_path, worker_factory):
    """Early acks happen when a pool process starts the task (Request.on_accepted), not at prefetch: SIGKILL the
    worker while one task runs and three wait in its prefetch; the running one is gone, the three come back."""
    import uuid

    import pytest
    import redis

    from tests.test_trust_support import redis_available

    if not redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"cd-precision-{uuid.uuid4().hex[:8]}:"
    write_tree(tmp_path, {"precisionapp.py": PREFETCH_APP})
    env = {"CD_PRECISION_PREFIX": prefix}
    client = redis.Redis(db=8)
    # The producer sends by name: importing the worker's module here would register its (shared) tasks on every
    # app this test process finalizes later.
    producer = Celery("precision-producer", broker="redis://127.0.0.1:6379/8", set_as_current=False)
    producer.conf.update(broker_transport_options={"global_keyprefix": prefix}, task_default_queue=prefix + "q")
    try:
        first = worker_factory("precisionapp", cwd=tmp_path, pool="prefork", concurrency=1, env=env,
                               queues=[prefix + "q"])
        producer.send_task("precision.block")
        assert _wait(lambda: client.get(prefix + "ran:block") == b"1", 20), first.tail()
        for i in range(3):
            producer.send_task("precision.mark", (i,))
        unacked = prefix + "unacked"
        assert _wait(lambda: client.hlen(unacked) == 3 and client.llen(prefix + "q") == 0, 20), first.tail()
        first.kill()  # SIGKILL the worker and its pool process: no warm shutdown, nothing restored
        assert client.hlen(unacked) == 3  # the prefetched tasks are still unacknowledged on the broker
        worker_factory("precisionapp", cwd=tmp_path, pool="prefork", concurrency=1, env=env, queues=[prefix + "q"])
        ran = [prefix + f"ran:mark:{i}" for i in range(3)]
        assert _wait(lambda: all(client.get(k) == b"1" for k in ran), 40)  # restored after the visibility timeout
        assert _wait(lambda: client.hlen(unacked) == 0, 10)
        assert client.get(prefix + "ran:block") == b"1" and client.llen(prefix + "q") == 0  # the running one: lost
    finally:
        producer.close()
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


class _SlowLink:
    """A local TCP proxy to RabbitMQ that delays every chunk: a slow network between producer and broker."""

    def __init__(self, delay: float):
        import socket
        import threading

        self.delay = delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5672))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, src, dst):
        import time

        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


def test_a_short_connection_timeout_makes_publishes_fail_on_a_slow_link():
    """CD152's mechanism with a real RabbitMQ: kombu bounds each (re)connect, retries included, by
    broker_connection_timeout; with no pool every publish connects. 50 ms per hop: 0.1 s fails, the default works."""
    import pytest
    from kombu.exceptions import OperationalError

    from tests.test_trust_support import rabbit_available

    if not rabbit_available():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    # one link per publish: kombu's global producer pools are keyed by the broker URL, not by the timeout
    links = {0.1: _SlowLink(0.05), 4.0: _SlowLink(0.05)}
    try:
        def publish(timeout):
            port = links[timeout].port
            app = Celery("slow", broker=f"amqp://guest:guest@127.0.0.1:{port}//", set_as_current=False)
            app.conf.update(broker_connection_timeout=timeout, broker_pool_limit=0)
            # default exchange, a routing key no queue has: RabbitMQ drops it, nothing is left behind
            return app.send_task("precision.nothing", exchange="", routing_key="cd-precision-no-such-queue")

        with pytest.raises(OperationalError, match="timed out"):
            publish(0.1)
        assert publish(4.0).id
        assert [f.subject for f in found("CD152", make_app(broker=AMQP, broker_connection_timeout=0.1))] == [
            "setting:broker_connection_timeout"]
    finally:
        for link in links.values():
            link.close()


def test_beat_names_cannot_be_checked_when_the_app_registers_no_task():
    app = Celery("t", broker=REDIS, set_as_current=False)
    app.conf.beat_schedule = {"a": {"task": "proj.tasks.a", "schedule": 60.0}, "b": {"task": "proj.tasks.b",
                                                                                    "schedule": 60.0}}
    got = findings_of(by_id("CD122"), make_snapshot(app))
    assert [(f.subject, f.impact, f.confidence) for f in got] == [
        ("beat:a", Impact.LOW, Confidence.INFERRED), ("beat:b", Impact.LOW, Confidence.INFERRED)]
    assert all(any("registers no task of its own" in e for e in f.evidence) for f in got)
    def a():
        return None
    app.task(name="proj.tasks.a", shared=False)(a)
    [real] = findings_of(by_id("CD122"), make_snapshot(app))
    assert (real.subject, real.impact) == ("beat:b", Impact.HIGH)


def test_acks_late_without_protection_is_the_early_ack_loss_narrowed():
    [finding] = found("CD102", make_app(task_acks_late=True))
    assert finding.impact is Impact.MEDIUM and any(e.startswith("impact medium: only a task whose pool process")
                                                   for e in finding.evidence)
    bare = Celery("t", broker=REDIS, set_as_current=False)
    bare.conf.update(task_acks_late=True)
    [fallback] = findings_of(by_id("CD102"), make_snapshot(bare))
    assert any("no task is registered" in e for e in fallback.evidence)
    bare.conf.update(task_reject_on_worker_lost=True)
    assert findings_of(by_id("CD102"), make_snapshot(bare)) == []


def test_the_ranking_says_why_a_finding_has_its_impact():
    from celery_doctor.ranking import rank

    [early] = found("CD101", make_app())
    [eager] = found("CD133", make_app(broker=AMQP, task_default_delivery_mode="transient", task_always_eager=True))
    by_check = {r.finding.check: r.why for r in rank([early, eager])}
    assert by_check["CD101"].startswith("impact low (Celery's default (at most once)")
    assert by_check["CD133"].startswith("impact medium (conditional, task_always_eager=True")
    [plain] = found("CD133", make_app(broker=AMQP, task_default_delivery_mode="transient"))
    assert rank([plain])[0].why.startswith("impact high (broker: high in the impact table)")
