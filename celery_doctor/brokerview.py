"""What any broker part (Redis or RabbitMQ) offers checks that do not care which broker it is.

The redis and rabbitmq snapshot parts each provide `queue_views() -> dict[str, QueueView]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .model import Snapshot


@dataclass(frozen=True)
class QueueView:
    name: str
    messages: int  # ready (waiting) messages, all priority levels together
    unacked: Optional[int] = None  # delivered, not yet acknowledged; None when unknown
    consumers: Optional[int] = None  # None when the broker cannot tell (Redis without CLIENT LIST)
    task_counts: Mapping[str, int] = field(default_factory=dict)  # task name -> messages, from the sample
    sampled: int = 0  # messages whose envelope was read


def broker_queues(snapshot: Snapshot) -> Optional[dict[str, QueueView]]:
    """Queues as the live broker part saw them, or None when no broker part was gathered."""
    for name in ("redis", "rabbitmq"):
        data = snapshot.get(name)
        if data is not None and hasattr(data, "queue_views"):
            return data.queue_views()
    return None
