"""`celery-doctor trace TASK_ID`: where is one task? Looked for read-only, everywhere a task can be."""
from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from .collectors import CollectContext
from .deadline import Deadline
from .diagnose import RunOptions, build_snapshot, load_target
from .masking import scrub
from .model import Finding, Part, RankedFinding, Snapshot
from .ranking import rank
from .registry import load_registry
from .runner import run_checks
from .settings import human_seconds
from .sources import DATA_SOURCES, broker_source, gather_live, import_before_threads, wanted_parts
from .trace_types import Searcher, TraceLocation


@dataclass
class TraceResult:
    task_id: str
    target: Any
    started_at: str
    duration_s: float = 0.0
    locations: list[TraceLocation] = field(default_factory=list)
    not_checked: list[tuple[str, str]] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    likely_causes: tuple[RankedFinding, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.locations)

    @property
    def task_name(self) -> Optional[str]:
        for loc in self.locations:
            if loc.task:
                return loc.task
        return None


def _iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _if_process_dies(snapshot: Snapshot, ref) -> str:
    """What happens to a running task's message if its pool process dies (WorkerLostError), per facts.acks."""
    from .facts.acks import ACKED, ACKED_ON_RECEIPT, REJECTED, REQUEUED, RETRIED, task_acks

    config = snapshot.config
    task = config.tasks.get(ref.name) if config is not None and ref.name else None
    if task is None:
        return ("the message is already acked: the task is lost" if ref.acknowledged else
                "its fate depends on the task's reject_on_worker_lost (not known: the task is not registered here)")
    return {
        ACKED_ON_RECEIPT: "the message was acked when it started: the task is lost",
        ACKED: "the message is acked (acks_late without reject_on_worker_lost): the task is lost",
        REJECTED: "the message is rejected without requeue: the task is lost (dead-lettered if the queue has a DLX)",
        REQUEUED: "the message is requeued (reject_on_worker_lost) and runs again",
        RETRIED: "it is sent again as a retry (task_retry_on_worker_lost), while retries are left",
    }.get(task_acks(config, task).on_worker_lost, "unknown")


def search_workers(ctx: CollectContext, task_id: str, snapshot: Snapshot):
    part = snapshot.part("workers")
    if not part.ok:
        return [], [], [("workers", part.reason or part.status.value)]
    state = part.data
    found: list[TraceLocation] = []
    for worker in state.workers:
        for list_name, state_name in (("active", "running"), ("reserved", "reserved"), ("scheduled", "scheduled")):
            for ref in getattr(worker, list_name) or ():
                if ref.id != task_id:
                    continue
                details = []
                nxt = ""
                if state_name == "running":
                    if ref.time_start:
                        details.append(f"started {human_seconds(max(0.0, snapshot.now - ref.time_start))} ago "
                                       f"({_iso(ref.time_start)})")
                    details.append("acknowledged" if ref.acknowledged else "not acknowledged yet (acks_late)")
                    nxt = "it finishes on this worker; if its pool process dies, " + _if_process_dies(snapshot, ref)
                elif state_name == "reserved":
                    # Prefetched, not started: acked only when a pool process accepts it (Request.on_accepted), so
                    # a dead worker's reserved messages go back to the queue.
                    nxt = ("it runs when a pool process of this worker is free; it is not acknowledged yet, so if the "
                           "worker dies it returns to the queue (RabbitMQ: when the connection closes; Redis: after "
                           "the visibility timeout) and runs later, on another worker")
                else:
                    details.append(f"eta {ref.eta}")
                    nxt = "the worker holds it unacknowledged in memory until its ETA, then runs it"
                if ref.redelivered:
                    details.append("redelivered: it was delivered before (a duplicate run is possible)")
                found.append(TraceLocation("worker", f"worker:{worker.name}", state_name, nxt, tuple(details), ref.name))
        if task_id in worker.revoked_ids:
            found.append(TraceLocation("worker", f"worker:{worker.name}", "revoked",
                                       "this worker discards the task when it receives it ('Discarding revoked task')",
                                       ("the id is in the worker's revoked list (kept in memory; forgotten on restart "
                                        "unless the worker runs with --statedb)",)))
    silent = [w.name for w in state.silent]
    not_checked = [("workers", f"{', '.join(silent)} did not answer within {state.wait_s:g} s")] if silent else []
    checked = [f"workers ({len(state.answered)} answered)"]
    return found, checked, not_checked


UNSAFE_SERIALIZERS = {"pickle", "yaml", "application/x-python-serialize", "application/x-yaml"}


def search_backend(ctx: CollectContext, task_id: str, snapshot: Snapshot):
    app = ctx.app
    backend_url = app.conf.get("result_backend")
    if not backend_url:
        return [], [], [("result backend", "no result_backend is configured")]
    scheme = str(backend_url).split(":", 1)[0].lower()
    if scheme in ("rpc", "amqp"):
        return [], [], [("result backend", f"{scheme}:// results can only be read by the caller that sent the task")]
    # Stop waiting a little before the deadline, so a silent backend is reported under its own name.
    accepted = list(app.conf.get("result_accept_content") or app.conf.get("accept_content") or ())
    unsafe = sorted({str(v).lower() for v in [app.conf.get("result_serializer"), *accepted]} & UNSAFE_SERIALIZERS)
    if unsafe:
        # Reading the result would deserialize it with an unsafe loader: never do that.
        return [], [], [("result backend", f"results may be stored with {', '.join(unsafe)}: not loaded")]
    budget = max(0.05, min(5.0, ctx.deadline.remaining() - 0.3))
    for key in ("redis_socket_timeout", "redis_socket_connect_timeout"):
        app.conf[key] = budget
    app.conf["redis_retry_on_timeout"] = False
    outcome: dict[str, Any] = {}

    def lookup() -> None:
        try:
            outcome["meta"] = app.backend.get_task_meta(task_id)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = scrub(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=lookup, daemon=True, name="trace-backend")
    thread.start()
    thread.join(budget)
    if thread.is_alive():
        return [], [], [("result backend", f"did not answer within {budget:.1f} s")]
    if "error" in outcome:
        return [], [], [("result backend", outcome["error"])]
    meta = outcome.get("meta") or {}
    status = str(meta.get("status") or "PENDING")
    if status == "PENDING":
        return [], ["result backend (no record: PENDING means unknown, not queued)"], []
    details = []
    if meta.get("date_done"):
        details.append(f"date_done {meta['date_done']}")
    if status in ("FAILURE", "RETRY", "REVOKED") and meta.get("result") is not None:
        details.append(scrub(f"error: {meta.get('result')!r}")[:300])
    if meta.get("worker"):
        details.append(f"worker {meta['worker']}")
    nxt = {
        "SUCCESS": "nothing: it ran and succeeded",
        "FAILURE": "nothing: it failed and will not run again unless retried by the caller",
        "RETRY": "a retry was scheduled: look for the new message in the queues and workers' scheduled lists",
        "STARTED": "it is running (or its worker died while running it)",
        "REVOKED": "nothing: it was revoked and will be discarded",
    }.get(status, "")
    return [TraceLocation("result backend", "backend", status, nxt, tuple(details), meta.get("name"))], ["result backend"], []


def _broker_searcher(transport: Optional[str]) -> tuple[Searcher, bool]:
    """(searcher, whether it needs the scan's snapshot): the broker's data source says (celery_doctor/sources.py)."""
    source = broker_source(transport)
    if source is None or source.trace is None:
        def unsupported(ctx, task_id, snapshot):
            return [], [], [("broker", f"tracing is not supported on the {transport or 'unknown'} transport")]
        return unsupported, False
    return source.trace, source.trace_after_scan


def _unique(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each reason once per system ("rabbitmq" and "rabbitmq queues" are one system)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for where, reason in items:
        key = (where.split()[0], reason)
        if key in seen:
            continue
        seen.add(key)
        out.append((where, reason))
    return out


def _relevant_first(findings: tuple[RankedFinding, ...], task: Optional[str], queue: Optional[str]) -> tuple[RankedFinding, ...]:
    def related(row: Finding) -> bool:  # any place of the cause (one row may stand for several queues)
        for f in row.places:
            text = " ".join((f.subject, *f.evidence))
            if (task and task in text) or (queue and f.subject == f"queue:{queue}"):
                return True
        return False

    ordered = sorted(findings, key=lambda r: (not related(r.finding), r.rank))
    return tuple(RankedFinding(i, r.score, r.why, r.finding) for i, r in enumerate(ordered, 1))


def _advise(location: TraceLocation, snapshot: Snapshot) -> TraceLocation:
    """Refine what happens next to a queued message with what the workers said (known only after the scan)."""
    workers = snapshot.workers
    if workers is None or location.where != "redis queue" or location.state != "queued":
        return location
    queue = location.name.split(":", 1)[1]
    consumers = sorted(w.name for w in workers.answered if queue in w.queue_names)
    silent = sorted(w.name for w in workers.silent)
    details = list(location.details)
    nxt = location.next
    if consumers:
        details.append(f"consumed by {', '.join(consumers)}")
    else:
        if silent:
            details.append(f"no answering worker consumes it; silent workers: {', '.join(silent)}")
        if "discard" not in nxt:
            nxt = f"it waits: no live worker consumes {queue!r} (start one with -Q {queue})"
    return replace(location, details=tuple(details), next=nxt)


def trace(options: RunOptions, task_id: str) -> TraceResult:
    started = time.time()
    deadline = Deadline(options.timeout)
    app, broker = load_target(options, deadline)
    registry = load_registry()
    result = TraceResult(task_id=task_id, target=None,
                         started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"))
    static, _ = build_snapshot(replace(options, mode="lint"), deadline, app, broker)
    result.target = static.target
    transport = broker.transport
    ctx = CollectContext(app=app, broker=broker, config=static.config, deadline=deadline,
                         options=options.scan, app_spec=options.app)
    # The scan's live parts (for likely causes and the workers' lists) get part of the time, so that the
    # searches, which run at the same time, are not starved by a silent worker.
    scan_ctx = replace(ctx, deadline=Deadline(max(0.5, deadline.remaining() * 0.7)))
    gathered: list[dict[str, Part]] = []  # one slot, filled by the scan thread when it finishes
    import_before_threads(transport, trace=True)
    scan_thread = threading.Thread(target=lambda: gathered.append(gather_live(scan_ctx, transport)), daemon=True)
    scan_thread.start()
    broker_searcher, after_scan = _broker_searcher(transport)
    searchers: list[Searcher] = [search_backend] + ([] if after_scan else [broker_searcher])
    outcomes: dict[int, tuple] = {}

    def run(index: int, searcher: Searcher, seen: Snapshot = static) -> None:
        try:
            outcomes[index] = searcher(ctx, task_id, seen)
        except Exception as exc:  # noqa: BLE001 - one place failing must not hide the others
            outcomes[index] = ([], [], [(getattr(searcher, "__name__", "search"), scrub(f"{type(exc).__name__}: {exc}"))])

    threads = [threading.Thread(target=run, args=(i, s), daemon=True) for i, s in enumerate(searchers)]
    for thread in threads:
        thread.start()
    for index, thread in enumerate(threads):
        thread.join(deadline.remaining())
        if index not in outcomes:
            name = getattr(searchers[index], "__name__", "search").replace("_", " ")
            outcomes[index] = ([], [], [(name, f"did not answer within {options.timeout:g} s")])
    scan_thread.join(deadline.remaining())
    live = dict(gathered[0]) if gathered else wanted_parts(transport)
    for source in DATA_SOURCES:
        live.setdefault(source.name, Part.unavailable(f"did not answer within {options.timeout:g} s"))
    snapshot = replace(static.with_parts(**live), mode="scan")
    post = [search_workers] + ([broker_searcher] if after_scan else [])
    for offset, searcher in enumerate(post):
        run(len(searchers) + offset, searcher, snapshot)
    for index in range(len(searchers) + len(post)):
        locations, checked, not_checked = outcomes[index]
        result.locations.extend(_advise(loc, snapshot) for loc in locations)
        result.checked.extend(checked)
        result.not_checked.extend(not_checked)
    for name, part in sorted(snapshot.parts.items()):
        if name == transport and not part.ok and part.reason:
            result.not_checked.append((name, scrub(part.reason)))
    result.not_checked = _unique(result.not_checked)
    ran = run_checks(registry, snapshot, options.select, options.ignore)
    queue = next((loc.name.split(":", 1)[1] for loc in result.locations if loc.name.startswith("queue:")), None)
    result.likely_causes = _relevant_first(rank(ran.findings), result.task_name, queue)
    result.duration_s = round(time.time() - started, 2)
    return result
