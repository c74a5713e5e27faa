"""Live checks of a Redis broker (CD201-CD249): server settings that drop data, queues nobody consumes,
unacked messages nobody restores, and what the queued messages themselves say."""
from __future__ import annotations

import datetime as dt
import functools
from typing import Optional

from celery_doctor.model import Category, Confidence, Impact, Runbook, SkipCheck, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import plural, preview

NEEDS = ("redis",)
REDIS_DOCS = "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html"


def _mb(value: Optional[int]) -> str:
    return "unknown" if value is None else f"{value / 1024 / 1024:,.1f} MB"


def _server_subject(state) -> str:
    return f"server:{state.url}"


def _exposed(state) -> str:
    return (f"{state.queued:,} message(s) queued in {plural(sum(1 for q in state.queues if q.depth), 'queue')} "
            f"and {state.unacked.entries:,} unacked on db {state.db}")


def _when(epoch: Optional[float]) -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _scaled(queue, count: int) -> tuple[int, str, Confidence]:
    """Messages at risk in a queue from a count in its sample: exact when every message was read."""
    if queue.complete or not queue.sampled:
        return count, f"{count:,} of {queue.depth:,} messages", Confidence.OBSERVED
    estimate = round(count * queue.depth / queue.sampled)
    return estimate, (f"{count:,} of {queue.sampled:,} sampled messages (about {estimate:,} of the {queue.depth:,} "
                      f"queued; --deep reads every one)"), Confidence.INFERRED


def _queues_with_summary(state):
    return [q for q in state.queues if q.summary is not None and q.summary.analysed]


def _reads_server(fn):
    """For checks over the server's INFO: when an ACL refused INFO, nothing is known, so the check skips."""

    @functools.wraps(fn)
    def run(snapshot: Snapshot):
        refused = snapshot.redis.server.info_refused
        if refused:
            raise SkipCheck(f"INFO was not allowed: {refused}")
        return list(fn(snapshot))

    return run


def _reads_messages(fn):
    """For checks over queued messages: finding nothing where a queue's read was cut short (deadline, memory
    pressure, a lost connection) is not a pass but a skip, naming the queues."""

    @functools.wraps(fn)
    def run(snapshot: Snapshot):
        found = list(fn(snapshot))
        if not found:
            cut = [q.name for q in snapshot.redis.queues if q.cut]
            if cut:
                raise SkipCheck(f"messages of {preview(cut)} were only partly read (see Not checked)")
        return found

    return run


# -- server ------------------------------------------------------------------------------------------
@check(
    id="CD201",
    slug="redis-eviction-policy",
    title="Redis may evict keys under memory pressure: queues and unacked messages can vanish",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Whole queues disappear at once (LLEN drops to 0 with no worker activity), `unacked` or the "
                "`_kombu.binding.*` sets vanish, and INFO stats shows `evicted_keys` growing.",
        why="With `maxmemory` set and an `allkeys-*` policy, Redis deletes whole keys when memory is full. A "
            "Celery queue is one LIST key: evicting it drops every task in it, silently. `allkeys-lru` is no "
            "exception, whatever older docs say (reproduced: a 4 MB limit with allkeys-lru removed a 300-task "
            "queue). `volatile-*` policies only evict keys with a TTL: kombu's queues have none, but results "
            "stored in the same Redis do, and queues with `x-expires` do.",
        confirm="`redis-cli CONFIG GET maxmemory-policy` (or `INFO memory` → `maxmemory_policy` when CONFIG is "
                "disabled) and `redis-cli INFO stats | grep evicted_keys`.",
        fix="Use `maxmemory-policy noeviction` on the broker Redis (publishes then fail loudly with an OOM error "
            "instead of losing queued tasks) and size `maxmemory` for the worst backlog; keep results and caches "
            "in another Redis.",
        risk="With noeviction a full Redis rejects writes: producers get OperationalError and workers cannot "
             "ack/requeue until memory is freed. Alert on memory before it happens (see CD202).",
        references=(REDIS_DOCS, "https://redis.io/docs/latest/develop/reference/eviction/"),
    ),
)
@_reads_server
def redis_eviction_policy(snapshot: Snapshot):
    state = snapshot.redis
    server = state.server
    policy = (server.maxmemory_policy or "").lower()
    if not policy or policy == "noeviction":
        return
    limit = f"maxmemory={server.maxmemory:,} bytes ({_mb(server.maxmemory)})" if server.maxmemory else \
        "maxmemory=0 (no limit yet: the policy acts as soon as one is set)"
    evidence = [f"maxmemory-policy={policy} (from {server.settings_source})", limit]
    if policy.startswith("allkeys"):
        evidence.append("allkeys policies evict any key, Celery queue lists and the unacked hash included: "
                        "every task in an evicted queue is lost")
        impact = Impact.HIGH if server.maxmemory else Impact.MEDIUM
        at_risk = state.at_risk
    else:
        evidence.append(f"{policy} evicts only keys with a TTL: kombu queues have none, but results in this Redis "
                        "and queues declared with x-expires do")
        impact = Impact.LOW
        at_risk = 0
    evidence.append(_exposed(state))
    yield redis_eviction_policy.finding(subject=_server_subject(state), evidence=evidence, impact=impact,
                                        confidence=Confidence.OBSERVED, messages_at_risk=at_risk)


@check(
    id="CD202",
    slug="redis-memory-near-limit",
    title="Redis memory is close to maxmemory: publishes will fail or keys will be evicted",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="`.delay()` raises `OperationalError: OOM command not allowed when used memory > 'maxmemory'`, "
                "or (with an allkeys policy) queues vanish.",
        why="When used memory reaches `maxmemory`, Redis either refuses writes (noeviction: LPUSH of new tasks and "
            "the workers' unacked bookkeeping fail) or evicts keys (queues included under allkeys-*). A backlog "
            "that keeps growing gets there. Reply buffers count toward `maxmemory` too: a client reading large "
            "LRANGE replies (a monitor, a script, `redis-cli LRANGE q 0 -1`) can be what tips it over, so "
            "celery-doctor bounds its own replies to a small share of the free memory and stops reading messages "
            "when little is left.",
        confirm="`redis-cli INFO memory` → `used_memory` vs `maxmemory`; `celery-doctor scan` lists queue depths.",
        fix="Drain or purge the backlog that fills memory (start consumers for it), move results/caches to another "
            "Redis, or raise `maxmemory`.",
        risk="Raising maxmemory beyond the host's RAM gets Redis OOM-killed, losing everything not persisted.",
    ),
)
@_reads_server
def redis_memory_near_limit(snapshot: Snapshot):
    state = snapshot.redis
    server = state.server
    if not server.maxmemory or server.used_memory is None:
        return
    ratio = server.used_memory / server.maxmemory
    if ratio < 0.8 and not state.memory_stop:
        return
    evidence = [f"used_memory={server.used_memory:,} bytes ({_mb(server.used_memory)}) is {ratio:.0%} of "
                f"maxmemory={server.maxmemory:,} ({_mb(server.maxmemory)}), "
                f"{_mb(server.maxmemory - server.used_memory)} left",
                f"maxmemory-policy={server.maxmemory_policy}: "
                + ("new publishes will be refused" if (server.maxmemory_policy or "") == "noeviction"
                   else "keys will be evicted")]
    if state.memory_stop:
        evidence.append("celery-doctor stopped reading queued messages so as not to add its reply buffers to that "
                        "memory: queue contents are not checked")
    evidence.append(_exposed(state))
    yield redis_memory_near_limit.finding(
        subject=_server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
        evidence=evidence, impact=Impact.HIGH if ratio >= 0.9 or state.memory_stop else Impact.MEDIUM)


@check(
    id="CD203",
    slug="redis-evicted-keys",
    title="Redis has evicted keys: queued tasks may already be gone",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks that were queued never ran and left no trace; a queue's length dropped to zero at once.",
        why="`evicted_keys` counts keys Redis deleted to stay under maxmemory since its start (or the last CONFIG "
            "RESETSTAT). If any of them was a queue list or the `unacked` hash, every task in it was dropped.",
        confirm="`redis-cli INFO stats | grep evicted_keys`; compare over time; `redis-cli INFO memory`.",
        fix="Set `maxmemory-policy noeviction` on the broker (CD201), free memory, then find the lost tasks from "
            "their producers (result backend PENDING states, application records) and re-send them.",
        risk="None from reading the counter. Re-sending tasks duplicates those that were not in fact evicted: make "
             "them idempotent first.",
    ),
)
@_reads_server
def redis_evicted_keys(snapshot: Snapshot):
    state = snapshot.redis
    evicted = state.server.evicted_keys
    if not evicted:
        return
    yield redis_evicted_keys.finding(
        subject=_server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
        evidence=[f"INFO stats evicted_keys={evicted:,} since the server started "
                  f"({human_seconds(state.server.uptime_s or 0)} ago) or the last CONFIG RESETSTAT",
                  f"maxmemory-policy={state.server.maxmemory_policy}",
                  "which keys were evicted is not recorded: queues and unacked messages may be among them",
                  _exposed(state) + " are exposed to further evictions"])


@check(
    id="CD204",
    slug="redis-no-persistence",
    title="The broker Redis has no persistence: a restart drops every queued and unacked task",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="After a Redis restart (deploy, crash, host reboot, OOM kill) all queues are empty, tasks never ran, "
                "and routes through exchanges reach nowhere until workers start again.",
        why="Kombu keeps queues, the unacked hash and the binding sets only in Redis memory. Without AOF or RDB "
            "snapshots a restart starts from an empty dataset: every queued and in-flight task is lost, and routes "
            "through an exchange find no binding set (see CD216).",
        confirm="`redis-cli CONFIG GET appendonly` and `CONFIG GET save` (empty = no snapshots), or `INFO persistence` "
                "→ `aof_enabled`, `rdb_last_save_time`, `rdb_saves`.",
        fix="Enable AOF (`appendonly yes`, `appendfsync everysec`) on the broker Redis, or at least RDB snapshots "
            "(`save 60 1000`); on managed Redis, choose a tier with persistence.",
        risk="AOF costs disk I/O and a little latency; `appendfsync always` is much slower. RDB alone still loses "
             "the writes since the last snapshot.",
        references=("https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/",),
    ),
)
@_reads_server
def redis_no_persistence(snapshot: Snapshot):
    state = snapshot.redis
    server = state.server
    persisted = server.persistence
    if persisted:
        return
    evidence = [f"appendonly/aof_enabled={'no' if server.aof_enabled is False else 'unknown'}"]
    if server.rdb_save is not None:
        evidence.append(f"save={server.rdb_save!r} (no RDB snapshots)")
        confidence = Confidence.OBSERVED
    else:
        evidence.append(f"RDB schedule unknown ({server.config_refused or 'CONFIG not read'}); "
                        f"rdb_saves={server.rdb_saves}, rdb_changes_since_last_save={server.rdb_changes_since_last_save}")
        confidence = Confidence.INFERRED
        if server.rdb_saves is None and server.aof_enabled is None:
            return
    evidence.append(_exposed(state) + " would be lost by a restart")
    yield redis_no_persistence.finding(subject=_server_subject(state), evidence=evidence, confidence=confidence,
                                       messages_at_risk=state.at_risk)


@check(
    id="CD205",
    slug="redis-failover-urls",
    title="Failover broker URLs: each one needs checking, and some point at a replica or nowhere",
    category=Category.BROKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="After a failover, workers connect but consume nothing, or producers get `READONLY You can't write "
                "against a read only replica`; writes acknowledged just before the failover are missing.",
        why="With `;`-separated URLs kombu tries them in order and sticks to the first that answers, even a "
            "read-only replica; a dead URL is only noticed at failover time. With `sentinel://`, the master comes "
            "from the sentinels (`master_name` is required); replication is asynchronous, so the last writes "
            "before a failover can be lost. A scan reads one server: the others are only pinged.",
        confirm="`redis-cli -u <each URL> INFO replication` (role, master_link_status); for Sentinel: "
                "`redis-cli -p 26379 SENTINEL get-master-addr-by-name <master_name>` on every sentinel.",
        fix="List only masters that can take over (or use Sentinel with a quorum); set "
            "`broker_transport_options={'master_name': ..., 'socket_timeout': 5}` for Sentinel; consider "
            "`broker_channel_error_retry=True` so READONLY errors reconnect.",
        risk="Reordering URLs moves traffic to another server: drain queues on the old one first.",
        references=("https://github.com/celery/celery/issues/6348",),
    ),
)
@_reads_server
def redis_failover_urls(snapshot: Snapshot):
    state = snapshot.redis
    if not state.failover and state.server.role != "slave":
        return
    evidence = []
    bad = False
    for entry in state.failover:
        if entry.reachable is None:
            evidence.append(f"{entry.url}: {entry.note or 'not checked'}")
        elif not entry.reachable:
            bad = True
            evidence.append(f"{entry.url}: did not answer ({entry.note})")
        else:
            if entry.role != "master":
                bad = True
            evidence.append(f"{entry.url}: answered, role={entry.role}")
    if state.server.role == "slave":
        bad = True
        evidence.append(f"the server read ({state.url}) is a replica of {state.server.master_link}: it refuses "
                        "writes, so publishing and acking fail (READONLY)")
    evidence += [n for n in state.notes if n.startswith("sentinel:")]
    evidence.append(f"the scan read {state.url}; queues on the other servers were not read")
    yield redis_failover_urls.finding(subject="setting:broker_url", evidence=evidence, confidence=Confidence.OBSERVED,
                                      impact=Impact.HIGH if bad else Impact.MEDIUM,
                                      messages_at_risk=state.at_risk if bad else 0)


@check(
    id="CD217",
    slug="redis-cluster-mode",
    title="The broker is a Redis Cluster node: kombu has no cluster transport",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="`CROSSSLOT` or `MOVED` errors in workers or producers; some queues never consumed.",
        why="kombu's Redis transport sends multi-key commands (BRPOP over the priority sub-queues, MULTI/EXEC over "
            "unacked and the queue) that a cluster rejects when keys live in different slots; it follows no "
            "MOVED redirections.",
        confirm="`redis-cli INFO cluster` → `cluster_enabled:1`; `redis-cli CLUSTER INFO`.",
        fix="Use a standalone Redis (with Sentinel for failover) or RabbitMQ for the broker.",
        risk="Moving brokers needs a drain: stop producers, let workers empty the old queues, then switch.",
        references=("https://github.com/celery/celery/issues/2852",),
    ),
)
@_reads_server
def redis_cluster_mode(snapshot: Snapshot):
    state = snapshot.redis
    if not state.server.cluster_enabled:
        return
    yield redis_cluster_mode.finding(
        subject=_server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
        evidence=[f"INFO cluster: cluster_enabled=1 (redis_mode={state.server.mode})",
                  "this scan saw only the keys on the node the URL points at", _exposed(state)])


# -- queues ------------------------------------------------------------------------------------------
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
@_reads_messages
def redis_queued_eta_beyond_vt(snapshot: Snapshot):
    state = snapshot.redis
    for queue in _queues_with_summary(state):
        summary = queue.summary
        if not summary.eta_beyond_vt:
            continue
        at_risk, counted, confidence = _scaled(queue, summary.eta_beyond_vt)
        evidence = [f"{queue.name}: {counted} have an ETA more than {human_seconds(state.vt)} away "
                    f"(visibility_timeout {state.vt_source})",
                    f"latest ETA {_when(summary.eta_max)}"]
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
@_reads_messages
def redis_expired_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in _queues_with_summary(state):
        summary = queue.summary
        if not summary.expired:
            continue
        at_risk, counted, confidence = _scaled(queue, summary.expired)
        evidence = [f"{queue.name}: {counted} are past their `expires` time at {_when(summary.now)}"]
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
@_reads_messages
def redis_unregistered_messages(snapshot: Snapshot):
    state = snapshot.redis
    registered = snapshot.config.registered
    for queue in _queues_with_summary(state):
        unknown = queue.summary.unknown_tasks(registered)
        if not unknown:
            continue
        total = sum(unknown.values())
        at_risk, counted, confidence = _scaled(queue, total)
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
@_reads_messages
def redis_duplicate_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in _queues_with_summary(state):
        summary = queue.summary
        if not summary.duplicates:
            continue
        top = summary.duplicates[0]
        if top.count < 3 and summary.duplicate_copies < 10:
            continue
        at_risk, counted, confidence = _scaled(queue, summary.duplicate_copies)
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
@_reads_messages
def redis_malformed_messages(snapshot: Snapshot):
    state = snapshot.redis
    for queue in _queues_with_summary(state):
        summary = queue.summary
        if not summary.malformed:
            continue
        at_risk, counted, confidence = _scaled(queue, summary.malformed)
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
@_reads_messages
def redis_unsafe_serializer_messages(snapshot: Snapshot):
    state = snapshot.redis
    accept = snapshot.config.value("accept_content") or ("json",)
    accept = {str(a).lower() for a in accept} if isinstance(accept, (list, tuple, set, frozenset)) else {str(accept)}
    for queue in _queues_with_summary(state):
        summary = queue.summary
        if not summary.unsafe:
            continue
        total = sum(count for _, count in summary.unsafe)
        at_risk, counted, confidence = _scaled(queue, total)
        kinds = ", ".join(f"{name} ({count:,})" for name, count in summary.unsafe)
        refused = [name for name, _ in summary.unsafe
                   if name not in accept and f"application/x-python-serialize" not in accept]
        evidence = [f"{queue.name}: {counted} are serialized with {kinds}",
                    f"accept_content={sorted(accept)}"]
        if refused:
            evidence.append("workers with this accept_content reject them without requeue: lost")
        else:
            evidence.append("workers accept them: whoever can write to this Redis can run code on the workers")
        yield redis_unsafe_serializer_messages.finding(subject=f"queue:{queue.name}", evidence=evidence,
                                                       confidence=confidence,
                                                       messages_at_risk=at_risk if refused else 0)


# -- unacked -----------------------------------------------------------------------------------------
@check(
    id="CD207",
    slug="redis-unacked-not-restored",
    title="Unacked messages older than the visibility timeout that nobody restores",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks whose worker crashed never come back; `HLEN unacked` stays above zero for hours.",
        why="Messages a worker took but did not ack wait in kombu's `unacked` hash. Only a live consumer's restore "
            "sweep (every ~100 s, skipped while `unacked_mutex` is held) puts back those delivered more than "
            "`visibility_timeout` ago. Entries older than that plus the mutex time mean no consumer of this "
            "database is sweeping (none alive, a different visibility_timeout, ack emulation off, or a stuck "
            "mutex). An entry in the hash without an index entry is never restored at all.",
        confirm="`redis-cli -n <db> ZRANGE unacked_index 0 9 WITHSCORES` (delivery epochs) vs `date +%s`; "
                "`HLEN unacked` vs `ZCARD unacked_index`; `PTTL unacked_mutex`; `CLIENT LIST | grep cmd=brpop`.",
        fix="Start a worker on this database with the same `visibility_timeout`: its sweep restores them. Check "
            "every consumer uses the same broker_transport_options (the shortest visibility_timeout wins).",
        risk="Restored tasks run again: an acks_late task that had in fact finished before its worker died runs "
             "twice.",
    ),
)
def redis_unacked_not_restored(snapshot: Snapshot):
    state = snapshot.redis
    unacked = state.unacked
    stale = unacked.older_than_vt_slack
    unindexed = unacked.unindexed or 0
    if not stale and not unindexed:
        return
    evidence = []
    if stale:
        evidence.append(f"{stale:,} of {unacked.entries:,} unacked messages were delivered more than "
                        f"{human_seconds(state.vt)} (visibility_timeout {state.vt_source}) plus 5 min ago; "
                        f"the oldest {human_seconds(unacked.oldest_age_s or 0)} ago")
        if unacked.stale_by_queue:
            evidence.append("from " + preview(f"{q} ({n:,})" for q, n in unacked.stale_by_queue.items()))
    if unindexed:
        evidence.append(f"{unindexed:,} entries are in `unacked` but not in `unacked_index`: no sweep will ever "
                        "restore them")
    consumers = state.consumers
    if consumers == 0:
        evidence.append(f"no consumer is connected to db {state.db} to restore them")
    elif consumers:
        evidence.append(f"{plural(consumers, 'consumer')} on db {state.db}, yet none restored them: their "
                        "visibility_timeout may be longer than the app's, or ack emulation is off")
    if unacked.mutex_ttl_ms == -1:
        evidence.append("`unacked_mutex` exists without an expiry: every restore sweep is skipped")
    ex = [e for e in unacked.examples if e.age_s > state.vt][:2]
    evidence += [f"e.g. {e.task} id={e.task_id} from {e.queue}, {human_seconds(e.age_s)} old" for e in ex]
    yield redis_unacked_not_restored.finding(subject="queue:unacked", evidence=evidence,
                                             confidence=Confidence.OBSERVED, messages_at_risk=stale + unindexed)


@check(
    id="CD208",
    slug="redis-unacked-workers-gone",
    title="Unacked messages held by workers that are gone: stranded until a worker restores them",
    category=Category.WORKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Tasks look lost after workers were killed or scaled down; they reappear much later, or never.",
        why="Every message a worker prefetched or was running sits in `unacked` until it is acked. When the worker "
            "dies (SIGKILL, OOM, host loss) they stay there; only another consumer's sweep restores them, and only "
            "once they are older than visibility_timeout. With no consumer connected at all, nothing will ever "
            "restore them.",
        confirm="`redis-cli -n <db> HLEN unacked`; `redis-cli CLIENT LIST | grep cmd=brpop` (no consumers); "
                "`celery -A proj inspect ping`.",
        fix="Start a worker on this database (same visibility_timeout); to get them back sooner, lower "
            "`visibility_timeout` to just above the longest task, and prefetch less (`worker_prefetch_multiplier=1`).",
        risk="A lower visibility_timeout makes long or ETA tasks run twice (CD110, CD209).",
    ),
)
def redis_unacked_workers_gone(snapshot: Snapshot):
    state = snapshot.redis
    unacked = state.unacked
    if not unacked.entries or state.consumers != 0:
        return
    young = max(0, unacked.entries - unacked.older_than_vt)
    evidence = [f"{unacked.entries:,} unacked message(s) on db {state.db}, the oldest delivered "
                f"{human_seconds(unacked.oldest_age_s or 0)} ago",
                f"no client on db {state.db} is consuming (no BRPOP in CLIENT LIST): the workers that took them are gone"]
    if unacked.by_queue:
        evidence.append("from " + preview(f"{q} ({n:,})" for q, n in unacked.by_queue.items()))
    if young:
        evidence.append(f"{young:,} of them become restorable only {human_seconds(state.vt)} after delivery, and only "
                        "when a worker is running")
    if state.pidbox_nodes:
        evidence.append(f"mailboxes still bound for {preview(state.pidbox_nodes)}")
    yield redis_unacked_workers_gone.finding(subject="queue:unacked", evidence=evidence,
                                             confidence=Confidence.OBSERVED, messages_at_risk=unacked.entries)


# -- keys elsewhere ----------------------------------------------------------------------------------
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
    for exchange in state.missing_bindings:
        tasks = sorted(name for name, route in config.routes.items() if route.exchange == exchange and not route.queue) \
            if config is not None else []
        evidence = [f"no key {state.prefix}_kombu.binding.{exchange} on db {state.db}",
                    f"tasks routed through exchange {exchange!r} without a queue: {preview(tasks) if tasks else 'by task_routes patterns'}",
                    "every such publish is delivered to no queue, silently"]
        yield redis_binding_missing.finding(subject=f"exchange:{exchange}", evidence=evidence,
                                            confidence=Confidence.OBSERVED, messages_at_risk=0)


CHECKS = [
    redis_eviction_policy, redis_memory_near_limit, redis_evicted_keys, redis_no_persistence, redis_failover_urls,
    redis_backlog_no_consumer, redis_unacked_not_restored, redis_unacked_workers_gone, redis_queued_eta_beyond_vt,
    redis_expired_messages, redis_unregistered_messages, redis_duplicate_messages, redis_malformed_messages,
    redis_unsafe_serializer_messages, redis_keys_elsewhere, redis_binding_missing, redis_cluster_mode,
    redis_queue_key_wrong_type,
]
