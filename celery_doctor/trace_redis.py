"""Finding one task id on a Redis broker: its queues (priority sub-queues included) and the unacked hash.

Read-only and bounded like the scan: SCAN, chunked LRANGE, ZRANGE/HMGET in chunks. A raw message is
decoded only when it contains the id's bytes, and the search stops at the first match.
"""
from __future__ import annotations

import json
from typing import Optional

from redis.exceptions import ResponseError

from .collectors.redis import open_reader
from .envelope import Envelope, decode_payload
from .facts.timeouts import redis_visibility_timeout
from .redis_memory import MemoryPressure
from .redisio import SEP, Reader, RedisReadError, stream_unacked
from .settings import human_seconds
from .trace_types import TraceLocation

UNACKED_SWEEP_S = 100  # kombu's restore sweep period (unacked_restore_interval x throttle), roughly


def _queue_keys(reader: Reader, snapshot) -> list[tuple[str, int, str]]:
    """(queue, priority, key) to search, the app's own queues first; from the scan's part when it has them."""
    config = snapshot.config
    names: list[str] = list(config.routed_queues()) if config is not None else []
    state = snapshot.redis
    if state is not None:
        known = {q.name: q for q in state.queues}
        ordered = [n for n in names if n in known] + sorted(n for n in known if n not in names)
        return [(name, sub.priority, sub.key) for name in ordered for sub in known[name].subqueues]
    found = _kombu_lists(reader) | set(names)
    return [(name, step, reader.key(name if step == 0 else f"{name}{SEP}{step}"))
            for name in [n for n in names if n in found] + sorted(found - set(names)) for step in (0, 3, 6, 9)]


def _kombu_lists(reader: Reader) -> set[str]:
    """Without a scan part: the queue names of the lists in the database (mailboxes and replies left out)."""
    prefix = reader.prefix.encode()
    found: set[str] = set()
    for key in reader.scan(match=f"{reader.prefix}*" if reader.prefix else None, type_="list"):
        raw = key[len(prefix):] if prefix and key.startswith(prefix) else key
        text = raw.decode("utf-8", "replace")
        if not (text.endswith(".pidbox") or ".reply." in text):
            found.add(text.split(SEP)[0])
    return found


def _message_next(envelope: Envelope, snapshot, ahead: int) -> tuple[str, list[str]]:
    details = [f"{ahead:,} message{'s' if ahead != 1 else ''} ahead of it in this list"]
    if envelope.eta:
        details.append(f"eta {envelope.eta}")
    if envelope.expires:
        details.append(f"expires {envelope.expires}")
    if envelope.retries:
        details.append(f"retry number {envelope.retries}")
    if envelope.expires_epoch is not None and envelope.expires_epoch < snapshot.now:
        return "a worker will discard it as expired (\"Discarding revoked task\") when it receives it", details
    if envelope.eta:
        return "a worker receives it and holds it unacknowledged until its ETA, then runs it", details
    return "a worker consuming this queue receives it after the messages ahead of it", details


def _search_lists(reader: Reader, task_id: str, snapshot, cut: list) -> Optional[TraceLocation]:
    """The message, or None; every list not searched to its end is added to `cut` as (where, why)."""
    needle = task_id.encode()
    keys = _queue_keys(reader, snapshot)
    for position, (queue, priority, key) in enumerate(keys):
        if reader.deadline.remaining() < 0.5:
            left = sorted({q for q, _, _ in keys[position:]})
            cut.append(("redis queues", f"not searched, the deadline came first: {', '.join(map(repr, left))}"))
            return None
        stream = reader.stream_list(key)
        index = 0
        for chunk in stream:
            for raw in chunk:
                if needle in raw:
                    envelope = decode_payload(raw)
                    if not envelope.ok and envelope.id is None:
                        cut.append((f"redis queue {queue!r}", f"a message at index {index:,} of {key!r} holds the id's "
                                                              f"bytes but could not be decoded: {envelope.error}"))
                    if envelope.id == task_id:
                        length = reader.call("LLEN", key) or 0
                        # Workers BRPOP from the tail: everything after this element is ahead of it.
                        ahead = max(0, int(length) - index - 1)
                        nxt, details = _message_next(envelope, snapshot, ahead)
                        if priority:
                            details.insert(0, f"in the priority {priority} sub-queue {key!r}")
                        return TraceLocation("redis queue", f"queue:{queue}", "queued", nxt, tuple(details),
                                             envelope.task)
                index += 1
        if stream.stopped:
            cut.append((f"redis queue {queue!r}", f"searched {stream.read:,} message(s) of {key!r}, then stopped: "
                                                  f"{stream.stopped}"))
        if stream.oversized:
            cut.append((f"redis queue {queue!r}", f"{stream.oversized:,} message(s) over the read cap were not "
                                                  "searched"))
    return None


def _search_unacked(reader: Reader, task_id: str, snapshot, cut: list) -> Optional[TraceLocation]:
    config = snapshot.config
    options = dict(config.transport_options) if config is not None else {}
    vt = redis_visibility_timeout(config)[0]
    hash_key = reader.key(str(options.get("unacked_key") or "unacked"))
    index_key = reader.key(str(options.get("unacked_index_key") or "unacked_index"))
    needle = task_id.encode()
    total = reader.call("ZCARD", index_key) or 0
    read = skipped = 0
    try:
        for rows in stream_unacked(reader, index_key, hash_key):
            for row in rows:
                read += 1
                skipped += bool(row.skipped)
                found = _unacked_match(row, needle, task_id, snapshot, vt)
                if found:
                    return found
    except MemoryPressure as exc:
        cut.append(("redis unacked", f"searched {read:,} of {total:,} entries, then stopped: {exc}"))
        return None
    if read < total:
        cut.append(("redis unacked", f"searched {read:,} of {total:,} entries, then stopped: the deadline"))
    if skipped:
        cut.append(("redis unacked", f"{skipped:,} entries too large to read safely were not searched"))
    return None


def _unacked_match(row, needle: bytes, task_id: str, snapshot, vt: float) -> Optional[TraceLocation]:
    """The unacked entry as a trace location when it is the task (decoded only if it holds the id's bytes)."""
    if not row.payload or needle not in row.payload:
        return None
    try:
        message, exchange, routing_key = json.loads(row.payload)
        envelope = decode_payload(json.dumps(message))
    except (ValueError, TypeError):
        return None
    if envelope.id != task_id:
        return None
    age = max(0.0, snapshot.now - row.delivered_at)
    details = [f"delivered {human_seconds(round(age))} ago to a worker (delivery tag {row.tag})",
               f"routing: exchange {exchange!r}, routing key {routing_key!r}",
               f"visibility_timeout {human_seconds(vt)}"]
    if age > vt + UNACKED_SWEEP_S:
        nxt = ("overdue: older than the visibility timeout plus the restore sweep; no consumer is restoring it "
               "(workers stopped?). It is re-queued when a worker of this broker runs its restore sweep")
    elif age > vt:
        nxt = "due: the next restore sweep of any consumer puts it back on the queue (it will run again)"
    else:
        nxt = (f"a worker holds it (running, reserved or waiting for its ETA); if that worker dies it is "
               f"re-queued about {human_seconds(round(vt - age))} from now")
    if envelope.eta:
        details.append(f"eta {envelope.eta}")
    return TraceLocation("redis unacked", f"queue:{routing_key}", "unacked", nxt, tuple(details), envelope.task)


def trace_search(ctx, task_id: str, snapshot):
    try:
        reader, _, _ = open_reader(ctx)
    except RedisReadError as exc:
        return [], [], [("redis", str(exc))]
    cut: list = []
    checked = []
    found = None
    try:
        found = _search_unacked(reader, task_id, snapshot, cut)
        if not cut:
            checked.append("redis unacked")
        if found is None:
            before = len(cut)
            found = _search_lists(reader, task_id, snapshot, cut)
            if found is None and len(cut) == before:
                checked.append("redis queues (priority sub-queues included)")
    except (RedisReadError, ResponseError) as exc:
        cut.append(("redis", f"the search stopped: {' '.join(str(exc).split())}"))
    finally:
        reader.close()
    # "not found" means everything was searched: what was not is said, where and how far the search got
    return ([found] if found else []), checked, ([] if found else cut)
