"""Live worker checks: what the app sends where, against what the running workers consume, register, hold and
are configured with (the `workers` part: one round of control broadcasts shared by every check)."""
from __future__ import annotations

from typing import Any, Optional

from celery_doctor.parts.broker import broker_queues
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import (RABBITMQ_DEFAULT_CONSUMER_TIMEOUT, REDIS_DEFAULT_VISIBILITY_TIMEOUT, as_seconds,
                                    human_seconds)

from ._util import plural, preview, setting_location

NEEDS = ("config", "workers")
INSPECT = "celery -A proj inspect"


# -- shared helpers -----------------------------------------------------------------------------------

class _Views(dict):
    """Queue views from the broker part; `known` is False when no broker part was gathered."""

    known = True


def _depths(snapshot: Snapshot) -> _Views:
    found = broker_queues(snapshot)
    views = _Views(found or {})
    views.known = found is not None
    return views


def _depth_text(views: _Views, queue: str) -> tuple[Optional[int], str]:
    view = views.get(queue)
    if view is not None:
        return view.messages, f"{plural(view.messages, 'message')} waiting in {queue!r}"
    if views.known:
        return 0, f"no message waiting in {queue!r} now (the broker has no such queue yet, or it is empty)"
    return None, "messages waiting: unknown (the broker's queues could not be read)"


def _silent_text(state) -> Optional[str]:
    silent = state.silent
    if not silent:
        return None
    return (f"{plural(len(silent), 'worker')} did not answer within {state.wait_s:g} s "
            f"({preview(w.name for w in silent)}): what {'it consumes' if len(silent) == 1 else 'they consume'} is unknown")


def _app_queues(snapshot: Snapshot) -> set[str]:
    return set(snapshot.config.routed_queues())


def _relevant(snapshot: Snapshot):
    """Answering workers that consume at least one of the app's queues (others serve other apps)."""
    queues = _app_queues(snapshot)
    return [w for w in snapshot.workers.answered if w.queue_names & queues]


def _app_vt(config) -> float:
    return config.visibility_timeout[0]


def _worker_vt(worker, config) -> tuple[float, str]:
    value = worker.visibility_timeout
    if value is not None:
        return value, f"visibility_timeout={value:g} s on the worker"
    if worker.broker_transport is not None:
        return float(REDIS_DEFAULT_VISIBILITY_TIMEOUT), f"visibility_timeout={REDIS_DEFAULT_VISIBILITY_TIMEOUT} s (kombu default on the worker)"
    vt = _app_vt(config)
    return vt, f"visibility_timeout={vt:g} s (the app's; the worker did not report its own)"


def _discovery_text(state) -> str:
    if state.transport == "redis":
        return f"mailbox bindings in _kombu.binding.{state.namespace}.pidbox"
    return f"*.{state.namespace}.pidbox queues with a consumer (management API)"


# -- CD401 -------------------------------------------------------------------------------------------

@check(
    id="CD401",
    slug="queue-without-live-worker",
    title="Tasks are sent to a queue that no running worker consumes: they wait there forever",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Some tasks never start (PENDING forever) while workers are up and idle; one queue keeps growing.",
        why="A worker consumes only the queues given with `-Q` (or `task_queues`, or the default queue). The app's "
            "router, `task_default_queue` or a beat entry's `options.queue` send tasks to a queue; with "
            "`task_create_missing_queues=True` (the default) the producer creates it, publishing succeeds, and the "
            "messages wait for a consumer that never comes. Nothing errors: the task just never runs.",
        confirm=f"`{INSPECT} active_queues` lists what each worker consumes; `redis-cli -n <db> LLEN <queue>` or "
                "`rabbitmqctl list_queues name messages consumers` shows the backlog; `celery-doctor scan` names "
                "the tasks routed there.",
        fix="Start a worker (or add the queue to an existing worker's `-Q` list) that consumes the queue, or change "
            "`task_routes` / the beat entry so the tasks go to a consumed queue. Generate `-Q` lists and "
            "`task_routes` from one place so they cannot drift.",
        risk="A new consumer runs the whole backlog at once: old tasks, ETAs already passed, and duplicates queued "
             "while nobody consumed. Check the backlog before attaching a worker; purging loses those tasks.",
        references=("https://docs.celeryq.dev/en/stable/userguide/routing.html",
                    "https://docs.celeryq.dev/en/stable/userguide/workers.html#queues"),
    ),
)
def queue_without_live_worker(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    if state.none_exists:
        return  # CD409 says it once, for every queue
    views = _depths(snapshot)
    silent = _silent_text(state)
    answered = state.answered
    for queue, tasks in sorted(config.routed_queues().items()):
        if state.consumers_of(queue):
            continue
        view = views.get(queue)
        if view is not None and view.consumers:
            continue  # the broker sees a consumer (a silent worker, or one the broadcast did not reach)
        beat = [e.name for e in config.beat if e.options.get("queue") == queue
                or (not e.options.get("queue") and config.routes.get(e.task) and config.routes[e.task].queue == queue)]
        depth, depth_text = _depth_text(views, queue)
        is_default = queue == config.default_queue
        if not tasks and not beat and not depth and not is_default:
            continue
        evidence = []
        if is_default:
            evidence.append(f"{queue!r} is task_default_queue: tasks without a route (and send_task by name) go there")
        if tasks:
            evidence.append(f"routed there by the app: {preview(tasks)}")
        if beat:
            evidence.append(f"beat entries publishing there: {preview(beat)}")
        evidence.append(depth_text)
        consumed = sorted({q for w in answered for q in w.queue_names})
        evidence.append(f"{plural(len(answered), 'worker')} answered, consuming "
                        f"{preview(consumed) if consumed else 'no queue'}; none consumes {queue!r}")
        if silent:
            evidence.append(silent)
        impact = None
        if is_default and not tasks and not beat and not depth:
            impact = Impact.MEDIUM
            evidence.append("no task of this app is routed there now: only unrouted and by-name sends are at risk")
        if silent:
            impact = Impact.MEDIUM  # a silent worker may be its consumer
        yield queue_without_live_worker.finding(
            subject=f"queue:{queue}",
            evidence=evidence,
            fix=f"Start a worker with `-Q {queue}` (or add {queue!r} to an existing worker's -Q list), or route "
                f"{'these tasks' if tasks else 'the senders'} to a queue that is consumed.",
            confidence=Confidence.INFERRED if silent else Confidence.OBSERVED,
            messages_at_risk=depth or None,
            impact=impact,
            location=setting_location(config, "task_routes", "task_queues", "task_default_queue"),
        )


# -- CD402 -------------------------------------------------------------------------------------------

@check(
    id="CD402",
    slug="task-not-registered-by-consumers",
    title="Workers consuming the queue do not register the task: the message is discarded as unregistered",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log shows `Received unregistered task of type 'x'. The message has been ignored and "
                "discarded.`; the task is marked FAILURE (NotRegistered) or stays PENDING; it happens only on some "
                "workers during a rolling deploy.",
        why="A worker executes only tasks it imported. A message for any other name is rejected without requeue: "
            "the task is gone. This happens when the worker runs older code (rolling deploy, stale image), misses "
            "an `imports`/`include` module, or when another app's tasks are routed to a queue it consumes. When "
            "only some consumers lack the task, the loss is intermittent.",
        confirm=f"`{INSPECT} registered` on each worker; `{INSPECT} active_queues`; grep the worker logs for "
                "`Received unregistered task`.",
        fix="Deploy the code that defines the task to every worker consuming that queue (check `imports`/`include` "
            "and autodiscovery), or route the task to workers that have it. Roll out workers before producers "
            "when adding tasks.",
        risk="Restarting workers to load new code requeues or waits for their running tasks; with early acks a "
             "killed worker loses the task it was running.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#names",
                    "https://docs.celeryq.dev/en/stable/faq.html#the-worker-reports-received-unregistered-task"),
    ),
)
def task_not_registered(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    views = _depths(snapshot)
    refs: dict[tuple[str, str], list[str]] = {}  # (task, queue) -> why it goes there

    def add(task: str, queue: Optional[str], why: str) -> None:
        if task and queue and not task.startswith("celery."):
            refs.setdefault((task, queue), []).append(why)

    for task, route in config.routes.items():
        add(task, route.queue, "routed there by the app" if task in config.tasks else "referenced by the app")
    for entry in config.beat:
        queue = entry.options.get("queue") or (config.routes[entry.task].queue if entry.task in config.routes else None)
        add(entry.task, queue if isinstance(queue, str) else None, f"beat entry {entry.name!r}")
    queued: dict[tuple[str, str], int] = {}
    for queue, view in views.items():
        for task, count in (view.task_counts or {}).items():
            queued[(task, queue)] = count
            add(task, queue, f"{plural(count, 'message')} of it waiting (sample of {view.sampled})")
    for (task, queue), why in sorted(refs.items()):
        consumers = [w for w in state.consumers_of(queue) if w.registered is not None]
        if not consumers:
            continue
        missing = [w for w in consumers if task not in w.registered]
        if not missing:
            continue
        having = [w for w in consumers if task in w.registered]
        evidence = [f"{task} goes to {queue!r}: {'; '.join(why)}"]
        if having:
            evidence.append(f"{len(missing)} of {len(consumers)} workers consuming {queue!r} do not register it "
                            f"({preview(w.name for w in missing)}); {preview(w.name for w in having)} do: messages "
                            "delivered to the former are discarded")
        else:
            evidence.append(f"no worker consuming {queue!r} registers it ({preview(w.name for w in missing)}, "
                            f"registering {preview(sorted(missing[0].registered)) or 'no task'}): every delivery "
                            "is discarded")
        silent = _silent_text(state)
        if silent:
            evidence.append(silent)
        at_risk = queued.get((task, queue))
        yield task_not_registered.finding(
            subject=f"task:{task}",
            evidence=evidence,
            fix=f"Deploy the module defining {task} to {preview(w.name for w in missing)} (check imports/include), "
                f"or route {task} away from {queue!r}.",
            confidence=Confidence.OBSERVED,
            messages_at_risk=at_risk,
            location=config.tasks[task].location if task in config.tasks else None,
        )


# -- CD403 -------------------------------------------------------------------------------------------

_CONTENT_TYPES = {"application/json": "json", "application/x-python-serialize": "pickle",
                  "application/x-yaml": "yaml", "application/yaml": "yaml", "application/x-msgpack": "msgpack"}

# setting -> (default when None, why a difference loses or duplicates tasks)
DRIFT = {
    "task_acks_late": (False, "late acks decide whether a task killed mid-run is redelivered or lost"),
    "task_reject_on_worker_lost": (False, "decides whether a task whose child process died is requeued or acked"),
    "task_acks_on_failure_or_timeout": (True, "decides whether failed/timed-out late-ack tasks are acked or requeued"),
    "worker_prefetch_multiplier": (4, "how many unacked messages each worker holds: stranded on a crash"),
    "task_serializer": ("json", "messages this worker sends (retries, subtasks) may be refused by other consumers"),
    "accept_content": (("json",), "a message whose content type is not accepted is rejected without requeue: lost"),
    "task_time_limit": (None, "a hard limit kills the child: with acks_late the task may be requeued or acked"),
    "task_soft_time_limit": (None, "tasks interrupted at different times on different workers"),
}


def _norm(setting: str, value: Any) -> Any:
    if setting in ("task_time_limit", "task_soft_time_limit"):
        return as_seconds(value)
    if setting == "worker_prefetch_multiplier":
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    if setting == "accept_content":
        if value is None:
            return None
        items = [value] if isinstance(value, str) else list(value)
        return tuple(sorted({_CONTENT_TYPES.get(str(v).lower(), str(v).lower()) for v in items}))
    if setting == "task_serializer":
        return _CONTENT_TYPES.get(str(value).lower(), str(value).lower()) if value is not None else None
    if value is None:
        return DRIFT[setting][0]
    return bool(value) if isinstance(DRIFT[setting][0], bool) else value


@check(
    id="CD403",
    slug="worker-config-drift",
    title="A running worker's loss-relevant settings differ from the app's",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks behave differently depending on which worker ran them: some are lost on a crash, some run "
                "twice, some are rejected; the code review of the config shows the safe value.",
        why="The diagnosis of the config applies only if the workers run it. A worker started from an older "
            "image, another settings module, environment overrides or command-line flags may ack early while the "
            "app expects late acks, accept other serializers (rejected messages are dropped), hold more "
            "prefetched messages, or use a shorter Redis visibility_timeout. On Redis the shortest "
            "visibility_timeout among all clients of the database wins, so one stray worker re-delivers "
            "everybody's long tasks.",
        confirm=f"`{INSPECT} conf` (effective settings per worker) and `{INSPECT} stats` "
                "(`broker.transport_options`, `prefetch_count`); compare with the app's config.",
        fix="Start every worker from the same configuration as the producers (one settings module, no per-host "
            "overrides), then restart the drifted workers.",
        risk="Restarting workers interrupts running tasks (warm shutdown waits for them; a kill loses early-acked "
             "ones).",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html",
                    "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout"),
    ),
)
def worker_config_drift(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    relevant = {w.name for w in _relevant(snapshot)}
    app_vt = _app_vt(config)
    for worker in state.answered:
        lines = []
        settings = []
        if worker.name in relevant:
            for setting, (_, why) in DRIFT.items():
                if setting not in worker.conf:
                    continue
                app_value = _norm(setting, config.value(setting))
                worker_value = _norm(setting, worker.conf.get(setting))
                if app_value != worker_value:
                    settings.append(setting)
                    lines.append(f"{setting}: app={app_value!r}, worker={worker_value!r} ({why})")
        if state.transport == "redis" and (worker.transport_options or worker.broker_transport):
            vt, _ = _worker_vt(worker, config)
            if vt != app_vt:
                settings.append("visibility_timeout")
                lines.append(f"broker_transport_options.visibility_timeout: app={app_vt:g} s, worker={vt:g} s "
                             f"(the shortest wins on a Redis database: "
                             f"{'this worker re-delivers unacked tasks older than ' + human_seconds(vt) if vt < app_vt else 'the app side re-delivers sooner than this worker expects'})")
        if not lines:
            continue
        yield worker_config_drift.finding(
            subject=f"worker:{worker.name}",
            evidence=[f"worker {worker.name} consumes {preview(sorted(worker.queue_names)) or 'no queue'}", *lines],
            fix=f"Restart {worker.name} with the app's configuration ({', '.join(settings)}).",
            confidence=Confidence.OBSERVED,
            location=setting_location(config, *settings),
        )


# -- CD404 -------------------------------------------------------------------------------------------

@check(
    id="CD404",
    slug="worker-version-skew",
    title="Workers run different Celery/kombu versions from each other or from the app",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Behaviour differs between workers (acks, retries on worker loss, Redis ack emulation, ETA handling); "
                "messages sent by one side are handled differently by the other.",
        why="Settings and message handling change between releases: `task_retry_on_worker_lost` and "
            "`task_acks_on_failure`/`task_acks_on_timeout` exist only from Celery 5.7, kombu 5.7 changed Redis "
            "binding tables and the unacked sweep. A fleet running mixed versions follows the oldest behaviour on "
            "some workers, and version skew usually means some workers also run old task code (see CD402).",
        confirm=f"`{INSPECT} report` (software -> celery:... kombu:...) on each worker; `pip show celery kombu` "
                "where the producers run.",
        fix="Pin celery and kombu to the same versions for producers, workers and beat, and roll workers out "
            "together.",
        risk="Upgrading changes defaults; read the changelog for the settings CD1xx checks rely on.",
        references=("https://docs.celeryq.dev/en/stable/history/index.html",),
    ),
)
def worker_version_skew(snapshot: Snapshot):
    config = snapshot.config
    workers = [w for w in _relevant(snapshot) if w.celery_version or w.kombu_version]
    if not workers:
        return
    versions = sorted({(w.celery_version, w.kombu_version) for w in workers})
    app = (config.celery_version, config.kombu_version)
    summary = "; ".join(f"celery {c} / kombu {k}: {preview(w.name for w in workers if (w.celery_version, w.kombu_version) == (c, k))}"
                        for c, k in versions)
    for worker in workers:
        if (worker.celery_version, worker.kombu_version) == app:
            continue  # the workers that differ are reported
        yield worker_version_skew.finding(
            subject=f"worker:{worker.name}",
            evidence=[f"{worker.name} runs celery {worker.celery_version} / kombu {worker.kombu_version}; the app "
                      f"(this environment) has celery {app[0]} / kombu {app[1]}",
                      f"versions across the {plural(len(workers), 'worker')} consuming the app's queues: {summary}"],
            confidence=Confidence.OBSERVED,
        )


# -- CD405 -------------------------------------------------------------------------------------------

@check(
    id="CD405",
    slug="reserved-piling-on-one-worker",
    title="One worker hoards prefetched tasks while another worker on the same queue is idle",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="Tasks wait minutes although some workers are idle; latency depends on which worker took the "
                "message; after a crash many tasks reappear only after the Redis visibility timeout.",
        why="Each worker reserves up to concurrency × `worker_prefetch_multiplier` messages (ETA tasks raise the "
            "window further). Reserved messages wait behind the worker's running tasks even when other workers "
            "are idle, and they are unacknowledged: if that worker is killed they are stranded until redelivery "
            "(on Redis: visibility_timeout plus the restore sweep).",
        confirm=f"`{INSPECT} reserved` (per-worker lists), `{INSPECT} active`, `{INSPECT} stats` "
                "(`prefetch_count`, `pool.max-concurrency`).",
        fix="For long tasks set `worker_prefetch_multiplier=1` and `task_acks_late=True` (each worker then holds "
            "one message per process); start workers with `-O fair` on older Celery; Celery 5.6+ on Redis can "
            "disable prefetch (`worker_disable_prefetch=True`).",
        risk="Less prefetch means more round trips to the broker: throughput of many tiny tasks drops.",
        references=("https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits",),
    ),
)
def prefetch_hoarding(snapshot: Snapshot):
    state = snapshot.workers
    config = snapshot.config
    reported = set()
    for queue in sorted({q for w in state.answered for q in w.queue_names}):
        consumers = [w for w in state.consumers_of(queue) if w.reserved_total is not None and w.active_total is not None]
        if len(consumers) < 2:
            continue
        idle = [w for w in consumers if w.reserved_total == 0 and w.active_total == 0]
        hoarders = [w for w in consumers if w.reserved_total >= 2]
        if not idle:
            continue
        for worker in hoarders:
            if worker.name in reported:
                continue
            reported.add(worker.name)
            window = (f"prefetch_count={worker.prefetch_count}" if worker.prefetch_count is not None else "prefetch unknown")
            evidence = [f"{worker.name} holds {plural(worker.reserved_total, 'reserved task')} "
                        f"behind {worker.active_total} active ({window}, concurrency {worker.concurrency})",
                        f"idle on the same queue {queue!r}: {preview(w.name for w in idle)} (0 active, 0 reserved)"]
            names = sorted({t.name for t in worker.reserved or ()})
            if names:
                evidence.append(f"reserved tasks: {preview(names)}")
            evidence.append(f"worker_prefetch_multiplier={worker.conf.get('worker_prefetch_multiplier', config.value('worker_prefetch_multiplier'))!r}")
            yield prefetch_hoarding.finding(
                subject=f"worker:{worker.name}",
                evidence=evidence,
                confidence=Confidence.OBSERVED,
                messages_at_risk=worker.reserved_total,
                location=setting_location(config, "worker_prefetch_multiplier"),
            )


# -- CD406 / CD407: held past the redelivery limit ----------------------------------------------------

def _held(worker, now: float, limit: float) -> tuple[list[str], list[str]]:
    """(active acks_late tasks running longer than limit, scheduled tasks whose ETA is further than limit)."""
    running = []
    for task in worker.active or ():
        if task.acknowledged is False and task.time_start and now - task.time_start > limit:
            running.append(f"{task.name}[{task.id}] running for {human_seconds(round(now - task.time_start))}, "
                           "not acknowledged (acks_late)")
    waiting = []
    for task in worker.scheduled or ():
        if task.eta_ts and task.eta_ts - now > limit and task.acknowledged is not True:
            waiting.append(f"{task.name}[{task.id}] ETA {task.eta} is {human_seconds(round(task.eta_ts - now))} "
                           "away, held unacknowledged in the worker's memory")
    return running, waiting


@check(
    id="CD406",
    slug="held-past-visibility-timeout",
    title="Tasks held unacknowledged longer than Redis' visibility timeout: they are delivered again and run twice",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The same task id runs two or more times; ETA/countdown tasks execute repeatedly; long acks_late "
                "tasks start again on another worker while still running.",
        why="On Redis an unacked message is indexed by its delivery time, and any consumer re-queues messages "
            "older than `visibility_timeout`. A running acks_late task older than that, or an ETA task held in "
            "memory until a time further away than that, is delivered again to some worker and executed again.",
        confirm=f"`{INSPECT} active` (`acknowledged`, `time_start`) and `{INSPECT} scheduled` (`eta`); "
                "`redis-cli -n <db> ZRANGE unacked_index 0 -1 WITHSCORES` (scores are delivery times).",
        fix="Raise `broker_transport_options['visibility_timeout']` above the longest task runtime and ETA (on every "
            "producer and worker), bound runtimes with `task_time_limit`, and schedule far-future work with beat "
            "instead of long countdowns. `worker_deduplicate_successful_tasks=True` skips redeliveries of tasks "
            "that already succeeded (acks_late with a persistent result backend).",
        risk="A longer visibility timeout delays the recovery of tasks whose worker crashed.",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout",
                    "https://github.com/celery/kombu/issues/337"),
    ),
)
def held_past_visibility_timeout(snapshot: Snapshot):
    state = snapshot.workers
    if state.transport != "redis":
        return
    config = snapshot.config
    for worker in state.answered:
        vt, vt_text = _worker_vt(worker, config)
        running, waiting = _held(worker, snapshot.now, vt)
        if not running and not waiting:
            continue
        evidence = [vt_text]
        if running:
            evidence.append(f"{plural(len(running), 'running task')} past it (re-queued for another worker while "
                            f"still running): {'; '.join(running[:5])}")
        if waiting:
            evidence.append(f"{plural(len(waiting), 'ETA task')} held past it (re-queued every {human_seconds(vt)} "
                            f"until due, each copy runs): {'; '.join(waiting[:5])}")
        yield held_past_visibility_timeout.finding(
            subject=f"worker:{worker.name}",
            evidence=evidence,
            confidence=Confidence.OBSERVED,
            messages_at_risk=len(running) + len(waiting),
            location=setting_location(config, "broker_transport_options"),
        )


@check(
    id="CD407",
    slug="held-past-consumer-timeout",
    title="Tasks held unacknowledged longer than RabbitMQ's consumer_timeout: the channel is closed, tasks run again",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Workers log `PreconditionFailed(406 ... delivery acknowledgement on channel N timed out)` and exit "
                "or reconnect; acks_late and ETA tasks run again; workers crash-loop.",
        why="RabbitMQ closes a channel whose delivery stays unacknowledged longer than `consumer_timeout` (30 min by "
            "default). Every message unacked on that channel returns to the queue: the long acks_late task runs "
            "again elsewhere, ETA tasks held in memory are redelivered, and Celery's worker treats the channel "
            "error as fatal.",
        confirm=f"`{INSPECT} active` (`acknowledged`, `time_start`), `{INSPECT} scheduled` (`eta`); "
                "`rabbitmq-diagnostics environment | grep consumer_timeout`; queue argument `x-consumer-timeout`.",
        fix="Raise `consumer_timeout` (rabbitmq.conf, or per queue via the `consumer-timeout` policy / "
            "`x-consumer-timeout` on RabbitMQ 3.12+) above the longest runtime and ETA, bound tasks with "
            "`task_time_limit`, and schedule far-future work with beat instead of long countdowns.",
        risk="A longer consumer_timeout lets a stuck consumer hold its messages longer.",
        references=("https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout",
                    "https://github.com/celery/celery/issues/6760"),
    ),
)
def held_past_consumer_timeout(snapshot: Snapshot):
    state = snapshot.workers
    if state.transport != "rabbitmq":
        return
    given = as_seconds(snapshot.options.get("consumer_timeout"))
    limit = given or float(RABBITMQ_DEFAULT_CONSUMER_TIMEOUT)
    limit_text = (f"consumer_timeout={human_seconds(limit)} (given with --consumer-timeout)" if given else
                  f"consumer_timeout assumed {human_seconds(limit)} (RabbitMQ default; pass --consumer-timeout)")
    for worker in state.answered:
        running, waiting = _held(worker, snapshot.now, limit)
        if not running and not waiting:
            continue
        evidence = [limit_text]
        if running:
            evidence.append(f"{plural(len(running), 'running task')} past it: {'; '.join(running[:5])}")
        if waiting:
            evidence.append(f"{plural(len(waiting), 'ETA task')} will be held past it: {'; '.join(waiting[:5])}")
        yield held_past_consumer_timeout.finding(
            subject=f"worker:{worker.name}",
            evidence=evidence,
            confidence=Confidence.OBSERVED,
            messages_at_risk=len(running) + len(waiting),
        )


# -- CD409 / CD410: no worker, silent workers ---------------------------------------------------------

@check(
    id="CD409",
    slug="no-worker",
    title="No worker is running for this broker: every task sent waits (or expires) in its queue",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Every task stays PENDING; queues only grow; `celery inspect ping` says `No nodes replied`.",
        why="Without a consumer nothing runs. Messages wait in the queues (RabbitMQ drops those with an expired "
            "TTL/`expires`; Redis keeps them unless memory eviction removes the list), beat keeps adding "
            "duplicates, and results stay PENDING.",
        confirm=f"`{INSPECT} ping`; `redis-cli -n <db> SMEMBERS _kombu.binding.celery.pidbox` (one member per "
                "running worker) or `rabbitmqctl list_queues name consumers | grep pidbox`; the process manager "
                "(systemd, supervisor, Kubernetes) of the workers.",
        fix="Start the workers (check why they stopped: crash loop, OOM kill, broker URL/credentials, "
            "`broker_connection_max_retries` exhausted) and make the process manager restart them.",
        risk="Workers started after a long outage run the whole backlog, including beat duplicates and tasks "
             "whose ETA passed long ago.",
        references=("https://docs.celeryq.dev/en/stable/userguide/workers.html",),
    ),
)
def no_worker(snapshot: Snapshot):
    state = snapshot.workers
    if not state.none_exists:
        return
    config = snapshot.config
    views = _depths(snapshot)
    evidence = []
    if state.discovered:
        evidence.append(f"no worker on the broker: no {_discovery_text(state)}")
    else:
        evidence.append(f"the broker could not list workers ({state.discovery_error or 'unknown reason'})")
    if state.broadcast_sent:
        evidence.append(f"no reply to a broadcast ping within {state.wait_s:g} s")
    waiting = 0
    for queue, tasks in sorted(config.routed_queues().items()):
        depth, text = _depth_text(views, queue)
        waiting += depth or 0
        if depth or tasks:
            evidence.append(f"{text}" + (f" (routed there: {preview(tasks, 4)})" if tasks else ""))
    yield no_worker.finding(
        subject=f"server:{snapshot.target.broker or 'broker'}",
        evidence=evidence,
        confidence=Confidence.OBSERVED if state.discovered else Confidence.INFERRED,
        messages_at_risk=waiting or None,
    )


@check(
    id="CD410",
    slug="silent-worker",
    title="A running worker did not answer: busy (solo pool in a long task), blocked or hung",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="`celery inspect ping` says `No nodes replied` (or omits this worker) although the process is up; "
                "tasks queue up behind it; its reserved tasks do not move.",
        why="A worker answers control commands from its main loop. With the solo pool (or threads/gevent blocked "
            "by CPU-bound code) the loop does not run while a task runs, so it cannot answer until the task ends; "
            "a prefork main process stuck in a blocking call, a deadlock or a broker connection it lost silently "
            "does not answer either. Its prefetched messages stay unacknowledged meanwhile. On Redis a worker "
            "killed with SIGKILL or OOM also leaves its mailbox binding behind and looks like this until the "
            "binding is cleaned up.",
        confirm=f"`{INSPECT} ping -d <name> --timeout 30`; on the host: `ps`/`py-spy dump --pid <pid>` on the "
                "worker; its log (the last `Task ... received` without `succeeded`); on RabbitMQ `rabbitmqctl "
                "list_consumers` for its pidbox queue.",
        fix="If a long task is running on a solo pool, this is expected: use the prefork pool (the main process "
            "stays responsive) or bound tasks with `task_time_limit`. If it is hung, capture a stack dump, then "
            "restart it; acks_late tasks it held are redelivered.",
        risk="Killing a hung worker loses its running task when acks are early; with acks_late the task runs again.",
        references=("https://docs.celeryq.dev/en/stable/userguide/workers.html#inspecting-workers",
                    "https://docs.celeryq.dev/en/stable/userguide/concurrency/index.html"),
    ),
)
def silent_worker(snapshot: Snapshot):
    state = snapshot.workers
    if not state.silent:
        return
    answered = state.answered
    for worker in state.silent:
        how = (f"its mailbox {worker.name}.{state.namespace}.pidbox is bound in _kombu.binding.{state.namespace}.pidbox"
               if state.transport == "redis" else
               f"its queue {worker.name}.{state.namespace}.pidbox exists on RabbitMQ with a consumer")
        evidence = [f"worker {worker.name} exists: {how}",
                    f"it answered none of the {len(state.commands)} control commands within {state.wait_s:g} s "
                    f"(scan timeout {snapshot.options.get('timeout', '?')} s): it is busy (e.g. a solo pool "
                    "running a long task), blocked or hung, not absent"]
        if state.transport == "redis":
            evidence.append("on Redis a worker killed without a clean shutdown leaves the same binding: check the "
                            "process exists")
        if worker.undecoded:
            evidence.append(f"some replies were in {worker.undecoded} and were not decoded")
        if answered:
            evidence.append(f"{plural(len(answered), 'other worker')} answered: {preview(w.name for w in answered)}")
        yield silent_worker.finding(
            subject=f"worker:{worker.name}",
            evidence=evidence,
            confidence=Confidence.OBSERVED,
        )


CHECKS = [
    queue_without_live_worker,
    task_not_registered,
    worker_config_drift,
    worker_version_skew,
    prefetch_hoarding,
    held_past_visibility_timeout,
    held_past_consumer_timeout,
    no_worker,
    silent_worker,
]
