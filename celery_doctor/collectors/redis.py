"""The Redis broker as it really is: server settings, queues, bindings, unacked messages, the messages themselves.

Read-only and bounded (see celery_doctor/redisio.py for the commands used). The result is a frozen
`RedisState` (celery_doctor/parts/redis.py); checks in checks/redis_*.py read it.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from redis.exceptions import ResponseError

from ..broker_target import BrokerURL
from ..envelope import decode_payload, from_parts
from ..facts.routing import exchange_routes
from ..facts.timeouts import redis_visibility_timeout
from ..masking import scrub
from ..message_stats import HELPER_MIN_MESSAGES, EnvelopeStats, SplitStats, helper_available
from ..model import Part
from ..parts.messages import MessageSummary
from ..parts.redis import (
    Binding,
    ClientSummary,
    FailoverURL,
    ForeignKeys,
    RedisQueue,
    RedisState,
    ServerInfo,
    SubQueue,
    UnackedExample,
    UnackedState,
)
from ..redis_memory import MemoryPressure
from ..redisio import (
    BINDING_PREFIX,
    BLOCKING_COMMANDS,
    SEP,
    Oversized,
    Reader,
    RedisReadError,
    connect_sentinel,
    connect_url,
    parse_binding,
    parse_info,
    priority_keys,
    redis_address,
    stream_unacked,
)
from ..safe_text import printable
from ..settings import as_seconds
from ..terminal import text_width
from . import CollectContext

PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"
RESULT_PREFIXES = (b"celery-task-meta-", b"celery-taskset-meta-", b"chord-unlock-")
MAX_KEYS = 200_000  # keys SCANned in the app's database (default scan); --deep raises it
MAX_FOREIGN_KEYS = 20_000  # keys SCANned in each other database
MAX_QUEUES = 500
MAX_UNACKED = 20_000  # unacked entries read one by one (default scan); the counts are always exact
MAX_EXAMPLES = 20
_READ_ERRORS = (RedisReadError, ResponseError)  # a read that failed: said in Not checked, the rest goes on
RESTORE_SLACK = 300.0  # kombu's unacked_mutex_expire: a restore sweep may be skipped this long


# -- gathering ---------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def show(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        self._shown = True
        line = f"celery-doctor: {text}"[:max(10, text_width(sys.stderr) - 1)]  # one line, never wrapped
        sys.stderr.write(f"\r\x1b[K{line}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _server(reader: Reader, notes: list) -> ServerInfo:
    raw, info_refused = reader.try_call("INFO")
    if info_refused:
        info: dict = {}
        notes.append(f"INFO is not allowed ({info_refused}): server version, memory, eviction, persistence and "
                     "replication were not checked; replies are kept to the default size")
        reader.guard.update(None, info_refused)
    else:
        info = raw if isinstance(raw, dict) else parse_info(_text(raw))
        reader.guard.update(info)
    config, refused = reader.config_get("maxmemory", "maxmemory-policy", "save", "appendonly")
    if config is None:
        if not info_refused:
            notes.append(f"CONFIG GET is not available ({refused}): memory and persistence settings read from INFO")
        source = "INFO"
        maxmemory = _int(info.get("maxmemory"))
        policy = info.get("maxmemory_policy")
        rdb_save = None
        aof = info.get("aof_enabled")
        aof = None if aof is None else bool(_int(aof))
    else:
        source = "CONFIG GET"
        maxmemory = _int(config.get("maxmemory"))
        policy = config.get("maxmemory-policy")
        rdb_save = config.get("save")
        aof = (config.get("appendonly") or "").lower() == "yes" if "appendonly" in config else None
    master = None
    if info.get("role") == "slave":
        master = f"{info.get('master_host')}:{info.get('master_port')} (link {info.get('master_link_status')})"
    return ServerInfo(
        version=str(info.get("redis_version", "unknown")),
        mode=str(info.get("redis_mode", "standalone")),
        role=str(info.get("role", "unknown")),
        cluster_enabled=bool(_int(info.get("cluster_enabled"))),
        uptime_s=_int(info.get("uptime_in_seconds")),
        maxmemory=maxmemory,
        maxmemory_policy=str(policy) if policy is not None else None,
        used_memory=_int(info.get("used_memory")),
        evicted_keys=_int(info.get("evicted_keys")),
        aof_enabled=aof,
        rdb_save=rdb_save,
        rdb_last_save_time=_int(info.get("rdb_last_save_time")),
        rdb_changes_since_last_save=_int(info.get("rdb_changes_since_last_save")),
        rdb_saves=_int(info.get("rdb_saves")),
        connected_clients=_int(info.get("connected_clients")),
        blocked_clients=_int(info.get("blocked_clients")),
        settings_source=source,
        config_refused=refused,
        master_link=master,
        info_refused=info_refused,
    ), {int(k[2:]): int(v.get("keys", 0)) for k, v in info.items()
        if isinstance(k, str) and k.startswith("db") and k[2:].isdigit() and isinstance(v, Mapping)}


def _clients(reader: Reader, server: ServerInfo, notes: list) -> ClientSummary:
    clients, refused = reader.client_list(server.connected_clients)
    if clients is None:
        blocked = "" if server.blocked_clients is None else \
            f"; the server reports {server.blocked_clients} blocked client(s) in all"
        notes.append(f"CLIENT LIST not read ({refused}): consumers per database unknown{blocked}")
        return ClientSummary(available=False, reason=refused, total=server.connected_clients or 0)
    consumers: Counter = Counter()
    subscribers: Counter = Counter()
    for client in clients:
        if str(client.get("name") or "").startswith("celery-doctor"):  # this scan, a watch
            continue
        db = _int(client.get("db")) or 0
        cmd = str(client.get("cmd", "")).lower()
        if cmd in BLOCKING_COMMANDS:
            consumers[db] += 1
        if (_int(client.get("psub")) or 0) + (_int(client.get("sub")) or 0) > 0:
            subscribers[db] += 1
    return ClientSummary(True, None, dict(consumers), dict(subscribers), len(clients))


@dataclass
class _Scan:
    lists: set = field(default_factory=set)
    bindings: set = field(default_factory=set)  # exchange names (our prefix)
    foreign_prefixes: dict = field(default_factory=dict)  # prefix -> {"bindings": set, "unacked": bool}
    result_keys: int = 0
    scanned: int = 0
    complete: bool = True


def _classify_keys(reader: Reader, limit: int, want_lists: bool = True) -> _Scan:
    found = _Scan()
    prefix = reader.prefix.encode()
    unknown: list = []
    marker = BINDING_PREFIX.encode()
    unacked_names = (b"unacked", b"unacked_index")

    def flush() -> None:
        if not unknown:
            return
        for key, kind in zip(unknown, reader.types(unknown)):
            if kind == "list":
                found.lists.add(key)
        unknown.clear()

    scan = reader.scan(limit=limit)
    for key in scan:
        found.scanned += 1
        at = key.find(marker)
        if at >= 0:
            key_prefix, exchange = key[:at], key[at + len(marker):]
            if key_prefix == prefix:
                found.bindings.add(_text(exchange))
            else:
                found.foreign_prefixes.setdefault(_text(key_prefix), {"bindings": set(), "unacked": False})["bindings"].add(_text(exchange))
            continue
        if key.startswith(RESULT_PREFIXES):
            found.result_keys += 1
            continue
        if key.endswith(unacked_names) and key not in (prefix + b"unacked", prefix + b"unacked_index"):
            other = key[:-len(b"unacked_index")] if key.endswith(b"unacked_index") else key[:-len(b"unacked")]
            if not other.endswith(b"_"):  # a prefix like "app1:" or "x" (an "_unacked" suffix is someone else's)
                found.foreign_prefixes.setdefault(_text(other), {"bindings": set(), "unacked": False})["unacked"] = True
        if b"_kombu." in key or key.endswith((b"unacked", b"unacked_index", b"unacked_mutex")):
            continue
        if want_lists:
            unknown.append(key)
            if len(unknown) >= 1000:
                flush()
    flush()
    found.complete = scan.complete
    if not scan.complete:
        found.complete = False
    return found


def _queue_of_list(key: bytes, prefix: bytes) -> Optional[str]:
    if prefix and not key.startswith(prefix):
        return None
    name = key[len(prefix):]
    text = _text(name)
    if SEP in text:
        base, _, step = text.rpartition(SEP)
        if step.isdigit():
            return base
    return text


def _is_kombu_list(reader: Reader, key: str) -> bool:
    """The oldest element (LINDEX -1, O(1)) looks like a kombu message envelope (not read when the list's
    elements are too large to read safely)."""
    estimate = reader.element_estimate(key)
    if estimate is not None and reader.guard.may_read_element(estimate):
        return False
    value, refused = reader.try_call("LINDEX", key, -1)
    if refused or value is None:
        return False
    envelope = decode_payload(value)
    return envelope.ok or (envelope.error or "").startswith(("no task name", "body is missing"))


def _vt(config) -> tuple[float, str]:
    """The app's visibility timeout (facts.timeouts; kombu's default without an app) and where it comes from."""
    value, explicit = redis_visibility_timeout(config)
    return value, f"{value:g} s (broker_transport_options)" if explicit else f"{value:g} s (kombu default)"


def _unacked(reader: Reader, options: Mapping[str, Any], vt: float, now: float, limit: Optional[int],
             routes_to_queue) -> UnackedState:
    hash_key = reader.key(str(options.get("unacked_key") or "unacked"))
    index_key = reader.key(str(options.get("unacked_index_key") or "unacked_index"))
    mutex_key = reader.key(str(options.get("unacked_mutex_key") or "unacked_mutex"))
    mutex_expire = as_seconds(options.get("unacked_mutex_expire")) or RESTORE_SLACK
    hlen, zcard, older, stale, oldest, pttl = reader.pipeline([
        ("HLEN", hash_key), ("ZCARD", index_key),
        ("ZCOUNT", index_key, "-inf", f"({now - vt}"),
        ("ZCOUNT", index_key, "-inf", f"({now - vt - mutex_expire}"),
        ("ZRANGE", index_key, 0, 0, "WITHSCORES"), ("PTTL", mutex_key)])
    hlen = hlen if isinstance(hlen, int) else 0
    zcard = zcard if isinstance(zcard, int) else 0
    oldest_age = None
    if isinstance(oldest, list) and len(oldest) >= 2:
        oldest_age = max(0.0, now - float(oldest[1]))
    by_queue: Counter = Counter()
    stale_by_queue: Counter = Counter()
    tasks: Counter = Counter()
    examples = []
    counts = Counter()

    def account(row) -> None:
        counts["read"] += 1
        age = max(0.0, now - row.delivered_at)
        queue = task = task_id = eta = None
        if row.skipped:
            counts["too_large"] += 1
            task = "<too large to read>"
        elif row.payload is None:
            counts["missing"] += 1
        else:
            try:
                message, exchange, routing_key = json.loads(row.payload)
                envelope = from_parts(message.get("headers"), message.get("properties"), message.get("content-type"),
                                      message.get("content-encoding"))
                queue = routes_to_queue(_text(exchange or ""), _text(routing_key or ""))
                task, task_id, eta = envelope.task, envelope.id, envelope.eta
                if envelope.eta_epoch is not None and envelope.eta_epoch - row.delivered_at > vt:
                    counts["eta_beyond"] += 1
            except (ValueError, TypeError, AttributeError, RecursionError):
                queue = None
                task = "<undecodable unacked entry>"
        by_queue[queue or "?"] += 1
        if age > vt + mutex_expire:
            stale_by_queue[queue or "?"] += 1
        if task:
            tasks[task] += 1
        if len(examples) < MAX_EXAMPLES:
            examples.append(UnackedExample(row.tag, round(age, 1), queue, task, task_id, eta))

    stopped = None
    try:
        for rows in stream_unacked(reader, index_key, hash_key, limit=limit):
            for row in rows:
                account(row)
    except MemoryPressure as exc:
        stopped = str(exc)
    read, missing, eta_beyond = counts["read"], counts["missing"], counts["eta_beyond"]
    unindexed = None
    if read >= zcard:
        unindexed = max(0, hlen - (read - missing))
    return UnackedState(
        entries=hlen, indexed=zcard, older_than_vt=older if isinstance(older, int) else 0,
        older_than_vt_slack=stale if isinstance(stale, int) else 0, oldest_age_s=oldest_age, read=read,
        by_queue=dict(by_queue), stale_by_queue=dict(stale_by_queue), tasks=dict(tasks), missing_payload=missing,
        unindexed=unindexed, eta_beyond_vt=eta_beyond,
        mutex_ttl_ms=pttl if isinstance(pttl, int) and pttl != -2 else None, examples=tuple(examples),
        too_large=counts["too_large"], stopped=stopped)


def _summarise_queue(reader: Reader, ctx: CollectContext, name: str, subqueues: list[SubQueue], vt: float, now: float,
                     progress: _Progress) -> tuple[Optional[MessageSummary], int, bool, Optional[str], Optional[str]]:
    """(summary, messages analysed, complete, notes, why the read was cut short)."""
    depth = sum(s.depth for s in subqueues)
    if depth == 0:
        return None, 0, True, None, None
    stats = EnvelopeStats(now, vt)
    deep = ctx.options.deep
    budget = ctx.options.max_messages
    notes: list[str] = []
    cut = []
    complete = True
    oversized = 0
    for sub, share in zip(subqueues, [s.depth for s in subqueues] if deep else _shares([s.depth for s in subqueues], budget)):
        if not sub.depth or share <= 0:
            continue
        skipped, stopped, said = _read_subqueue(reader, sub, share, deep, stats, progress, f"{printable(name)}", depth)
        oversized += skipped
        if stopped:
            complete = False
            cut.append(stopped)
        notes += said
    if oversized:
        complete = False
        cut.append(f"{oversized:,} message(s) larger than {reader.guard.element_cap >> 20} MB were skipped, "
                   "not analysed")
    summary = stats.summary()
    return (summary, summary.analysed, complete and summary.analysed >= depth, "; ".join(cut + notes) or None,
            "; ".join(cut) or None)


def _read_subqueue(reader: Reader, sub: SubQueue, share: int, deep: bool, stats: EnvelopeStats, progress: _Progress,
                   shown: str, depth: int) -> tuple[int, Optional[str], list[str]]:
    """Feed one priority sub-queue's messages to `stats` (every one with --deep, else a sample of `share`):
    (messages too large to read, why the read stopped early or None, notes on the read)."""
    if deep:
        stream = reader.stream_list(sub.key)  # one connection: a reading thread only competed for the interpreter
    else:
        stream = reader.sample_list(sub.key, sub.depth, share)
    helper_lost = _feed(reader, stream, stats, deep and sub.depth >= HELPER_MIN_MESSAGES,
                        lambda count: progress.show(f"reading {shown}: {count:,}/{depth:,} messages") if deep else None)
    stopped = None
    if stream.stopped:
        if stream.read:
            stopped = (f"read {stream.read:,} of {share:,} message(s) {'' if deep else 'to sample '}in "
                       f"{_text(sub.key)!r}, then stopped: {stream.stopped}")
        else:
            stopped = f"{_text(sub.key)!r} ({sub.depth:,} message(s)): {stream.stopped}"
    if helper_lost:
        stopped = f"{stopped}; {helper_lost}" if stopped else helper_lost
    notes = []
    if deep and stream.shifted:
        notes.append(f"{stream.shifted:,} message(s) were pushed while reading (accounted for)")
    if deep and stream.lost_track:
        notes.append("more than a chunk was pushed between two reads: counts may be off by up to a chunk")
    return stream.oversized, stopped, notes


def _feed(reader: Reader, stream: Any, stats: EnvelopeStats, helper: bool, show: Any) -> Optional[str]:
    """Summarise every chunk of `stream` into `stats`; with `helper` (--deep on a long list, where the platform
    allows) a forked helper summarises the chunks it has room for on the second core (message_stats.SplitStats).
    Returns what the helper took and could not hand back, if anything."""
    feed: Any = stats
    if helper and helper_available():
        try:
            feed = SplitStats(stats, reader.deadline.remaining())
        except (OSError, ValueError):  # no process could be started (limits, memory): one core, as before
            feed = stats
    split = feed is not stats
    try:
        for items in stream:
            raw = getattr(stream, "raw", None)  # the chunk as its reply carried it: nothing in it was drained
            if raw is None and Oversized in set(map(type, items)):  # (one C-level pass: no Python step per message)
                items = [i for i in items if not isinstance(i, Oversized)]
            if split:
                feed.add_raw_chunk(items, raw)
            else:
                feed.add_raw_chunk(items)
            show(stats.analysed + getattr(feed, "sent", 0))
    except BaseException:
        if feed is not stats:
            feed.close()  # the helper is stopped, not left waiting for chunks (the CLI ends with os._exit)
        raise
    if feed is stats:
        return None
    feed.finish(reader.deadline.remaining() - 0.3)
    return f"{feed.lost:,} message(s) read but not analysed: {feed.error}" if feed.lost else None


def _shares(depths: list[int], budget: int) -> list[int]:
    """Split a sample budget over sub-queues in proportion to their depth (largest remainder first)."""
    total = sum(depths)
    if total <= budget:
        return list(depths)
    exact = [d * budget / total for d in depths]
    shares = [int(x) for x in exact]
    order = sorted(range(len(depths)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[:budget - sum(shares)]:
        shares[i] += 1
    return [min(s, d) for s, d in zip(shares, depths)]


def _binding_routes(bindings: list[Binding]):
    table: dict = {}
    for b in bindings:
        table.setdefault(b.exchange, []).append(b)

    def route(exchange: str, routing_key: str) -> Optional[str]:
        if not exchange:
            return routing_key or None
        for b in table.get(exchange, ()):
            if not b.routing_key or b.routing_key == routing_key:
                return b.queue
        return routing_key or exchange

    return route


def _foreign(reader: Reader, scan: _Scan, keyspace: Mapping[int, int], config, notes: list, deep: bool) -> list[ForeignKeys]:
    out = []
    known = set(config.routed_queues()) | set(config.queue_names()) if config is not None else set()

    def describe(r: Reader, db: int, prefix: str, exchanges: set, unacked_flag: bool) -> Optional[ForeignKeys]:
        queues: dict = {}
        for exchange in sorted(exchanges)[:200]:
            if exchange in (PIDBOX_EXCHANGE, REPLY_EXCHANGE):
                continue
            members, _ = r.set_members(f"{prefix}{BINDING_PREFIX}{exchange}", limit=2000)
            for member in members:
                queues.setdefault(parse_binding(member)[2], 0)
        for name in known:
            queues.setdefault(name, 0)
        names = sorted(queues)[:MAX_QUEUES]
        keys = [f"{prefix}{key}" for name in names for _, key in priority_keys(name)]
        depths = r.llen_many(keys)
        for i, name in enumerate(names):
            queues[name] = sum(depths[i * 4:(i + 1) * 4])
        queues = {k: v for k, v in queues.items() if v}
        unacked = r.call("HLEN", f"{prefix}unacked") or 0 if unacked_flag else 0
        if not queues and not unacked and not exchanges:
            return None
        return ForeignKeys(db=db, prefix=prefix, queues=queues, bindings=tuple(sorted(exchanges)), unacked=int(unacked))

    for prefix, found in sorted(scan.foreign_prefixes.items()):
        entry = describe(reader, reader.db, prefix, found["bindings"], found["unacked"])
        if entry:
            out.append(entry)
    for db in sorted(keyspace):
        if db == reader.db or reader.deadline.remaining() < 1.0:
            continue
        other = reader.clone(db=db)
        try:
            other.open()
            found = _classify_keys(other, limit=(MAX_KEYS if deep else MAX_FOREIGN_KEYS), want_lists=False)
            prefixes: dict = {reader.prefix: {"bindings": set(), "unacked": False}}
            prefixes.update(found.foreign_prefixes)
            prefixes[reader.prefix]["bindings"] |= found.bindings
            unacked_here = other.call("EXISTS", other.key("unacked")) or 0
            prefixes[reader.prefix]["unacked"] = bool(unacked_here)
            for prefix, data in sorted(prefixes.items()):
                if not data["bindings"] and not data["unacked"]:
                    continue
                entry = describe(other, db, prefix, data["bindings"], data["unacked"])
                if entry:
                    out.append(entry)
            if not found.complete:
                notes.append(f"db {db}: only the first {found.scanned:,} keys were looked at for kombu keys")
        except RedisReadError as exc:
            notes.append(f"db {db} not read: {exc}")
        finally:
            other.close()
    return out


def _failover(urls: Sequence[BrokerURL], ctx: CollectContext, options: Mapping[str, Any]) -> tuple[Optional[Reader], list[FailoverURL], list[str]]:
    """Try each `;`-separated URL in kombu's order; the first that answers is read. Every URL is reported."""
    statuses = []
    chosen = None
    errors = []
    use_ssl = _use_ssl(ctx)
    for url in urls:
        masked = url.masked
        try:
            reader = connect_url(url, ctx.deadline, options, cap=3.0, use_ssl=use_ssl)
        except RedisReadError as exc:
            statuses.append(FailoverURL(masked, False, None, str(exc)))
            errors.append(str(exc))
            continue
        except Exception as exc:  # noqa: BLE001
            statuses.append(FailoverURL(masked, False, None, scrub(f"{type(exc).__name__}: {exc}")))
            errors.append(scrub(str(exc)))
            continue
        try:
            replication, refused = reader.try_call("INFO", "replication")
            role = None if refused else str(parse_info(_text(replication)).get("role", "unknown"))
        except RedisReadError as exc:
            role = None
            errors.append(str(exc))
        statuses.append(FailoverURL(masked, True, role))
        if chosen is None and role == "master":
            chosen = reader
        else:
            if chosen is None and len(urls) == 1:
                chosen = reader
            else:
                reader.close()
    if chosen is None and statuses and any(s.reachable for s in statuses):
        # only replicas answered: read the first one anyway (read-only commands work on replicas)
        first = next(u for u, s in zip(urls, statuses) if s.reachable)
        chosen = connect_url(first, ctx.deadline, options, cap=3.0, use_ssl=use_ssl)
    return chosen, statuses, errors


def _use_ssl(ctx: CollectContext) -> Any:
    try:
        return ctx.app.conf.get("broker_use_ssl")
    except Exception:  # noqa: BLE001
        return None


def collect_redis(ctx: CollectContext) -> Part:
    started = time.monotonic()
    if not ctx.broker.urls:
        return Part.unavailable("no broker URL")
    try:
        return _collect(ctx, started)
    except RedisReadError as exc:
        return Part.unavailable(str(exc))


def open_reader(ctx: CollectContext) -> tuple[Reader, list[FailoverURL], list[str]]:
    """A Reader on the broker the app would use (sentinel master, or the first failover URL that answers),
    the status of every failover URL, and notes. Raises RedisReadError when none answers. (trace uses it too.)"""
    config = ctx.config
    options = dict(config.transport_options) if config is not None else {}
    notes: list[str] = []
    urls = ctx.broker.urls
    first = redis_address(urls[0])  # a malformed first URL is the reason, as it is kombu's
    failover: list[FailoverURL] = []
    if first.scheme == "sentinel":
        reader, master = connect_sentinel(urls, ctx.deadline, options, cap=3.0)
        notes.append(f"sentinel: the sentinels named {master} as master of {options.get('master_name')!r}; "
                     "its replicas and the sentinels' quorum were not checked")
        failover = [FailoverURL(u.masked, None, None, "sentinel") for u in urls]
        return reader, failover, notes
    reader, failover, errors = _failover(urls, ctx, options)
    if reader is None:
        raise RedisReadError(errors[0] if len(errors) == 1 else "no broker URL answered: " + "; ".join(errors))
    return reader, (failover if len(urls) > 1 else []), notes


def _collect(ctx: CollectContext, started: float) -> Part:
    config = ctx.config
    options = dict(config.transport_options) if config is not None else {}
    reader, failover, notes = open_reader(ctx)  # RedisReadError: collect_redis makes it the reason
    progress = _Progress(bool(ctx.options.progress))
    try:
        return Part.gathered(_read(reader, ctx, options, notes, failover, started, progress))
    finally:
        progress.done()
        reader.close()


def _read(reader: Reader, ctx: CollectContext, options: Mapping[str, Any], notes: list, failover: list,
          started: float, progress: _Progress) -> "RedisState":
    """Everything the scan reads, in this order: the server, its clients, the keys, the binding sets, the queues
    (lengths, then messages), the unacked hash, kombu keys in other databases."""
    config = ctx.config
    now = time.time()
    vt, vt_source = _vt(config)
    deep = bool(ctx.options.deep)
    server, keyspace = _server(reader, notes)
    if server.cluster_enabled:
        notes.append("Redis Cluster: SCAN and the reads below saw only the node the URL points at")
    clients = _clients(reader, server, notes)
    progress.show("listing keys")
    scan = _list_keys(reader, deep, notes)
    bindings, missing, pidbox_nodes = _read_bindings(reader, scan, config, deep, notes)
    origins, bound_by = _queue_origins(reader, scan, config, bindings, notes)
    names = sorted(origins)[:MAX_QUEUES]
    per_queue, unreadable, wrong_type = _queue_lengths(reader, names)
    idle: dict[str, Optional[int]] = {}
    for name in names:
        busiest = max(per_queue[name], key=lambda s: s.depth)
        idle[name] = reader.idle_seconds(busiest.key) if busiest.depth else None
    queues = [_read_queue(reader, ctx, name, per_queue[name], unreadable.get(name), vt, now, progress, notes,
                          origins=tuple(sorted(origins[name])), exchanges=tuple(sorted(bound_by.get(name, ()))),
                          idle_s=idle.get(name))
              for name in names]
    progress.show("reading unacked messages", force=True)
    unacked = _read_unacked(reader, options, vt, now, deep, bindings, notes)
    foreign = _read_foreign(reader, scan, keyspace, config, notes, deep, progress)
    _closing_notes(reader, server, unacked, notes)
    return RedisState(
        url=reader.target.masked, scheme=reader.target.scheme, db=reader.db, prefix=reader.prefix, vt=vt,
        vt_source=vt_source, server=server, clients=clients, keyspace=keyspace, queues=tuple(queues),
        bindings=tuple(bindings), missing_bindings=missing, pidbox_nodes=pidbox_nodes, unacked=unacked,
        foreign=tuple(foreign), failover=tuple(failover), keys_scanned=scan.scanned, keys_complete=scan.complete,
        result_keys=scan.result_keys, deep=deep, max_messages=ctx.options.max_messages, notes=tuple(notes),
        duration_s=round(time.monotonic() - started, 3), commands=reader.commands,
        wrong_type=tuple(wrong_type), memory_stop=reader.guard.pressure, largest_reply=reader.guard.figures.largest_reply,
        oversized=reader.guard.figures.skipped_elements)


def _list_keys(reader: Reader, deep: bool, notes: list) -> _Scan:
    """SCAN the app's database once: kombu's lists, binding sets and other prefixes' keys."""
    try:
        scan = _classify_keys(reader, limit=(50 * MAX_KEYS if deep else MAX_KEYS))
    except _READ_ERRORS as exc:
        scan = _Scan(complete=False)
        notes.append(f"the keys of db {reader.db} were not listed ({exc}): only the app's own queues were looked at")
    if not scan.complete and scan.scanned:
        notes.append(f"only the first {scan.scanned:,} keys of db {reader.db} were listed (SCAN stopped early): "
                     "queues found only by their keys may be missing")
    return scan


def _read_bindings(reader: Reader, scan: _Scan, config, deep: bool,
                   notes: list) -> tuple[list[Binding], tuple[str, ...], tuple[str, ...]]:
    """(the bindings of every exchange found or routed through, routed-through exchanges without a binding set,
    workers whose mailbox is bound)."""
    bindings: list[Binding] = []
    exchanges = set(scan.bindings)
    app_exchanges = _app_exchanges(config)
    for exchange in sorted(exchanges | app_exchanges)[:MAX_QUEUES]:
        try:
            members, complete = reader.set_members(reader.key(f"{BINDING_PREFIX}{exchange}"),
                                                   limit=(1_000_000 if deep else 20_000))
        except _READ_ERRORS as exc:
            notes.append(f"binding set of {exchange!r} not read: {exc}")
            continue
        if not members:
            continue
        exchanges.add(exchange)
        if not complete:
            notes.append(f"binding set of {exchange!r}: only part of its members were read")
        for member in members:
            rk, pattern, queue = parse_binding(member)
            bindings.append(Binding(exchange, rk, pattern, queue))
    bindings.sort(key=lambda b: (b.exchange, b.queue, b.routing_key))
    missing = tuple(sorted(e for e in app_exchanges if e not in exchanges))
    pidbox_nodes = tuple(sorted({b.queue[:-len(".celery.pidbox")] if b.queue.endswith(".celery.pidbox") else b.queue
                                 for b in bindings if b.exchange == PIDBOX_EXCHANGE}))
    return bindings, missing, pidbox_nodes


def _queue_origins(reader: Reader, scan: _Scan, config, bindings: list[Binding],
                   notes: list) -> tuple[dict[str, set], dict[str, set]]:
    """(queue -> why it is read: routed / declared / bound / found, queue -> exchanges bound to it)."""
    origins: dict[str, set] = {}
    if config is not None:
        for name in config.routed_queues():
            origins.setdefault(name, set()).add("routed")
        for name in config.queue_names():
            origins.setdefault(name, set()).add("declared")
    bound_by: dict[str, set] = {}
    for b in bindings:
        if b.exchange in (PIDBOX_EXCHANGE, REPLY_EXCHANGE):
            continue
        origins.setdefault(b.queue, set()).add("bound")
        bound_by.setdefault(b.queue, set()).add(b.exchange)
    found_lists: dict[str, set] = {}
    prefix = reader.prefix.encode()
    for key in scan.lists:
        name = _queue_of_list(key, prefix)
        if name is None or name.endswith((".reply.celery.pidbox", ".celery.pidbox")):
            continue
        found_lists.setdefault(name, set()).add(key)
    for name in sorted(found_lists):
        if name in origins:
            continue
        if len(origins) >= MAX_QUEUES:
            notes.append(f"more than {MAX_QUEUES} queues: the rest were not read")
            break
        if any(_is_kombu_list(reader, _text(k)) for k in sorted(found_lists[name])[:1]):
            origins.setdefault(name, set()).add("found")
    return origins, bound_by


def _queue_lengths(reader: Reader, names: list[str]) -> tuple[dict[str, list[SubQueue]], dict[str, list[str]],
                                                               list[tuple[str, str]]]:
    """One LLEN pipeline over every priority sub-queue: (queue -> sub-queues, queue -> LLEN refusals,
    (queue, key) of keys that are not lists)."""
    keys = [(name, step, reader.key(key)) for name in names for step, key in priority_keys(name)]
    replies = reader.pipeline([("LLEN", k) for _, _, k in keys])
    per_queue: dict[str, list[SubQueue]] = {}
    unreadable: dict[str, list[str]] = {}
    wrong_type: list[tuple[str, str]] = []
    for (name, step, key), reply in zip(keys, replies):
        if isinstance(reply, Exception):
            text = " ".join(str(reply).split())
            if text.upper().startswith("WRONGTYPE"):
                wrong_type.append((name, key))
            else:
                unreadable.setdefault(name, []).append(f"LLEN {key!r} refused: {text}")
            reply = 0
        per_queue.setdefault(name, []).append(SubQueue(key, step, int(reply) if isinstance(reply, int) else 0))
    return per_queue, unreadable, wrong_type


def _read_queue(reader: Reader, ctx: CollectContext, name: str, subqueues: list[SubQueue],
                unreadable: Optional[list[str]], vt: float, now: float, progress: _Progress, notes: list,
                **found: Any) -> RedisQueue:
    """One queue: its messages summarised unless its length is unknown, memory is short or time is up."""
    summary, sampled, complete, note, cut = (None, 0, True, None, None)
    if unreadable:
        cut = f"its length could not be read ({'; '.join(unreadable)}): it may not be empty"
    elif reader.guard.stopped and sum(s.depth for s in subqueues):
        cut = "messages not read: Redis is close to maxmemory"
    elif reader.deadline.remaining() > 1.0:
        try:
            summary, sampled, complete, note, cut = _summarise_queue(reader, ctx, name, subqueues, vt, now, progress)
        except _READ_ERRORS as exc:
            cut = f"messages not read: {exc}"
    elif sum(s.depth for s in subqueues):
        cut = "messages not read: the deadline was near"
    if cut:
        complete, note = False, note or cut
        notes.append(f"queue {name!r}: {cut}")
    return RedisQueue(name=name, depth=sum(s.depth for s in subqueues), subqueues=tuple(subqueues), summary=summary,
                      sampled=sampled, complete=complete, stream_note=note, cut=cut, **found)


def _read_unacked(reader: Reader, options: Mapping[str, Any], vt: float, now: float, deep: bool,
                  bindings: list[Binding], notes: list) -> UnackedState:
    try:
        unacked = _unacked(reader, options, vt, now, None if deep else MAX_UNACKED, _binding_routes(bindings))
    except _READ_ERRORS as exc:  # slow is not unreachable: what was read so far is kept
        unacked = UnackedState(0, 0, 0, 0, None, 0, stopped=f"not read: {exc}")
        notes.append(f"unacked entries not read: {exc}")
    if unacked.read < unacked.entries:
        notes.append(f"{unacked.read:,} of {unacked.entries:,} unacked entries were read one by one (use --deep for all); "
                     "the counts by age are exact")
    return unacked


def _read_foreign(reader: Reader, scan: _Scan, keyspace: Mapping[int, int], config, notes: list, deep: bool,
                  progress: _Progress) -> list[ForeignKeys]:
    if reader.deadline.remaining() <= 1.0:
        notes.append("other databases were not searched for kombu keys: the deadline was near")
        return []
    progress.show("looking for kombu keys in other databases", force=True)
    try:
        return _foreign(reader, scan, keyspace, config, notes, deep)
    except _READ_ERRORS as exc:
        notes.append(f"other databases were not searched for kombu keys: {exc}")
        return []


def _closing_notes(reader: Reader, server: ServerInfo, unacked: UnackedState, notes: list) -> None:
    """What the report must say about how the reads went."""
    if unacked.stopped and not reader.guard.stopped and unacked.read:
        notes.append(f"unacked entries: {unacked.stopped}")
    if unacked.too_large:
        notes.append(f"{unacked.too_large:,} unacked message(s) were too large to read safely: counted, not decoded")
    if reader.guard.stopped:
        notes.append(reader.guard.stopped)
    if not reader.touch_free and not server.info_refused:
        notes.append(f"Redis {server.version} has no CLIENT NO-TOUCH: this scan's reads reset the idle time of the "
                     "keys it read (a second scan soon after sees them as recently used)")


def _app_exchanges(config) -> set:
    """Exchanges the app publishes through by name (routes without a queue, facts.routing.exchange_routes): they
    need a binding set on Redis."""
    return set(exchange_routes(config)) if config is not None else set()
