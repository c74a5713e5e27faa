"""The rabbitmq part of a snapshot: what RabbitMQ holds for the app, as the collector read it (management API, or
passive declares over AMQP when the API could not be used, plus the --peek sample).

Pure, frozen data: no I/O. celery_doctor.collectors.rabbitmq fills a `RabbitState`; the checks in
checks/rabbitmq_*.py read it, and cross-broker checks use `RabbitState.queue_views()`. `example()` builds a
realistic state for tests without a broker.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from .broker import QueueView

__all__ = ["ALL_DATA", "BINDINGS", "EXCHANGES", "INTERNAL_QUEUE", "MIN_WINS", "NODES", "OPERATOR_POLICIES", "OVERVIEW",
           "POLICIES", "QUEUE_DETAILS", "VHOST_LIMITS", "PeekEntry", "PeekSample", "QueueSetting", "RabbitBinding",
           "RabbitExchange", "RabbitNode", "RabbitPolicy", "RabbitQueue", "RabbitState", "example", "example_exchange",
           "example_node", "example_passive", "example_peek", "example_policy", "example_queue", "scope_queues",
           "version_tuple"]

# Names of the data a check may need; `RabbitState.missing` maps the absent ones to the reason.
OVERVIEW = "overview"
QUEUE_DETAILS = "queue details"  # type, arguments, policies, unacked counts, idle time, message stats
EXCHANGES = "exchanges"
BINDINGS = "bindings"
POLICIES = "policies"
OPERATOR_POLICIES = "operator policies"
NODES = "nodes"
VHOST_LIMITS = "vhost limits"
ALL_DATA = (OVERVIEW, QUEUE_DETAILS, EXCHANGES, BINDINGS, POLICIES, OPERATOR_POLICIES, NODES, VHOST_LIMITS)

# Queues that belong to Celery's machinery, not to tasks: left out when no app says which queues matter.
INTERNAL_QUEUE = re.compile(r"^(celeryev\..*|.*\.pidbox|.*\.reply\.celery\.pidbox|amq\.gen-.*|"
                            r"(.+_)?celery_delayed_\d+|.*celery_delayed_delivery)$")

# Numeric limits: when both an argument and a policy set them, RabbitMQ applies the smaller one.
MIN_WINS = {"max-length", "max-length-bytes", "message-ttl", "expires", "delivery-limit", "consumer-timeout"}


@dataclass(frozen=True)
class QueueSetting:
    key: str  # policy-style key, e.g. "max-length"
    value: Any
    source: str  # e.g. "argument x-max-length=10", "policy 'limits' max-length=10"

    def __str__(self) -> str:
        return self.source


@dataclass(frozen=True)
class RabbitPolicy:
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: Mapping[str, Any]
    operator: bool = False

    @property
    def label(self) -> str:
        return f"{'operator policy' if self.operator else 'policy'} {self.name!r}"


@dataclass(frozen=True)
class RabbitQueue:
    name: str
    source: str  # "api" or "passive"
    type: Optional[str] = None  # classic / quorum / stream
    durable: Optional[bool] = None
    auto_delete: Optional[bool] = None
    exclusive: Optional[bool] = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    policy: Optional[str] = None
    operator_policy: Optional[str] = None
    effective_policy_definition: Mapping[str, Any] = field(default_factory=dict)
    messages: Optional[int] = None
    messages_ready: Optional[int] = None
    messages_unacknowledged: Optional[int] = None
    messages_persistent: Optional[int] = None  # classic queues only
    consumers: Optional[int] = None
    consumer_utilisation: Optional[float] = None  # a.k.a. consumer_capacity
    idle_since: Optional[str] = None
    idle_since_epoch: Optional[float] = None
    message_stats: Mapping[str, int] = field(default_factory=dict)  # publish, deliver_get, ack, redeliver, ...
    state: Optional[str] = None
    node: Optional[str] = None
    policy_definitions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> definition

    @property
    def ready(self) -> int:
        return self.messages_ready or 0

    @property
    def unacked(self) -> int:
        return self.messages_unacknowledged or 0

    @property
    def total(self) -> int:
        if self.messages is not None:
            return self.messages
        return self.ready + self.unacked

    @property
    def redeliver(self) -> Optional[int]:
        value = self.message_stats.get("redeliver")
        return value if isinstance(value, int) else None

    def describe(self) -> str:
        bits = [self.type or "classic"]
        if self.durable is False:
            bits.append("non-durable")
        if self.auto_delete:
            bits.append("auto-delete")
        return f"{self.name!r} ({', '.join(bits)})"

    def setting(self, key: str) -> Optional[QueueSetting]:
        """The effective value of a queue setting from its x-argument and/or its (operator) policy."""
        arg_key = f"x-{key}"
        arg = self.arguments.get(arg_key) if isinstance(self.arguments, Mapping) else None
        pol = self.effective_policy_definition.get(key) if isinstance(self.effective_policy_definition, Mapping) else None
        pol_source = None
        if pol is not None:
            pol_source = self._policy_label(key)
        if arg is None and pol is None:
            return None
        if arg is not None and pol is not None:
            if key in MIN_WINS and _is_number(arg) and _is_number(pol):
                if pol < arg:
                    return QueueSetting(key, pol, f"{pol_source} {key}={pol!r} (below argument {arg_key}={arg!r})")
                return QueueSetting(key, arg, f"argument {arg_key}={arg!r} (policy sets {pol!r})")
            return QueueSetting(key, arg, f"argument {arg_key}={arg!r} (overrides {pol_source} {key}={pol!r})")
        if arg is not None:
            return QueueSetting(key, arg, f"argument {arg_key}={arg!r}")
        return QueueSetting(key, pol, f"{pol_source} {key}={pol!r}")

    def _policy_label(self, key: str) -> str:
        op = self.policy_definitions.get(f"operator:{self.operator_policy}") if self.operator_policy else None
        if op is not None and key in op:
            return f"operator policy {self.operator_policy!r}"
        if self.policy:
            return f"policy {self.policy!r}"
        if self.operator_policy:
            return f"operator policy {self.operator_policy!r}"
        return "policy"


@dataclass(frozen=True)
class RabbitExchange:
    name: str
    type: Optional[str]
    durable: Optional[bool] = None
    auto_delete: Optional[bool] = None
    internal: Optional[bool] = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    policy: Optional[str] = None
    publish_in: Optional[int] = None
    publish_out: Optional[int] = None

    @property
    def label(self) -> str:
        return "the default exchange ''" if self.name == "" else f"exchange {self.name!r} ({self.type})"


@dataclass(frozen=True)
class RabbitBinding:
    source: str
    destination: str
    destination_type: str  # "queue" or "exchange"
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RabbitNode:
    name: str
    running: Optional[bool]
    mem_alarm: Optional[bool]
    disk_free_alarm: Optional[bool]
    mem_used: Optional[int] = None
    mem_limit: Optional[int] = None
    disk_free: Optional[int] = None
    disk_free_limit: Optional[int] = None
    partitions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeekEntry:
    """One message read under --peek (headers only), by its position from the head of the queue."""

    position: int
    id: Optional[str]
    task: Optional[str]
    eta: Optional[str] = None
    expires: Optional[str] = None
    retries: Optional[int] = None
    redelivered: bool = False
    transient: bool = False


@dataclass(frozen=True)
class PeekSample:
    queue: str
    read: int
    task_counts: Mapping[str, int] = field(default_factory=dict)
    redelivered: int = 0  # already redelivered before this read
    transient: int = 0  # delivery_mode 1
    unsafe: Mapping[str, int] = field(default_factory=dict)  # serializer -> messages (pickle, yaml)
    malformed: int = 0
    task_ids: tuple[str, ...] = ()
    error: Optional[str] = None
    entries: tuple[PeekEntry, ...] = ()


@dataclass(frozen=True)
class RabbitState:
    """Everything gathered from RabbitMQ for one vhost. Pure data; checks read it."""

    vhost: str
    broker: str  # masked
    management_url: str  # masked
    api_reachable: bool
    api_error: Optional[str] = None
    amqp_error: Optional[str] = None
    version: Optional[str] = None  # RabbitMQ version (from the API, or the AMQP server properties)
    erlang_version: Optional[str] = None
    management_version: Optional[str] = None
    cluster_name: Optional[str] = None
    message_stats: Mapping[str, int] = field(default_factory=dict)  # overview, cluster-wide
    vhost_message_stats: Mapping[str, int] = field(default_factory=dict)
    nodes: tuple[RabbitNode, ...] = ()
    queues: Mapping[str, RabbitQueue] = field(default_factory=dict)
    queue_count: Optional[int] = None  # queues in the vhost (from the API)
    queues_truncated: bool = False
    missing_queues: tuple[str, ...] = ()  # app queues that do not exist on the broker
    exchanges: Mapping[str, RabbitExchange] = field(default_factory=dict)
    missing_exchanges: tuple[str, ...] = ()  # app exchanges that do not exist
    bindings: tuple[RabbitBinding, ...] = ()
    policies: tuple[RabbitPolicy, ...] = ()
    operator_policies: tuple[RabbitPolicy, ...] = ()
    vhost_limits: Mapping[str, Any] = field(default_factory=dict)
    app_queues: tuple[str, ...] = ()  # queue names the app routes to or declares
    app_exchanges: tuple[str, ...] = ()  # named exchanges the app publishes to
    missing: Mapping[str, str] = field(default_factory=dict)  # data name -> why it is absent
    passive: tuple[str, ...] = ()  # what came from passive declares
    peeked: bool = False
    peek: Mapping[str, PeekSample] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the report must say about how it was read (e.g. a guessed API address)

    @property
    def source(self) -> str:
        return "management API" if self.api_reachable else "passive declares over AMQP"

    def has(self, *data: str) -> bool:
        return not any(d in self.missing for d in data)

    def why_missing(self, *data: str) -> str:
        for d in data:
            if d in self.missing:
                return f"needs RabbitMQ {d}: {self.missing[d]}"
        return ""

    def version_tuple(self) -> tuple[int, ...]:
        return version_tuple(self.version)

    def queue(self, name: str) -> Optional[RabbitQueue]:
        return self.queues.get(name)

    def exchange(self, name: str) -> Optional[RabbitExchange]:
        return self.exchanges.get(name)

    def all_policies(self) -> tuple[RabbitPolicy, ...]:
        return tuple(self.policies) + tuple(self.operator_policies)

    def bindings_from(self, exchange: str) -> list[RabbitBinding]:
        return [b for b in self.bindings if b.source == exchange]

    def queue_views(self) -> dict[str, QueueView]:
        views = {}
        for name, queue in self.queues.items():
            sample = self.peek.get(name)
            views[name] = QueueView(
                name=name,
                messages=queue.ready,
                unacked=queue.messages_unacknowledged,
                consumers=queue.consumers,
                task_counts=dict(sample.task_counts) if sample else {},
                sampled=sample.read if sample else 0,
            )
        return views


def version_tuple(text: Optional[str]) -> tuple[int, ...]:
    if not text:
        return ()
    numbers = []
    for piece in re.split(r"[.+\-]", str(text)):
        if not piece.isdigit():
            break
        numbers.append(int(piece))
    return tuple(numbers)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scope_queues(state: RabbitState, names: Optional[Iterable[str]] = None) -> list[RabbitQueue]:
    """The queues checks look at: the app's (when it names any), else every non-internal queue of the vhost."""
    wanted = list(names) if names is not None else list(state.app_queues)
    if wanted:
        return [state.queues[n] for n in wanted if n in state.queues]
    return [q for n, q in sorted(state.queues.items()) if not INTERNAL_QUEUE.match(n)]


# -- examples (tests and docs) -------------------------------------------------------------------------
EXAMPLE_TASK = "proj.tasks.work"
EXAMPLE_NODE = "rabbit@mq1"


def example_queue(name: str = "celery", ready: int = 3, **overrides: Any) -> RabbitQueue:
    """A queue as the management API shows a durable classic queue that two workers consume: `ready` persistent
    messages waiting, none unacknowledged, no arguments or policy, busy (no idle_since), never redelivered.
    Keywords replace RabbitQueue fields (`source="passive"` with only messages_ready/consumers for a passive
    declare)."""
    values: dict[str, Any] = dict(
        name=name, source="api", type="classic", durable=True, auto_delete=False, exclusive=False, arguments={},
        policy=None, operator_policy=None, effective_policy_definition={}, messages=ready, messages_ready=ready,
        messages_unacknowledged=0, messages_persistent=ready, consumers=2, consumer_utilisation=1.0,
        message_stats={"publish": 120, "deliver_get": 117, "ack": 117, "redeliver": 0}, state="running",
        node=EXAMPLE_NODE)
    values.update(overrides)
    return RabbitQueue(**values)


def example_exchange(name: str = "celery", type: str = "direct", **overrides: Any) -> RabbitExchange:
    """A durable exchange that routed everything published to it (publish_in == publish_out). Keywords replace
    RabbitExchange fields."""
    values: dict[str, Any] = dict(name=name, type=type, durable=True, auto_delete=False, internal=False, arguments={},
                                  policy=None, publish_in=120, publish_out=120)
    values.update(overrides)
    return RabbitExchange(**values)


def example_node(name: str = EXAMPLE_NODE, **overrides: Any) -> RabbitNode:
    """A running node far from its memory and disk alarms, in no partition. Keywords replace RabbitNode fields."""
    values: dict[str, Any] = dict(name=name, running=True, mem_alarm=False, disk_free_alarm=False,
                                  mem_used=157_286_400, mem_limit=3_355_443_200, disk_free=42_949_672_960,
                                  disk_free_limit=50_000_000, partitions=())
    values.update(overrides)
    return RabbitNode(**values)


def example_policy(name: str = "limits", definition: Optional[Mapping[str, Any]] = None, **overrides: Any) -> RabbitPolicy:
    """A vhost policy applied to every queue (pattern `.*`), by default `{"max-length": 100000}`. Keywords replace
    RabbitPolicy fields (`operator=True` for an operator policy)."""
    values: dict[str, Any] = dict(name=name, pattern=".*", apply_to="queues", priority=0,
                                  definition=dict(definition if definition is not None else {"max-length": 100000}))
    values.update(overrides)
    return RabbitPolicy(**values)


def example_peek(queue: str = "celery", read: int = 3, **overrides: Any) -> PeekSample:
    """What --peek read from the head of `queue`: `read` persistent, never-redelivered JSON messages of
    `proj.tasks.work` (ids 3f2c9a4e-0000, -0001, ...). Keywords replace PeekSample fields."""
    entries = tuple(PeekEntry(position=i, id=f"3f2c9a4e-{i:04d}", task=EXAMPLE_TASK) for i in range(read))
    values: dict[str, Any] = dict(queue=queue, read=read, task_counts={EXAMPLE_TASK: read} if read else {},
                                  task_ids=tuple(e.id for e in entries if e.id), entries=entries)
    values.update(overrides)
    return PeekSample(**values)


def example(**overrides: Any) -> RabbitState:
    """A RabbitState for tests and docs: a healthy RabbitMQ 3.13 node read through its management API, vhost "/",
    where two workers consume the app's only queue `celery` (3 ready messages) through the `celery` direct
    exchange. No policy, no vhost limit, no alarm, nothing dropped, no --peek. Nothing in it makes a rabbitmq
    check fire.

    Keywords replace RabbitState fields as they are; build nested values with `example_queue`, `example_exchange`,
    `example_node`, `example_policy` and `example_peek` (e.g. `example(queues={"celery": example_queue(consumers=0)})`).
    For a state read with passive declares because the API could not be used, see `example_passive`.
    """
    stats = {"publish": 120, "deliver_get": 117, "ack": 117, "drop_unroutable": 0, "return_unroutable": 0}
    values: dict[str, Any] = dict(
        vhost="/", broker="amqp://guest:********@127.0.0.1:5672//", management_url="http://127.0.0.1:15672",
        api_reachable=True, version="3.13.7", erlang_version="26.2.5", management_version="3.13.7",
        cluster_name=EXAMPLE_NODE, message_stats=stats, vhost_message_stats=dict(stats), nodes=(example_node(),),
        queues={"celery": example_queue()}, queue_count=1,
        exchanges={"": example_exchange("", "direct", publish_in=None, publish_out=None),
                   "celery": example_exchange(),
                   "celery.pidbox": example_exchange("celery.pidbox", "fanout", durable=False, publish_in=4,
                                                     publish_out=4)},
        bindings=(RabbitBinding("", "celery", "queue", "celery"), RabbitBinding("celery", "celery", "queue", "celery")),
        app_queues=("celery",))
    values.update(overrides)
    return RabbitState(**values)


def example_passive(**overrides: Any) -> RabbitState:
    """The same broker as `example()` when the management API refused the scan's user: the app's queue probed with
    a passive declare over AMQP (3 ready, 2 consumers), every API-only piece of data missing. Keywords replace
    RabbitState fields."""
    reason = "the management API could not be read (see CD319)"
    values: dict[str, Any] = dict(
        vhost="/", broker="amqp://guest:********@127.0.0.1:5672//", management_url="http://127.0.0.1:15672",
        api_reachable=False,
        api_error="management API at http://127.0.0.1:15672: 401 Unauthorized (Login failed)", version="3.13.7",
        queues={"celery": RabbitQueue(name="celery", source="passive", messages_ready=3, consumers=2)},
        app_queues=("celery",), missing=dict.fromkeys(ALL_DATA, reason),
        passive=("queue 'celery': 3 ready, 2 consumers (passive declare)",))
    values.update(overrides)
    return RabbitState(**values)
