"""Live worker checks of the messages workers hold: prefetched tasks piling up on one worker, and tasks
held unacknowledged past Redis' visibility timeout or RabbitMQ's consumer_timeout (CD405-CD407)."""
from __future__ import annotations

from typing import Any

from celery_doctor.facts.timeouts import rabbitmq_consumer_timeout
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import plural, preview, setting_location
from .workers_common import INSPECT, NEEDS, worker_visibility_timeout


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
            yield prefetch_hoarding.finding(
                subject=f"worker:{worker.name}",
                evidence=_hoarding_evidence(worker, idle, queue, config),
                confidence=Confidence.OBSERVED,
                messages_at_risk=worker.reserved_total,
                location=setting_location(config, "worker_prefetch_multiplier"),
            )


def _hoarding_evidence(worker: Any, idle: list, queue: str, config: Any) -> list[str]:
    """What a worker holds in reserve while others on the same queue are idle, and its prefetch settings."""
    window = (f"prefetch_count={worker.prefetch_count}" if worker.prefetch_count is not None else "prefetch unknown")
    evidence = [f"{worker.name} holds {plural(worker.reserved_total, 'reserved task')} "
                f"behind {worker.active_total} active ({window}, concurrency {worker.concurrency})",
                f"idle on the same queue {queue!r}: {preview(w.name for w in idle)} (0 active, 0 reserved)"]
    names = sorted({t.name for t in worker.reserved or ()})
    if names:
        evidence.append(f"reserved tasks: {preview(names)}")
    evidence.append(f"worker_prefetch_multiplier={worker.conf.get('worker_prefetch_multiplier', config.value('worker_prefetch_multiplier'))!r}")
    return evidence


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
        vt, vt_text = worker_visibility_timeout(worker, config)
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
    known = rabbitmq_consumer_timeout(snapshot.options)
    limit, limit_text = known.seconds, known.describe()
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
