"""Finding one task id on a Redis broker: its queues (priority sub-queues included) and the unacked hash.

Read-only and bounded like the scan: SCAN, chunked LRANGE, ZRANGE/HMGET in chunks. A raw message is
decoded only when it contains the id's bytes, and the search stops at the first match.
"""
from __future__ import annotations

from typing import Optional

from .collectors.redis import open_reader
from .envelope import Envelope, decode_payload
from .redisio import SEP, Reader, RedisReadError, stream_unacked
from .settings import REDIS_DEFAULT_VISIBILITY_TIMEOUT, human_seconds
from .trace import TraceLocation

UNACKED_SWEEP_S = 100  # kombu's restore sweep period (unacked_restore_interval x throttle), roughly


def _queue_keys(reader: Reader, snapshot) -> list[tuple[str, int, str]]:
    """(queue, priority, key) to search, the app's own queues first; from the scan's part when it has them."""
    names: list[str] = []
    config = snapshot.config
    if config is not None:
        names += list(config.routed_queues())
    state = snapshot.redis
    keys: list[tuple[str, int, str]] = []
    if state is not None:
        known = {q.name: q for q in state.queues}
        ordered = [n for n in names if n in known] + sorted(n for n in known if n not in names)
        for name in ordered:
            for sub in known[name].subqueues:
                keys.append((name, sub.priority, sub.key))
        return keys
    # No scan part: find kombu-shaped lists ourselves.
    prefix = reader.prefix.encode()
    found: set[str] = set(names)
    for key in reader.scan(match=f"{reader.prefix}*" if reader.prefix else None, type_="list"):
        raw = key[len(prefix):] if prefix and key.startswith(prefix) else key
        text = raw.decode("utf-8", "replace")
        if text.endswith(".pidbox") or ".reply." in text:
            continue
        found.add(text.split(SEP)[0])
    for name in [n for n in names if n in found] + sorted(found - set(names)):
        for step in (0, 3, 6, 9):
            keys.append((name, step, reader.key(name if step == 0 else f"{name}{SEP}{step}")))
    return keys


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


def _search_lists(reader: Reader, task_id: str, snapshot) -> Optional[TraceLocation]:
    needle = task_id.encode()
    for queue, priority, key in _queue_keys(reader, snapshot):
        stream = reader.stream_list(key)
        index = 0
        for chunk in stream:
            for raw in chunk:
                if needle in raw:
                    envelope = decode_payload(raw)
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
    return None


def _search_unacked(reader: Reader, task_id: str, snapshot) -> Optional[TraceLocation]:
    config = snapshot.config
    options = dict(config.transport_options) if config is not None else {}
    vt = config.visibility_timeout[0] if config is not None else float(REDIS_DEFAULT_VISIBILITY_TIMEOUT)
    hash_key = reader.key(str(options.get("unacked_key") or "unacked"))
    index_key = reader.key(str(options.get("unacked_index_key") or "unacked_index"))
    needle = task_id.encode()
    for rows in stream_unacked(reader, index_key, hash_key):
        for row in rows:
            if not row.payload or needle not in row.payload:
                continue
            import json

            try:
                message, exchange, routing_key = json.loads(row.payload)
                envelope = decode_payload(json.dumps(message))
            except (ValueError, TypeError):
                continue
            if envelope.id != task_id:
                continue
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
    return None


def trace_search(ctx, task_id: str, snapshot):
    try:
        reader, _, _ = open_reader(ctx)
    except RedisReadError as exc:
        return [], [], [("redis", str(exc))]
    try:
        found = _search_unacked(reader, task_id, snapshot) or _search_lists(reader, task_id, snapshot)
    except RedisReadError as exc:
        return [], [], [("redis", str(exc))]
    finally:
        reader.close()
    not_checked = []
    if ctx.deadline.remaining() < 0.3 and found is None:
        not_checked.append(("redis", f"the search stopped at the {ctx.deadline.seconds:g} s deadline"))
    return ([found] if found else []), ["redis queues (priority sub-queues included)", "redis unacked"], not_checked
