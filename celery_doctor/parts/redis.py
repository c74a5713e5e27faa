"""The redis part of a snapshot: the Redis broker as the collector found it (server settings, queues,
bindings, unacked messages, what the queued messages say).

Pure, frozen data: no I/O. celery_doctor.collectors.redis reads the broker and fills a `RedisState`; the checks in
checks/redis_*.py read it, and cross-broker checks use `RedisState.queue_views()`. `example()` builds a realistic
state for tests without a broker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .broker import QueueView
from .messages import MessageSummary

__all__ = ["Binding", "ClientSummary", "FailoverURL", "ForeignKeys", "RedisQueue", "RedisState", "ServerInfo",
           "SubQueue", "UnackedExample", "UnackedState", "example", "example_clients", "example_queue",
           "example_server", "example_summary", "example_unacked"]

PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step
PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class ServerInfo:
    version: str
    mode: str  # standalone / cluster / sentinel (redis_mode)
    role: str  # master / slave
    cluster_enabled: bool
    uptime_s: Optional[int]
    maxmemory: Optional[int]
    maxmemory_policy: Optional[str]
    used_memory: Optional[int]
    evicted_keys: Optional[int]
    aof_enabled: Optional[bool]
    rdb_save: Optional[str]  # CONFIG GET save ("" = no snapshots); None when CONFIG is not available
    rdb_last_save_time: Optional[int]
    rdb_changes_since_last_save: Optional[int]
    rdb_saves: Optional[int]  # snapshots taken since start (Redis 7+ INFO)
    connected_clients: Optional[int]
    blocked_clients: Optional[int]
    settings_source: str  # "CONFIG GET" or "INFO"
    config_refused: Optional[str] = None  # why CONFIG GET could not be used (ACL / renamed on managed Redis)
    master_link: Optional[str] = None  # replica: the master it follows
    info_refused: Optional[str] = None  # INFO was not allowed (ACL): the fields above are unknown

    @property
    def persistence(self) -> Optional[bool]:
        """True when AOF or RDB snapshots protect the data, False when neither does, None when unknown."""
        if self.aof_enabled:
            return True
        if self.rdb_save is not None:
            return bool(self.rdb_save.strip())
        if self.rdb_saves:
            return True
        return None


@dataclass(frozen=True)
class ClientSummary:
    available: bool
    reason: Optional[str]  # why CLIENT LIST was not read
    consumers_by_db: Mapping[int, int] = field(default_factory=dict)  # clients blocked in BRPOP & co
    subscribers_by_db: Mapping[int, int] = field(default_factory=dict)  # clients in (P)SUBSCRIBE (worker mailboxes, monitors)
    total: int = 0


@dataclass(frozen=True)
class SubQueue:
    key: str  # as stored (prefix included)
    priority: int
    depth: int


@dataclass(frozen=True)
class RedisQueue:
    name: str
    depth: int
    subqueues: tuple[SubQueue, ...]
    origins: tuple[str, ...]  # routed / declared / bound / found
    exchanges: tuple[str, ...] = ()  # exchanges whose binding set names this queue
    idle_s: Optional[int] = None  # OBJECT IDLETIME of the busiest sub-queue before our reads (None: unknown)
    summary: Optional[MessageSummary] = None
    sampled: int = 0
    complete: bool = False  # every message of the queue was analysed
    stream_note: Optional[str] = None  # why the analysis stopped early / moved
    cut: Optional[str] = None  # the read was cut short (deadline, memory, lost connection): how far it got, why

    @property
    def tasks(self) -> Mapping[str, int]:
        return self.summary.task_counts if self.summary else {}


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str
    pattern: str
    queue: str


@dataclass(frozen=True)
class UnackedExample:
    tag: str
    age_s: float
    queue: Optional[str]
    task: Optional[str]
    task_id: Optional[str]
    eta: Optional[str]


@dataclass(frozen=True)
class UnackedState:
    entries: int  # HLEN unacked
    indexed: int  # ZCARD unacked_index
    older_than_vt: int  # ZCOUNT unacked_index -inf (now - vt): the restore sweep should already have taken them
    older_than_vt_slack: int  # older than vt + the mutex time: nobody is restoring them
    oldest_age_s: Optional[float]
    read: int  # entries read one by one (to know their queues and tasks)
    by_queue: Mapping[str, int] = field(default_factory=dict)
    stale_by_queue: Mapping[str, int] = field(default_factory=dict)  # older than vt + slack, per queue
    tasks: Mapping[str, int] = field(default_factory=dict)
    missing_payload: int = 0  # index entries whose hash value is gone
    unindexed: Optional[int] = None  # hash entries without an index entry: never restored (None: not all read)
    eta_beyond_vt: int = 0  # held ETA tasks whose ETA lies further than vt after their delivery
    mutex_ttl_ms: Optional[int] = None  # PTTL unacked_mutex (-1: no expiry, None: no mutex)
    examples: tuple[UnackedExample, ...] = ()
    too_large: int = 0  # entries whose message was too large to read safely (counted, not decoded)
    stopped: Optional[str] = None  # why reading the entries stopped early (memory pressure)


@dataclass(frozen=True)
class ForeignKeys:
    """Kombu-shaped keys outside the app's database/prefix."""

    db: int
    prefix: str
    queues: Mapping[str, int]  # queue -> depth (priority sub-queues summed)
    bindings: tuple[str, ...]  # exchanges with a binding set
    unacked: int

    @property
    def messages(self) -> int:
        return sum(self.queues.values()) + self.unacked


@dataclass(frozen=True)
class FailoverURL:
    url: str  # masked
    reachable: Optional[bool]  # None: not tried
    role: Optional[str]
    note: str = ""


@dataclass(frozen=True)
class RedisState:
    url: str  # masked, the one read
    scheme: str
    db: int
    prefix: str
    vt: float
    vt_source: str
    server: ServerInfo
    clients: ClientSummary
    keyspace: Mapping[int, int]  # db -> keys
    queues: tuple[RedisQueue, ...]
    bindings: tuple[Binding, ...]
    missing_bindings: tuple[str, ...]  # exchanges the app routes through whose binding set is absent
    pidbox_nodes: tuple[str, ...]  # workers whose mailbox is bound (alive or not)
    unacked: UnackedState
    foreign: tuple[ForeignKeys, ...]
    failover: tuple[FailoverURL, ...] = ()
    wrong_type: tuple[tuple[str, str], ...] = ()  # (queue, key): a queue key that is not a list (WRONGTYPE)
    memory_stop: Optional[str] = None  # why reading messages stopped: the server was close to maxmemory
    largest_reply: int = 0  # bytes of the largest reply this scan made Redis build
    oversized: int = 0  # messages too large to read safely, skipped
    keys_scanned: int = 0
    keys_complete: bool = True
    result_keys: int = 0
    deep: bool = False
    max_messages: int = 0
    notes: tuple[str, ...] = ()  # what could not be checked, and why
    duration_s: float = 0.0
    commands: int = 0

    def queue(self, name: str) -> Optional[RedisQueue]:
        for queue in self.queues:
            if queue.name == name:
                return queue
        return None

    @property
    def consumers(self) -> Optional[int]:
        """Clients blocked in BRPOP on the app's database (kombu consumers); None when unknown."""
        if not self.clients.available:
            return None
        return self.clients.consumers_by_db.get(self.db, 0)

    @property
    def queued(self) -> int:
        return sum(q.depth for q in self.queues)

    @property
    def at_risk(self) -> int:
        """Every message the broker holds for the app: queued plus unacked."""
        return self.queued + self.unacked.entries

    def queue_views(self) -> dict[str, QueueView]:
        consumers = self.consumers
        views = {}
        for queue in self.queues:
            views[queue.name] = QueueView(
                name=queue.name,
                messages=queue.depth,
                unacked=self.unacked.by_queue.get(queue.name, 0) if self.unacked.read >= self.unacked.entries else None,
                consumers=0 if consumers == 0 else None,
                task_counts=dict(queue.tasks),
                sampled=queue.sampled,
            )
        return views


# -- examples (tests and docs) -------------------------------------------------------------------------
EXAMPLE_NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the scan time the example summaries were measured at
EXAMPLE_TASK = "proj.tasks.work"


def example_server(**overrides: Any) -> ServerInfo:
    """A standalone Redis 7.2 master read with CONFIG GET: noeviction under a 1 GB maxmemory (5% used), nothing
    evicted, AOF and RDB snapshots on, two clients blocked in BRPOP. Keywords replace ServerInfo fields."""
    values: dict[str, Any] = dict(
        version="7.2.4", mode="standalone", role="master", cluster_enabled=False, uptime_s=864_000,
        maxmemory=1 << 30, maxmemory_policy="noeviction", used_memory=52_428_800, evicted_keys=0, aof_enabled=True,
        rdb_save="3600 1 300 100 60 10000", rdb_last_save_time=int(EXAMPLE_NOW) - 600, rdb_changes_since_last_save=12,
        rdb_saves=240, connected_clients=6, blocked_clients=2, settings_source="CONFIG GET")
    values.update(overrides)
    return ServerInfo(**values)


def example_clients(**overrides: Any) -> ClientSummary:
    """CLIENT LIST as two prefork workers on db 0 leave it: each blocked in BRPOP and subscribed to its mailbox.
    Keywords replace ClientSummary fields."""
    values: dict[str, Any] = dict(available=True, reason=None, consumers_by_db={0: 2}, subscribers_by_db={0: 2},
                                  total=6)
    values.update(overrides)
    return ClientSummary(**values)


def example_summary(tasks: Optional[Mapping[str, int]] = None, **overrides: Any) -> MessageSummary:
    """What reading a queue's messages found: by default 3 well-formed JSON messages of `proj.tasks.work`, no ETA,
    no expiry, no duplicates. `tasks` maps task names to messages; other keywords replace MessageSummary fields."""
    tasks = dict(tasks if tasks is not None else {EXAMPLE_TASK: 3})
    values: dict[str, Any] = dict(analysed=sum(tasks.values()), fast_path=sum(tasks.values()), task_counts=tasks,
                                  vt=3600.0, now=EXAMPLE_NOW)
    values.update(overrides)
    return MessageSummary(**values)


def example_queue(name: str = "celery", depth: int = 3, **overrides: Any) -> RedisQueue:
    """A queue routed to by the app and bound to its exchange by a worker, with `depth` messages at priority 0
    (kombu's four sub-queue keys), all of them read (`example_summary`), used a moment ago. Keywords replace
    RedisQueue fields (`summary=None` for a queue whose messages were not read)."""
    subqueues = tuple(SubQueue(name if step == 0 else f"{name}{PRIORITY_SEP}{step}", step, depth if step == 0 else 0)
                      for step in PRIORITY_STEPS)
    values: dict[str, Any] = dict(
        name=name, depth=depth, subqueues=subqueues, origins=("bound", "routed"), exchanges=(name,), idle_s=0,
        summary=example_summary({EXAMPLE_TASK: depth}) if depth else None, sampled=depth, complete=True)
    values.update(overrides)
    return RedisQueue(**values)


def example_unacked(**overrides: Any) -> UnackedState:
    """kombu's unacked hash while two workers each run one task delivered seconds ago (every entry read, indexed,
    younger than the visibility timeout). Keywords replace UnackedState fields."""
    values: dict[str, Any] = dict(
        entries=2, indexed=2, older_than_vt=0, older_than_vt_slack=0, oldest_age_s=4.2, read=2,
        by_queue={"celery": 2}, stale_by_queue={}, tasks={EXAMPLE_TASK: 2}, missing_payload=0, unindexed=0,
        eta_beyond_vt=0, mutex_ttl_ms=None,
        examples=(UnackedExample("5f0c0a9e-0001", 4.2, "celery", EXAMPLE_TASK, "3f2c9a4e-0001", None),
                  UnackedExample("5f0c0a9e-0002", 1.3, "celery", EXAMPLE_TASK, "3f2c9a4e-0002", None)))
    values.update(overrides)
    return UnackedState(**values)


def example(**overrides: Any) -> RedisState:
    """A RedisState for tests and docs: a healthy broker as a scan of `redis://127.0.0.1:6379/0` finds it when two
    workers (celery@worker1, celery@worker2) consume the default queue `celery`, which holds 3 messages, with
    kombu's default visibility timeout (1 h). Nothing in it makes a redis check fire.

    Keywords replace RedisState fields as they are; build nested values with `example_server`,
    `example_clients`, `example_queue`, `example_unacked` and `example_summary` (e.g.
    `example(server=example_server(maxmemory_policy="allkeys-lru"))`).
    """
    workers = ("celery@worker1", "celery@worker2")
    values: dict[str, Any] = dict(
        url="redis://127.0.0.1:6379/0", scheme="redis", db=0, prefix="", vt=3600.0,
        vt_source="3600 s (kombu default)", server=example_server(), clients=example_clients(), keyspace={0: 6},
        queues=(example_queue(),),
        bindings=(Binding("celery", "celery", "", "celery"),
                  *(Binding("celery.pidbox", "", "", f"{w}.celery.pidbox") for w in workers)),
        missing_bindings=(), pidbox_nodes=workers, unacked=example_unacked(), foreign=(), keys_scanned=6,
        keys_complete=True, result_keys=0, deep=False, max_messages=1000, notes=(), duration_s=0.012, commands=31)
    values.update(overrides)
    return RedisState(**values)
