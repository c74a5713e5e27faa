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
        if kind == "event":
            event = clean(payload)  # again: a recording is a file anyone may have edited
            if event is None:
                self.ledger.malformed += 1
            else:
                self.ledger.apply(event, t)
        elif kind == "undecoded":
            self.ledger.note_undecoded(str(payload)[:80])
        elif kind == "malformed":
            self.ledger.malformed += _int(payload) or 1
        elif kind == "clients" and self.tracker is not None:
            if isinstance(payload, list):
                self.rows = {str(row.get("id")): row for row in payload if isinstance(row, dict)}
                self.tracker.observe(t, list(self.rows.values()))
        elif kind == "clients_diff" and self.tracker is not None and isinstance(payload, dict):
            for cid in payload.get("del") or ():
                self.rows.pop(str(cid), None)
            for row in payload.get("add") or ():
                if isinstance(row, dict) and len(self.rows) < 100_000:
                    self.rows[str(row.get("id"))] = row
            self.tracker.observe(t, list(self.rows.values()))
        elif kind == "clients_error" and self.tracker is not None:
            self.tracker.failed(t, str(payload)[:300])
            self.rows = {}
        elif kind == "mailbox" and isinstance(payload, dict) and isinstance(payload.get("hostname"), str):
            exists = payload.get("exists")
            self.mailboxes.append(MailboxProbe(
                t=t, hostname=payload["hostname"], queue=str(payload.get("queue") or "")[:300],
                exists=exists if isinstance(exists, bool) else None, consumers=_int(payload.get("consumers")),
                error=str(payload["error"])[:300] if payload.get("error") else None))
        elif kind == "queue" and isinstance(payload, dict) and isinstance(payload.get("name"), str):
            name = payload["name"]
            if name in self.queues or len(self.queues) < 500:
                self.queues[name] = QueueProbe(name=name, depth=_int(payload.get("depth")),
                                               consumers=_int(payload.get("consumers")),
                                               how=str(payload.get("how") or "")[:100],
                                               error=str(payload["error"])[:300] if payload.get("error") else None)
        elif kind == "note":
            self.note(str(payload))
        elif kind == "enable_events" and isinstance(payload, dict):
            current = self.enable or EnableEvents()
            self.enable = EnableEvents(
                enabled_at=_float(payload.get("enabled_at")) or current.enabled_at,
                disabled_at=_float(payload.get("disabled_at")) or current.disabled_at,
                error=str(payload["error"])[:300] if payload.get("error") else current.error,
                undo_error=str(payload["undo_error"])[:300] if payload.get("undo_error") else current.undo_error)
        elif kind == "end":
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
