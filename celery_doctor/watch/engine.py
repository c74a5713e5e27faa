"""Running a watch: subscribe, keep the ledger, probe silent workers, show it live, end with a report.

`run_watch(target, options)` listens until `options.duration` passes, `stop` is set, or the user presses
Ctrl-C (SIGINT and SIGTERM end the watch gracefully: the report is still made and `--enable-events` is still
undone). `replay(path)` rebuilds the same from a recording. `build_report` runs the checks that read the
`events` part (and only those: a watch is not a scan) and ranks their findings as `scan` does.
"""
from __future__ import annotations

import datetime as dt
import os
import queue as _queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Optional

from ..masking import mask_url, scrub
from ..model import Part, Report, Snapshot, Target
from ..parts.events import EventsState
from ..parts.events import clock as clock_of
from .decode import Undecoded, decode_amqp, decode_redis
from .live import Frame, View, WorkerLine, make_view
from .recording import Recorder, read
from .session import Session

QUEUE_MAX = 200_000  # messages buffered between the subscriber thread and the ledger
DRAIN_BATCH = 5000
FRAME_INTERVAL = 0.25  # seconds between two frames of the live view


class WatchError(Exception):
    """The watch could not start (a usage error: unreachable broker, unsupported transport)."""


@dataclass
class WatchOptions:
    duration: Optional[float] = None  # seconds; None: until Ctrl-C
    bound: float = 30.0  # a task sent and not received within this many seconds is reported
    record: Optional[str] = None
    enable_events: bool = False
    max_open: int = 10000
    management_url: Optional[str] = None
    live: Optional[bool] = None  # None: a live view when the view's stream is a terminal
    probe_interval: float = 2.0  # Redis CLIENT LIST
    plain_interval: float = 10.0  # plain progress lines
    handle_signals: bool = True


@dataclass
class WatchTarget:
    """What to watch, resolved by the caller (the CLI loads the app and reads the broker URL once)."""

    app: Any  # a Celery app (the user's, or a bare one for --broker)
    broker_url: str = field(repr=False)  # raw: for kombu and redis-py only
    transport: str  # "redis" or "rabbitmq"
    app_spec: Optional[str] = None
    config: Any = None  # AppConfig, when the app was loaded (time limits, acks for the checks)

    @property
    def masked(self) -> str:
        return mask_url(self.broker_url) or ""

    def conf(self, name: str, default: Any = None) -> Any:
        try:
            value = getattr(self.app.conf, name)
        except Exception:  # noqa: BLE001 - a lazy settings object may raise
            return default
        return default if value is None else value


def target_for_app(app: Any, app_spec: Optional[str] = None, broker_url: Optional[str] = None,
                   config: Any = None) -> WatchTarget:
    from ..broker_target import BrokerTarget

    url = broker_url or app.conf.broker_url
    if not isinstance(url, str) or not url.strip():
        raise WatchError("no broker URL: give --broker or an app that sets broker_url")
    broker = BrokerTarget.parse(url, app.conf.get("broker_transport"))
    if broker.error:
        raise WatchError(broker.error)
    if broker.transport not in ("redis", "rabbitmq"):
        raise WatchError(f"watch reads Celery events from Redis or RabbitMQ brokers, not {broker.transport or 'this one'}")
    first = broker.first
    if first.scheme == "sentinel":
        raise WatchError("watch does not follow sentinel:// URLs yet: give the master's redis:// URL with --broker")
    return WatchTarget(app=app, broker_url=first.raw, transport=broker.transport, app_spec=app_spec, config=config)


def _time_limits(config: Any) -> tuple[dict, Optional[float]]:
    if config is None:
        return {}, None
    from ..facts.limits import global_time_limits, task_time_limits

    limits = {}
    try:
        for name, info in config.tasks.items():
            hard = task_time_limits(config, info).hard
            if hard:
                limits[name] = hard
        default = global_time_limits(config).hard
    except Exception:  # noqa: BLE001 - limits are an extra; a config we cannot read gives none
        return {}, None
    return limits, default


def open_source(target: WatchTarget, options: WatchOptions):
    exchange = str(target.conf("event_exchange", "celeryev"))
    try:
        if target.transport == "redis":
            from .redis_source import RedisEvents

            return RedisEvents(target.broker_url, dict(target.conf("broker_transport_options", {}) or {}), exchange,
                               use_ssl=target.conf("broker_use_ssl"))
        from .amqp_source import AmqpEvents

        return AmqpEvents(target.broker_url, exchange, use_ssl=target.conf("broker_use_ssl"),
                          management_url=options.management_url,
                          namespace=str(target.conf("control_exchange", "celery")))
    except WatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreachable broker is a one-line usage error
        raise WatchError(scrub(" ".join(str(exc).split()) or type(exc).__name__)) from None


class _Stopper:
    """SIGINT/SIGTERM set `event` (the watch ends with its report) instead of raising in the middle of it."""

    def __init__(self, event: threading.Event, enabled: bool) -> None:
        self.event = event
        self.signals: list = []
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.interrupted = False

    def __enter__(self) -> "_Stopper":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.signals.append((sig, signal.signal(sig, self._handle)))
        return self

    def _handle(self, signum, frame) -> None:
        self.interrupted = True
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self.signals:
            signal.signal(sig, previous)


def _header(target: WatchTarget, options: WatchOptions, source: Any, started: float) -> dict:
    from .. import __version__

    limits, default = _time_limits(target.config)
    return {"version": __version__, "transport": target.transport, "broker": target.masked, "app": target.app_spec,
            "source": source.source, "db": getattr(source, "db", None), "bound": options.bound,
            "started_at": round(started, 6), "time_limits": limits, "default_time_limit": default,
            "max_open": options.max_open, "exchange": getattr(source, "exchange", None)}


def frame_of(session: Session, now: float, options: WatchOptions, rate: float, behind: int) -> Frame:
    ledger = session.ledger
    verdicts = session.liveness(now)
    workers = []
    for worker in ledger.workers.values():
        verdict = verdicts.get(worker.hostname)
        status = verdict.verdict if verdict else "alive"
        age = None if worker.last_heartbeat is None else max(0.0, now - worker.last_heartbeat)
        workers.append(WorkerLine(worker.hostname, status, age, worker.active))
    suspicious = list(ledger.suspicious)
    for entry in ledger.never_received(now, session.bound)[:20]:
        suspicious.append((entry.steps[0].t + session.bound, entry.id, f"sent, not received in {session.bound:g} s"))
    suspicious.sort(key=lambda item: item[0])
    task_events = any(k.startswith("task-") and k != "task-sent" for k in ledger.kinds)
    return Frame(now=now, elapsed=now - session.started_at, duration=options.duration, events=ledger.events,
                 rate=rate, counts=ledger.counts(), workers=workers, suspicious=suspicious[-50:],
                 dropped=ledger.open_dropped, behind=behind, source=session.source, task_events=task_events)


def run_watch(target: WatchTarget, options: WatchOptions, view_stream: Optional[IO[str]] = None,
              stop: Optional[threading.Event] = None, clock: Callable[[], float] = time.time,
              view: Optional[View] = None) -> EventsState:
    source = open_source(target, options)
    stop = stop or threading.Event()
    started = clock()
    header = _header(target, options, source, started)
    recorder = Recorder(options.record, header) if options.record else None
    session = Session(header)
    view = view or make_view(view_stream, options.live, options.plain_interval)
    watch = _Watch(target, options, source, session, recorder, view, stop, clock)
    with _Stopper(stop, options.handle_signals) as stopper:
        source.start(watch.out)
        try:
            watch.begin()
            watch.follow(started)
        finally:
            watch.finish(stopper)
    return session.state()


class _Watch:
    """One live watch: what the source delivers goes into the session (and the recording), silent workers are
    probed, the live view is updated; at the end, what could not be observed is noted and the queues of the
    tasks no worker received are read."""

    def __init__(self, target: WatchTarget, options: WatchOptions, source: Any, session: Session,
                 recorder: Optional[Recorder], view: View, stop: threading.Event, clock: Callable[[], float]) -> None:
        self.target = target
        self.options = options
        self.source = source
        self.session = session
        self.recorder = recorder
        self.view = view
        self.stop = stop
        self.clock = clock
        self.out: "_queue.Queue" = _queue.Queue(maxsize=QUEUE_MAX)
        self.decode = decode_redis if target.transport == "redis" else (lambda raw: decode_amqp(*raw))
        self.namespace = str(target.conf("control_exchange", "celery"))
        self.enabled = False  # --enable-events was sent and answered
        self.known: set = set()  # workers told to enable events
        self.probed: dict[str, float] = {}  # RabbitMQ: when each silent worker's mailbox was last read
        self.last_rows: dict = {}  # Redis: the previous CLIENT LIST by id (the next polls are recorded as changes)
        self.rates: list = []  # (t, events) samples for the rate
        self.last_rate = 0.0

    def item(self, t: float, kind: str, payload: Any) -> None:
        self.session.feed(t, kind, payload)
        if self.recorder is not None:
            self.recorder.item(t, kind, payload)

    # -- the start ---------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.source.subscribed.wait(5.0)
        if not self.source.subscribed.is_set() and self.source.error:
            self.item(self.clock(), "note", f"the event subscription failed at first: {self.source.error}")
        if self.options.enable_events:
            self._enable_events()

    def _enable_events(self) -> None:
        error = _control(self.target, "enable_events", self.namespace)
        self.enabled = error is None
        self.item(self.clock(), "enable_events", {"enabled_at": self.clock()} if self.enabled else {"error": error})

    # -- the loop ----------------------------------------------------------------------------------------
    def follow(self, started: float) -> None:
        """Until the duration passes or `stop` is set: take the events, probe, show."""
        end = started + self.options.duration if self.options.duration else None
        next_probe = next_frame = self.clock()
        while not self.stop.is_set():
            now = self.clock()
            if end is not None and now >= end:
                break
            self.drain(wait=0.1)
            now = self.clock()
            if now >= next_probe:
                self.probe(now)
                next_probe = now + self.options.probe_interval
            if self.enabled:
                self._tell_new_workers()
            if now >= next_frame:  # the view (and what it needs) at most a few times a second
                next_frame = now + FRAME_INTERVAL
                self._show(now)

    def drain(self, limit: int = DRAIN_BATCH, wait: float = 0.0) -> int:
        """Up to `limit` messages from the source, decoded, into the session (waiting `wait` s for the first)."""
        count = 0
        while count < limit:
            try:
                t, _, raw = self.out.get(timeout=wait) if (wait and count == 0) else self.out.get_nowait()
            except _queue.Empty:
                break
            count += 1
            self._take(t, raw)
        return count

    def _take(self, t: float, raw: Any) -> None:
        try:
            events, bad = self.decode(raw)
        except Undecoded as exc:
            self.item(t, "undecoded", str(exc))
            return
        for event in events:
            self.item(t, "event", event)
        if bad:
            self.item(t, "malformed", bad)

    def _tell_new_workers(self) -> None:
        """Workers that started after the enable_events broadcast are told too."""
        new = [h for h in self.session.ledger.workers if h not in self.known]
        if new and self.known:
            _control(self.target, "enable_events", self.namespace, destination=new)
        self.known.update(new)

    def _show(self, now: float) -> None:
        self.rates.append((now, self.session.ledger.events))
        while len(self.rates) > 2 and self.rates[0][0] < now - 5.0:
            self.rates.pop(0)
        rate = _rate(self.rates)
        self.view.update(frame_of(self.session, now, self.options, rate, self.source.dropped))
        self.last_rate = rate

    # -- probes ------------------------------------------------------------------------------------------
    def probe(self, now: float, final: bool = False) -> None:
        if self.target.transport == "redis":
            self._probe_clients(now)
        else:
            self._probe_mailboxes(now, final)

    def _probe_clients(self, now: float) -> None:
        """Redis: CLIENT LIST, recorded whole the first time (and after a failure), then as changes."""
        rows, reason = self.source.client_list()
        if rows is None:
            self.item(now, "clients_error", reason or "CLIENT LIST could not be read")
            self.last_rows = {}
            return
        current = {str(row.get("id")): row for row in rows}
        previous = self.last_rows
        if not previous:
            self.item(now, "clients", rows)
        else:
            self.item(now, "clients_diff", {"add": [row for cid, row in current.items() if previous.get(cid) != row],
                                            "del": [cid for cid in previous if cid not in current]})
        self.last_rows = current

    def _probe_mailboxes(self, now: float, final: bool) -> None:
        """RabbitMQ: the mailbox queue of each worker silent since it was last read (at the end: every silent one)."""
        silent = ([w.hostname for w in self.session.ledger.silent_workers(now)] if final
                  else self.session.silent_unprobed(now, self.probed))
        for hostname in silent[:50]:
            self.probed[hostname] = now
            self.item(self.clock(), "mailbox", self.source.mailbox(hostname))

    # -- the end -----------------------------------------------------------------------------------------
    def finish(self, stopper: _Stopper) -> None:
        """Undo --enable-events, take what is left, note what could not be observed, probe a last time, end."""
        undo_error = _control(self.target, "disable_events", self.namespace) if self.enabled else None
        self.source.stop()
        self.drain(limit=QUEUE_MAX)
        now = self.clock()
        if self.enabled:
            self.item(now, "enable_events", {"disabled_at": now} if undo_error is None else {"undo_error": undo_error})
        if stopper.interrupted:
            self.item(now, "note", "the watch was interrupted (Ctrl-C): the report covers what was seen until then")
        self._source_notes(now)
        try:
            self._final_probes(now)
        finally:
            self._close()

    def _source_notes(self, now: float) -> None:
        """What the subscription missed: its gaps, the messages dropped, an event exchange that does not exist."""
        source = self.source
        for start, finish, why in getattr(source, "gaps", []):
            self.item(now, "note", f"events were not received from {clock_of(start)} to {clock_of(finish)}: {why}")
        if source.dropped:
            self.item(now, "note", f"{source.dropped:,} event messages were dropped: the ledger fell behind")
        if getattr(source, "exchange_missing_since", None) and not source.subscribed.is_set():
            self.item(now, "note", f"the event exchange {source.exchange!r} does not exist on the broker: no worker or "
                                   "producer has sent an event there (celery-doctor does not create it)")

    def _final_probes(self, now: float) -> None:
        """The silent workers, and the queues of the tasks no worker received (how many messages wait there)."""
        self.probe(now, final=True)
        for name in sorted({e.queue or "" for e in self.session.ledger.never_received(now, self.session.bound)})[:50]:
            if not name:
                continue
            self.item(self.clock(), "queue", _queue_probe(self.source, name))

    def _close(self) -> None:
        self.item(self.clock(), "end", {})
        if self.recorder is not None:
            self.recorder.close()
        self.view.close(frame_of(self.session, self.clock(), self.options, self.last_rate, self.source.dropped))


def _rate(samples: list) -> float:
    """Events per second over the (t, events) samples."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return 0.0
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0)


def _queue_probe(source: Any, name: str) -> dict:
    if getattr(source, "transport", "") == "redis":
        depth, error = source.queue_depth(name)
        return {"name": name, "depth": depth, "how": source.depth_how, "error": error}
    depth, consumers, error = source.queue_depth(name)
    return {"name": name, "depth": depth, "consumers": consumers, "how": source.depth_how, "error": error}


def _control(target: WatchTarget, command: str, namespace: str, destination=None) -> Optional[str]:
    from .control import broadcast

    return broadcast(target.app, target.broker_url, target.transport, command, namespace, destination)


def replay(path: str, bound: Optional[float] = None) -> tuple[EventsState, dict]:
    """The events part a recording gives (and its header)."""
    header, items, recording = read(path)
    if bound is not None:
        header = dict(header, bound=bound)
    session = Session(header)
    for t, kind, payload in items:
        session.feed(t, kind, payload)
    if recording.bad_lines:
        session.note(f"{recording.bad_lines} line(s) of the recording could not be read and were skipped")
    if session.ended_at is None:
        session.note("the recording has no end line (the watch was killed): it ends at its last item")
    return session.state(replayed_from=os.path.basename(path)), header


# -- the report ---------------------------------------------------------------------------------------------

def events_registry(registry: Any) -> Any:
    """The checks a watch runs: those that read the events part (a watch is not a scan)."""
    from ..registry import Registry

    return Registry(checks=[c for c in registry.checks if "events" in c.needs], errors=list(registry.errors))


def not_checked(state: EventsState) -> tuple[tuple[str, str], ...]:
    out = [("events", note) for note in state.notes]
    if state.open_dropped:
        out.append(("events", f"{state.open_dropped:,} open tasks were dropped from the ledger, the oldest first "
                              f"(limit {state.max_open:,} open entries, --max-open): what became of them is not "
                              "reported"))
    if state.notable_dropped:
        out.append(("events", f"{state.notable_dropped:,} finished tasks worth reporting (failed, revoked, ran twice) "
                              "did not fit the ledger and are not reported"))
    if state.task_events == 0 and state.events:
        out.append(("task events", "no worker sent a task event: turn on worker_send_task_events (celery worker -E) "
                                   "on the workers and task_send_sent_event on the producers, or run with "
                                   "--enable-events; only heartbeats were watched"))
    elif state.sent_events == 0 and state.events:
        out.append(("task-sent events", "no producer sent task-sent: turn on task_send_sent_event where tasks are "
                                        "sent to see tasks that no worker ever receives"))
    return tuple((part, scrub(reason)) for part, reason in out)


def build_report(state: EventsState, target: Target, registry: Any = None, config: Any = None,
                 select=(), ignore=(), started: Optional[float] = None) -> tuple[Report, Any]:
    from .. import __version__
    from ..ranking import rank
    from ..registry import load_registry
    from ..runner import run_checks

    registry = events_registry(registry or load_registry())
    parts = {"events": Part.gathered(state)}
    if config is not None:
        parts["config"] = Part.gathered(config)
    snapshot = Snapshot(target=target, parts=parts, mode="watch", now=state.ended_at)
    result = run_checks(registry, snapshot, select, ignore)
    began = started if started is not None else state.started_at
    report = Report(
        tool_version=__version__, target=target, mode="watch",
        started_at=dt.datetime.fromtimestamp(began, dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(state.duration, 2), findings=rank(result.findings), checks=tuple(result.results),
        not_checked=not_checked(state), suppressed=result.suppressed)
    return report, registry
