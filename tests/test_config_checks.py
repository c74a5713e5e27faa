"""Config checks over real Celery app objects: each bad configuration is found, its fix is not."""
from __future__ import annotations

import datetime as dt

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

from celery_doctor.model import Confidence
from tests.conftest import by_id, findings_of, make_snapshot

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def make_app(broker=REDIS, tasks=None, **conf):
    app = Celery("t", broker=broker, set_as_current=False)
    app.conf.update(conf)
    for name, options in (tasks or {"t.work": {}}).items():
        def body(*args, **kwargs):
            return None
        app.task(name=name, shared=False, **options)(body)
    return app


def subjects(check_id, app, **kw):
    return sorted(f.subject for f in findings_of(by_id(check_id), make_snapshot(app, **kw)))


def test_acks_early_flags_default_and_not_acks_late():
    found = findings_of(by_id("CD101"), make_snapshot(make_app(tasks={"t.a": {}, "t.b": {"acks_late": True}})))
    assert [f.subject for f in found] == ["setting:task_acks_late"]
    assert any("1 of 2 tasks are acked when they start: t.a" in e for e in found[0].evidence)
    assert "task_acks_late=False (default)" in found[0].evidence
    assert subjects("CD101", make_app(task_acks_late=True)) == []


def test_acks_early_understands_old_uppercase_setting_names():
    app = Celery("t", broker=REDIS, set_as_current=False)
    app.config_from_object({"CELERY_ACKS_LATE": True, "CELERY_REJECT_ON_WORKER_LOST": True, "BROKER_URL": REDIS})
    app.task(name="t.a", shared=False)(make_app)
    snapshot = make_snapshot(app)
    assert findings_of(by_id("CD101"), snapshot) == []
    assert findings_of(by_id("CD102"), snapshot) == []
    assert snapshot.config.setting("task_acks_late").set_as == "CELERY_ACKS_LATE"


def test_acks_late_without_reject_on_worker_lost():
    found = findings_of(by_id("CD102"), make_snapshot(make_app(task_acks_late=True)))
    assert [f.subject for f in found] == ["setting:task_reject_on_worker_lost"]
    assert any("t.work" in e for e in found[0].evidence)
    assert subjects("CD102", make_app(task_acks_late=True, task_reject_on_worker_lost=True)) == []
    assert subjects("CD102", make_app(task_acks_late=True, task_retry_on_worker_lost=True)) == []
    # a per-task override protects that task
    assert subjects("CD102", make_app(tasks={"t.a": {"acks_late": True, "reject_on_worker_lost": True}})) == []


def test_acks_on_failure_false_drops_and_acks_on_timeout_false_loops():
    dropped = make_app(task_acks_late=True, task_acks_on_failure_or_timeout=False)
    assert "setting:task_acks_on_failure_or_timeout" in subjects("CD103", dropped)
    looping = make_app(task_acks_late=True, task_acks_on_timeout=False, task_time_limit=60)
    assert subjects("CD103", looping) == ["setting:task_acks_on_timeout"]
    # without a hard time limit there is no timeout to loop on
    assert subjects("CD103", make_app(task_acks_late=True, task_acks_on_timeout=False)) == []
    assert subjects("CD103", make_app(task_acks_late=True)) == []


def test_connection_loss_duplicates_only_with_acks_late():
    assert subjects("CD104", make_app(task_acks_late=True)) == [
        "setting:worker_cancel_long_running_tasks_on_connection_loss"]
    assert subjects("CD104", make_app(task_acks_late=True,
                                      worker_cancel_long_running_tasks_on_connection_loss=True)) == []
    assert subjects("CD104", make_app()) == []


def test_visibility_timeout_shorter_than_countdown_in_source(tree):
    src = tree({"proj/tasks.py": """
        from datetime import timedelta
        def later(t):
            t.apply_async((1,), countdown=2 * 60 * 60)
        def soon(t):
            t.apply_async((1,), countdown=30)
        """})
    found = findings_of(by_id("CD110"), make_snapshot(make_app(), source_dir=str(src)))
    assert len(found) == 1
    assert found[0].location.path.endswith("proj/tasks.py") and found[0].location.line == 3
    assert "visibility_timeout=3600 s (kombu default)" in found[0].evidence
    assert any("countdown 2 h" in e for e in found[0].evidence)
    fixed = make_app(broker_transport_options={"visibility_timeout": 4 * 3600})
    assert findings_of(by_id("CD110"), make_snapshot(fixed, source_dir=str(src))) == []
    # RabbitMQ has no visibility timeout
    assert findings_of(by_id("CD110"), make_snapshot(make_app(broker=AMQP), source_dir=str(src))) == []


def test_visibility_timeout_vs_acks_late_runtime():
    long_limit = make_app(tasks={"t.slow": {"acks_late": True, "time_limit": 7200}},
                          broker_transport_options={"visibility_timeout": 3600})
    found = findings_of(by_id("CD111"), make_snapshot(long_limit))
    assert len(found) == 1 and found[0].confidence is Confidence.CONFIGURED
    assert any("t.slow (time_limit 2 h)" in e for e in found[0].evidence)
    unbounded = findings_of(by_id("CD111"), make_snapshot(make_app(task_acks_late=True)))
    assert len(unbounded) == 1 and unbounded[0].confidence is Confidence.INFERRED
    assert subjects("CD111", make_app(task_acks_late=True, task_time_limit=600)) == []


def test_time_limit_zero_is_the_global_limit_or_none_for_the_visibility_timeout():
    # per task, 0 falls back to task_time_limit (billiard: `timeout or self.timeout`)
    zero = make_app(tasks={"t.slow": {"acks_late": True, "time_limit": 0}}, task_time_limit=7200)
    assert any("t.slow (time_limit 2 h)" in e for f in findings_of(by_id("CD111"), make_snapshot(zero)) for e in f.evidence)
    # a global 0 is no limit at all
    unbounded = findings_of(by_id("CD111"), make_snapshot(make_app(task_acks_late=True, task_time_limit=0)))
    assert len(unbounded) == 1 and unbounded[0].confidence is Confidence.INFERRED
    assert "task_time_limit=0 (set): no limit" in unbounded[0].evidence


def test_long_visibility_timeout_delays_recovery():
    assert subjects("CD112", make_app(broker_transport_options={"visibility_timeout": 43200})) == [
        "setting:broker_transport_options.visibility_timeout"]
    assert subjects("CD112", make_app()) == []


def test_redis_route_with_exchange_and_no_queue():
    app = make_app(tasks={"t.a": {}, "t.b": {}},
                   task_routes={"t.a": {"exchange": "reports", "routing_key": "daily"}, "t.b": {"queue": "b"}})
    assert subjects("CD113", app) == ["route:t.a"]
    assert subjects("CD113", make_app(broker=AMQP, task_routes={"t.work": {"exchange": "x", "routing_key": "y"}})) == []


def test_redis_cluster_url():
    assert subjects("CD114", make_app(broker="redis://10.0.0.1:7000,10.0.0.2:7000/0")) == ["setting:broker_url"]
    assert subjects("CD114", make_app()) == []


def test_route_to_queue_not_in_task_queues_and_router_errors():
    app = make_app(tasks={"t.report": {}, "t.mail": {}}, task_queues=[Queue("celery"), Queue("mail")],
                   task_routes={"t.report": {"queue": "reports"}, "t.mail": {"queue": "mail"}})
    assert subjects("CD120", app) == ["queue:reports"]
    missing_default = make_app(task_queues=[Queue("only")])
    assert subjects("CD120", missing_default) == ["queue:celery"]
    strict = make_app(tasks={"t.report": {}}, task_queues=[Queue("celery")], task_create_missing_queues=False,
                      task_routes={"t.report": {"queue": "reports"}})
    found = findings_of(by_id("CD120"), make_snapshot(strict))
    assert [f.subject for f in found] == ["task:t.report"]
    assert "QueueNotFound" in found[0].evidence[0]
    fixed = make_app(tasks={"t.report": {}}, task_queues=[Queue("celery"), Queue("reports")],
                     task_routes={"t.report": {"queue": "reports"}})
    assert subjects("CD120", fixed) == []


def test_route_to_undeclared_queue_names_the_beat_entries_that_publish_there():
    app = make_app(tasks={"t.report": {}}, task_queues=[Queue("celery")], task_routes={"t.report": {"queue": "reports"}},
                   beat_schedule={"hourly": {"task": "t.report", "schedule": 3600.0},
                                  "pinned": {"task": "t.report", "schedule": 60.0, "options": {"queue": "celery"}}})
    [found] = findings_of(by_id("CD120"), make_snapshot(app))
    assert found.subject == "queue:reports"
    assert "beat entries publishing there: hourly" in found.evidence  # through its task's route; 'pinned' is not


def test_route_key_matching_no_task():
    app = make_app(tasks={"proj.tasks.sync_inventory": {}},
                   task_routes={"proj.tasks.sync_inventry": {"queue": "inv"}, "proj.tasks.*": {"queue": "all"}})
    found = findings_of(by_id("CD121"), make_snapshot(app))
    assert [f.subject for f in found] == ["route:proj.tasks.sync_inventry"]
    assert subjects("CD121", make_app(tasks={"proj.tasks.sync_inventory": {}},
                                      task_routes={"proj.tasks.sync_inventory": {"queue": "inv"}})) == []


def test_beat_entries_unregistered_and_without_expires():
    app = make_app(tasks={"t.report": {}}, beat_schedule={
        "typo": {"task": "t.reprot", "schedule": 60.0, "options": {"expires": 50}},
        "no-expiry": {"task": "t.report", "schedule": crontab(minute=0)},
        "good": {"task": "t.report", "schedule": 300.0, "options": {"expires": 240}},
        "top-level": {"task": "t.report", "schedule": 60.0, "expires": 30},
    })
    assert subjects("CD122", app) == ["beat:typo"]
    found = {f.subject: f for f in findings_of(by_id("CD141"), make_snapshot(app))}
    assert sorted(found) == ["beat:no-expiry", "beat:top-level"]
    assert found["beat:top-level"].impact.value == "high"


def test_always_eager():
    assert subjects("CD123", make_app(task_always_eager=True)) == ["setting:task_always_eager"]
    assert subjects("CD123", make_app()) == []


def test_rabbitmq_confirms_and_publish_retry():
    assert subjects("CD130", make_app(broker=AMQP)) == ["setting:broker_transport_options.confirm_publish"]
    assert subjects("CD130", make_app(broker=AMQP, broker_transport_options={"confirm_publish": True})) == []
    assert subjects("CD130", make_app()) == []
    assert subjects("CD131", make_app(task_publish_retry=False)) == ["setting:task_publish_retry"]
    assert subjects("CD131", make_app(task_publish_retry_policy={"max_retries": 0})) == ["setting:task_publish_retry"]
    assert subjects("CD131", make_app()) == []


def test_connection_retry_settings():
    found = findings_of(by_id("CD132"), make_snapshot(make_app(broker_connection_retry_on_startup=False,
                                                               broker_connection_max_retries=3)))
    assert len(found) == 1 and len(found[0].evidence) == 2
    assert subjects("CD132", make_app()) == []


def test_transient_and_non_durable():
    app = make_app(broker=AMQP, task_default_delivery_mode="transient",
                   task_queues=[Queue("celery"), Queue("tmp", durable=False), Queue("gone", auto_delete=True)])
    assert subjects("CD133", app) == ["queue:gone", "queue:tmp", "setting:task_default_delivery_mode"]
    assert subjects("CD133", make_app(broker=AMQP, task_queues=[Queue("celery")])) == []


def test_consumer_timeout_static(tree):
    src = tree({"p/t.py": "def f(t):\n    t.apply_async(countdown=3 * 3600)\n"})
    app = make_app(broker=AMQP, tasks={"t.slow": {"acks_late": True, "time_limit": 4000}})
    found = findings_of(by_id("CD134"), make_snapshot(app, source_dir=str(src)))
    assert len(found) == 1 and found[0].confidence is Confidence.INFERRED
    assert any("t.slow" in e for e in found[0].evidence) and any("countdown 3 h" in e for e in found[0].evidence)
    known = findings_of(by_id("CD134"), make_snapshot(app, options={"consumer_timeout": 7200}))
    assert known == []  # 4000 s < 2 h, and no source in this snapshot
    assert subjects("CD134", make_app(broker=AMQP, tasks={"t.a": {"acks_late": True, "time_limit": 600}})) == []


def test_prefetch_with_long_tasks():
    app = make_app(tasks={"t.slow": {"time_limit": 900}}, worker_prefetch_multiplier=4)
    assert subjects("CD140", app) == ["setting:worker_prefetch_multiplier"]
    assert subjects("CD140", make_app(tasks={"t.slow": {"time_limit": 900}}, worker_prefetch_multiplier=1)) == []
    assert subjects("CD140", make_app(worker_prefetch_multiplier=0)) == ["setting:worker_prefetch_multiplier"]
    assert subjects("CD140", make_app(tasks={"t.quick": {"time_limit": 5}})) == []


def test_pickle_and_serializer_mismatch():
    assert subjects("CD142", make_app(accept_content=["json", "pickle"])) == ["setting:accept_content"]
    assert subjects("CD142", make_app()) == []
    mismatch = make_app(task_serializer="msgpack", accept_content=["json"])
    assert subjects("CD143", mismatch) == ["setting:accept_content"]
    assert subjects("CD143", make_app(accept_content=["application/json"])) == []


def test_results_look_lost_and_time_limits():
    assert subjects("CD144", make_app(result_expires=dt.timedelta(minutes=5))) == ["setting:result_expires"]
    assert subjects("CD144", make_app()) == []
    soft_high = make_app(tasks={"t.a": {"soft_time_limit": 600, "time_limit": 300}})
    assert subjects("CD145", soft_high) == ["setting:task_soft_time_limit"]
    soft_only = make_app(tasks={"t.a": {"soft_time_limit": 600}})
    assert subjects("CD145", soft_only) == ["setting:task_time_limit"]
    assert subjects("CD145", make_app(tasks={"t.a": {"soft_time_limit": 540, "time_limit": 600}})) == []


def test_naive_datetime_expires(tree):
    src = tree({"p/views.py": """
        from datetime import datetime, timedelta, timezone
        def bad(t):
            t.apply_async((1,), expires=datetime.utcnow() + timedelta(hours=1))
        def good(t):
            t.apply_async((1,), expires=datetime.now(timezone.utc) + timedelta(hours=1))
            t.apply_async((1,), expires=3600)
        """})
    found = findings_of(by_id("CD146"), make_snapshot(make_app(), source_dir=str(src)))
    assert [(f.location.line) for f in found] == [3]


def test_every_config_check_is_quiet_on_a_careful_redis_app():
    app = make_app(
        tasks={"t.a": {"time_limit": 300, "soft_time_limit": 240}},
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True, worker_state_db="/var/run/celery/%n.state",
        task_queues=[Queue("celery")], beat_schedule={"a": {"task": "t.a", "schedule": 600.0, "options": {"expires": 500}}},
    )
    snapshot = make_snapshot(app)
    from celery_doctor.registry import load_registry

    noisy = {c.id: findings_of(c, snapshot) for c in load_registry().checks
             if c.id.startswith("CD1") and c.needs <= {"config", "source"} and "source" not in c.needs}
    assert {k: v for k, v in noisy.items() if v} == {}
