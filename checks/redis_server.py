"""Live Redis checks of the server: eviction, memory, persistence, failover URLs, cluster mode
(CD201-CD205, CD217)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from .redis_common import NEEDS, REDIS_DOCS, exposed, mb, reads_server, server_subject


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
@reads_server
def redis_eviction_policy(snapshot: Snapshot):
    state = snapshot.redis
    server = state.server
    policy = (server.maxmemory_policy or "").lower()
    if not policy or policy == "noeviction":
        return
    limit = f"maxmemory={server.maxmemory:,} bytes ({mb(server.maxmemory)})" if server.maxmemory else \
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
    evidence.append(exposed(state))
    yield redis_eviction_policy.finding(subject=server_subject(state), evidence=evidence, impact=impact,
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
@reads_server
def redis_memory_near_limit(snapshot: Snapshot):
    state = snapshot.redis
    server = state.server
    if not server.maxmemory or server.used_memory is None:
        return
    ratio = server.used_memory / server.maxmemory
    if ratio < 0.8 and not state.memory_stop:
        return
    evidence = [f"used_memory={server.used_memory:,} bytes ({mb(server.used_memory)}) is {ratio:.0%} of "
                f"maxmemory={server.maxmemory:,} ({mb(server.maxmemory)}), "
                f"{mb(server.maxmemory - server.used_memory)} left",
                f"maxmemory-policy={server.maxmemory_policy}: "
                + ("new publishes will be refused" if (server.maxmemory_policy or "") == "noeviction"
                   else "keys will be evicted")]
    if state.memory_stop:
        evidence.append("celery-doctor stopped reading queued messages so as not to add its reply buffers to that "
                        "memory: queue contents are not checked")
    evidence.append(exposed(state))
    yield redis_memory_near_limit.finding(
        subject=server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
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
@reads_server
def redis_evicted_keys(snapshot: Snapshot):
    state = snapshot.redis
    evicted = state.server.evicted_keys
    if not evicted:
        return
    yield redis_evicted_keys.finding(
        subject=server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
        evidence=[f"INFO stats evicted_keys={evicted:,} since the server started "
                  f"({human_seconds(state.server.uptime_s or 0)} ago) or the last CONFIG RESETSTAT",
                  f"maxmemory-policy={state.server.maxmemory_policy}",
                  "which keys were evicted is not recorded: queues and unacked messages may be among them",
                  exposed(state) + " are exposed to further evictions"])


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
@reads_server
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
    evidence.append(exposed(state) + " would be lost by a restart")
    yield redis_no_persistence.finding(subject=server_subject(state), evidence=evidence, confidence=confidence,
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
@reads_server
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
@reads_server
def redis_cluster_mode(snapshot: Snapshot):
    state = snapshot.redis
    if not state.server.cluster_enabled:
        return
    yield redis_cluster_mode.finding(
        subject=server_subject(state), confidence=Confidence.OBSERVED, messages_at_risk=state.at_risk,
        evidence=[f"INFO cluster: cluster_enabled=1 (redis_mode={state.server.mode})",
                  "this scan saw only the keys on the node the URL points at", exposed(state)])
