"""Live Redis checks of the queues and where kombu keeps them: wrong key types, backlogs nobody
consumes, kombu keys in another database or prefix, missing binding sets (CD206, CD215, CD216, CD218)."""
from __future__ import annotations

from celery_doctor.facts.routing import exchange_routes
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import plural, preview
from .redis_common import NEEDS


@check(
    id="CD218",
    slug="redis-queue-key-wrong-type",
    title="A queue's key holds something other than a list: workers' BRPOP on that queue fails",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks of one queue are not received although workers consume it; a `BRPOP` over the queue's keys "
                "answers `WRONGTYPE Operation against a key holding the wrong kind of value`.",
        why="kombu stores a queue as LIST keys: the bare name and one sub-queue per priority step "
            "(`<queue>\\x06\\x163`, `...6`, `...9`), and a worker fetches with one `BRPOP` over all of them. "
            "Redis answers that BRPOP with WRONGTYPE as soon as it reaches a key that exists and is not a list "
            "before it has found a message (checked on redis-server 7.0: with the bare list empty and a STRING at "
            "the priority-3 key, `BRPOP q q\\x06\\x163 1` returns WRONGTYPE). The fetch fails instead of delivering, "
            "so messages in that queue wait; another application writing its own keys into the broker's database "
            "is the usual cause.",
        confirm="`redis-cli -n <db> --scan --pattern '<queue>*'` then `TYPE` on each key; every one must be `list`.",
        fix="Find who writes that key (another app sharing the database or prefix) and move it elsewhere; then "
            "delete the wrong key (`redis-cli -n <db> DEL <key>`) after checking it holds nothing you need.",
        risk="Deleting the wrong key destroys whatever the other application kept there: read it first.",
    ),
)
def redis_queue_key_wrong_type(snapshot: Snapshot):
    state = snapshot.redis
    by_queue: dict = {}
    for queue, key in state.wrong_type:
        by_queue.setdefault(queue, []).append(key)
    for queue, keys in sorted(by_queue.items()):
        depth = state.queue(queue).depth if state.queue(queue) else 0
        yield redis_queue_key_wrong_type.finding(
            subject=f"queue:{queue}", confidence=Confidence.OBSERVED, messages_at_risk=depth,
            evidence=[f"{key!r} is not a list (LLEN answered WRONGTYPE)" for key in keys]
                     + [f"{depth:,} message(s) in the list keys of {queue!r} wait behind it"])


@check(
    id="CD206",
    slug="redis-backlog-no-consumer",
    title="Queue with a backlog that no live consumer is taking from",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks are accepted by `.delay()` but never run; the queue's LLEN only grows.",
        why="On Redis a consumer is a client blocked in BRPOP on the queue's keys. When no client on the "
            "database is in BRPOP, or the queue's list has not been touched for a long time while it holds messages "
            "(a consumer pops continuously from a non-empty list), nothing is taking those tasks: no worker "
            "consumes that queue, or every worker is stuck or gone.",
        confirm="`redis-cli -n <db> LLEN <queue>`; `redis-cli CLIENT LIST | grep cmd=brpop` (consumers and their "
                "db); `redis-cli -n <db> OBJECT IDLETIME <queue>`; `celery -A proj inspect active_queues`.",
        fix="Start a worker that consumes the queue (`celery -A proj worker -Q <queue>`), or route the tasks to a "
            "queue that workers consume.",
        risk="Starting consumers on a large backlog runs all those tasks now, including stale ones: check for "
             "expired or duplicated messages first (CD210, CD212).",
    ),
)
def redis_backlog_no_consumer(snapshot: Snapshot):
    state = snapshot.redis
    consumers = state.consumers
    for queue in state.queues:
        if not queue.depth:
            continue
        evidence = [f"{queue.name}: {queue.depth:,} message(s) waiting"
                    + (f" ({', '.join(f'priority {s.priority}: {s.depth:,}' for s in queue.subqueues if s.depth)})"
                       if sum(1 for s in queue.subqueues if s.depth) > 1 else "")]
        if consumers == 0:
            evidence.append(f"no client on db {state.db} is blocked in BRPOP (CLIENT LIST): no worker consumes any "
                            "queue of this database")
            if state.pidbox_nodes:
                evidence.append(f"mailboxes still bound for {preview(state.pidbox_nodes)}: those workers existed but "
                                "are not consuming")
            confidence = Confidence.OBSERVED
        elif queue.idle_s is not None and queue.idle_s >= 300:
            evidence.append(f"the list was last read or written {human_seconds(queue.idle_s)} ago (OBJECT IDLETIME): "
                            f"the {plural(consumers or 0, 'consumer')} on db {state.db} do not take from it")
            confidence = Confidence.OBSERVED if consumers is not None else Confidence.INFERRED
        else:
            continue
        if queue.tasks:
            evidence.append(f"tasks in it: {preview(f'{k} ({v:,})' for k, v in queue.tasks.items())}")
        yield redis_backlog_no_consumer.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                                confidence=confidence, messages_at_risk=queue.depth)


@check(
    id="CD215",
    slug="redis-keys-in-other-db-or-prefix",
    title="Kombu queues under another database or key prefix than the app uses: work where no worker looks",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Producers say they sent tasks, the app's queues are empty, and workers are idle.",
        why="Kombu addresses everything by database number and `global_keyprefix`. A producer with another db in its "
            "URL or another prefix writes to queues no worker of this app reads; the messages wait there forever.",
        confirm="`redis-cli INFO keyspace`; `redis-cli -n <db> --scan --pattern '*_kombu.binding.*'`; compare the "
                "URL and broker_transport_options of producers and workers.",
        fix="Use one broker URL (same db) and the same `global_keyprefix` for producers and workers; then move or "
            "re-send the stranded messages.",
        risk="Pointing workers at the other database makes them run whatever piled up there.",
    ),
)
def redis_keys_elsewhere(snapshot: Snapshot):
    state = snapshot.redis
    config = snapshot.config
    own = set(config.routed_queues()) | set(config.queue_names()) if config is not None else set()
    for foreign in state.foreign:
        where = f"db {foreign.db}" + (f" prefix {foreign.prefix!r}" if foreign.prefix else " (no prefix)")
        evidence = [f"the app uses db {state.db} with prefix {state.prefix!r}; kombu keys found in {where}"]
        if foreign.queues:
            evidence.append("queues there: " + preview(f"{q} ({n:,})" for q, n in foreign.queues.items()))
        if foreign.unacked:
            evidence.append(f"{foreign.unacked:,} unacked there")
        if foreign.bindings:
            evidence.append(f"binding sets for {preview(foreign.bindings)}")
        shared = sorted(own & set(foreign.queues))
        if shared:
            # The app's own queue names, somewhere the app does not look: a producer or worker is misconfigured.
            evidence.append(f"the app's own queue name(s) {preview(shared)} hold messages there")
            yield redis_keys_elsewhere.finding(
                subject=f"server:{state.url} {where}", evidence=evidence, confidence=Confidence.OBSERVED,
                messages_at_risk=sum(foreign.queues[q] for q in shared) or None,
                impact=Impact.HIGH if foreign.messages else Impact.LOW)
        else:
            # Other queue names may just be another application sharing the server.
            evidence.append("none of them is a queue of this app: another application may use that database "
                            "(if so, ignore this); otherwise a producer writes where no worker of this app looks")
            yield redis_keys_elsewhere.finding(
                subject=f"server:{state.url} {where}", evidence=evidence, confidence=Confidence.INFERRED,
                impact=Impact.LOW)


@check(
    id="CD216",
    slug="redis-binding-set-missing",
    title="The app routes through an exchange whose Redis binding set is missing: those tasks reach no queue",
    category=Category.ROUTING,
    needs=NEEDS,
    runbook=Runbook(
        symptom="`.delay()` succeeds for some tasks, yet no queue grows and no worker receives them.",
        why="Routes that give an exchange (and routing key) without a queue are resolved by kombu through the set "
            "`_kombu.binding.<exchange>`. It exists only after a consumer declared a queue bound to it; a Redis "
            "restart without persistence, an eviction or a flush removes it. Without it kombu (5.2+) delivers to "
            "zero queues and raises nothing.",
        confirm="`redis-cli -n <db> SMEMBERS _kombu.binding.<exchange>` (empty = dropped publishes); the route in "
                "`task_routes`.",
        fix="Route by queue (`{'queue': 'name'}`), or declare the queue in `task_queues` and start a worker that "
            "consumes it (which recreates the binding).",
        risk="None for delivery; re-check exchange-based fan-out consumers after switching to queue routes.",
    ),
)
def redis_binding_missing(snapshot: Snapshot):
    state = snapshot.redis
    config = snapshot.config
    routed = exchange_routes(config) if config is not None else {}
    for exchange in state.missing_bindings:
        tasks = routed.get(exchange, [])
        evidence = [f"no key {state.prefix}_kombu.binding.{exchange} on db {state.db}",
                    f"tasks routed through exchange {exchange!r} without a queue: {preview(tasks) if tasks else 'by task_routes patterns'}",
                    "every such publish is delivered to no queue, silently"]
        yield redis_binding_missing.finding(subject=f"exchange:{exchange}", evidence=evidence,
                                            confidence=Confidence.OBSERVED, messages_at_risk=0)
