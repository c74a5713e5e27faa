"""Celery's event stream on a Redis broker, read with pub/sub only: nothing is written to Redis.

On Redis, Celery's `celeryev` exchange is a fanout exchange (celery/events/event.py `get_exchange`: "topic ->
fanout" for redis), and kombu publishes a fanout message with PUBLISH to the channel

    <global_keyprefix><keyprefix_fanout><exchange>[/<routing_key>]

(kombu/transport/redis.py: `_put_fanout`, `_get_publish_topic`; PUBLISH is among the commands
`GlobalKeyPrefixMixin` prefixes). `keyprefix_fanout` is `/{db}.` formatted with the database number
(`fanout_prefix` True, the default), the `fanout_prefix` string itself, or empty (`fanout_prefix` False); the
`/<routing_key>` part is there when `fanout_patterns` is on (the default) and the key is not empty. Events are
published with routing keys like `worker.heartbeat` and `task.multi` (the event type with '-' made '.').

kombu's own consumer would bind a queue to the exchange (a `_kombu.binding.celeryev` member: a key written to
Redis). Here the channel is subscribed to directly with PSUBSCRIBE, on a connection named `celery-doctor-watch`:
no key is written, and the subscription ends with the connection, even if celery-doctor is killed.

Probes (read-only, on a second connection named `celery-doctor`): CLIENT LIST for the busy-versus-dead
evidence, LLEN of the queues of tasks sent and never received.
"""
from __future__ import annotations

import queue as _queue
import threading
import time
from typing import Any, Mapping, Optional

from ..deadline import Deadline
from ..masking import scrub
from ..redisio import RedisReadError, _ssl_kwargs, connect_url, priority_keys

SUBSCRIBER_NAME = "celery-doctor-watch"
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def fanout_prefix(transport_options: Mapping[str, Any], db: int) -> str:
    """kombu's `keyprefix_fanout` for these transport options and database (Channel.__init__, _get_pool)."""
    option = transport_options.get("fanout_prefix", True)
    if not option:
        return ""
    prefix = option if isinstance(option, str) else "/{db}."
    try:
        return prefix.format(db=db)
    except (KeyError, IndexError, ValueError):
        return prefix


def event_channels(transport_options: Mapping[str, Any], db: int, exchange: str) -> tuple[str, ...]:
    """The PSUBSCRIBE patterns that match every event channel of `exchange`: with a routing key
    (`fanout_patterns` on, kombu's default) and without one (a publisher with `fanout_patterns` off)."""
    base = str(transport_options.get("global_keyprefix") or "") + fanout_prefix(transport_options, db) + exchange
    escaped = base.translate(_GLOB)
    return (escaped + "/*", escaped)


def publish_channel(transport_options: Mapping[str, Any], db: int, exchange: str, routing_key: str) -> str:
    """Where kombu PUBLISHes a fanout message (for tests and the benchmark)."""
    base = str(transport_options.get("global_keyprefix") or "") + fanout_prefix(transport_options, db) + exchange
    patterns = transport_options.get("fanout_patterns", True)
    return f"{base}/{routing_key}" if routing_key and patterns else base


class RedisEvents:
    """A PSUBSCRIBE on the event channels, read by a thread into `out` as (arrival time, "redis", payload)."""

    transport = "redis"

    def __init__(self, url: str, transport_options: Mapping[str, Any], exchange: str = "celeryev",
                 use_ssl: Any = None, connect_timeout: float = 5.0) -> None:
        self.transport_options = dict(transport_options or {})
        self.exchange = exchange
        self.reader = connect_url(url, Deadline(connect_timeout), self.transport_options, cap=connect_timeout,
                                  use_ssl=use_ssl)
        # probes run for as long as the watch does: give the reader a deadline far away, each call its own cap
        self.reader.deadline = Deadline(10 * 365 * 86400)
        self.reader.cap = 2.0
        self.db = self.reader.db
        self.patterns = event_channels(self.transport_options, self.db, exchange)
        self.use_ssl = use_ssl
        self.connect_timeout = connect_timeout
        self.dropped = 0  # messages dropped because the ledger fell behind (the queue was full)
        self.gaps: list[tuple[float, float, str]] = []  # (from, to, why) while the subscription was down
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._client = None
        self.subscribed = threading.Event()
        self.error: Optional[str] = None

    @property
    def source(self) -> str:
        return (f"redis pub/sub: PSUBSCRIBE {' '.join(self.patterns)} on db {self.db} (connection "
                f"{SUBSCRIBER_NAME}; nothing written)")

    def _connect(self):
        import redis

        target = self.reader.target
        kwargs: dict = dict(db=self.db, username=target.username, password=target.password,
                            socket_connect_timeout=self.connect_timeout, socket_timeout=None, health_check_interval=0,
                            client_name=SUBSCRIBER_NAME, decode_responses=False, protocol=2)
        if target.socket_path:
            kwargs["unix_socket_path"] = target.socket_path
        else:
            kwargs.update(host=self.reader._host if hasattr(self.reader, "_host") else target.host,
                          port=self.reader._port if hasattr(self.reader, "_port") else target.port)
            kwargs.update(_ssl_kwargs(target, self.use_ssl))
        return redis.Redis(**kwargs)

    def start(self, out: "_queue.Queue") -> None:
        self._thread = threading.Thread(target=self._run, args=(out,), name="celery-doctor-watch-redis", daemon=True)
        self._thread.start()

    def _run(self, out: "_queue.Queue") -> None:
        import redis

        down_since: Optional[float] = None
        reason = ""
        while not self._stop.is_set():
            pubsub = None
            try:
                self._client = self._connect()
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(*self.patterns)
                if down_since is not None:
                    self.gaps.append((down_since, time.time(), reason))
                    down_since = None
                self.subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None or message.get("type") not in ("pmessage", "message"):
                        continue
                    try:
                        out.put_nowait((time.time(), "redis", message.get("data")))
                    except _queue.Full:
                        self.dropped += 1
            except (redis.RedisError, OSError) as exc:
                reason = scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:200]
                self.error = reason
                if down_since is None:
                    down_since = time.time()
                self._stop.wait(1.0)
            finally:
                try:
                    if pubsub is not None:
                        pubsub.close()
                    if self._client is not None:
                        self._client.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass
        if down_since is not None:
            self.gaps.append((down_since, time.time(), reason))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        self.reader.close()

    # -- probes (read-only) ----------------------------------------------------------------------------
    def client_list(self) -> tuple[Optional[list[dict]], Optional[str]]:
        try:
            info = self.reader.info("clients")
            connected = info.get("connected_clients")
            rows, reason = self.reader.client_list(connected if isinstance(connected, int) else None)
        except RedisReadError as exc:
            return None, str(exc)
        if rows is None:
            return None, reason
        keep = ("id", "addr", "name", "db", "flags", "psub", "sub", "cmd")
        mine = [row for row in rows if str(row.get("db")) == str(self.db)
                and not str(row.get("name") or "").startswith("celery-doctor")]
        return [{k: row.get(k) for k in keep if k in row} for row in mine], None

    def queue_depth(self, name: str) -> tuple[Optional[int], Optional[str]]:
        try:
            lengths = self.reader.llen_many([self.reader.key(key) for _, key in priority_keys(name)])
        except RedisReadError as exc:
            return None, str(exc)
        return sum(lengths), None

    depth_how = "LLEN of its 4 priority lists"
