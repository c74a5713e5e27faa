"""Live worker checks of whether workers are there at all: none running, or running and silent
(CD409, CD410)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts.workers import CONNECTED, GONE, UNTOLD

from ._util import plural, preview
from .workers_common import INSPECT, NEEDS, discovery_text, queue_depths, waiting_text


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
    views = queue_depths(snapshot)
    evidence = []
    if state.discovered:
        evidence.append(f"no worker on the broker: no {discovery_text(state)}")
    else:
        evidence.append(f"the broker could not list workers ({state.discovery_error or 'unknown reason'})")
    if state.broadcast_sent:
        evidence.append(f"no reply to a broadcast ping within {state.wait_s:g} s")
    waiting = 0
    for queue, tasks in sorted(config.routed_queues().items()):
        depth, text = waiting_text(views, queue)
        waiting += depth or 0
        if depth or tasks:
            evidence.append(f"{text}" + (f" (routed there: {preview(tasks, 4)})" if tasks else ""))
    yield no_worker.finding(
        subject=f"server:{snapshot.target.broker or 'broker'}",
        evidence=evidence,
        confidence=Confidence.OBSERVED if state.discovered else Confidence.INFERRED,
        messages_at_risk=waiting or None,
    )


def _running(worker) -> str:
    return f"{worker.name} (running {preview((t.name for t in worker.active), limit=3)})"


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
            "killed with SIGKILL or OOM also leaves its mailbox binding behind; the scan tells it from a busy one "
            "by its connections (a killed worker's are closed at once, a busy one keeps its mailbox "
            "subscription): it counts the clients its own ping reached (PUBLISH says how many) against the workers "
            "that answered: when no subscription is left for the silent workers they were killed; when all still "
            "hold one they are connected (busy or blocked); in between, Redis does not say whose a subscription "
            "is, and the report says how many of each, not which.",
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
                    f"(scan timeout {snapshot.options.timeout} s): it is busy (e.g. a solo pool "
                    "running a long task), blocked or hung, not absent"]
        verdict = None
        if state.transport == "redis":
            lines, verdict = _redis_mailbox(snapshot, state, worker)
            if verdict in (GONE, UNTOLD):  # not (surely) busy: keep what it did not answer, drop the reading of it
                evidence[1] = evidence[1].split("): it is busy")[0] + ")"
            evidence.extend(lines)
        else:
            evidence.append("its mailbox queue is exclusive to the worker's connection and still has a consumer: that "
                            "connection is open (a killed worker's closes at once and the queue goes with it), so the "
                            "worker is alive")
        if worker.undecoded:
            evidence.append(f"some replies were in {worker.undecoded} and were not decoded")
        if answered:
            evidence.append(f"{plural(len(answered), 'other worker')} answered: {preview(w.name for w in answered)}")
        busy = [w for w in answered if w.active]
        if busy:
            evidence.append("busy and alive (they answered while running tasks): "
                            f"{preview((_running(w) for w in busy), limit=4)}")
        yield silent_worker.finding(
            subject=f"worker:{worker.name}",
            evidence=evidence,
            confidence=Confidence.OBSERVED,
            impact=Impact.HIGH if verdict == GONE else None,
            title=_TITLES.get(verdict),
        )


_TITLES = {
    GONE: "A worker's mailbox is still bound but no connection listens: it was killed, not busy",
    CONNECTED: "A running worker did not answer but is still connected: busy (solo pool in a long task) or blocked",
    UNTOLD: "A worker did not answer: busy, blocked or killed (the broker shows some silent workers killed, "
            "not which)",
}


def _redis_mailbox(snapshot: Snapshot, state, worker) -> tuple[list[str], "str | None"]:
    """Redis: what the receivers of the scan's own ping say of this worker's mailbox (collectors/workers.py); the
    CLIENT LIST count when the collector could not count them. (evidence lines, CONNECTED / GONE / UNTOLD / None)"""
    if worker.mailbox is None or state.mailbox_listeners is None:
        lines, killed = _mailbox_connections(snapshot, state)
        return lines, GONE if killed else None
    silent = [w for w in state.silent if w.known]
    held = max(0, state.mailbox_listeners - len(state.answered))
    where = (f"the scan's ping reached {plural(state.mailbox_listeners, 'mailbox subscription')} (the PUBLISH reply) "
             f"and {len(state.answered)} worker(s) answered")
    if worker.mailbox == GONE:
        return [where + (": no subscription is left for the silent worker" if len(silent) == 1 else
                         f": none is left for the {len(silent)} silent workers")
                + ": its connections are gone, so it was killed without a clean shutdown (SIGKILL, the OOM killer) "
                  "or cut off from Redis, not busy; its mailbox binding stayed behind"], GONE
    if worker.mailbox == CONNECTED:
        return [where + (": the silent worker still holds its subscription" if len(silent) == 1 else
                         f": the {len(silent)} silent workers still hold theirs")
                + ": connected but not answering, so busy (a solo pool runs a task in its only loop) or blocked, "
                  "not killed (a killed process's connections close at once; a lost host's may linger until TCP "
                  "keepalive ends them, and another client listening on the mailbox channel would count too)"], CONNECTED
    return [where + f": {held} of the {len(silent)} silent workers still hold a subscription (busy or blocked) and "
                    f"{len(silent) - held} hold none (killed without a clean shutdown, or cut off from Redis); Redis "
                    "does not say whose a subscription is, so which of them is which cannot be told here: check "
                    "the processes"], UNTOLD


def _mailbox_connections(snapshot: Snapshot, state) -> tuple[list[str], bool]:
    """Redis: the connections of the database subscribed to a mailbox (CLIENT LIST, from the redis part) against the
    workers whose mailbox is bound. A killed worker leaves its binding but no connection (its kernel closes them at
    once); a busy or blocked one keeps its subscription. (evidence lines, every silent worker is gone)"""
    redis = snapshot.redis
    if redis is None or not redis.clients.available:
        return ["on Redis a worker killed without a clean shutdown leaves the same binding: check the process "
                "exists"], False
    subscribed = redis.clients.subscribers_by_db.get(redis.db, 0)
    known = sum(1 for w in state.workers if w.known)
    silent = len(state.silent)
    missing = known - subscribed
    where = (f"CLIENT LIST: {plural(subscribed, 'connection')} to db {redis.db} subscribed (worker mailboxes, "
             f"event monitors) for {known} bound worker mailbox(es)")
    if silent and missing >= silent:
        return [where + (": the silent worker holds none" if silent == 1 else ": none of the silent workers holds one")
                + ", so it was killed without a clean shutdown (SIGKILL, the OOM killer, a lost host: its mailbox "
                  "binding stayed behind), not busy"], True
    if missing > 0:
        return [where + f": at least {missing} of the {silent} silent workers hold none (killed without a clean "
                        "shutdown), but the evidence cannot single out which"], False
    return [where + ": the silent worker may still be connected (busy or blocked); a killed worker leaves its binding "
                    "but no connection, and a monitor such as Flower subscribes too, so one missing connection can "
                    "hide"], False
