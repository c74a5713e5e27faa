"""A watch session: everything learned, fed one item at a time, live or from a recording.

The live watch and `--replay` feed the same items (see recording.py) through `Session.feed`, and the report
comes from `Session.state`: a replay of a recording gives the report the live watch gave.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Optional

from ..parts.events import EnableEvents, EventsState, Liveness, QueueProbe
from .decode import clean
from .evidence import ClientTracker, MailboxProbe, rabbitmq_verdicts, redis_verdicts, views
from .ledger import Ledger

MAX_NOTES = 50


def _float(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error(payload: Mapping[str, Any], key: str) -> Optional[str]:
    """An error text of a probe's answer, shortened (None when there is none)."""
    return str(payload[key])[:300] if payload.get(key) else None


class Session:
    def __init__(self, header: Mapping[str, Any]) -> None:
        self.header = dict(header)
        self.transport = str(header.get("transport") or "redis")
        self.source = str(header.get("source") or "")
        self.started_at = _float(header.get("started_at")) or 0.0
        self.bound = _float(header.get("bound")) or 30.0
        limits = header.get("time_limits") if isinstance(header.get("time_limits"), dict) else {}
        self.ledger = Ledger(
            max_open=_int(header.get("max_open")) or 10000,
            time_limits={str(k): float(v) for k, v in limits.items() if _float(v)},
            default_time_limit=_float(header.get("default_time_limit")),
        )
        db = _int(header.get("db"))
        self.tracker = ClientTracker(db or 0) if self.transport == "redis" else None
        self.rows: dict = {}  # the last CLIENT LIST, by connection id (recordings hold the changes)
        self.mailboxes: deque = deque(maxlen=5000)
        self.queues: dict[str, QueueProbe] = {}
        self.notes: list[str] = []
        self.enable: Optional[EnableEvents] = None
        self.ended_at: Optional[float] = None
        self.last_t = self.started_at

    # -- input -------------------------------------------------------------------------------------------
    def feed(self, t: float, kind: str, payload: Any) -> None:
        self.last_t = max(self.last_t, t)
        take = _FEEDERS.get(kind)
        if take is not None:  # unknown kinds are skipped (a newer recording read by an older celery-doctor)
            take(self, t, payload)

    def _take_event(self, t: float, payload: Any) -> None:
        event = clean(payload)  # again: a recording is a file anyone may have edited
        if event is None:
            self.ledger.malformed += 1
        else:
            self.ledger.apply(event, t)

    def _take_undecoded(self, t: float, payload: Any) -> None:
        self.ledger.note_undecoded(str(payload)[:80])

    def _take_malformed(self, t: float, payload: Any) -> None:
        self.ledger.malformed += _int(payload) or 1

    def _take_clients(self, t: float, payload: Any) -> None:
        """A whole CLIENT LIST (the first poll, or the first after a failure)."""
        if self.tracker is None or not isinstance(payload, list):
            return
        self.rows = {str(row.get("id")): row for row in payload if isinstance(row, dict)}
        self.tracker.observe(t, list(self.rows.values()))

    def _take_clients_diff(self, t: float, payload: Any) -> None:
        """The next polls: the rows new or changed since the previous one, and the ids gone."""
        if self.tracker is None or not isinstance(payload, dict):
            return
        for cid in payload.get("del") or ():
            self.rows.pop(str(cid), None)
        for row in payload.get("add") or ():
            if isinstance(row, dict) and len(self.rows) < 100_000:
                self.rows[str(row.get("id"))] = row
        self.tracker.observe(t, list(self.rows.values()))

    def _take_clients_error(self, t: float, payload: Any) -> None:
        if self.tracker is None:
            return
        self.tracker.failed(t, str(payload)[:300])
        self.rows = {}

    def _take_mailbox(self, t: float, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("hostname"), str):
            return
        exists = payload.get("exists")
        self.mailboxes.append(MailboxProbe(
            t=t, hostname=payload["hostname"], queue=str(payload.get("queue") or "")[:300],
            exists=exists if isinstance(exists, bool) else None, consumers=_int(payload.get("consumers")),
            error=_error(payload, "error")))

    def _take_queue(self, t: float, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            return
        name = payload["name"]
        if name in self.queues or len(self.queues) < 500:
            self.queues[name] = QueueProbe(name=name, depth=_int(payload.get("depth")),
                                           consumers=_int(payload.get("consumers")),
                                           how=str(payload.get("how") or "")[:100], error=_error(payload, "error"))

    def _take_note(self, t: float, payload: Any) -> None:
        self.note(str(payload))

    def _take_enable_events(self, t: float, payload: Any) -> None:
        """--enable-events: when it was sent and undone, or why not (each item says one of them)."""
        if not isinstance(payload, dict):
            return
        current = self.enable or EnableEvents()
        self.enable = EnableEvents(
            enabled_at=_float(payload.get("enabled_at")) or current.enabled_at,
            disabled_at=_float(payload.get("disabled_at")) or current.disabled_at,
            error=_error(payload, "error") or current.error,
            undo_error=_error(payload, "undo_error") or current.undo_error)

    def _take_end(self, t: float, payload: Any) -> None:
        self.ended_at = t

    def note(self, text: str) -> None:
        text = " ".join(text.split())[:500]
        if text and text not in self.notes and len(self.notes) < MAX_NOTES:
            self.notes.append(text)

    # -- questions -----------------------------------------------------------------------------------
    def liveness(self, now: float) -> dict[str, Liveness]:
        workers = views(self.ledger.workers.values())
        if self.tracker is not None:
            return redis_verdicts(workers, self.tracker, now)
        return rabbitmq_verdicts(workers, list(self.mailboxes), now)

    def probe_notes(self) -> list[str]:
        notes = []
        if self.tracker is not None and self.tracker.polls == 0:
            reason = self.tracker.last_failure() or "not read"
            notes.append(f"Redis CLIENT LIST could not be read ({reason}): a silent worker cannot be told busy from "
                         "dead")
        return notes

    def state(self, now: Optional[float] = None, replayed_from: Optional[str] = None) -> EventsState:
        now = now if now is not None else (self.ended_at if self.ended_at is not None else self.last_t)
        live_probe = ("Redis CLIENT LIST every few seconds: the connections of workers that stop heart-beating"
                      if self.transport == "redis" else
                      "RabbitMQ management API: the mailbox queue of each worker that stops heart-beating")
        notes = list(self.notes) + [n for n in self.probe_notes() if n not in self.notes]
        return self.ledger.state(
            transport=self.transport, source=self.source, started_at=self.started_at, ended_at=now,
            bound_s=self.bound, liveness=self.liveness(now), queues=tuple(self.queues[q] for q in sorted(self.queues)),
            notes=tuple(notes), enable_events=self.enable, replayed_from=replayed_from, live_probe=live_probe)

    def silent_unprobed(self, now: float, probed: Mapping[str, float]) -> list[str]:
        """Workers silent now whose mailbox has not been probed since their last heartbeat."""
        out = []
        for worker in self.ledger.silent_workers(now):
            if probed.get(worker.hostname, 0.0) < (worker.last_heartbeat or 0.0):
                out.append(worker.hostname)
        return out


# item kind (recording.py) -> what the session learns from it
_FEEDERS = {"event": Session._take_event, "undecoded": Session._take_undecoded, "malformed": Session._take_malformed,
            "clients": Session._take_clients, "clients_diff": Session._take_clients_diff,
            "clients_error": Session._take_clients_error, "mailbox": Session._take_mailbox,
            "queue": Session._take_queue, "note": Session._take_note, "enable_events": Session._take_enable_events,
            "end": Session._take_end}
