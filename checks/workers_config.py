"""Live worker checks of what the workers run: loss-relevant settings that differ from the app's, and
Celery/kombu versions that differ (CD403, CD404)."""
from __future__ import annotations

from typing import Any

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import as_seconds, human_seconds

from ._util import plural, preview, setting_location
from .workers_common import INSPECT, NEEDS, app_visibility_timeout, relevant_workers, worker_visibility_timeout

_CONTENT_TYPES = {"application/json": "json", "application/x-python-serialize": "pickle",
                  "application/x-yaml": "yaml", "application/yaml": "yaml", "application/x-msgpack": "msgpack"}

# setting -> (default when None, why a difference loses or duplicates tasks)
DRIFT = {
    "task_acks_late": (False, "late acks decide whether a task killed mid-run is redelivered or lost"),
    "task_reject_on_worker_lost": (False, "decides whether a task whose child process died is requeued or acked"),
    # Request.on_failure: a failed late-ack task is acked, or rejected WITHOUT requeue (dropped); a timed-out one is
    # acked or, from Celery 5.7 (acks_on_timeout falls back to this setting), requeued; before 5.7 it is dropped too
    "task_acks_on_failure_or_timeout": (True, "decides whether failed late-ack tasks are acked or dropped (rejected "
                                              "without requeue), and timed-out ones acked or requeued (Celery 5.7)"),
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
    relevant = {w.name for w in relevant_workers(snapshot)}
    app_vt = app_visibility_timeout(config)
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
            vt, _ = worker_visibility_timeout(worker, config)
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
    workers = [w for w in relevant_workers(snapshot) if w.celery_version or w.kombu_version]
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
