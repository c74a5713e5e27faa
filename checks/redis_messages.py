"""Live Redis checks of what the queued messages themselves say: ETAs beyond the visibility timeout,
expired, unregistered, duplicated, malformed and unsafely serialized messages (CD209-CD214)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import preview
from .redis_common import NEEDS, REDIS_DOCS, queues_with_summary, reads_messages, scaled, when_text


@check(
    id="CD209",
    slug="redis-queued-eta-beyond-visibility-timeout",
    title="Queued tasks with an ETA beyond the visibility timeout: they will be redelivered and run again",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The same task id runs two or more times, about visibility_timeout apart, for countdown/ETA tasks.",
        why="A worker takes an ETA task at once and holds it unacked until the ETA. Kombu's restore sweep re-queues "
            "any unacked message delivered more than `visibility_timeout` ago, so a task whose ETA is further away "
            "than that is delivered again (and again), and every copy runs.",
        confirm="`redis-cli -n <db> LRANGE <queue> 0 10` and read `headers.eta`; `celery -A proj inspect scheduled`; "
                "compare with broker_transport_options['visibility_timeout'].",
        fix="Raise `broker_transport_options['visibility_timeout']` above the longest ETA/countdown (on every "
            "producer and worker), or schedule far-future work with beat or a database.",
        risk="A longer visibility timeout delays recovery of tasks whose worker crashed (CD112).",
        references=(REDIS_DOCS, "https://github.com/celery/kombu/issues/337"),
    ),
)
@reads_messages
def redis_queued_eta_beyond_vt(snapshot: Snapshot):
    state = snapshot.redis
    for queue in queues_with_summary(state):
        summary = queue.summary
        if not summary.eta_beyond_vt:
            continue
        at_risk, counted, confidence = scaled(queue, summary.eta_beyond_vt)
        evidence = [f"{queue.name}: {counted} have an ETA more than {human_seconds(state.vt)} away "
                    f"(visibility_timeout {state.vt_source})",
                    f"latest ETA {when_text(summary.eta_max)}"]
        evidence += [f"e.g. {task} eta={eta}" for task, eta in summary.eta_examples[:3]]
        evidence.append("each is redelivered every visibility_timeout while a worker holds it, and each copy runs")
        yield redis_queued_eta_beyond_vt.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                                 confidence=confidence, messages_at_risk=at_risk)
    if state.unacked.eta_beyond_vt:
        yield redis_queued_eta_beyond_vt.finding(
            subject="queue:unacked", confidence=Confidence.OBSERVED, messages_at_risk=state.unacked.eta_beyond_vt,
            evidence=[f"{state.unacked.eta_beyond_vt:,} unacked ETA task(s) were delivered more than the visibility "
                      f"timeout ({human_seconds(state.vt)}) before their ETA",
                      "they will be restored to their queue and delivered again before they run"])


@check(
    id="CD210",
    slug="redis-expired-messages-queued",
    title="Expired tasks still queued: workers will discard them as revoked",
    category=Category.TASK_CODE,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks end up REVOKED without anyone revoking them; worker logs `Discarding revoked task`.",
        why="A task sent with `expires` (or a beat entry with `options.expires`) that is still queued after that "
            "time is received and dropped by the worker. They piled up because consumers were slow or absent, or "
            "because the producer's clock or timezone is off (naive datetimes).",
        confirm="Read `headers.expires` of queued messages (`redis-cli -n <db> LRANGE <queue> -10 -1`) and compare "
                "with the current UTC time; the worker log shows `Discarding revoked task`.",
        fix="Consume the queue faster (more workers, or a worker that consumes it at all: CD206), give `expires` in "
            "seconds rather than naive datetimes, and choose expiries longer than the backlog can get.",
        risk="Longer expiries let stale work run late; for beat jobs, late duplicates can pile up (CD212).",
    ),
)
@reads_messages
def redis_expired_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in queues_with_summary(state):
        summary = queue.summary
        if not summary.expired:
            continue
        at_risk, counted, confidence = scaled(queue, summary.expired)
        evidence = [f"{queue.name}: {counted} are past their `expires` time at {when_text(summary.now)}"]
        evidence += [f"e.g. {task} expired {exp}" for task, exp in summary.expired_examples[:3]]
        evidence.append("a worker that receives them discards them as revoked: they never run")
        yield redis_expired_messages.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                             confidence=confidence, messages_at_risk=at_risk)


@check(
    id="CD211",
    slug="redis-unregistered-task-messages",
    title="Queued messages for tasks the app does not register: workers will discard them",
    category=Category.ROUTING,
    needs=("redis", "config"),
    runbook=Runbook(
        symptom="Worker logs `Received unregistered task of type 'x'. The message has been ignored and discarded.`",
        why="A worker rejects (without requeue) any message whose task name it does not know; the task is marked "
            "FAILED with NotRegistered. Names drift when a task is renamed or moved, when producers run newer code "
            "than workers, or when another app shares the broker database.",
        confirm="`celery -A proj inspect registered`; read `headers.task` of queued messages "
                "(`redis-cli -n <db> LRANGE <queue> 0 10`).",
        fix="Register the task under that name (the `name=` argument keeps old names working), deploy workers "
            "before producers, or give each app its own database or `global_keyprefix`.",
        risk="Keeping an old name alive keeps the old code path: remove it once the queue has drained.",
    ),
)
@reads_messages
def redis_unregistered_messages(snapshot: Snapshot):
    state = snapshot.redis
    registered = snapshot.config.registered
    for queue in queues_with_summary(state):
        unknown = queue.summary.unknown_tasks(registered)
        if not unknown:
            continue
        total = sum(unknown.values())
        at_risk, counted, confidence = scaled(queue, total)
        yield redis_unregistered_messages.finding(
            subject=f"queue:{queue.name}", confidence=confidence, messages_at_risk=at_risk,
            evidence=[f"{queue.name}: {counted} are for tasks the app does not register: "
                      + preview(f"{name} ({count:,})" for name, count in unknown.items()),
                      f"the app registers {len(registered)} task names"
                      + (f", e.g. {preview(sorted(n for n in registered if not n.startswith('celery.')), 4)}"
                         if any(not n.startswith('celery.') for n in registered) else ""),
                      "a worker of this app discards them as unregistered"])


@check(
    id="CD212",
    slug="redis-duplicate-messages",
    title="Many queued copies of the same task call: duplicates piling up (e.g. a beat backlog)",
    category=Category.TASK_CODE,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The same periodic task runs many times in a burst after workers come back; a queue holds thousands "
                "of identical calls.",
        why="Beat keeps publishing on schedule while no worker consumes; so do retried or re-sent calls. When workers "
            "return they run every copy, hammering downstream systems, and the queue grows without bound meanwhile. "
            "Several beat instances multiply the copies.",
        confirm="`redis-cli -n <db> LRANGE <queue> 0 100` and compare `headers.task` and `argsrepr`; check that only "
                "one beat process runs.",
        fix="Give periodic tasks `options={'expires': <interval>}` so stale copies are dropped, run exactly one beat, "
            "and make such tasks idempotent; purge the stale copies once you know they are not needed.",
        risk="Purging deletes the copies for good; expiring drops runs that were still wanted if the interval is too "
             "short.",
    ),
)
@reads_messages
def redis_duplicate_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in queues_with_summary(state):
        summary = queue.summary
        if not summary.duplicates:
            continue
        top = summary.duplicates[0]
        if top.count < 3 and summary.duplicate_copies < 10:
            continue
        at_risk, counted, confidence = scaled(queue, summary.duplicate_copies)
        evidence = [f"{queue.name}: {counted} repeat a call already queued "
                    f"({summary.duplicate_calls:,} distinct calls queued more than once)"]
        for group in summary.duplicates[:3]:
            evidence.append(f"{group.task}{group.argsrepr or '()'} kwargs={group.kwargsrepr or '{}'}: "
                            f"{group.count:,} copies")
        if summary.duplicates_approximate:
            evidence.append("counts are lower bounds (too many distinct calls to count exactly)")
        yield redis_duplicate_messages.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                               confidence=confidence, messages_at_risk=at_risk,
                                               impact=Impact.MEDIUM)


@check(
    id="CD213",
    slug="redis-malformed-messages",
    title="Malformed or undecodable messages in a queue: workers reject them",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Worker logs `Received invalid task message` or `Can't decode message body`, and tasks sent by some "
                "producer never run.",
        why="A message that is not a kombu JSON envelope with Celery protocol-2 headers (a foreign producer, a "
            "protocol-1 client, a hand-written LPUSH, truncation) cannot be executed: the worker logs an error and "
            "drops or rejects it.",
        confirm="`redis-cli -n <db> LINDEX <queue> -1` and inspect the raw value; find which producer wrote it.",
        fix="Fix the producer (send with Celery/kombu, protocol 2, a supported serializer); move the bad messages "
            "out of the way once understood.",
        risk="Deleting them loses whatever they were meant to do: record them first.",
    ),
)
@reads_messages
def redis_malformed_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in queues_with_summary(state):
        summary = queue.summary
        if not summary.malformed:
            continue
        at_risk, counted, confidence = scaled(queue, summary.malformed)
        evidence = [f"{queue.name}: {counted} could not be read as Celery task messages"]
        evidence += [f"{count:,} × {reason}" for reason, count in summary.malformed_reasons[:4]]
        yield redis_malformed_messages.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                               confidence=confidence, messages_at_risk=at_risk)


@check(
    id="CD214",
    slug="redis-unsafe-serializer-messages",
    title="Queued messages use pickle (or yaml): rejected by JSON-only workers, code execution if accepted",
    category=Category.TASK_CODE,
    needs=("redis", "config"),
    runbook=Runbook(
        symptom="Worker logs `ContentDisallowed: Refusing to deserialize untrusted content of type pickle` and the "
                "tasks never run, or a security review flags pickle.",
        why="Workers reject, without requeue, messages whose content type is not in `accept_content` (default "
            "json only): those tasks are lost. If a worker does accept pickle, anyone who can write to the broker "
            "can run code on the workers.",
        confirm="Read `content-type` of queued messages (`redis-cli -n <db> LINDEX <queue> -1`); "
                "`celery -A proj inspect conf | grep -i accept_content`.",
        fix="Send with `serializer='json'` (fix the producer setting `task_serializer` or per-call `serializer=`), "
            "keep `accept_content=['json']`.",
        risk="Switching producers to JSON fails for arguments JSON cannot encode (datetimes are fine in Celery's "
             "JSON, custom objects are not): pass ids or plain data instead.",
    ),
)
@reads_messages
def redis_unsafe_serializer_messages(snapshot: Snapshot):
    state = snapshot.redis
    accept = snapshot.config.value("accept_content") or ("json",)
    accept = {str(a).lower() for a in accept} if isinstance(accept, (list, tuple, set, frozenset)) else {str(accept)}
    for queue in queues_with_summary(state):
        summary = queue.summary
        if not summary.unsafe:
            continue
        total = sum(count for _, count in summary.unsafe)
        at_risk, counted, confidence = scaled(queue, total)
        kinds = ", ".join(f"{name} ({count:,})" for name, count in summary.unsafe)
        refused = [name for name, _ in summary.unsafe
                   if name not in accept and "application/x-python-serialize" not in accept]
        evidence = [f"{queue.name}: {counted} are serialized with {kinds}",
                    f"accept_content={sorted(accept)}"]
        if refused:
            evidence.append("workers with this accept_content reject them without requeue: lost")
        else:
            evidence.append("workers accept them: whoever can write to this Redis can run code on the workers")
        yield redis_unsafe_serializer_messages.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                                       confidence=confidence,
                                                       messages_at_risk=at_risk if refused else 0)
