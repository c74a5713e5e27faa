"""Static checks on prefetching, serializers, results, time limits and revokes (beat: config_beat)."""
from __future__ import annotations

import ast

from celery_doctor.facts.context import revoke_calls
from celery_doctor.facts.limits import global_time_limits, task_time_limits
from celery_doctor.model import Category, Confidence, Impact, Location, Runbook, Snapshot, check
from celery_doctor.pyast import calls, is_naive_now, keyword, last_name
from celery_doctor.settings import as_seconds, human_seconds

from ._util import plural, preview, setting_line, setting_location
from .config_context import impact_line

LONG_TASK_SECONDS = 60
UNSAFE_SERIALIZERS = {"pickle": "pickle", "application/x-python-serialize": "pickle", "yaml": "yaml",
                      "application/x-yaml": "yaml"}


@check(
    id="CD140",
    slug="prefetch-hoarding",
    title="Workers prefetch several tasks per process while tasks are long: tasks wait, and may run twice",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Short tasks wait minutes behind long ones although other workers are idle; after a worker crash a "
                "batch of tasks that never started comes back much later (Redis), or a task runs twice.",
        why="Each worker reserves `concurrency x worker_prefetch_multiplier` messages (0 = unlimited). Reserved "
            "messages wait in that worker's memory behind its long tasks. They are not acknowledged: even with early "
            "acks the worker acks a message only when a pool process starts the task (celery/worker/request.py, "
            "Request.on_accepted, the accept_callback of Request.execute_using_pool). So a killed worker does not "
            "lose them: RabbitMQ requeues them when the connection closes; on Redis they wait in `unacked` until a "
            "restore sweep finds them older than the visibility timeout (kombu/transport/redis.py, "
            "QoS.restore_visible). This is latency, not loss; on Redis a message that waits in a live worker's "
            "prefetch longer than the visibility timeout is also restored and run by another worker: a duplicate.",
        confirm="`celery -A proj inspect reserved` (many reserved on one worker while others are idle); "
                "`celery -A proj inspect stats` -> `prefetch_count`.",
        fix="For long tasks set `worker_prefetch_multiplier = 1` (with `task_acks_late = True`), or route long tasks "
            "to their own queue and workers; Celery 5.6+ on Redis also offers `worker_disable_prefetch = True`.",
        risk="Less prefetching means more broker round trips: lower throughput for many tiny tasks. Keep a higher "
             "multiplier on queues of short tasks only.",
        references=("https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits",),
    ),
)
def prefetch(snapshot: Snapshot):
    config = snapshot.config
    multiplier = config.value("worker_prefetch_multiplier")
    if not isinstance(multiplier, int) or isinstance(multiplier, bool) or multiplier == 1:
        return
    if config.value("worker_disable_prefetch"):
        return
    long_tasks = []
    for task in config.tasks.values():
        limit = task_time_limits(config, task).longest
        if limit and limit >= LONG_TASK_SECONDS:
            long_tasks.append(f"{task.name} (limit {human_seconds(limit)})")
    if multiplier != 0 and not long_tasks:
        return
    evidence = [setting_line(config, "worker_prefetch_multiplier") +
                (": unlimited prefetch" if multiplier == 0 else f": each process reserves {multiplier} messages")]
    if long_tasks:
        evidence.append(f"{plural(len(long_tasks), 'task')} may run {human_seconds(LONG_TASK_SECONDS)} or more: {preview(long_tasks)}")
    evidence.append("reserved messages wait behind long tasks; they are unacknowledged until a pool process starts "
                    "them, so a killed worker's reserved messages return to the queue (delayed, not lost)")
    if snapshot.config.transport == "redis":
        evidence.append("on Redis a reserved message that waits longer than the visibility timeout is restored and "
                        "runs twice")
    evidence.append(impact_line(Impact.MEDIUM, "latency and duplicates; no task is lost by prefetching"))
    yield prefetch.finding(subject="setting:worker_prefetch_multiplier", evidence=evidence,
                           confidence=Confidence.INFERRED, location=setting_location(config, "worker_prefetch_multiplier"))


@check(
    id="CD142",
    slug="unsafe-serializer-accepted",
    title="pickle (or yaml) is accepted: anyone who can write to the broker can run code on workers",
    category=Category.SECURITY,
    needs=("config",),
    impact=Impact.HIGH,
    runbook=Runbook(
        symptom="No loss symptom by itself; a security exposure, and a source of rejected messages when producers "
                "and workers disagree on serializers.",
        why="Workers deserialize message bodies with every serializer in `accept_content`. A pickle body can execute "
            "arbitrary code on load. Producers and workers that disagree on serializers reject messages as "
            "`ContentDisallowed`, without requeue: those tasks are lost.",
        confirm="`app.conf.accept_content`, `app.conf.task_serializer`, `app.conf.result_serializer`; grep worker "
                "logs for `ContentDisallowed`.",
        fix="Use `task_serializer = 'json'`, `result_serializer = 'json'`, `accept_content = ['json']`; pass ids "
            "instead of objects. If a migration needs pickle, use Celery's message signing (`auth` serializer).",
        risk="Tasks whose arguments are not JSON-serializable fail to publish after the switch: convert arguments "
             "(ids, ISO dates) first; drain queued pickle messages before removing pickle from accept_content.",
    ),
)
def unsafe_serializer(snapshot: Snapshot):
    config = snapshot.config
    evidence = []
    for name in ("accept_content", "result_accept_content"):
        values = config.value(name) or ()
        unsafe = sorted({UNSAFE_SERIALIZERS[v] for v in values if isinstance(v, str) and v.lower() in UNSAFE_SERIALIZERS})
        if unsafe:
            evidence.append(f"{setting_line(config, name)}: accepts {', '.join(unsafe)}")
    for name in ("task_serializer", "result_serializer"):
        value = config.value(name)
        if isinstance(value, str) and value.lower() in UNSAFE_SERIALIZERS:
            evidence.append(setting_line(config, name))
    tasks = [t.name for t in config.tasks.values()
             if isinstance(t.serializer, str) and t.serializer.lower() in UNSAFE_SERIALIZERS]
    if tasks:
        evidence.append(f"tasks serializing with pickle/yaml: {preview(tasks)}")
    if evidence:
        evidence.append("a pickle body executes code when a worker loads it")
        yield unsafe_serializer.finding(subject="setting:accept_content", evidence=evidence,
                                        location=setting_location(config, "accept_content", "task_serializer"))


def _content_type(name: str) -> str:
    from kombu.serialization import registry

    return registry.name_to_type.get(name, name)


@check(
    id="CD143",
    slug="serializer-not-accepted",
    title="Tasks are serialized in a format workers do not accept: every message is rejected",
    category=Category.WORKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Tasks never run; worker logs show `Received and deleted unknown message. Wrong destination?!?` or "
                "`ContentDisallowed: Refusing to deserialize untrusted content of type ...`.",
        why="A worker refuses any message whose content type is not in `accept_content` and rejects it without "
            "requeue: the task is gone. A producer using a `task_serializer` (or a per-task `serializer=`) outside "
            "the accepted list sends only messages that workers will drop. Source: "
            "celery/worker/consumer/consumer.py, Consumer.create_task_handler (ContentDisallowed -> on_invalid_task "
            "-> `message.reject_log_error`) and Consumer.on_decode_error (`message.ack()`); kombu/serialization.py, "
            "SerializerRegistry.loads (raises ContentDisallowed for a type not in `accept`).",
        confirm="`app.conf.task_serializer`, `app.conf.accept_content`; worker logs for `ContentDisallowed`.",
        fix="Make `accept_content` include the serializer producers use (prefer `json` everywhere).",
        risk="Accepting another serializer widens what workers deserialize: never add pickle (see CD142).",
    ),
)
def serializer_not_accepted(snapshot: Snapshot):
    config = snapshot.config
    accepted = {_content_type(v) for v in (config.value("accept_content") or ()) if isinstance(v, str)}
    if not accepted:
        return
    problems = []
    task_serializer = config.value("task_serializer")
    if isinstance(task_serializer, str) and _content_type(task_serializer) not in accepted:
        problems.append(f"{setting_line(config, 'task_serializer')} is not in accept_content {sorted(accepted)}")
    for task in config.tasks.values():
        if isinstance(task.serializer, str) and task.serializer != task_serializer and _content_type(task.serializer) not in accepted:
            problems.append(f"task {task.name} serializes with {task.serializer!r}, not accepted")
    if problems:
        yield serializer_not_accepted.finding(
            subject="setting:accept_content",
            evidence=[*problems, "workers reject such messages as ContentDisallowed, without requeue: the tasks are lost"],
            location=setting_location(config, "accept_content", "task_serializer"))


@check(
    id="CD144",
    slug="results-look-lost",
    title="Results expire quickly or are ignored: finished tasks read as PENDING (looks like loss)",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="`AsyncResult(id).state` is PENDING for a task that ran, so people report it as lost.",
        why="A result backend answers PENDING for any id it has no record of: an expired result "
            "(`result_expires`), a task with `ignore_result=True`, or a running task while "
            "`task_track_started=False`. PENDING therefore does not mean the task is queued.",
        confirm="On a Redis backend: `redis-cli TTL celery-task-meta-<id>`; `app.conf.result_expires`; the task's "
                "`ignore_result`.",
        fix="Keep `result_expires` longer than the time anyone looks for results (default 1 day); set "
            "`task_track_started = True` if callers poll; do not infer loss from PENDING (use `celery-doctor trace <id>`).",
        risk="Longer result expiry uses more backend memory/storage.",
    ),
)
def results_look_lost(snapshot: Snapshot):
    config = snapshot.config
    evidence = []
    expires = as_seconds(config.value("result_expires"))
    if expires and expires < 3600:
        evidence.append(f"{setting_line(config, 'result_expires')}: results vanish after {human_seconds(expires)}")
    if config.value("task_ignore_result"):
        evidence.append(setting_line(config, "task_ignore_result") + ": no task records a result")
    ignored = [t.name for t in config.tasks.values() if t.ignore_result and not config.value("task_ignore_result")]
    if ignored:
        evidence.append(f"tasks with ignore_result=True: {preview(ignored)}")
    if evidence:
        evidence.append("a missing result reads as PENDING: finished tasks look lost")
        yield results_look_lost.finding(subject="setting:result_expires", evidence=evidence,
                                        location=setting_location(config, "result_expires", "task_ignore_result"))


@check(
    id="CD145",
    slug="time-limit-mistakes",
    title="Soft and hard time limits that cannot work as intended",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Tasks are killed without ever seeing SoftTimeLimitExceeded (no cleanup, partial work), or hang "
                "forever after catching it.",
        why="The soft limit must be lower than the hard limit to give the task time to clean up; equal or higher "
            "means the hard kill comes first: billiard kills the pool process (billiard/pool.py, "
            "TimeoutHandler.on_hard_timeout) and Celery records the task as failed with TimeLimitExceeded "
            "(celery/worker/request.py, Request.on_timeout): no cleanup ran, partial work is left behind. A per-task "
            "`time_limit=0` is not \"no limit\" under prefork: billiard's Pool.apply_async uses `timeout or "
            "self.timeout`, the worker's task_time_limit. A soft limit without a hard limit lets a task that "
            "swallows SoftTimeLimitExceeded run forever, holding its message (acks_late) and a pool slot.",
        confirm="`celery -A proj inspect conf | grep time_limit`; per task: `app.tasks['name'].soft_time_limit`.",
        fix="Set both, with `soft_time_limit` comfortably below `time_limit` (e.g. 540 and 600).",
        risk="A hard limit kills legitimately long runs: measure durations first.",
    ),
)
def time_limits(snapshot: Snapshot):
    config = snapshot.config
    pool = global_time_limits(config)
    global_soft, global_hard = pool.soft, pool.hard
    soft_ge_hard, soft_only = [], []
    for task in config.tasks.values():
        limits = task_time_limits(config, task)
        soft, hard = limits.soft, limits.hard
        if soft and hard and soft >= hard:
            soft_ge_hard.append(f"{task.name} (soft {human_seconds(soft)} >= hard {human_seconds(hard)})")
        elif soft and not hard:
            soft_only.append(f"{task.name} (soft {human_seconds(soft)})")
    if not config.tasks and global_soft and global_hard and global_soft >= global_hard:
        soft_ge_hard.append(f"task_soft_time_limit {human_seconds(global_soft)} >= task_time_limit {human_seconds(global_hard)}")
    if soft_ge_hard:
        yield time_limits.finding(subject="setting:task_soft_time_limit",
                                  evidence=[f"soft limit not below the hard limit: {preview(soft_ge_hard)}",
                                            "the hard kill comes first: the task fails with TimeLimitExceeded before its cleanup runs"],
                                  location=setting_location(config, "task_soft_time_limit", "task_time_limit"))
    if soft_only:
        yield time_limits.finding(subject="setting:task_time_limit", confidence=Confidence.INFERRED,
                                  evidence=[f"soft limit without a hard limit: {preview(soft_only)}",
                                            "a task that catches SoftTimeLimitExceeded can run forever"],
                                  location=setting_location(config, "task_soft_time_limit", "task_time_limit"))


@check(
    id="CD146",
    slug="naive-datetime-expires",
    title="expires/eta computed from a naive datetime: tasks are discarded or run at the wrong time",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="Tasks published with `expires=` are discarded on arrival (`Discarding revoked task`), or ETA tasks "
                "run hours early or late; it depends on the host's timezone.",
        why="`expires`/`eta` become absolute times, compared on the worker's clock. `datetime.now()` without a tz "
            "or `datetime.utcnow()` is naive: Celery interprets it in the app's timezone, so a producer in another "
            "timezone (or using utcnow with a non-UTC app timezone) produces times hours off: expired at once.",
        confirm="`celery-doctor lint` lists the lines; worker logs for `Discarding revoked task` right after publish.",
        fix="Pass seconds (`expires=300`, `countdown=60`) or an aware datetime: `datetime.now(timezone.utc) + timedelta(...)`.",
        risk="None.",
    ),
)
def naive_expires(snapshot: Snapshot):
    for source, call in calls(snapshot.source):
        if last_name(call) not in ("apply_async", "retry", "send_task", "signature", "s", "si", "set", "apply_async_on_commit"):
            continue
        for name in ("expires", "eta"):
            value = keyword(call, name)
            if value is not None and is_naive_now(value):
                text = " ".join((ast.get_source_segment(source.text, value) or "").split())
                yield naive_expires.finding(
                    subject=f"file:{source.path}",
                    evidence=[f"{name}={text} is a naive datetime",
                              "it is read in the app's timezone and compared with the worker's clock: "
                              + ("discarded as expired" if name == "expires" else "runs at the wrong time")],
                    location=Location(source.path, call.lineno))


@check(
    id="CD147",
    slug="revokes-not-persistent",
    title="Revoked task ids live only in worker memory: a restart forgets them",
    category=Category.WORKER,
    needs=("config",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="A task revoked with `celery control revoke` runs anyway after workers restart, or a revoke sent while "
                "all workers were down has no effect.",
        why="Workers keep revoked ids in memory (celery/worker/state.py: `revoked`, a LimitedSet of at most 50,000 "
            "ids for 3 h). Only `worker_state_db` (`--statedb`, celery/worker/state.py, Persistent) keeps them across "
            "restarts; a revoke broadcast while no worker listens is lost. This matters only to a project that "
            "revokes tasks: the check reports it when the project's code calls `revoke()` (or "
            "`revoke_by_stamped_headers`, `control.terminate`), and stays silent otherwise.",
        confirm="`celery -A proj inspect revoked` on each worker; `app.conf.worker_state_db`.",
        fix="Start workers with `--statedb=/var/run/celery/%n.state` (one file per worker name) if you rely on "
            "revokes; for cancellation that must hold, check a flag in the task itself.",
        risk="The state file must be on persistent, per-worker storage; a shared file between workers corrupts it.",
    ),
)
def revokes(snapshot: Snapshot):
    config = snapshot.config
    if config.value("worker_state_db"):
        return
    where = revoke_calls(snapshot.source)
    if not where:
        return  # a project that never revokes loses nothing to forgotten revokes
    yield revokes.finding(subject="setting:worker_state_db", confidence=Confidence.INFERRED,
                          evidence=[setting_line(config, "worker_state_db"),
                                    f"the project revokes tasks: {preview(str(loc) for loc in where)}",
                                    "revoked ids are kept in memory only: lost on restart (unless workers run with --statedb)"],
                          location=where[0])


@check(
    id="CD148",
    slug="setting-wrong-type",
    title="A setting has a type Celery cannot use as meant: workers, beat or producers fail or misbehave",
    category=Category.WORKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Workers or beat crash at startup with a TypeError/AttributeError from Celery or kombu, every message "
                "is refused (`accept_content` as a string), or a setting seems ignored (`task_acks_late = \"False\"` "
                "behaves as True).",
        why="Celery and kombu use most settings as they are, without converting them: a string where a boolean is "
            "expected is true whatever it says, a string `accept_content` is read letter by letter, a non-dict "
            "`broker_transport_options` breaks the connection, and `task_routes`/`task_queues` of the wrong shape "
            "break routing. Values read from environment variables are strings unless converted. Source: "
            "kombu/serialization.py, prepare_accept_content (iterates the value: a string by letters); "
            "celery/app/task.py, Task.bind (settings copied onto tasks as they are); celery/app/amqp.py, "
            "Queues.__init__ (a list of Queue or a dict of Queue or of options: any other shape fails).",
        confirm="`celery -A proj inspect conf | grep <setting>` on a running worker, or "
                "`python -c \"from proj.celery import app; print(repr(app.conf.<setting>))\"`.",
        fix="Give the setting a value of the right type (convert environment variables: `int(...)`, "
            "`os.environ.get('X') == '1'`, lists as lists, `kombu.Queue` objects in `task_queues`).",
        risk="The corrected value takes effect for real: a boolean written as the string \"False\" was acting as True, "
             "so fixing it changes behaviour (e.g. acknowledgement timing) on the next deploy.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html",),
    ),
)
def setting_wrong_type(snapshot: Snapshot):
    config = snapshot.config
    for name, why in getattr(config, "problems", ()):
        yield setting_wrong_type.finding(
            subject=f"setting:{name}", confidence=Confidence.CONFIGURED,
            evidence=[f"{name}={preview_value(config.value(name))} (set)", f"{name} {why}"],
            fix=f"Set `{name}` to a value of the type Celery expects (see its documentation); convert values read "
                "from the environment.",
            location=setting_location(config, name))


def preview_value(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


CHECKS = [prefetch, unsafe_serializer, serializer_not_accepted, results_look_lost, time_limits,
          naive_expires, revokes, setting_wrong_type]
