"""Live Redis checks of kombu's unacked messages: older than the visibility timeout with nobody to
restore them, or held by workers that are gone (CD207, CD208)."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.settings import human_seconds

from ._util import plural, preview
from .redis_common import NEEDS


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
