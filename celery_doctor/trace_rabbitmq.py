"""Finding one task id on RabbitMQ, from the scan's rabbitmq part (no connection of its own).

RabbitMQ shows message contents only to a reader that takes them off the queue, so a task is found only in the
messages `--peek` read (and requeued); unacknowledged deliveries are with a worker and are found by the workers
search.
"""
from __future__ import annotations

from typing import Any, Optional

from .parts.rabbitmq import PeekEntry, RabbitQueue, RabbitState
from .trace_types import TraceLocation

__all__ = ["trace_search"]


def trace_search(ctx: Any, task_id: str, snapshot: Any):
    """Where one task id sits in RabbitMQ, from the snapshot's rabbitmq part: (locations, checked, not_checked)."""
    part = snapshot.part("rabbitmq")
    if not part.ok:
        return [], [], [("rabbitmq", part.reason or part.status.value)]
    state: RabbitState = part.data
    if not state.peeked:
        where = ", ".join(repr(n) for n in state.app_queues[:6]) or "the vhost's queues"
        return [], [], [("rabbitmq queues", f"message headers in {where} are only read with --peek (basic.get + "
                                            "requeue: marks them redelivered and can reorder them)")]
    found = []
    checked: list[str] = []
    not_checked: list[tuple[str, str]] = []
    for name, sample in sorted(state.peek.items()):
        queue = state.queues.get(name)
        if sample.error:
            not_checked.append((f"rabbitmq queue {name}", sample.error))
            continue
        ready = queue.messages_ready if queue else None
        checked.append(f"rabbitmq queue {name} ({sample.read} of {_count_text(ready)} ready messages read)")
        if ready is not None and sample.read < ready:
            not_checked.append((f"rabbitmq queue {name}", f"only the first {sample.read} of {ready} messages were read "
                                                          "(raise --max-messages with --deep to read more)"))
        found += [_location(name, queue, entry) for entry in sample.entries if entry.id == task_id]
    if not state.api_reachable:
        not_checked.append(("rabbitmq management API", state.api_error or "not reachable"))
    checked.append("rabbitmq unacknowledged deliveries cannot be read from the broker: see the workers search")
    return found, checked, not_checked


def _location(name: str, queue: Optional[RabbitQueue], entry: PeekEntry) -> TraceLocation:
    """Where a peeked message is and what happens to it next."""
    details = [f"position {entry.position + 1} from the head of the queue (when it was read)"]
    if entry.eta:
        details.append(f"eta {entry.eta}: a worker will hold it unacknowledged until then")
    if entry.expires:
        details.append(f"expires {entry.expires}")
    if entry.retries:
        details.append(f"retries {entry.retries}")
    if entry.redelivered:
        details.append("was already redelivered before this read (a worker had it and gave it back)")
    if entry.transient:
        details.append("transient (delivery_mode 1): lost if the broker restarts")
    consumers = queue.consumers if queue else None
    if consumers == 0:
        nxt = "it waits: nothing consumes this queue (start a worker with -Q " + name + ")"
    elif consumers:
        nxt = f"one of the {consumers} consumer(s) will receive it after the {entry.position} message(s) ahead of it"
    else:
        nxt = "a consumer of this queue will receive it"
    return TraceLocation("rabbitmq queue", f"queue:{name}", "queued", nxt, tuple(details), entry.task)


def _count_text(value: Optional[int]) -> str:
    return "?" if value is None else str(value)
