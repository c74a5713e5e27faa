"""The RabbitMQ collector: what RabbitMQ is doing to the app's messages, read without consuming.

Source of truth is the management HTTP API (GET only). When it cannot be reached, the app's queues are
probed with passive declares over AMQP (pika, one channel per queue): that gives ready-message and consumer
counts and whether a queue or exchange exists, nothing else; `RabbitState.missing` then says which data is
absent and why, so checks that need it can say they could not run.

`--peek` (and only then) reads a bounded number of messages per queue with basic.get and requeues them to
count task names from the headers (bodies are never decoded). That marks them redelivered and can reorder
them; the state carries a warning saying so. The result is a frozen `RabbitState` (celery_doctor/parts/rabbitmq.py).
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Mapping, Optional
from urllib.parse import quote

from ..masking import scrub
from ..model import Part
from ..parts.rabbitmq import (
    BINDINGS,
    EXCHANGES,
    NODES,
    OPERATOR_POLICIES,
    OVERVIEW,
    POLICIES,
    QUEUE_DETAILS,
    VHOST_LIMITS,
    PeekEntry,
    PeekSample,
    RabbitBinding,
    RabbitExchange,
    RabbitNode,
    RabbitPolicy,
    RabbitQueue,
    RabbitState,
)
from ..rabbitmq_api import AmqpProbe, BrokerEndpoint, ManagementClient, RabbitError, broker_endpoint, management_guess

PEEK_PER_QUEUE = 200  # at most this many messages are read per queue under --peek (and at most --max-messages)
PEEK_TOTAL = 2000


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return None


def _float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _counts(stats: Any) -> dict[str, int]:
    """message_stats without the *_details rate objects."""
    if not isinstance(stats, Mapping):
        return {}
    return {k: v for k, v in stats.items() if isinstance(v, int) and not isinstance(v, bool)}


def parse_idle_since(text: Any) -> Optional[float]:
    """Epoch seconds of the management API's idle_since ("2024-01-02T03:04:05.678+00:00" or "2024-01-02 3:04:05")."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = dt.datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


# --------------------------------------------------------------------------- what the app uses


def app_queue_names(config: Any) -> list[str]:
    """Queues the app routes tasks to, its default queue, and the queues in task_queues."""
    if config is None:
        return []
    names: list[str] = []
    try:
        if not config.tasks and not config.queues and not config.route_rules:
            return []  # a bare app (--broker): no queue is the app's, every queue of the vhost is in scope
        for name in list(config.routed_queues()) + list(config.queue_names()):
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    except Exception:  # noqa: BLE001 - a config view we cannot read gives no names, not a crash
        return names
    return names


def app_exchange_names(config: Any) -> list[str]:
    """Named exchanges the app publishes to (Celery turns direct-exchange routes into default-exchange publishes)."""
    if config is None:
        return []
    names: list[str] = []
    try:
        for queue in config.queues:
            if queue.exchange and queue.exchange_type != "direct" and queue.exchange not in names:
                names.append(queue.exchange)
        for route in config.routes.values():
            if route.queue is None and route.exchange and route.exchange not in names:
                names.append(route.exchange)
    except Exception:  # noqa: BLE001
        return names
    return names


# --------------------------------------------------------------------------- the collector


def collect_rabbitmq(ctx: Any) -> Part:
    try:
        endpoint = broker_endpoint(ctx.broker, _use_ssl(ctx.app))
    except RabbitError as exc:
        return Part.unavailable(exc.reason)
    options = ctx.options
    override = getattr(options, "management_url", None)
    app_queues = app_queue_names(ctx.config)
    app_exchanges = app_exchange_names(ctx.config)
    collector = _Collector(endpoint, ctx.deadline, app_queues, app_exchanges)
    collector.default_queue = getattr(ctx.config, "default_queue", None) or "celery"
    guess = management_guess(endpoint, override)
    try:
        api: Optional[ManagementClient] = ManagementClient.for_broker(endpoint, ctx.deadline, override)
        collector.management_url = api.display
    except RabbitError as exc:
        api = None
        collector.api_error = exc.reason
    # The broker itself first, over AMQP: a management API that answers says nothing about whether the app
    # can reach its broker (another port, another host, another user), and its data would be of a broker
    # nobody reached. The same connection serves the passive-declare fallback and --peek.
    probe = AmqpProbe(endpoint, ctx.deadline)
    try:
        probe.open()
    except RabbitError as exc:
        return Part.unavailable(scrub(exc.reason + _api_says(api, exc)))
    try:
        failed = _read_connected(collector, probe, api, guess, options)
    finally:
        probe.close()
    return failed or Part.gathered(collector.state())


def _read_connected(collector: "_Collector", probe: AmqpProbe, api: Optional[ManagementClient], guess: Optional[str],
                    options: Any) -> Optional[Part]:
    """Once the broker answered over AMQP: the management API, then passive declares (when the API could not be
    used) and --peek over the same connection. The part to return instead of the state when nothing could be read."""
    collector.version = probe.server_version
    if api is not None:
        try:
            collector.read_api(api, probe.server_cluster_name)
        except Exception as exc:  # noqa: BLE001 - a RabbitError, or a document shaped like nothing expected
            collector.api_unusable(exc if isinstance(exc, RabbitError) else RabbitError(
                f"management API at {api.display}: unexpected answer ({type(exc).__name__})", kind="protocol"))
    if guess:
        _say_guess(collector, guess, probe.server_cluster_name)
    peek = bool(getattr(options, "peek", False))
    if collector.api_reachable and not peek:
        return None
    try:
        if not collector.api_reachable:
            collector.read_passive(probe)
        if peek:
            asked = max(1, int(getattr(options, "max_messages", PEEK_PER_QUEUE) or 1))
            deep = bool(getattr(options, "deep", False))
            collector.read_peek(probe, asked if deep else min(PEEK_PER_QUEUE, asked),
                                total_limit=PEEK_TOTAL * (10 if deep else 1))
    except RabbitError as exc:
        collector.amqp_error = exc.reason
        if not collector.api_reachable:
            return Part.unavailable(scrub(f"{collector.api_error}; passive declares failed too: {exc.reason}"))
    return None


def _say_guess(collector: "_Collector", guess: str, amqp_cluster: Optional[str]) -> None:
    """The management API's address was guessed: say whether it proved to be this broker's."""
    if collector.api_reachable:
        confirmed = (f"it answered for the same cluster {amqp_cluster!r} as the broker"
                     if amqp_cluster and collector.cluster_name == amqp_cluster
                     else "whether it is this broker's API could not be confirmed (no cluster name)")
        collector.notes.append(f"{guess}; {confirmed}")
    elif collector.api_error:
        collector.api_error = f"{collector.api_error}; {guess}"


def _api_says(api: Optional[ManagementClient], amqp: RabbitError) -> str:
    """When AMQP refuses the login or the vhost, the management API's own reason is sharper: ask it once."""
    if api is None or amqp.kind not in ("auth", "forbidden") or api.deadline.remaining() < 0.5:
        return ""
    try:
        api.get(f"queues/{quote(api.vhost, safe='')}", {"page": 1, "page_size": 1, "columns": "name"})
    except RabbitError as exc:
        if exc.kind in ("auth", "forbidden"):
            return f"; the management API says: {exc.reason}"
    return ""


def _use_ssl(app: Any) -> Any:
    try:
        return app.conf.broker_use_ssl
    except Exception:  # noqa: BLE001
        return None


class _Collector:
    def __init__(self, endpoint: BrokerEndpoint, deadline: Any, app_queues: list[str], app_exchanges: list[str]) -> None:
        self.endpoint = endpoint
        self.deadline = deadline
        self.app_queues = app_queues
        self.app_exchanges = app_exchanges
        self.management_url = ""
        self.default_queue = "celery"
        self.api_reachable = False
        self.api_error: Optional[str] = None
        self.amqp_error: Optional[str] = None
        self.version: Optional[str] = None
        self.erlang_version: Optional[str] = None
        self.management_version: Optional[str] = None
        self.cluster_name: Optional[str] = None
        self.message_stats: dict[str, int] = {}
        self.vhost_message_stats: dict[str, int] = {}
        self.nodes: list[RabbitNode] = []
        self.queues: dict[str, RabbitQueue] = {}
        self.queue_count: Optional[int] = None
        self.queues_truncated = False
        self.missing_queues: list[str] = []
        self.exchanges: dict[str, RabbitExchange] = {}
        self.missing_exchanges: list[str] = []
        self.bindings: list[RabbitBinding] = []
        self.policies: list[RabbitPolicy] = []
        self.operator_policies: list[RabbitPolicy] = []
        self.vhost_limits: dict[str, Any] = {}
        self.missing: dict[str, str] = {}
        self.passive: list[str] = []
        self.peeked = False
        self.peek: dict[str, PeekSample] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []

    # -- management API
    def read_api(self, api: ManagementClient, amqp_cluster: Optional[str] = None) -> None:
        self._read_overview(api, amqp_cluster)  # the first call: if it fails, the API is unreachable
        self._read_vhost(api)
        listing = api.queues()  # required too
        items, truncated = listing.items, listing.truncated
        self.api_reachable = True
        self.queue_count = listing.total
        self.queues_truncated = truncated
        if listing.note:
            self.notes.append(f"rabbitmq queue listing: {listing.note}")
        # Policies first: queue settings name the policy they come from.
        self.policies = self._optional(POLICIES, lambda: [_policy(p, False) for p in api.policies()])
        self.operator_policies = self._optional(OPERATOR_POLICIES,
                                                lambda: [_policy(p, True) for p in api.operator_policies()])
        definitions = {p.name: p.definition for p in self.policies}
        definitions.update({f"operator:{p.name}": p.definition for p in self.operator_policies})
        self._read_queues(api, items, truncated, definitions)
        exchanges = self._optional(EXCHANGES, lambda: [api.exchanges()])
        for item in exchanges[0].items if exchanges else ():
            exchange = _exchange_from_api(item)
            self.exchanges[exchange.name] = exchange
        if exchanges and exchanges[0].truncated:
            # An app exchange beyond what was listed is not known to be missing.
            self.missing[EXCHANGES] = f"exchange listing {exchanges[0].note}"
        elif EXCHANGES not in self.missing:
            self.missing_exchanges = [n for n in self.app_exchanges if n not in self.exchanges]
        self.bindings = self._optional(BINDINGS, lambda: [_binding(b) for b in api.bindings()])
        self.nodes = self._optional(NODES, lambda: [_node(n) for n in api.nodes()])
        limits = self._optional(VHOST_LIMITS, lambda: [api.vhost_limits()])
        self.vhost_limits = _shallow(limits[0]) if limits and isinstance(limits[0], Mapping) else {}

    def _read_overview(self, api: ManagementClient, amqp_cluster: Optional[str]) -> None:
        """/api/overview: it must be the management API's, of the cluster the broker said it belongs to."""
        overview = api.get("overview")
        if not isinstance(overview, Mapping) or not any(
                _str(overview.get(k)) for k in ("rabbitmq_version", "management_version", "product_version")):
            raise RabbitError(f"management API at {api.display}: /api/overview is not the management API's overview "
                              "(no rabbitmq_version)", kind="protocol")
        cluster = _str(overview.get("cluster_name"))
        if amqp_cluster and cluster and cluster != amqp_cluster:
            raise RabbitError(f"management API at {api.display} answers for another cluster ({cluster!r}) than the "
                              f"broker at {self.endpoint.display} ({amqp_cluster!r}): its data would describe another "
                              "broker", kind="mismatch")
        self.version = _str(overview.get("rabbitmq_version")) or _str(overview.get("product_version")) or self.version
        self.erlang_version = _str(overview.get("erlang_version"))
        self.management_version = _str(overview.get("management_version"))
        self.cluster_name = _str(overview.get("cluster_name"))
        self.message_stats = _counts(overview.get("message_stats"))

    def _read_vhost(self, api: ManagementClient) -> None:
        try:
            vhost = api.vhost_info()
        except RabbitError as exc:
            if exc.kind not in ("auth", "forbidden"):
                raise
            vhost = {}  # non-administrators may not read /api/vhosts/X: the overview's counters stand in
        if vhost is None:
            raise RabbitError(f"management API at {api.display}: the vhost {self.endpoint.vhost!r} does not exist "
                              "or the user cannot see it", kind="not_found", status=404)
        self.vhost_message_stats = _counts(vhost.get("message_stats"))

    def _read_queues(self, api: ManagementClient, items: list, truncated: bool,
                     definitions: Mapping[str, Mapping]) -> None:
        """The vhost's queues; an app queue beyond the pages read is asked for by name, else it is missing."""
        for item in items:
            queue = _queue_from_api(item, definitions)
            if queue is not None:
                self.queues[queue.name] = queue
        for name in self.app_queues:
            if name in self.queues:
                continue
            if truncated:
                found = self._optional_value(lambda n=name: api.queue(n))
                if found is not None:
                    queue = _queue_from_api(found, definitions)
                    if queue is not None:
                        self.queues[queue.name] = queue
                        continue
            self.missing_queues.append(name)

    def _optional(self, name: str, read) -> list:
        try:
            return list(read())
        except RabbitError as exc:
            self.missing[name] = exc.reason
            return []
        except Exception as exc:  # noqa: BLE001 - a document shaped like nothing expected: this piece is missing
            self.missing[name] = f"the management API's answer could not be read ({type(exc).__name__})"
            return []

    def _optional_value(self, read) -> Any:
        try:
            return read()
        except Exception:  # noqa: BLE001 - RabbitError, or an answer shaped like nothing expected
            return None

    def api_unusable(self, exc: RabbitError) -> None:
        """The API failed part-way: nothing read from it about the vhost is kept; passive declares stand in."""
        self.api_error = exc.reason
        self.api_reachable = False
        self.queues, self.missing_queues, self.queue_count, self.queues_truncated = {}, [], None, False
        self.exchanges, self.missing_exchanges, self.bindings = {}, [], []
        self.policies, self.operator_policies, self.nodes, self.vhost_limits = [], [], [], {}
        self.missing = {}

    # -- passive declares (the API is down)
    def read_passive(self, probe: AmqpProbe) -> None:
        reason = "the management API could not be read (see CD319)"
        for name in (OVERVIEW, QUEUE_DETAILS, EXCHANGES, BINDINGS, POLICIES, OPERATOR_POLICIES, NODES, VHOST_LIMITS):
            self.missing[name] = reason
        for name in self.app_queues or [self.default_queue]:
            result = probe.queue_passive(name)
            if not result.exists:
                self.missing_queues.append(name)
                self.passive.append(f"queue {name!r}: does not exist (passive declare: 404 NOT_FOUND)")
                continue
            if result.error:
                self.passive.append(f"queue {name!r}: exists, but {result.error}")
                self.queues[name] = RabbitQueue(name=name, source="passive")
                continue
            self.queues[name] = RabbitQueue(name=name, source="passive", messages_ready=result.messages,
                                            consumers=result.consumers)
            self.passive.append(f"queue {name!r}: {result.messages} ready, {result.consumers} consumers (passive declare)")
        for name in self.app_exchanges:
            if probe.exchange_passive(name):
                self.exchanges[name] = RabbitExchange(name=name, type=None)
                self.passive.append(f"exchange {name!r}: exists (passive declare)")
            else:
                self.missing_exchanges.append(name)
                self.passive.append(f"exchange {name!r}: does not exist (passive declare: 404 NOT_FOUND)")

    # -- --peek
    def read_peek(self, probe: AmqpProbe, per_queue: int, total_limit: int = PEEK_TOTAL) -> None:
        total = 0
        touched: list[str] = []
        for name in self._peekable():
            budget = min(per_queue, total_limit - total)
            if budget <= 0:
                break
            try:
                messages = probe.peek(name, budget)
            except RabbitError as exc:
                self.peek[name] = PeekSample(queue=name, read=0, error=exc.reason)
                if exc.kind in ("timeout", "closed"):
                    break
                continue
            total += len(messages)
            if messages:
                touched.append(name)
            self.peek[name] = _peek_sample(name, messages)
        self.peeked = True
        self.warnings.append(self._peek_warning(total, touched))

    def _peekable(self) -> list[str]:
        """The queues --peek reads, in order."""
        # A bare app (--broker) has no queues of its own: every queue of the vhost is in scope, as for the
        # other reads (auto-delete ones are other clients' reply and event queues: left alone).
        names = list(self.app_queues) or [n for n, q in sorted(self.queues.items()) if not q.auto_delete]
        out = []
        for name in names:
            queue = self.queues.get(name)
            if queue is None:
                continue
            # The management API's counts lag by its stats interval (5 s by default: a queue filled, or given
            # back by another --peek, a moment ago still shows 0 ready); only a passive declare's count is exact.
            if queue.source == "passive" and queue.messages_ready is not None and queue.messages_ready <= 0:
                continue
            if queue.type == "stream" or queue.exclusive:
                continue
            out.append(name)
        return out

    def _peek_warning(self, total: int, touched: list[str]) -> str:
        quorum = [n for n in touched if (self.queues.get(n) and self.queues[n].type == "quorum")]
        warning = (f"--peek read {total} message(s) from {len(touched)} queue(s)"
                   f"{' (' + ', '.join(repr(n) for n in touched[:6]) + (' ...' if len(touched) > 6 else '') + ')' if touched else ''}"
                   " with basic.get and requeued them: they are now marked redelivered (a worker sees "
                   "delivery_info.redelivered=True) and their order in the queue can change")
        if quorum:
            warning += f"; on the quorum queue(s) {', '.join(repr(n) for n in quorum)} each read also counted toward the delivery limit"
        return warning

    def state(self) -> RabbitState:
        return RabbitState(
            vhost=self.endpoint.vhost,
            broker=self.endpoint.display,
            management_url=self.management_url,
            api_reachable=self.api_reachable,
            api_error=self.api_error,
            amqp_error=self.amqp_error,
            version=self.version,
            erlang_version=self.erlang_version,
            management_version=self.management_version,
            cluster_name=self.cluster_name,
            message_stats=self.message_stats,
            vhost_message_stats=self.vhost_message_stats,
            nodes=tuple(self.nodes),
            queues=self.queues,
            queue_count=self.queue_count,
            queues_truncated=self.queues_truncated,
            missing_queues=tuple(self.missing_queues),
            exchanges=self.exchanges,
            missing_exchanges=tuple(self.missing_exchanges),
            bindings=tuple(self.bindings),
            policies=tuple(self.policies),
            operator_policies=tuple(self.operator_policies),
            vhost_limits=self.vhost_limits,
            app_queues=tuple(self.app_queues),
            app_exchanges=tuple(self.app_exchanges),
            missing=dict(self.missing),
            passive=tuple(self.passive),
            peeked=self.peeked,
            peek=self.peek,
            warnings=tuple(self.warnings),
            notes=tuple(self.notes),
        )


def _peek_sample(name: str, messages: list) -> PeekSample:
    """What the headers of the messages --peek read from one queue say."""
    tasks: Counter = Counter()
    unsafe: Counter = Counter()
    ids = []
    entries = []
    for position, message in enumerate(messages):
        env = message.envelope
        if env.ok and env.task:
            tasks[env.task] += 1
            if env.id:
                ids.append(env.id)
        if env.unsafe_serializer:
            unsafe[env.unsafe_serializer] += 1
        entries.append(PeekEntry(position=position, id=env.id, task=env.task, eta=env.eta, expires=env.expires,
                                 retries=env.retries, redelivered=message.redelivered,
                                 transient=message.delivery_mode == 1))
    return PeekSample(
        queue=name,
        read=len(messages),
        task_counts=dict(tasks.most_common()),
        redelivered=sum(1 for m in messages if m.redelivered),
        transient=sum(1 for m in messages if m.delivery_mode == 1),
        unsafe=dict(unsafe),
        malformed=sum(1 for m in messages if not m.envelope.ok),
        task_ids=tuple(ids),
        entries=tuple(entries),
    )


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


SHALLOW_DEPTH = 8


def _shallow(value: Any, depth: int = 0) -> Any:
    """A copy of an API value (queue arguments, policy definitions) nested at most SHALLOW_DEPTH levels: deeper
    containers become "..." (a peer may nest a document deeply enough to break repr and the reporters)."""
    if isinstance(value, Mapping):
        if depth >= SHALLOW_DEPTH:
            return "..."
        return {str(k): _shallow(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= SHALLOW_DEPTH:
            return "..."
        return [_shallow(v, depth + 1) for v in value]
    return value


def _queue_from_api(item: Mapping, definitions: Mapping[str, Mapping]) -> Optional[RabbitQueue]:
    name = item.get("name")
    if not isinstance(name, str):
        return None
    arguments = item.get("arguments") if isinstance(item.get("arguments"), Mapping) else {}
    qtype = _str(item.get("type")) or _str(arguments.get("x-queue-type")) or "classic"
    effective = item.get("effective_policy_definition")
    utilisation = _float(item.get("consumer_capacity"))
    if utilisation is None:
        utilisation = _float(item.get("consumer_utilisation"))
    policy = _str(item.get("policy"))
    operator_policy = _str(item.get("operator_policy"))
    used = {}
    if policy and policy in definitions:
        used[policy] = definitions[policy]
    if operator_policy and f"operator:{operator_policy}" in definitions:
        used[f"operator:{operator_policy}"] = definitions[f"operator:{operator_policy}"]
    return RabbitQueue(
        name=name,
        source="api",
        type=qtype,
        durable=item.get("durable") if isinstance(item.get("durable"), bool) else None,
        auto_delete=item.get("auto_delete") if isinstance(item.get("auto_delete"), bool) else None,
        exclusive=item.get("exclusive") if isinstance(item.get("exclusive"), bool) else None,
        arguments=_shallow(arguments),
        policy=policy,
        operator_policy=operator_policy,
        effective_policy_definition=_shallow(effective) if isinstance(effective, Mapping) else {},
        messages=_int(item.get("messages")),
        messages_ready=_int(item.get("messages_ready")),
        messages_unacknowledged=_int(item.get("messages_unacknowledged")),
        messages_persistent=_int(item.get("messages_persistent")),
        consumers=_int(item.get("consumers")),
        consumer_utilisation=utilisation,
        idle_since=_str(item.get("idle_since")),
        idle_since_epoch=parse_idle_since(item.get("idle_since")),
        message_stats=_counts(item.get("message_stats")),
        state=_str(item.get("state")),
        node=_str(item.get("node")),
        policy_definitions=used,
    )


def _exchange_from_api(item: Mapping) -> RabbitExchange:
    stats = _counts(item.get("message_stats"))
    arguments = item.get("arguments")
    return RabbitExchange(
        name=str(item.get("name") or ""),
        type=_str(item.get("type")),
        durable=item.get("durable") if isinstance(item.get("durable"), bool) else None,
        auto_delete=item.get("auto_delete") if isinstance(item.get("auto_delete"), bool) else None,
        internal=item.get("internal") if isinstance(item.get("internal"), bool) else None,
        arguments=_shallow(arguments) if isinstance(arguments, Mapping) else {},
        policy=_str(item.get("policy")),
        publish_in=stats.get("publish_in"),
        publish_out=stats.get("publish_out"),
    )


def _binding(item: Mapping) -> RabbitBinding:
    arguments = item.get("arguments")
    return RabbitBinding(
        source=str(item.get("source") or ""),
        destination=str(item.get("destination") or ""),
        destination_type=str(item.get("destination_type") or "queue"),
        routing_key=str(item.get("routing_key") or ""),
        arguments=_shallow(arguments) if isinstance(arguments, Mapping) else {},
    )


def _policy(item: Mapping, operator: bool) -> RabbitPolicy:
    definition = item.get("definition")
    return RabbitPolicy(
        name=str(item.get("name") or ""),
        pattern=str(item.get("pattern") or ""),
        apply_to=str(item.get("apply-to") or item.get("apply_to") or "all"),
        priority=_int(item.get("priority")) or 0,
        definition=_shallow(definition) if isinstance(definition, Mapping) else {},
        operator=operator,
    )


def _node(item: Mapping) -> RabbitNode:
    partitions = item.get("partitions")
    return RabbitNode(
        name=str(item.get("name") or "?"),
        running=item.get("running") if isinstance(item.get("running"), bool) else None,
        mem_alarm=item.get("mem_alarm") if isinstance(item.get("mem_alarm"), bool) else None,
        disk_free_alarm=item.get("disk_free_alarm") if isinstance(item.get("disk_free_alarm"), bool) else None,
        mem_used=_int(item.get("mem_used")),
        mem_limit=_int(item.get("mem_limit")),
        disk_free=_int(item.get("disk_free")),
        disk_free_limit=_int(item.get("disk_free_limit")),
        partitions=tuple(p for p in partitions if isinstance(p, str)) if isinstance(partitions, (list, tuple)) else (),
    )
