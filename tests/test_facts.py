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


def test_visibility_timeout_without_an_app_and_on_a_worker():
    """One default for every reader: no app config (the collector, trace), and a worker that reported its broker
    transport with or without its own visibility_timeout."""
    from kombu.transport.redis import Channel

    from celery_doctor.parts import workers as workers_part

    default = (float(Channel.visibility_timeout), False)
    assert timeouts.redis_visibility_timeout(None) == timeouts.transport_visibility_timeout({}) == default
    assert timeouts.transport_visibility_timeout({"visibility_timeout": timedelta(hours=2)}) == (7200.0, True)
    reported = workers_part.example_worker("celery@w", transport_options={"visibility_timeout": 600})
    assert timeouts.worker_visibility_timeout(reported) == (600.0, True)
    in_conf = workers_part.example_worker("celery@w", transport_options={},
                                          conf={"broker_transport_options": {"visibility_timeout": 900}})
    assert timeouts.worker_visibility_timeout(in_conf) == (900.0, True)
    assert timeouts.worker_visibility_timeout(workers_part.example_worker("celery@w", transport_options={})) == default
    silent = workers_part.example_worker("celery@w", broker_transport=None, transport_options={}, conf={})
    assert timeouts.worker_visibility_timeout(silent) is None  # only the app's is known then


def test_consumer_timeout_comes_from_the_options_or_rabbitmqs_default():
    from celery_doctor.options import SnapshotOptions

    assert timeouts.rabbitmq_consumer_timeout(SnapshotOptions()) == timeouts.ConsumerTimeout(1800.0, False)
    assert timeouts.rabbitmq_consumer_timeout(SnapshotOptions(consumer_timeout=600)) == timeouts.ConsumerTimeout(600.0, True)
    assert timeouts.rabbitmq_consumer_timeout(SnapshotOptions(consumer_timeout=0)).given is False
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


def test_exchange_routes_are_where_celery_publishes_without_a_queue():
    """Routes that name an exchange and no queue: Celery's router keeps the exchange and routing key, and the message
    goes through the exchange's bindings (kombu's memory transport, as Redis, resolves them itself)."""
    from celery.signals import before_task_publish
    from kombu import Exchange

    app = app_with({"t.key": {}, "t.queued": {}, "t.plain": {}},
                   task_routes=[{"t.key": {"exchange": "events", "routing_key": "work.created"},
                                 "t.queued": {"exchange": "events", "routing_key": "x", "queue": "reports"},
                                 "audit.*": {"exchange": Exchange("audit", "topic"), "routing_key": "audit.any"}}])
    config = collect_config(app)
    assert routing.exchange_routes(config) == {"events": ["t.key"], "audit": []}  # audit.*: no registered task
    assert routing.task_queue(config, "t.key") is None and routing.route_exchange(config.routes["t.queued"]) is None
    assert [routing.rule_exchange(r) for r in config.route_rules] == ["events", None, "audit"]
    published: list[tuple[str, str]] = []

    def seen(exchange=None, routing_key=None, **kwargs):
        published.append((getattr(exchange, "name", exchange), routing_key))

    before_task_publish.connect(seen, weak=False)
    try:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            Queue("bound", Exchange("events", "direct"), "work.created")(channel).declare()
            app.tasks["t.key"].apply_async(connection=connection)
            assert channel._size("bound") == 1  # through the binding, to no queue of the app's
            app.send_task("audit.nightly", connection=connection)  # the entry applies to a name sent as text
    finally:
        before_task_publish.disconnect(seen)
    assert published == [("events", "work.created"), ("audit", "audit.any")]


@pytest.mark.parametrize("conf", [
    {},
    {"task_default_queue_type": "quorum", "task_queue_max_priority": 10},
    {"task_queue_max_priority": 10, "task_queues": [
        Queue("a"), Queue("b", queue_arguments={"x-max-priority": 5, "x-message-ttl": 60000}), Queue("c", max_priority=3),
        Queue("q", queue_arguments={"x-queue-type": "quorum"})]},
    {"task_queues": [Queue("d", queue_arguments={"x-max-priority": 5}, max_priority=7)]},
], ids=["default", "default-quorum-priority", "task_queues-priority", "own-priority-wins"])
def test_declared_queue_arguments_are_what_celery_declares(conf):
    """The arguments of app.amqp.queues as kombu's Queue.queue_declare sends them (prepare_queue_arguments: the
    Queue's max_priority, expires, ttl and lengths over its queue_arguments)."""
    from kombu.transport.base import to_rabbitmq_queue_arguments

    app = app_with(broker="amqp://guest@127.0.0.1//", **conf)
    config = collect_config(app)
    declared = {name: to_rabbitmq_queue_arguments(queue.queue_arguments or {}, expires=queue.expires,
                                                  message_ttl=queue.message_ttl, max_length=queue.max_length,
                                                  max_length_bytes=queue.max_length_bytes,
                                                  max_priority=queue.max_priority)
                for name, queue in app.amqp.queues.items()
                if routing.queue_declared(config, name)}  # not the queues routes create on the fly
    assert routing.declared_queue_arguments(config) == declared


@DEPRECATED_QUEUE
def test_a_beat_entry_may_name_its_queue_as_a_kombu_queue():
    app = app_with(beat_schedule={"e": {"task": "facts.work", "schedule": 60, "options": {"queue": Queue("emails")}}})
    config = collect_config(app)
    assert [routing.beat_queue(config, e) for e in config.beat] == ["emails"]
    assert routing.routed_queues(config) == {"celery": ["facts.work"], "emails": []}


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


# ----------------------------------------------------------------------------------------- source tasks

TASK_FORMS = {
    "__init__.py": "",
    "celery.py": """
        from functools import partial

        from celery import Celery, shared_task

        app = Celery("proj", broker="memory://", set_as_current=False)
        celery = app
        critical = shared_task(acks_late=True)
        reliable = partial(app.task, acks_late=True, reject_on_worker_lost=True)
        task = app.task
        """,
    "tasks.py": """
        from celery import Task, shared_task

        from . import celery as setup
        from .celery import app, celery, critical, reliable, task


        @app.task
        def plain():
            return 1


        @shared_task
        def shared():
            return 1


        @celery.task
        def via_celery():
            return 1


        @app.task(bind=True)
        def bound(self):
            return 1


        @shared_task(name="custom.name", acks_late=True)
        def named():
            return 1


        @critical
        def from_factory():
            return 1


        @setup.critical
        def from_factory_module():
            return 1


        @reliable(time_limit=10)
        def from_partial():
            return 1


        @task
        def aliased():
            return 1


        class Base(Task):
            acks_late = True


        class Job(Base):
            def run(self):
                return 1


        app.register_task(Job())


        def helper():
            return 1
        """,
}


def _discovered(tmp_path, package: str, files: dict):
    from celery_doctor import pyast
    from celery_doctor.collectors.source import collect_source
    from tests.conftest import write_tree

    root = write_tree(tmp_path, {f"{package}/{name}": text for name, text in files.items()})
    return pyast.project(collect_source([str(root / package)]))


REGISTERED = """
import json, sys
module = __import__(sys.argv[1] + ".tasks", fromlist=["app"])
module.app.finalize()
print(json.dumps({name: {o: getattr(task, o) for o in ("acks_late", "reject_on_worker_lost", "time_limit")}
                  for name, task in module.app.tasks.items() if not name.startswith("celery.")}))
"""


def test_every_form_of_task_declaration_is_found_as_celery_registers_it(tmp_path):
    import json
    import subprocess
    import sys

    package = "factsproj"
    proj = _discovered(tmp_path, package, TASK_FORMS)
    # imported in a child process: shared_task registers its tasks with every app created later in the process
    done = subprocess.run([sys.executable, "-c", REGISTERED, package], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True)
    registered = json.loads(done.stdout)
    found = {t.name: t for t in proj.tasks}
    assert set(found) == set(registered) == {
        f"{package}.tasks.{n}" for n in ("plain", "shared", "via_celery", "bound", "from_factory",
                                          "from_factory_module", "from_partial", "aliased", "Job")} | {"custom.name"}
    for name, task in found.items():
        for option in ("acks_late", "reject_on_worker_lost", "time_limit"):
            node = task.option(option)
            if node is not None:
                assert proj.constant(task.module, node) == registered[name][option], (name, option)
    assert found[f"{package}.tasks.from_factory"].option_origin["acks_late"] == "decorator factory critical"
    assert found[f"{package}.tasks.bound"].bound and not found[f"{package}.tasks.plain"].bound
    assert found[f"{package}.tasks.Job"].option_origin["acks_late"] == "class Base"


def test_other_libraries_task_decorators_are_not_celery_tasks():
    from celery_doctor import pyast

    tree = source_part.example({"proj/__init__.py": "", "proj/jobs.py": """
        import prefect
        from invoke import task

        @task
        def build(c):
            pass

        @prefect.task
        def flow_step():
            pass

        from celery import shared_task

        @shared_task
        def real():
            pass
        """})
    assert [t.name for t in pyast.project(tree).tasks] == ["proj.jobs.real"]


def test_config_and_source_checks_see_the_same_tasks():
    """literal_delays (CD110, CD134) and the source checks use one discovery: a factory's or a base class's
    default_retry_delay counts for both."""
    from celery_doctor import pyast

    tree = source_part.example({"proj/__init__.py": "", "proj/tasks.py": """
        from celery import Task, shared_task

        slow_retry = shared_task(default_retry_delay=7200)

        class Patient(Task):
            default_retry_delay = 5400

        @slow_retry
        def a():
            pass

        @shared_task(base=Patient)
        def b():
            pass
        """})
    delays = {d.code: d.seconds for d in pyast.literal_delays(tree)}
    assert delays == {"a: default_retry_delay": 7200.0, "b: default_retry_delay": 5400.0}
    proj = pyast.project(tree)
    assert sorted(t.name for t in proj.tasks) == ["proj.tasks.a", "proj.tasks.b"]


# ------------------------------------------------------------------------------------------------- acks

ACK_CASES = [
    {},
    {"task_acks_late": True},
    {"task_acks_late": True, "task_reject_on_worker_lost": True},
    {"task_acks_late": True, "task_retry_on_worker_lost": True},
    {"task_retry_on_worker_lost": True},
    {"task_acks_late": True, "task_acks_on_failure_or_timeout": False},
    {"task_acks_late": True, "task_acks_on_timeout": False},
    {"task_acks_late": True, "task_acks_on_failure": False, "task_acks_on_timeout": True},
    {"task_acks_late": True, "task_acks_on_failure_or_timeout": False, "task_acks_on_failure": True},
    {"task_acks_late": True, "task_reject_on_worker_lost": True, "task_acks_on_failure_or_timeout": False},
]


def worker_outcome(app: Celery, task_name: str, exc: BaseException) -> str:
    """What Celery's own worker Request does with the message when the task ends with `exc`."""
    from billiard.einfo import ExceptionInfo
    from celery.contrib.testing.mocks import TaskMessage
    from celery.signals import before_task_publish
    from celery.worker.request import Request

    from celery_doctor.facts import acks

    seen: list[str] = []

    def republished(**kwargs):
        seen.append(acks.RETRIED)

    task = app.tasks[task_name]
    message = TaskMessage(task.name, id="facts-acks", args=(), kwargs={})
    request = Request(message, app=app, task=task, on_ack=lambda *a: seen.append(acks.ACKED),
                      on_reject=lambda logger, errors, requeue: seen.append(acks.REQUEUED if requeue else acks.REJECTED))
    before_task_publish.connect(republished, weak=False)
    try:
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - the ExceptionInfo Celery builds from the pool's failure
            einfo = ExceptionInfo()
        if not task.acks_late:
            request.on_accepted(pid=1, time_accepted=0)  # early ack: the worker acks when a process takes it
            seen[:] = [acks.ACKED_ON_RECEIPT] if seen == [acks.ACKED] else seen
        request.on_failure(einfo)
    finally:
        before_task_publish.disconnect(republished)
    if acks.RETRIED in seen:
        return acks.RETRIED
    return seen[0]


@pytest.mark.parametrize("conf", ACK_CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "defaults" for c in ACK_CASES])
def test_effective_acks_are_what_celerys_worker_does(conf):
    from billiard.exceptions import WorkerLostError
    from celery.exceptions import TimeLimitExceeded

    from celery_doctor.facts.acks import task_acks

    app = app_with({"facts.work": {}}, backend="cache+memory://", **conf)
    config = collect_config(app)
    fact = task_acks(config, config.tasks["facts.work"])
    assert worker_outcome(app, "facts.work", WorkerLostError("killed")) == fact.on_worker_lost
    assert worker_outcome(app, "facts.work", ValueError("boom")) == fact.on_failure
    assert worker_outcome(app, "facts.work", TimeLimitExceeded(1)) == fact.on_timeout


@pytest.mark.parametrize("conf", ACK_CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "defaults" for c in ACK_CASES])
def test_requeued_on_is_when_celerys_worker_rejects_with_requeue(conf):
    """Which ends of a run put the same message back (WorkerLostError, TimeLimitExceeded), and that a failure never
    does: acks_on_failure_or_timeout=False drops failed messages, it does not requeue them."""
    from billiard.exceptions import WorkerLostError
    from celery.exceptions import TimeLimitExceeded

    from celery_doctor.facts.acks import HARD_TIME_LIMIT, REQUEUED, WORKER_LOST, requeued_on, task_acks
    from celery_doctor.facts.limits import task_time_limits

    for options in ({}, {"time_limit": 60}):
        app = app_with({"facts.work": options}, backend="cache+memory://", **conf)
        config = collect_config(app)
        info = config.tasks["facts.work"]
        ends = requeued_on(task_acks(config, info), task_time_limits(config, info))
        assert (WORKER_LOST in ends) == (worker_outcome(app, "facts.work", WorkerLostError("killed")) == REQUEUED)
        timed_out = worker_outcome(app, "facts.work", TimeLimitExceeded(60)) == REQUEUED
        assert (HARD_TIME_LIMIT in ends) == (timed_out and "time_limit" in options)  # no limit: it never times out
        assert worker_outcome(app, "facts.work", ValueError("boom")) != REQUEUED


def test_acks_per_task_override_the_app_settings():
    from celery_doctor.facts.acks import ACKED, REQUEUED, task_acks

    app = app_with({"t.default": {}, "t.safe": {"reject_on_worker_lost": True}, "t.early": {"acks_late": False}},
                   task_acks_late=True)
    config = collect_config(app)
    outcome = {name: task_acks(config, info).on_worker_lost for name, info in config.tasks.items()}
    assert outcome == {"t.default": ACKED, "t.safe": REQUEUED, "t.early": "acked when started"}
    # a TaskInfo without values (the part's example) inherits the app's settings, as Task.bind does
    example = config_part.example(settings={"task_acks_late": True, "task_acks_on_failure_or_timeout": False},
                                  tasks=[config_part.example_task("t.x", acks_late=None, acks_on_failure=None,
                                                                  acks_on_failure_or_timeout=None, acks_on_timeout=None)])
    fact = task_acks(example, example.tasks["t.x"])
    assert fact.acks_late and fact.acks_on_failure is False and fact.acks_on_timeout is False


# ----------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("task_options,conf", [
    ({"time_limit": 0, "soft_time_limit": 0}, {"task_time_limit": 30, "task_soft_time_limit": 20}),
    ({"time_limit": 10, "soft_time_limit": 5}, {"task_time_limit": 30, "task_soft_time_limit": 20}),
    ({}, {"task_time_limit": 30}),
    ({"time_limit": 0}, {}),
    ({}, {}),
], ids=["zero-falls-back", "own", "inherited", "zero-no-global", "none"])
def test_time_limits_are_what_the_prefork_pool_enforces(task_options, conf):
    """Celery's Request hands `time_limit or task.time_limit` to the pool, and billiard's Pool.apply_async uses
    `timeout or self.timeout`, the pool being created with the worker's task_time_limit/task_soft_time_limit."""
    from billiard.pool import Pool
    from celery.contrib.testing.mocks import TaskMessage
    from celery.worker.request import Request

    from celery_doctor.facts.limits import task_time_limits

    app = app_with({"facts.work": task_options}, **conf)
    config = collect_config(app)
    pool = Pool(processes=1, timeout=conf.get("task_time_limit"), soft_timeout=conf.get("task_soft_time_limit"))
    try:
        applied = []

        class PreforkPool:  # celery.concurrency.prefork.TaskPool hands apply_async to billiard's pool
            def apply_async(self, target, args=None, kwargs=None, **options):
                result = pool.apply_async(abs, (1,), soft_timeout=options.get("soft_timeout"),
                                          timeout=options.get("timeout"))
                applied.append((result._soft_timeout or None, result._timeout or None))
                result.get(timeout=10)
                return result

        task = app.tasks["facts.work"]
        Request(TaskMessage(task.name, id="limits", args=(), kwargs={}), app=app, task=task).execute_using_pool(
            PreforkPool())
    finally:
        pool.close()
        pool.join()
    limits = task_time_limits(config, config.tasks["facts.work"])
    assert applied == [(limits.soft, limits.hard)]


# ------------------------------------------------------------------------------ beat expiry and context


def _published(app, queue: str = "celery") -> list:
    """The messages waiting in an in-process (memory://) queue, drained."""
    out = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        try:
            while True:
                try:
                    message = simple.get(timeout=0.2)
                except simple.Empty:
                    return out
                out.append(message)
                message.ack()
        finally:
            simple.close()


def test_entry_expires_is_the_expires_beats_publishes_carry():
    from celery.beat import Scheduler

    app = app_with(tasks={"facts.own": {"expires": 120}, "facts.plain": {}}, beat_schedule={
        "given": {"task": "facts.plain", "schedule": 60.0, "options": {"expires": 50}},
        "inherited": {"task": "facts.own", "schedule": 60.0},
        "none": {"task": "facts.plain", "schedule": 60.0},
    }, task_default_queue="facts-beat-expires")  # memory:// queues are per process: one of its own
    config = collect_config(app)
    told = {e.name: beat.entry_expires(config, e) for e in config.beat}
    assert told == {"given": (50, "options"), "inherited": (120, "task"), "none": (None, "")}
    scheduler = Scheduler(app, lazy=True)
    scheduler.update_from_dict(app.conf.beat_schedule)
    for name in ("given", "inherited", "none"):
        scheduler.apply_async(scheduler.schedule[name])
        [message] = _published(app, "facts-beat-expires")
        assert (message.headers.get("expires") is not None) == (told[name][0] is not None), name


def test_describe_period_and_runs_within():
    app = app_with(beat_schedule={"cron": {"task": "facts.work", "schedule": crontab(minute="*/5")},
                                  "plain": {"task": "facts.work", "schedule": 90.0}})
    cron, plain = collect_config(app).beat
    assert beat.describe_period(cron).startswith("runs at most every 5 min (the smallest gap")
    assert beat.describe_period(plain) == "runs every 90 s"
    assert beat.runs_within(3600, 60) == 60 and beat.runs_within(3600, None) is None


def test_eager_reason_matches_what_celery_does_in_eager_mode():
    from celery_doctor.facts import context

    app = app_with(task_always_eager=True, task_default_queue="facts-eager")
    config = collect_config(app)
    assert context.eager_reason(config) and context.not_production_reason(config)
    result = app.tasks["facts.work"].delay(1)
    assert type(result).__name__ == "EagerResult" and _published(app, "facts-eager") == []  # nothing went through the broker
    with pytest.warns(Warning, match="task_always_eager has no effect on send_task"):
        app.send_task("facts.work")
    assert len(_published(app, "facts-eager")) == 1  # send_task publishes all the same, as the reason says
    assert context.eager_reason(collect_config(app_with())) is None


@pytest.mark.parametrize("path, test", [
    ("/srv/proj/settings/test.py", True), ("/srv/proj/settings/testing.py", True),
    ("/srv/proj/test_settings.py", True), ("/srv/proj/settings_test.py", True), ("/srv/proj/tests/celeryconfig.py", True),
    ("/srv/proj/settings/production.py", False), ("/srv/proj/celeryconfig.py", False), ("/srv/contest/settings.py", False),
    ("/srv/proj/latest.py", False), (None, False), ("/home/me/test/proj/settings/production.py", False),
    ("/srv/proj/tests/settings/base.py", True),
])
def test_test_settings_reason_by_module_name(path, test):
    from dataclasses import replace

    from celery_doctor.facts import context

    config = replace(config_part.example(), config_origin=path)
    assert bool(context.test_settings_reason(config)) is test


def test_revoke_calls_are_found_in_the_source(tmp_path):
    from celery_doctor.collectors.source import collect_source
    from celery_doctor.facts import context
    from tests.conftest import write_tree

    root = write_tree(tmp_path, {"proj/__init__.py": "", "proj/views.py": """
        from proj.celery import app
        def cancel(result, task_id, proc):
            result.revoke()
            app.control.revoke(task_id, terminate=True)
            app.control.terminate(task_id)
            proc.terminate()
        """})
    found = context.revoke_calls(collect_source([str(root / "proj")]))
    assert [loc.line for loc in found] == [3, 4, 5]
    assert context.revoke_calls(None) == []


def test_global_acks_are_those_of_a_task_that_sets_nothing():
    from dataclasses import replace

    from celery_doctor.facts import acks

    for conf in ({}, {"task_acks_late": True}, {"task_acks_late": True, "task_reject_on_worker_lost": True},
                 {"task_acks_late": True, "task_acks_on_failure_or_timeout": False}):
        config = collect_config(app_with(**conf))
        real = acks.task_acks(config, config.tasks["facts.work"])
        assert acks.global_acks(config) == replace(real, task="(every task)"), conf
