"""Helpers shared by the live worker checks (checks/workers_*.py): queue depths from whichever broker
part was gathered, the workers that matter to the app, visibility timeouts, wording."""
from __future__ import annotations

from typing import Optional

from celery_doctor.facts.timeouts import redis_visibility_timeout
from celery_doctor.facts.timeouts import worker_visibility_timeout as reported_visibility_timeout
from celery_doctor.model import Snapshot
from celery_doctor.parts.broker import broker_queues

from ._util import plural, preview

NEEDS = ("config", "workers")
INSPECT = "celery -A proj inspect"


class QueueDepths(dict):
    """Queue views from the broker part; `known` is False when no broker part was gathered."""

    known = True


def queue_depths(snapshot: Snapshot) -> QueueDepths:
    found = broker_queues(snapshot)
    views = QueueDepths(found or {})
    views.known = found is not None
    return views


def waiting_text(views: QueueDepths, queue: str) -> tuple[Optional[int], str]:
    view = views.get(queue)
    if view is not None:
        return view.messages, f"{plural(view.messages, 'message')} waiting in {queue!r}"
    if views.known:
        return 0, f"no message waiting in {queue!r} now (the broker has no such queue yet, or it is empty)"
    return None, "messages waiting: unknown (the broker's queues could not be read)"


def silent_text(state) -> Optional[str]:
    silent = state.silent
    if not silent:
        return None
    return (f"{plural(len(silent), 'worker')} did not answer within {state.wait_s:g} s "
            f"({preview(w.name for w in silent)}): what {'it consumes' if len(silent) == 1 else 'they consume'} is unknown")


def app_queues(snapshot: Snapshot) -> set[str]:
    return set(snapshot.config.routed_queues())


def relevant_workers(snapshot: Snapshot):
    """Answering workers that consume at least one of the app's queues (others serve other apps)."""
    queues = app_queues(snapshot)
    return [w for w in snapshot.workers.answered if w.queue_names & queues]


def app_visibility_timeout(config) -> float:
    return redis_visibility_timeout(config)[0]


def worker_visibility_timeout(worker, config) -> tuple[float, str]:
    """The visibility timeout a worker uses (facts.timeouts), else the app's when it reported none, and how it is known."""
    reported = reported_visibility_timeout(worker)
    if reported is None:
        vt = app_visibility_timeout(config)
        return vt, f"visibility_timeout={vt:g} s (the app's; the worker did not report its own)"
    value, explicit = reported
    if explicit:
        return value, f"visibility_timeout={value:g} s on the worker"
    return value, f"visibility_timeout={value:g} s (kombu default on the worker)"


def discovery_text(state) -> str:
    if state.transport == "redis":
        return f"mailbox bindings in _kombu.binding.{state.namespace}.pidbox"
    return f"*.{state.namespace}.pidbox queues with a consumer (management API)"
