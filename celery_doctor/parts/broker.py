"""What any broker part (Redis or RabbitMQ) offers checks that do not care which broker it is.

The redis and rabbitmq snapshot parts each provide `queue_views() -> dict[str, QueueView]`. Pure data: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from ..model import Snapshot

__all__ = ["QueueView", "broker_queues", "example"]


@dataclass(frozen=True)
class QueueView:
    name: str
    messages: int  # ready (waiting) messages, all priority levels together
    unacked: Optional[int] = None  # delivered, not yet acknowledged; None when unknown
    consumers: Optional[int] = None  # None when the broker cannot tell (Redis without CLIENT LIST)
    task_counts: Mapping[str, int] = field(default_factory=dict)  # task name -> messages, from the sample
    sampled: int = 0  # messages whose envelope was read


def broker_queues(snapshot: "Snapshot") -> Optional[dict[str, QueueView]]:
    """Queues as the live broker part saw them, or None when no broker part was gathered."""
    for name in ("redis", "rabbitmq"):
        data = snapshot.get(name)
        if data is not None and hasattr(data, "queue_views"):
            return data.queue_views()
    return None


def example(**overrides: Any) -> QueueView:
    """A QueueView for tests and docs: the default queue `celery` with 12 waiting messages of one task, all read,
    none unacked, one consumer. Keywords replace QueueView fields as they are."""
    values: dict[str, Any] = dict(name="celery", messages=12, unacked=0, consumers=1,
                                  task_counts={"proj.tasks.work": 12}, sampled=12)
    values.update(overrides)
    return QueueView(**values)
