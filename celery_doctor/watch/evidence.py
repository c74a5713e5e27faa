"""Busy or dead? Telling a silent worker's state from what the broker shows of its connections.

A worker SIGKILLed (or OOM-killed, or whose host is lost) and a solo-pool worker blocked in a long task both
stop heart-beating (celery/worker/heartbeat.py sends `worker-heartbeat` from the worker's event loop, which a
solo task blocks; a prefork worker whose children are busy keeps sending them). Heartbeats alone cannot tell
them apart. The broker can: a killed process's sockets are closed by its kernel at once, so its connections
disappear; a blocked one keeps them.

- Redis: `CLIENT LIST` (read-only), polled every couple of seconds. Every worker with remote control holds one
  pattern-subscribed connection (its mailbox: kombu PSUBSCRIBEs `/{db}.celery.pidbox`, so `PUBSUB NUMSUB` of
  that channel is always 0 and cannot be used) and a BRPOP connection. Redis does not say which worker a
  connection belongs to, so the connections that closed between two polls are matched with the workers whose
  heartbeats stopped in the same window, and counted (one mailbox subscription per worker). When more workers
  stopped in that window than mailbox connections closed, the evidence cannot single out which: it says so.
- RabbitMQ: each worker's mailbox queue `<hostname>.<namespace>.pidbox` is exclusive to the worker's
  connection (kombu/pidbox.py, `queue_exclusive=True`): it exists while that connection does, with the worker
  as its consumer. One GET of it on the management API per silent worker tells them apart.

All of this is pure: the probes' answers come in (live, or from a recording) with the time they were taken.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..parts.events import ALIVE, AMBIGUOUS, CONNECTED, DEAD, OFFLINE, UNKNOWN, Liveness, clock

BLOCKING = ("brpop", "blpop", "brpoplpush", "blmove", "blmpop")
OWN_NAME = "celery-doctor"  # the names this tool gives its own connections (CLIENT SETNAME)
SLACK = 1.0  # seconds of delivery jitter around a heartbeat


_clock = clock


@dataclass(frozen=True)
class Conn:
    id: str
    addr: str
    mailbox: bool  # pattern/channel-subscribed (a worker's mailbox, or an event monitor)
    consumer: bool  # subscribed or a blocking pop (a consumer's connection, not a producer's)


@dataclass(frozen=True)
class Closure:
    after: float  # the last poll that still saw them
    before: float  # the first poll that did not
    conns: tuple[Conn, ...]

    @property
    def mailboxes(self) -> int:
        return sum(1 for c in self.conns if c.mailbox)


def _conn(row: Mapping[str, Any]) -> Optional[Conn]:
    cid = row.get("id")
    if cid is None:
        return None
    cmd = str(row.get("cmd") or "").lower()
    flags = str(row.get("flags") or "")
    psub = row.get("psub") or 0
    sub = row.get("sub") or 0
    try:
        subscribed = int(psub) > 0 or int(sub) > 0 or "P" in flags
    except (TypeError, ValueError):
        subscribed = "P" in flags
    return Conn(id=str(cid), addr=str(row.get("addr") or "?")[:60], mailbox=subscribed,
                consumer=subscribed or cmd in BLOCKING or "b" in flags)


class ClientTracker:
    """Connections to one Redis database over successive CLIENT LISTs; the consumer connections that closed."""

    def __init__(self, db: int, max_closures: int = 500) -> None:
        self.db = db
        self.current: dict[str, Conn] = {}
        self.closures: deque = deque(maxlen=max_closures)
        self.first_ok: Optional[float] = None
        self.last_ok: Optional[float] = None
        self.failures: deque = deque(maxlen=200)  # (t, reason)
        self.polls = 0
        self.consumers_now = 0
        self.blocking_now = 0

    def observe(self, t: float, rows: Iterable[Mapping[str, Any]]) -> None:
        seen: dict[str, Conn] = {}
        blocking = 0
        for row in rows:
            if str(row.get("name") or "").startswith(OWN_NAME):
                continue
            try:
                if int(row.get("db", self.db)) != self.db:
                    continue
            except (TypeError, ValueError):
                continue
            conn = _conn(row)
            if conn is None:
                continue
            seen[conn.id] = conn
            if str(row.get("cmd") or "").lower() in BLOCKING:
                blocking += 1
        if self.last_ok is not None:
            gone = tuple(c for cid, c in self.current.items() if cid not in seen and c.consumer)
            if gone:
                self.closures.append(Closure(self.last_ok, t, gone))
        self.current = seen
        self.consumers_now = sum(1 for c in seen.values() if c.consumer)
        self.blocking_now = blocking
        self.first_ok = t if self.first_ok is None else self.first_ok
        self.last_ok = t
        self.polls += 1

    def failed(self, t: float, reason: str) -> None:
        self.failures.append((t, reason))

    def covered(self, start: float, end: float) -> bool:
        """True when polls succeeded before `start` and after `end` with no failure between."""
        if self.first_ok is None or self.last_ok is None:
            return False
        if self.first_ok > start or self.last_ok < end:
            return False
        return not any(start - 5 <= t <= end + 5 for t, _ in self.failures)

    def last_failure(self) -> Optional[str]:
        return self.failures[-1][1] if self.failures else None


@dataclass(frozen=True)
class WorkerView:
    """What the verdicts need of a worker (a ledger entry or a WorkerRecord)."""

    hostname: str
    last_heartbeat: Optional[float]
    freq: float
    offline_at: Optional[float]

    @property
    def expires(self) -> Optional[float]:
        return None if self.last_heartbeat is None else self.last_heartbeat + self.freq * 2

    def silent(self, now: float) -> bool:
        return self.offline_at is None and self.expires is not None and now >= self.expires

    @property
    def stop_window(self) -> tuple[float, float]:
        """When a worker that sent its last heartbeat at L stopped: after L, before the next one was due."""
        last = self.last_heartbeat or 0.0
        return last - SLACK, last + self.freq + SLACK


def views(workers: Iterable[Any]) -> list[WorkerView]:
    return [WorkerView(w.hostname, w.last_heartbeat, w.freq, w.offline_at) for w in workers]


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _basic(worker: WorkerView, now: float) -> Optional[Liveness]:
    if worker.offline_at is not None:
        return Liveness(OFFLINE, since=worker.offline_at,
                        evidence=(f"it sent worker-offline at {_clock(worker.offline_at)} (a shutdown)",))
    if not worker.silent(now):
        return Liveness(ALIVE)
    return None


def _silence(worker: WorkerView, now: float) -> str:
    last = worker.last_heartbeat or now
    return (f"no heartbeat since {_clock(last)} ({now - last:.0f} s; it sends one every {worker.freq:g} s, "
            f"silent after {worker.freq * 2:g} s as Celery counts it)")


def _split_silent(workers: Sequence[WorkerView], now: float) -> tuple[dict[str, Liveness], list[WorkerView]]:
    """The verdicts heartbeats alone give (alive, offline), and the silent workers that need broker evidence."""
    out: dict[str, Liveness] = {}
    silent = []
    for worker in workers:
        basic = _basic(worker, now)
        if basic is not None:
            out[worker.hostname] = basic
        else:
            silent.append(worker)
    return out, silent


def redis_verdicts(workers: Sequence[WorkerView], tracker: ClientTracker, now: float) -> dict[str, Liveness]:
    out, silent = _split_silent(workers, now)
    if not silent:
        return out
    offline = [w for w in workers if w.offline_at is not None]
    attributed, explained = _attribute_closures(silent, offline, tracker, now)
    # Closures no stop window explains: a worker already silent may have been killed later (blocked, then killed).
    late = [c for i, c in enumerate(tracker.closures) if i not in explained and c.mailboxes]
    for worker in silent:
        if worker.hostname not in attributed:  # in order: a verdict given here takes its worker out of the next ones'
            attributed[worker.hostname] = _unattributed_verdict(worker, silent, attributed, late, tracker, now)
    out.update(attributed)
    return out


def _attribute_closures(silent: Sequence[WorkerView], offline: Sequence[WorkerView], tracker: ClientTracker,
                        now: float) -> tuple[dict[str, Liveness], set[int]]:
    """Verdicts of the silent workers whose heartbeats stopped when connections closed, and which closures (by
    index) a stop or a clean shutdown explains."""
    attributed: dict[str, Liveness] = {}
    explained: set[int] = set()
    for index, closure in enumerate(tracker.closures):
        window = (closure.after, closure.before)
        stopped = [w for w in silent if _overlaps(w.stop_window, window)]
        left = [w for w in offline if _overlaps((w.offline_at - SLACK, w.offline_at + 5.0), window)]
        if stopped or left:
            explained.add(index)
        if stopped:
            attributed.update(_closure_verdicts(closure, stopped, left, tracker, now))
    return attributed, explained


def _workers_gone(closure: Closure, left: Sequence[WorkerView]) -> int:
    """How many workers a closure's connections are (the ones that shut down cleanly then taken out)."""
    if closure.mailboxes:
        return closure.mailboxes - len(left)  # one mailbox subscription per worker
    # workers without remote control hold none: the closed connections are at least one process's
    return 0 if left else 1


def _closure_verdicts(closure: Closure, stopped: Sequence[WorkerView], left: Sequence[WorkerView],
                      tracker: ClientTracker, now: float) -> dict[str, Liveness]:
    """The workers that stopped heart-beating when `closure`'s connections closed: dead when the closure
    accounts for all of them, else ambiguous."""
    gone = _workers_gone(closure, left)
    when = f"between {_clock(closure.after)} and {_clock(closure.before)}"
    if gone >= len(stopped) and gone > 0:
        return {worker.hostname: _dead_at_closure(worker, closure, stopped, left, when, tracker, now)
                for worker in stopped}
    names = [w.hostname for w in stopped]
    return {worker.hostname: _ambiguous_at_closure(worker, names, gone, when, tracker, now) for worker in stopped}


def _dead_at_closure(worker: WorkerView, closure: Closure, stopped: Sequence[WorkerView],
                     left: Sequence[WorkerView], when: str, tracker: ClientTracker, now: float) -> Liveness:
    return Liveness(DEAD, since=worker.last_heartbeat, evidence=(
        _silence(worker, now),
        f"its broker connections closed when its heartbeats stopped: {len(closure.conns)} consumer "
        f"connection(s) to Redis db {tracker.db} disappeared {when} (CLIENT LIST), "
        f"{closure.mailboxes} of them mailbox subscriptions ({_count_text(stopped, left)})",
        "a process that is killed (SIGKILL, OOM killer, lost host) has its connections closed at once; "
        "a busy or blocked one keeps them: it is gone"))


def _ambiguous_at_closure(worker: WorkerView, names: Sequence[str], gone: int, when: str, tracker: ClientTracker,
                          now: float) -> Liveness:
    others = tuple(n for n in names if n != worker.hostname)
    return Liveness(AMBIGUOUS, since=worker.last_heartbeat, others=others, evidence=(
        _silence(worker, now),
        f"{max(gone, 0) or 'some'} worker mailbox connection(s) to Redis db {tracker.db} closed {when}, "
        f"while {len(names)} workers stopped heart-beating in that window ({', '.join(names)}): "
        "the evidence cannot single out which of them is gone; the others are busy or blocked"))


def _unattributed_verdict(worker: WorkerView, silent: Sequence[WorkerView], attributed: Mapping[str, Liveness],
                          late: Sequence[Closure], tracker: ClientTracker, now: float) -> Liveness:
    """A silent worker no closure at its stop explains: killed later, still connected, or unknown."""
    start, end = worker.stop_window
    after = [c for c in late if c.before > end]
    if after:
        return _killed_later(worker, silent, attributed, after, tracker, now)
    if tracker.covered(start, end):
        return _still_connected(worker, tracker, now)
    return _connections_unread(worker, tracker, now)


def _killed_later(worker: WorkerView, silent: Sequence[WorkerView], attributed: Mapping[str, Liveness],
                  after: Sequence[Closure], tracker: ClientTracker, now: float) -> Liveness:
    """Mailbox connections closed after it went silent: probably dead, or ambiguous among the silent ones."""
    candidates = [w for w in silent if w.hostname not in attributed and (w.stop_window[1] < after[0].before)]
    closed = sum(c.mailboxes for c in after)
    when = f"between {_clock(after[0].after)} and {_clock(after[0].before)}"
    if len(candidates) <= closed:
        return Liveness(DEAD, since=worker.last_heartbeat, certain=False, evidence=(
            _silence(worker, now),
            f"its connections stayed open when its heartbeats stopped (busy or blocked), but a worker mailbox "
            f"connection to Redis db {tracker.db} closed later, {when}, and no other silent worker can explain "
            "it: it was probably killed while it was blocked"))
    names = [w.hostname for w in candidates]
    return Liveness(AMBIGUOUS, since=worker.last_heartbeat, certain=False,
                    others=tuple(n for n in names if n != worker.hostname), evidence=(
        _silence(worker, now),
        f"{closed} worker mailbox connection(s) to Redis db {tracker.db} closed {when}, after "
        f"{len(candidates)} workers had gone silent ({', '.join(names)}): the evidence cannot single out "
        "which of them is gone"))


def _still_connected(worker: WorkerView, tracker: ClientTracker, now: float) -> Liveness:
    return Liveness(CONNECTED, since=worker.last_heartbeat, evidence=(
        _silence(worker, now),
        f"no consumer connection to Redis db {tracker.db} closed when its heartbeats stopped or since "
        f"(CLIENT LIST every few seconds, {tracker.consumers_now} consumer connections now): a killed "
        "worker's connections close at once, so it is alive but not running its event loop: busy (a solo "
        "pool in a long task) or blocked"))


def _connections_unread(worker: WorkerView, tracker: ClientTracker, now: float) -> Liveness:
    reason = tracker.last_failure() or "CLIENT LIST was not read around the time it went silent"
    return Liveness(UNKNOWN, since=worker.last_heartbeat, evidence=(
        _silence(worker, now),
        f"whether its connections are still open is unknown: {reason}; busy (solo pool) and dead look alike "
        "without it"))


def _count_text(stopped: Sequence[WorkerView], left: Sequence[WorkerView]) -> str:
    text = f"one per worker: {len(stopped)} silent worker(s) stopped then"
    if left:
        text += f", {len(left)} shut down cleanly then"
    return text


@dataclass(frozen=True)
class MailboxProbe:
    """One GET of a worker's mailbox queue on the management API."""

    t: float
    hostname: str
    queue: str
    exists: Optional[bool]  # None: the API could not answer
    consumers: Optional[int] = None
    error: Optional[str] = None


def rabbitmq_verdicts(workers: Sequence[WorkerView], probes: Sequence[MailboxProbe], now: float) -> dict[str, Liveness]:
    out: dict[str, Liveness] = {}
    by_worker: dict[str, list[MailboxProbe]] = {}
    for probe in probes:
        by_worker.setdefault(probe.hostname, []).append(probe)
    for worker in workers:
        verdict = _basic(worker, now)
        if verdict is None:
            verdict = _mailbox_verdict(worker, by_worker.get(worker.hostname, ()), now)
        out[worker.hostname] = verdict
    return out


def _mailbox_verdict(worker: WorkerView, probes: Sequence[MailboxProbe], now: float) -> Liveness:
    """A silent worker, from the probes of its mailbox queue taken since it went silent."""
    mine = [p for p in probes if worker.expires is None or p.t >= worker.expires - SLACK]
    answered = [p for p in mine if p.exists is not None]
    silence = _silence(worker, now)
    if not answered:
        reason = next((p.error for p in reversed(mine) if p.error), None) or "its mailbox queue was not read"
        return Liveness(UNKNOWN, since=worker.last_heartbeat, evidence=(
            silence, f"whether its connection is still open is unknown: {reason}"))
    last = answered[-1]
    if _consumed(last):
        return Liveness(CONNECTED, since=worker.last_heartbeat, evidence=(
            silence, f"its mailbox queue {last.queue} (exclusive to its connection) still exists with "
                     f"{last.consumers} consumer(s) at {_clock(last.t)} (management API): its connection is open, "
                     "so it is alive but not running its event loop: busy (a solo pool in a long task) or blocked"))
    return Liveness(DEAD, since=worker.last_heartbeat, evidence=_mailbox_gone_evidence(silence, answered[0], last),
                    certain=not last.exists)


def _consumed(probe: MailboxProbe) -> bool:
    return bool(probe.exists) and (probe.consumers or 0) > 0


def _mailbox_gone_evidence(silence: str, first: MailboxProbe, last: MailboxProbe) -> tuple[str, ...]:
    gone = (f"its mailbox queue {last.queue} is gone at {_clock(last.t)} (management API): RabbitMQ deletes an "
            "exclusive queue when the connection that declared it closes"
            if not last.exists else
            f"its mailbox queue {last.queue} has no consumer at {_clock(last.t)}: the worker's channel is closed")
    if first is not last and _consumed(first):
        return (silence, f"its mailbox queue was still consumed at {_clock(first.t)} (busy or blocked then)",
                gone + ": it was killed (or lost its connection) while silent")
    return (silence, gone + "; a killed process's connection closes at once, a busy one's stays open: it is gone")
