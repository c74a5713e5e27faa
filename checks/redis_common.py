"""Helpers shared by the live Redis checks (checks/redis_*.py): wording, sample scaling, and the two
ways a check says it could not run (INFO refused, messages only partly read)."""
from __future__ import annotations

import datetime as dt
import functools
from typing import Optional

from celery_doctor.model import Confidence, SkipCheck, Snapshot

from ._util import plural, preview

NEEDS = ("redis",)
REDIS_DOCS = "https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html"


def mb(value: Optional[int]) -> str:
    return "unknown" if value is None else f"{value / 1024 / 1024:,.1f} MB"


def server_subject(state) -> str:
    return f"server:{state.url}"


def exposed(state) -> str:
    return (f"{state.queued:,} message(s) queued in {plural(sum(1 for q in state.queues if q.depth), 'queue')} "
            f"and {state.unacked.entries:,} unacked on db {state.db}")


def when_text(epoch: Optional[float]) -> str:
    if epoch is None:
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def scaled(queue, count: int) -> tuple[int, str, Confidence]:
    """Messages at risk in a queue from a count in its sample: exact when every message was read."""
    if queue.complete or not queue.sampled:
        return count, f"{count:,} of {queue.depth:,} messages", Confidence.OBSERVED
    estimate = round(count * queue.depth / queue.sampled)
    return estimate, (f"{count:,} of {queue.sampled:,} sampled messages (about {estimate:,} of the {queue.depth:,} "
                      f"queued; --deep reads every one)"), Confidence.INFERRED


def queues_with_summary(state):
    return [q for q in state.queues if q.summary is not None and q.summary.analysed]


def reads_server(fn):
    """For checks over the server's INFO: when an ACL refused INFO, nothing is known, so the check skips."""

    @functools.wraps(fn)
    def run(snapshot: Snapshot):
        refused = snapshot.redis.server.info_refused
        if refused:
            raise SkipCheck(f"INFO was not allowed: {refused}")
        return list(fn(snapshot))

    return run


def reads_messages(fn):
    """For checks over queued messages: finding nothing where a queue's read was cut short (deadline, memory
    pressure, a lost connection) is not a pass but a skip, naming the queues."""

    @functools.wraps(fn)
    def run(snapshot: Snapshot):
        found = list(fn(snapshot))
        if not found:
            cut = [q.name for q in snapshot.redis.queues if q.cut]
            if cut:
                raise SkipCheck(f"messages of {preview(cut)} were only partly read (see Not checked)")
        return found

    return run
