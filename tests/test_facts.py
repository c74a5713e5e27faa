"""The facts (celery_doctor.facts) against Celery's own behaviour: real Celery apps, and where the question is what
Celery does at runtime, Celery's, kombu's and billiard's own code (router and publish, beat schedules, the worker's
Request, the prefork pool)."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from kombu import Queue

from celery_doctor.collectors.config import collect_config
from celery_doctor.facts import beat, routing, timeouts
from celery_doctor.parts import config as config_part
from celery_doctor.parts import source as source_part
from tests.test_trust_support import redis_available

# Celery 5.7 deprecates the task attribute `queue` (decorator queue=) but still routes by it: that is what we test.
DEPRECATED_QUEUE = pytest.mark.filterwarnings("ignore::celery.exceptions.CDeprecationWarning")


def app_with(tasks: dict | None = None, broker: str = "memory://", **conf) -> Celery:
    app = Celery("facts", broker=broker, set_as_current=False)
    app.conf.update(conf)
    for name, options in (tasks or {"facts.work": {}}).items():
        def body(*args, **kwargs):
            return None
        app.task(name=name, shared=False, **options)(body)
    return app


# ------------------------------------------------------------------------------------------------ parts


def test_part_examples_are_plain_data_with_celerys_defaults():
    config = config_part.example()
    assert config.value("task_acks_late") is False and config.setting("task_acks_late").explicit is False
    assert config.default_queue == "celery" and list(config.tasks) == ["proj.tasks.work"]
    tuned = config_part.example(settings={"task_acks_late": True}, tasks=["a.b", config_part.example_task("c.d")])
    assert tuned.setting("task_acks_late").explicit and sorted(tuned.tasks) == ["a.b", "c.d"]
    tree = source_part.example({"proj/tasks.py": "x = 1\n", "proj/bad.py": "def (:\n"})
    assert [f.path for f in tree.parsed()] == ["proj/tasks.py"]
    assert tree.file("proj/bad.py").error.startswith("syntax error at line 1")


def test_setting_locations_are_found_once_when_collected(tmp_path, monkeypatch):
    module = tmp_path / "factsconf.py"
    module.write_text("BROKER_URL = 'memory://'\n# acks\nCELERY_ACKS_LATE = True\nCELERYD_TASK_TIME_LIMIT = 60\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("facts", set_as_current=False)
    app.config_from_object("factsconf")
    config = collect_config(app)
    module.unlink()  # the part holds what was found: nothing is read when a check asks
    assert config.located("task_acks_late").line == 3  # under its old name
    assert config.located("task_time_limit").line == 4
    assert config.located("task_routes") is None


# --------------------------------------------------------------------------------------------- timeouts


def test_visibility_timeout_is_kombus_default_or_the_transport_option():
    from kombu.transport.redis import Channel

    assert "visibility_timeout" in Channel.from_transport_options
    default = collect_config(app_with(broker="redis://127.0.0.1:6379/13"))
    assert timeouts.redis_visibility_timeout(default) == (float(Channel.visibility_timeout), False)
    assert default.visibility_timeout == timeouts.redis_visibility_timeout(default)  # one reading
    tuned = collect_config(app_with(broker="redis://127.0.0.1:6379/13",
                                    broker_transport_options={"visibility_timeout": 42}))
    assert timeouts.redis_visibility_timeout(tuned) == (42.0, True)
    assert timeouts.describe_visibility_timeout(tuned) == "visibility_timeout=42 s (42 s, set in broker_transport_options)"


@pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")
def test_visibility_timeout_is_what_kombus_redis_channel_uses():
    for options in ({}, {"visibility_timeout": 42}):
        app = app_with(broker="redis://127.0.0.1:6379/13", broker_transport_options=options)
        expected = timeouts.redis_visibility_timeout(collect_config(app))[0]
        with app.connection_for_write() as connection:
            assert float(connection.default_channel.visibility_timeout) == expected


def test_consumer_timeout_comes_from_the_options_or_rabbitmqs_default():
    assert timeouts.rabbitmq_consumer_timeout({}) == timeouts.ConsumerTimeout(1800.0, False)
    assert timeouts.rabbitmq_consumer_timeout({"consumer_timeout": 600}) == timeouts.ConsumerTimeout(600.0, True)
    assert timeouts.rabbitmq_consumer_timeout({"consumer_timeout": 0}).given is False
    assert timeouts.rabbitmq_consumer_timeout(None).describe() == (
        "consumer_timeout assumed 30 min (RabbitMQ default; pass --consumer-timeout)")


# ---------------------------------------------------------------------------------------------- routing


def published_to(app: Celery, task_name: str) -> list[str]:
    """The queues that gained a message when the task was published for real (kombu's memory transport)."""
    names = {q.name for q in app.amqp.queues.values()} | {"celery", "reports", "emails", "other", "dq"}
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        before = {n: channel._size(n) for n in names}
        app.tasks[task_name].apply_async(connection=connection)
        return sorted(n for n in names if channel._size(n) != before[n])


@DEPRECATED_QUEUE
def test_routes_are_where_celery_publishes():
    app = app_with(
        {"t.plain": {}, "t.routed": {}, "t.glob.a": {}, "t.re.a": {}, "t.both": {"queue": "dq"}, "t.own": {"queue": "dq"},
         "t.xy": {}},
        task_queues=[Queue("celery"), Queue("reports"), Queue("emails"), Queue("dq")],
        task_routes=[{"t.routed": {"queue": "reports"}, "t.both": {"queue": "reports"}, "t.glob.*": "emails",
                      "t.x?": {"queue": "reports"}},
                     [(re.compile(r"t\.re\..*"), {"queue": "emails"})]])
    config = collect_config(app)
    for name in ("t.plain", "t.routed", "t.glob.a", "t.re.a", "t.both", "t.own", "t.xy"):
        assert published_to(app, name) == [routing.task_queue(config, name)], name
    assert routing.task_queue(config, "t.both") == "dq"  # the decorator's queue wins over task_routes
    assert routing.task_queue(config, "t.xy") == "celery"  # '?' is not a glob character for Celery
    rules = {r.pattern: r for r in config.route_rules}
    assert rules["t.glob.*"].matches("t.glob.a") and not rules["t.x?"].matches("t.xy")
    assert rules["t.x?"].matches("t.x?") and rules[r"t\.re\..*"].matches("t.re.a")


@DEPRECATED_QUEUE
def test_queue_declared_and_routed_queues():
    app = app_with({"t.a": {}, "t.b": {"queue": "other"}}, task_queues=[Queue("celery"), Queue("reports")],
                   task_routes={"t.a": {"queue": "reports"}},
                   beat_schedule={"e": {"task": "t.a", "schedule": 60, "options": {"queue": "emails"}},
                                  "f": {"task": "t.a", "schedule": 60}})
    config = collect_config(app)
    assert published_to(app, "t.b") == ["other"]  # created on the fly: task_create_missing_queues
    assert routing.queue_declared(config, "reports") and not routing.queue_declared(config, "other")
    assert routing.routed_queues(config) == {"celery": [], "reports": ["t.a"], "other": ["t.b"], "emails": []}
    assert [routing.beat_queue(config, e) for e in config.beat] == ["emails", "reports"]
    default_only = collect_config(app_with())
    assert routing.queue_declared(default_only, "celery") and not routing.queue_declared(default_only, "x")


def test_a_route_celery_cannot_resolve_is_an_error_not_a_queue():
    app = app_with({"t.a": {}}, task_queues=[Queue("celery")], task_create_missing_queues=False,
                   task_routes={"t.a": {"queue": "reports"}})
    config = collect_config(app)
    with pytest.raises(Exception, match="reports"):
        app.tasks["t.a"].apply_async()
    assert "QueueNotFound" in routing.task_route(config, "t.a").error and routing.task_queue(config, "t.a") is None


# ------------------------------------------------------------------------------------------------- beat

CRONTABS = [
    (crontab(), 60), (crontab(minute=0), 3600), (crontab(minute="*/15"), 900), (crontab(minute="0,50"), 600),
    (crontab(minute=30, hour=9, day_of_week="1-5"), 86400), (crontab(minute=0, hour=0, day_of_month=1), 28 * 86400),
    (crontab(minute=0, hour="*/6", day_of_week="sun"), 6 * 3600),
    (crontab(minute=0, hour=0, day_of_month=29, month_of_year=2), 1461 * 86400),
]


@pytest.mark.parametrize("cron,period", CRONTABS, ids=[str(c) for c, _ in CRONTABS])
def test_crontab_period_is_the_smallest_gap_between_due_times_celery_computes(cron, period):
    assert beat.schedule_period(cron) == period
    app = Celery("facts", set_as_current=False)  # timezone UTC, like the due times
    due = beat.crontab_due_times(cron)
    for earlier, later in list(zip(due, due[1:]))[:50]:
        probe = crontab(minute=cron._orig_minute, hour=cron._orig_hour, day_of_week=cron._orig_day_of_week,
                        day_of_month=cron._orig_day_of_month, month_of_year=cron._orig_month_of_year, app=app)
        probe.nowfun = lambda: later - timedelta(seconds=1)
        assert not probe.is_due(earlier).is_due
        probe.nowfun = lambda: later
        assert probe.is_due(earlier).is_due


def test_other_schedules_and_the_collected_beat_entries():
    assert beat.schedule_period(schedule(timedelta(minutes=5))) == 300
    assert beat.schedule_period(timedelta(hours=1)) == 3600 and beat.schedule_period(30) == 30
    assert beat.schedule_period("every day") is None
    app = app_with(beat_schedule={"cron": {"task": "facts.work", "schedule": crontab(minute="*/10")},
                                  "plain": {"task": "facts.work", "schedule": 90.0}})
    config = collect_config(app)
    assert [(e.name, e.interval_s) for e in config.beat] == [("cron", 600.0), ("plain", 90.0)]
    assert [(e.name, s) for e, s in beat.beat_periods(config)] == [("cron", 600.0), ("plain", 90.0)]
