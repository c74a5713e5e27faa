"""The workers part: what the live workers consume, register, run, hold and are configured with.

One round of worker broadcasts (ping, active_queues, registered, stats, conf, active, reserved, scheduled,
revoked, report) is sent at once, under the scan's deadline, and shared by every check.

Which workers exist is read from the broker first, so that a worker that does not answer is still named:
- Redis: the members of the pidbox binding set `_kombu.binding.<ns>.pidbox` (`<hostname>.<ns>.pidbox`);
- RabbitMQ: the `<hostname>.<ns>.pidbox` queues (exclusive to each worker's connection), from the
  management API (GET only).
The commands are then addressed to those workers (`destination`), and collection stops as soon as every
known worker has answered every command. A known worker that has not answered when the wait ends is
*silent* (busy: a solo pool running a long task; blocked; hung; or, on Redis, killed without a clean
shutdown). When the broker shows no worker, one short broadcast to everybody confirms it.

What the round leaves behind, and how it is removed:
- Redis: the reply list `<oid>.reply.<ns>.pidbox` and its member in `_kombu.binding.reply.<ns>.pidbox`.
  Both are removed before returning (the binding first, so a late reply from a busy worker is dropped,
  not stored). Nothing else is written: no kombu poller runs (it would sweep `unacked`).
- RabbitMQ: one exclusive, auto-delete reply queue on the default exchange (no exchange or binding is
  declared); it is deleted before returning and would vanish with the connection anyway.
"""
from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import quote

from ..masking import scrub
from ..model import Part
from ..parts.workers import COMMANDS, CONNECTED, GONE, UNTOLD, TaskRef, WorkerInfo, WorkerQueue, WorkersState

COMMAND_ARGS: Mapping[str, Mapping[str, Any]] = {"conf": {"with_defaults": True}, "active": {"safe": True}}

# Worker settings kept from the `conf` reply (the rest is dropped: it may carry secrets and is not used).
CONF_KEYS = (
    "task_acks_late", "task_reject_on_worker_lost", "task_retry_on_worker_lost", "task_acks_on_failure_or_timeout",
    "task_acks_on_failure", "task_acks_on_timeout", "worker_prefetch_multiplier", "worker_concurrency",
    "task_serializer", "accept_content", "result_serializer", "task_time_limit", "task_soft_time_limit",
    "task_default_queue", "task_create_missing_queues", "worker_disable_prefetch", "worker_eta_task_limit",
    "worker_cancel_long_running_tasks_on_connection_loss", "worker_deduplicate_successful_tasks",
    "worker_state_db", "task_track_started", "broker_transport_options",
)
# Transport options kept (never secrets): from `stats`'s broker section and the conf reply.
TRANSPORT_OPTION_KEYS = (
    "visibility_timeout", "global_keyprefix", "confirm_publish", "ack_emulation", "unacked_restore_interval",
    "unacked_restore_throttle", "fanout_prefix", "fanout_patterns", "priority_steps", "queue_order_strategy",
    "polling_interval", "socket_timeout", "socket_connect_timeout", "health_check_interval", "max_retries",
)
MAX_KNOWN_WORKERS = 5000
MAX_TASKS_KEPT = 500  # per worker and per list (active, reserved, scheduled)
MAX_REVOKED_KEPT = 50000  # a worker keeps at most 50,000 revoked ids itself
REDIS_SEP = "\x06\x16"
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


# -- reply decoding ---------------------------------------------------------------------------------

def _decode_body(body: Any, content_type: Optional[str], content_encoding: Optional[str] = None) -> tuple[Any, Optional[str]]:
    """(value, None) for a JSON reply; (None, content type) for anything else (never unpickled)."""
    ctype = (content_type or "").lower()
    if ctype != "application/json":
        return None, ctype or "unknown"
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode(content_encoding or "utf-8", errors="replace")
    if not isinstance(body, str):
        return body, None
    try:
        return json.loads(body), None
    except (ValueError, RecursionError):
        return None, "invalid json"


def _decode_redis_payload(raw: bytes) -> tuple[Optional[Mapping], Any, Optional[str]]:
    """(headers, body value, undecoded content type) of one kombu message stored on Redis."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None, "not a kombu message"
    if not isinstance(document, Mapping):
        return None, None, "not a kombu message"
    headers = document.get("headers") if isinstance(document.get("headers"), Mapping) else {}
    properties = document.get("properties") if isinstance(document.get("properties"), Mapping) else {}
    body = document.get("body")
    if properties.get("body_encoding") == "base64" and isinstance(body, str):
        try:
            body = base64.b64decode(body)
        except ValueError:
            return headers, None, "bad base64 body"
    value, undecoded = _decode_body(body, document.get("content-type"), document.get("content-encoding"))
    return headers, value, undecoded


class _Collector:
    """Gathers replies (one per worker and command) for a set of tickets."""

    def __init__(self, tickets: Mapping[str, str], known: Iterable[str]) -> None:
        self.tickets = dict(tickets)  # ticket -> command
        self.known = set(known)
        self.replies: dict[str, dict[str, Any]] = {}  # worker -> command -> reply
        self.undecoded: dict[str, int] = {}  # command -> replies not decoded (their sender is inside them)
        self.undecoded_type: Optional[str] = None

    def add(self, headers: Optional[Mapping], value: Any, undecoded: Optional[str]) -> None:
        ticket = (headers or {}).get("ticket")
        command = self.tickets.get(ticket) if isinstance(ticket, str) else None
        if command is None:
            return
        if undecoded is not None:
            # The sender's name is inside a body the doctor will not load (pickle, yaml...): only count it.
            self.undecoded[command] = self.undecoded.get(command, 0) + 1
            self.undecoded_type = undecoded
            return
        if not isinstance(value, Mapping):
            return
        for worker, reply in value.items():
            if isinstance(worker, str) and worker:
                self.replies.setdefault(worker, {})[command] = reply

    def complete(self) -> bool:
        if not self.known:
            return False
        commands = set(self.tickets.values())
        pending = [w for w in self.known if not commands <= set(self.replies.get(w, {}))]
        return not pending or all(self.undecoded.get(c, 0) >= len(pending) for c in commands)


# -- parsing one worker's replies -------------------------------------------------------------------

def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _int(value: Any) -> Optional[int]:
    number = _num(value)
    return int(number) if number is not None else None


def _iso_ts(value: Any) -> Optional[float]:
    if not isinstance(value, str) or not value:
        return None
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _task_ref(item: Any) -> Optional[TaskRef]:
    if not isinstance(item, Mapping):
        return None
    request = item.get("request") if isinstance(item.get("request"), Mapping) else item
    task_id = request.get("id")
    name = request.get("name") or request.get("type")
    if not isinstance(task_id, str) or not isinstance(name, str):
        return None
    delivery = request.get("delivery_info") if isinstance(request.get("delivery_info"), Mapping) else {}
    eta = item.get("eta") if isinstance(item.get("eta"), str) else None
    acknowledged = request.get("acknowledged")
    return TaskRef(
        id=task_id[:200],
        name=name[:300],
        acknowledged=acknowledged if isinstance(acknowledged, bool) else None,
        time_start=_num(request.get("time_start")),
        eta=eta,
        eta_ts=_iso_ts(eta),
        routing_key=delivery.get("routing_key") if isinstance(delivery.get("routing_key"), str) else None,
        exchange=delivery.get("exchange") if isinstance(delivery.get("exchange"), str) else None,
        redelivered=bool(delivery.get("redelivered")),
        worker_pid=_int(request.get("worker_pid")),
    )


def _task_list(value: Any) -> tuple[Optional[tuple[TaskRef, ...]], Optional[int]]:
    if not isinstance(value, list):
        return None, None
    refs = [ref for ref in (_task_ref(item) for item in value[:MAX_TASKS_KEPT]) if ref]
    return tuple(refs), len(value)


def _queues(value: Any) -> Optional[tuple[WorkerQueue, ...]]:
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        exchange = item.get("exchange") if isinstance(item.get("exchange"), Mapping) else {}
        out.append(WorkerQueue(name=item["name"], exchange=str(exchange.get("name") or ""),
                               exchange_type=str(exchange.get("type") or ""),
                               routing_key=str(item.get("routing_key") or "")))
    return tuple(out)


def _options(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    return {key: value[key] for key in TRANSPORT_OPTION_KEYS if key in value and _plain(value[key])}


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return len(value) < 300
    if isinstance(value, (list, tuple)):
        return len(value) < 50 and all(_plain(v) for v in value)
    return False


def _conf(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in CONF_KEYS:
        if key not in value:
            continue
        item = value[key]
        if key == "broker_transport_options":
            out[key] = _options(item)
        elif _plain(item):
            out[key] = item
        else:
            out[key] = scrub(repr(item))[:200]
    return out


_VERSION = {name: re.compile(rf"\b{name}:(\S+)") for name in ("celery", "kombu", "py")}


def _versions(report: Any) -> dict[str, Optional[str]]:
    text = report.get("ok") if isinstance(report, Mapping) else None
    if not isinstance(text, str):
        return {}
    out = {}
    for name, pattern in _VERSION.items():
        match = pattern.search(text[:4000])
        out[name] = match.group(1)[:40] if match else None
    return out


def _error(reply: Any) -> Optional[str]:
    if isinstance(reply, Mapping) and set(reply) == {"error"}:
        return scrub(str(reply["error"]))[:300]
    return None


def _worker(name: str, known: bool, replies: Mapping[str, Any], undecoded: Optional[str] = None) -> WorkerInfo:
    errors = {cmd: err for cmd, reply in replies.items() if (err := _error(reply))}
    good = {cmd: reply for cmd, reply in replies.items() if cmd not in errors}
    stats = good.get("stats") if isinstance(good.get("stats"), Mapping) else {}
    pool = stats.get("pool") if isinstance(stats.get("pool"), Mapping) else {}
    broker = stats.get("broker") if isinstance(stats.get("broker"), Mapping) else {}
    registered = good.get("registered")
    active, active_total = _task_list(good.get("active"))
    reserved, reserved_total = _task_list(good.get("reserved"))
    scheduled, scheduled_total = _task_list(good.get("scheduled"))
    revoked = good.get("revoked")
    versions = _versions(good.get("report"))
    return WorkerInfo(
        name=name,
        known=known,
        answered=tuple(cmd for cmd in COMMANDS if cmd in replies),
        errors=errors,
        undecoded=undecoded,
        queues=_queues(good.get("active_queues")),
        registered=frozenset(str(t).split(" ")[0] for t in registered) if isinstance(registered, list) else None,
        pid=_int(stats.get("pid")),
        uptime=_num(stats.get("uptime")),
        pool=str(pool.get("implementation"))[:120] if pool.get("implementation") else None,
        concurrency=_int(pool.get("max-concurrency")),
        prefetch_count=_int(stats.get("prefetch_count")),
        broker_transport=str(broker.get("transport"))[:40] if broker.get("transport") else None,
        transport_options=_options(broker.get("transport_options")),
        conf=_conf(good.get("conf")),
        active=active,
        reserved=reserved,
        scheduled=scheduled,
        active_total=active_total,
        reserved_total=reserved_total,
        scheduled_total=scheduled_total,
        revoked=len(revoked) if isinstance(revoked, list) else None,
        revoked_ids=frozenset(str(i) for i in revoked[:MAX_REVOKED_KEPT] if isinstance(i, str)) if isinstance(revoked, list) else frozenset(),
        celery_version=versions.get("celery"),
        kombu_version=versions.get("kombu"),
        python_version=versions.get("py"),
    )


# -- the round --------------------------------------------------------------------------------------

def _reserve(deadline) -> float:
    """Seconds kept back from the wait for cleanup and returning before the scan's deadline."""
    return min(1.0, max(0.3, 0.1 * deadline.seconds))


def _connect_budget(deadline) -> float:
    """Socket timeouts for the broker connection: leave the reserve, so a dead peer ends before the deadline."""
    return deadline.budget(max(0.2, min(3.0, deadline.remaining() - _reserve(deadline))))


def _serializer(app: Any) -> str:
    accept = [str(a).lower() for a in (app.conf.accept_content or ())]
    if "json" in accept or "application/json" in accept or not accept:
        return "json"
    return str(app.conf.task_serializer or "json")


def _message(command: str, ticket: str, destination: Optional[list[str]], reply_to: Mapping[str, str]) -> dict:
    return {"method": command, "arguments": dict(COMMAND_ARGS.get(command, {})), "destination": destination,
            "pattern": None, "matcher": None, "ticket": ticket, "reply_to": dict(reply_to)}


@dataclass
class _Round:
    known: list[str]
    discovery: str
    discovered: bool
    discovery_error: Optional[str] = None
    replies: Optional[_Collector] = None
    wait_s: float = 0.0
    addressed: bool = False
    broadcast_sent: bool = False
    cleanup: str = ""
    listeners: Optional[list] = None  # Redis: clients each PUBLISH of the round reached


def _wait_for(ctx, round_: _Round) -> float:
    """How long to wait for replies: until the deadline (less a reserve) when workers are known,
    briefly when the broker showed none (a confirming broadcast)."""
    left = ctx.deadline.remaining() - _reserve(ctx.deadline)
    if round_.known:
        return max(0.0, left)
    if round_.discovered:
        # The broker listed every mailbox and none was bound: a worker would have bound one at start.
        return max(0.0, min(left, 0.5))
    return max(0.0, min(left, max(1.0, 0.2 * ctx.deadline.seconds)))


def _send_all(producer, exchange: str, serializer: str, destination, reply_to, tickets, wait_s: float) -> None:
    now = time.time()
    for ticket, command in tickets.items():
        producer.publish(_message(command, ticket, destination, reply_to), exchange=exchange, routing_key="",
                         serializer=serializer, retry=False, declare=[],
                         headers={"clock": 0, "expires": now + wait_s if wait_s else 0})


# -- Redis ------------------------------------------------------------------------------------------

def _counting_fanout(chan: Any, counts: list) -> Any:
    """Have the channel publish fanout messages as kombu's `Channel._put_fanout` does (one PUBLISH per topic, the
    same JSON), but keep what each PUBLISH returns: how many clients received it. For the mailbox channel that
    is the number of mailbox subscriptions open right now (workers PSUBSCRIBE it, so PUBSUB NUMSUB says 0).
    Returns the original method, to be put back; None when this kombu has no such method (nothing is changed)."""
    original = getattr(chan, "_put_fanout", None)
    topics_of = getattr(chan, "_get_publish_topics", None)
    if topics_of is None and hasattr(chan, "_get_publish_topic"):
        def topics_of(exchange, routing_key):
            return [chan._get_publish_topic(exchange, routing_key)]
    if original is None or topics_of is None:
        return None
    from kombu.utils.json import dumps

    def put_fanout(exchange, message, routing_key, **kwargs):
        if kwargs.get("_publish_batch") is not None:
            return original(exchange, message, routing_key, **kwargs)
        payload = dumps(message)
        with chan.conn_or_acquire() as client:
            counts.append(sum(int(client.publish(topic, payload) or 0) for topic in topics_of(exchange, routing_key)))
        return None

    chan._put_fanout = put_fanout
    return original


def _send_counted(chan: Any, send: Any) -> Optional[list]:
    """Run `send` with the channel's fanout publishes counted (`_counting_fanout`); the counts, or None."""
    counts: list = []
    original = _counting_fanout(chan, counts)
    try:
        send()
    finally:
        if original is not None:
            chan._put_fanout = original
    return counts or None


def _redis_round(ctx, namespace: str) -> _Round:
    import redis as redis_lib
    from kombu import Producer

    app = ctx.app
    cap = _connect_budget(ctx.deadline)
    conn = app.connection_for_write(
        url=ctx.broker_url, connect_timeout=cap,
        transport_options={"socket_timeout": max(cap, 1.0), "socket_connect_timeout": cap, "max_retries": 0},
    )
    round_ = _Round(known=[], discovery="redis pidbox bindings", discovered=False)
    created: list[tuple[str, str]] = []  # (kind, key) written by this scan
    raw = None
    try:
        conn.ensure_connection(max_retries=0, timeout=cap)
        chan = conn.default_channel
        prefix = getattr(chan, "global_keyprefix", "") or ""
        sep = getattr(chan, "sep", REDIS_SEP)
        keyprefix_queue = getattr(chan, "keyprefix_queue", "_kombu.binding.%s")
        raw = redis_lib.Redis(connection_pool=chan.pool)

        # 1. who exists: the members of the pidbox binding set (SSCAN, bounded)
        exchange = f"{namespace}.pidbox"
        suffix = f".{namespace}.pidbox"
        binding_key = prefix + keyprefix_queue % exchange
        known: list[str] = []
        try:
            for member in raw.sscan_iter(binding_key, count=500):
                queue = (member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)).split(sep)[-1]
                if queue.endswith(suffix):
                    known.append(queue[: -len(suffix)])
                if len(known) >= MAX_KNOWN_WORKERS:
                    break
            round_.discovered = True
        except redis_lib.RedisError as exc:
            round_.discovery_error = scrub(f"{type(exc).__name__}: {exc}")
        round_.known = sorted(set(known))

        # 2. the reply queue: a binding member for our oid, so that late replies are dropped once it is gone
        oid = uuid.uuid4().hex
        reply_exchange = f"reply.{namespace}.pidbox"
        reply_queue = f"{oid}.{reply_exchange}"
        reply_binding_key = prefix + keyprefix_queue % reply_exchange
        member = sep.join([oid, "", reply_queue])
        reply_keys = [prefix + (reply_queue if pri == 0 else f"{reply_queue}{sep}{pri}") for pri in REDIS_PRIORITY_STEPS]
        tickets = {uuid.uuid4().hex: command for command in COMMANDS}
        collector = _Collector(tickets, round_.known)
        round_.replies = collector
        wait_s = _wait_for(ctx, round_)
        round_.wait_s = wait_s
        if wait_s <= 0.05:
            return round_
        try:
            raw.sadd(reply_binding_key, member)
            created.append(("binding", reply_binding_key + "|" + member))

            # 3. publish every command at once (PUBLISH on the fanout topic, through kombu for the envelope)
            chan.exchange_declare(exchange=exchange, type="fanout", durable=False, auto_delete=True)  # in memory
            producer = Producer(chan, auto_declare=False)
            destination = round_.known or None
            round_.addressed = destination is not None
            round_.listeners = _send_counted(chan, lambda: _send_all(
                producer, exchange, _serializer(app), destination, {"exchange": reply_exchange, "routing_key": oid},
                tickets, wait_s))
            round_.broadcast_sent = True

            # 4. read replies with BRPOP on our list only, until all known workers answered or the wait ends
            end = time.monotonic() + wait_s
            block_cap = max(0.05, min(0.5, float(chan.pool.connection_kwargs.get("socket_timeout") or 1.0) - 0.3))
            while not collector.complete():
                left = end - time.monotonic()
                if left <= 0.01:
                    break
                item = raw.brpop([reply_keys[0]], timeout=min(block_cap, left))
                while item:
                    collector.add(*_decode_redis_payload(item[1]))
                    popped = raw.rpop(reply_keys[0])
                    item = (reply_keys[0], popped) if popped is not None else None
        finally:
            # 5. remove exactly what this scan created: the binding member first (late replies are dropped),
            #    then the reply list (all priority buckets)
            removed = []
            try:
                raw.srem(reply_binding_key, member)
                removed.append("binding")
                raw.delete(*reply_keys)
                removed.append("reply list")
            except redis_lib.RedisError as exc:
                round_.cleanup = scrub(f"cleanup failed: {type(exc).__name__}: {exc}")
            else:
                round_.cleanup = f"removed the reply binding and list {reply_queue}"
        return round_
    finally:
        try:
            conn.release()
        except Exception:  # noqa: BLE001
            pass


# -- RabbitMQ ---------------------------------------------------------------------------------------

def _rabbit_known(ctx, namespace: str) -> tuple[Optional[list[str]], Optional[str]]:
    """Workers = `<hostname>.<ns>.pidbox` queues with a consumer (or whose consumers are not counted yet:
    the API reports consumers a few seconds late). GET only, through the shared management client."""
    from ..rabbitmq_api import ManagementClient, RabbitError, broker_endpoint

    try:
        endpoint = broker_endpoint(ctx.broker, getattr(ctx.app.conf, "broker_use_ssl", None))
        # At most a third of what is left: a silent management API must leave time for the broadcast.
        cap = min(2.0, max(0.2, ctx.deadline.remaining() / 3))
        client = ManagementClient.for_broker(endpoint, ctx.deadline, getattr(ctx.options, "management_url", None),
                                             cap=cap)
        data = client.get(f"queues/{quote(endpoint.vhost, safe='')}",
                          {"page": 1, "page_size": 500, "use_regex": "true",
                           "name": rf"\.{re.escape(namespace)}\.pidbox$", "columns": "name,consumers"})
    except RabbitError as exc:
        return None, exc.reason
    items = data.get("items") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        return None, "the management API returned an unexpected document for the pidbox queues"
    suffix = f".{namespace}.pidbox"
    reply_suffix = f".reply.{namespace}.pidbox"  # another client's reply queue (celery inspect, another doctor)
    known = []
    for item in items:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name.endswith(suffix) or name.endswith(reply_suffix):
            continue
        if item.get("consumers") == 0:
            continue  # nobody listens: the worker is gone and its mailbox is expiring
        known.append(name[: -len(suffix)])
    return sorted(set(known))[:MAX_KNOWN_WORKERS], None


def _amqp_round(ctx, namespace: str) -> _Round:
    from kombu import Consumer, Producer, Queue

    app = ctx.app
    cap = _connect_budget(ctx.deadline)
    conn = app.connection_for_write(url=ctx.broker_url, connect_timeout=cap, heartbeat=0,
                                    transport_options={"read_timeout": cap, "write_timeout": cap, "max_retries": 0})
    round_ = _Round(known=[], discovery="rabbitmq pidbox queues (management API)", discovered=False)
    try:
        conn.ensure_connection(max_retries=0, timeout=cap)
        known, error = _rabbit_known(ctx, namespace)
        if known is None:
            round_.discovery_error = error
        else:
            round_.discovered = True
            round_.known = known
        exchange = f"{namespace}.pidbox"
        # The control exchange exists while any worker is bound to it; never create it.
        probe = conn.channel()
        try:
            probe.exchange_declare(exchange=exchange, type="fanout", passive=True)
        except conn.channel_errors as exc:
            if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                round_.wait_s = 0.0
                if round_.discovered is False:
                    round_.discovered, round_.discovery = True, "rabbitmq control exchange (absent)"
                round_.known = []
                return round_
            raise
        finally:
            try:
                probe.close()
            except Exception:  # noqa: BLE001
                pass

        tickets = {uuid.uuid4().hex: command for command in COMMANDS}
        collector = _Collector(tickets, round_.known)
        round_.replies = collector
        wait_s = _wait_for(ctx, round_)
        round_.wait_s = wait_s
        if wait_s <= 0.05:
            return round_
        chan = conn.channel()
        reply_queue = f"{uuid.uuid4().hex}.reply.{namespace}.pidbox"
        # Exclusive and auto-delete, on the default exchange: no exchange or binding is declared.
        chan.queue_declare(queue=reply_queue, durable=False, exclusive=True, auto_delete=True,
                           arguments={"x-expires": 10000, "x-message-ttl": 300000})
        try:
            def on_message(message):
                collector.add(message.headers, *_decode_body(message.body, message.content_type,
                                                             message.content_encoding))

            consumer = Consumer(chan, queues=[Queue(reply_queue, no_declare=True)], no_ack=True,
                                auto_declare=False, on_message=on_message)
            consumer.consume()
            producer = Producer(chan, auto_declare=False)
            destination = round_.known or None
            round_.addressed = destination is not None
            _send_all(producer, exchange, _serializer(app), destination,
                      {"exchange": "", "routing_key": reply_queue}, tickets, wait_s)
            round_.broadcast_sent = True
            end = time.monotonic() + wait_s
            while not collector.complete():
                left = end - time.monotonic()
                if left <= 0.01:
                    break
                try:
                    conn.drain_events(timeout=min(0.5, left))
                except socket.timeout:
                    continue
        finally:
            try:
                chan.queue_delete(queue=reply_queue)
                round_.cleanup = f"deleted the exclusive reply queue {reply_queue}"
            except Exception as exc:  # noqa: BLE001 - exclusive: it goes with the connection anyway
                round_.cleanup = scrub(f"reply queue {reply_queue} left to auto-delete: {type(exc).__name__}")
        return round_
    finally:
        try:
            conn.release()
        except Exception:  # noqa: BLE001
            pass


# -- entry point ------------------------------------------------------------------------------------

def collect_workers(ctx) -> Part:
    started = time.monotonic()
    transport = ctx.broker.transport
    if transport not in ("redis", "rabbitmq"):
        return Part.not_applicable(f"workers are only inspected over redis or rabbitmq brokers, not {transport}")
    try:
        if not ctx.app.conf.worker_enable_remote_control:
            return Part.unavailable("worker_enable_remote_control is False: workers do not answer control commands")
    except AttributeError:
        pass
    namespace = str(getattr(ctx.app.conf, "control_exchange", None) or "celery")
    try:
        round_ = _redis_round(ctx, namespace) if transport == "redis" else _amqp_round(ctx, namespace)
    except Exception as exc:  # noqa: BLE001 - a broker that fails is a reason, not a traceback
        text = " ".join(str(exc).split())
        if isinstance(exc, socket.timeout) or "timed out" in text.lower() or "timeout" in text.lower():
            waited = time.monotonic() - started
            return Part.unavailable(scrub(f"the broker did not answer within {waited:.1f} s "
                                          f"({type(exc).__name__}: {text})"))
        return Part.unavailable(scrub(f"worker broadcast failed: {type(exc).__name__}: {text}"))
    return Part.gathered(_state(transport, namespace, round_, time.monotonic() - started))


def _state(transport: str, namespace: str, round_: _Round, elapsed: float) -> WorkersState:
    collector = round_.replies
    replies = collector.replies if collector else {}
    names = sorted(set(round_.known) | set(replies))
    pending = [name for name in names if not replies.get(name)]
    undecoded_pings = collector.undecoded.get("ping", 0) if collector else 0
    workers = []
    for name in names:
        got = replies.get(name, {})
        undecoded = None
        if not got and undecoded_pings:
            undecoded = collector.undecoded_type
            if undecoded_pings >= len(pending):
                # Every silent worker's ping is accounted for by a reply the doctor would not load.
                got = {cmd: None for cmd in COMMANDS if collector.undecoded.get(cmd)}
        workers.append(_worker(name, name in round_.known, got, undecoded))
    listeners, mailboxes = _mailboxes(round_, workers)
    if mailboxes:
        workers = [replace(w, mailbox=mailboxes.get(w.name)) for w in workers]
    return WorkersState(
        transport=transport,
        namespace=namespace,
        workers=tuple(workers),
        discovery=round_.discovery,
        discovered=round_.discovered,
        discovery_error=round_.discovery_error,
        wait_s=round(round_.wait_s, 2),
        elapsed_s=round(elapsed, 2),
        addressed=round_.addressed,
        broadcast_sent=round_.broadcast_sent,
        cleanup=round_.cleanup,
        mailbox_listeners=listeners,
    )


def _mailboxes(round_: _Round, workers: list[WorkerInfo]) -> tuple[Optional[int], dict[str, str]]:
    """Redis: (clients the ping reached, silent known worker -> CONNECTED / GONE / UNTOLD).

    Every worker that answered received the broadcast through its own mailbox subscription, so the receivers
    beyond the answering workers are the subscriptions of silent ones (or of another client listening on that
    channel: never fewer). A killed worker's subscription closes with its process. The largest count of the
    round is used: a count that could only be too high never turns a connected worker into a killed one."""
    if not round_.listeners or not round_.addressed:
        return None, {}
    listeners = max(round_.listeners)
    silent = [w.name for w in workers if w.known and not w.answered]
    held = listeners - sum(1 for w in workers if w.answered)
    if not silent:
        return listeners, {}
    state = GONE if held <= 0 else CONNECTED if held >= len(silent) else UNTOLD
    return listeners, dict.fromkeys(silent, state)
