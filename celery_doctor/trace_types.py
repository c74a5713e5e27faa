"""What `celery-doctor trace` searchers return: a place where one task was found, and the searcher's signature.

A module of its own (no imports of collectors or of trace.py) so that the broker searchers, which the data-source
registry (celery_doctor/sources.py) names, and trace.py, which runs them, can both import it without a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .collectors import CollectContext
    from .model import Snapshot

__all__ = ["Searcher", "TraceLocation"]


@dataclass(frozen=True)
class TraceLocation:
    where: str  # "redis queue", "redis unacked", "rabbitmq queue", "worker", "result backend"
    name: str  # queue:NAME, worker:NAME, backend
    state: str  # queued, unacked, running, reserved, scheduled, revoked, SUCCESS, FAILURE, ...
    next: str  # what happens to it next
    details: tuple[str, ...] = ()
    task: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "name": self.name, "state": self.state, "next": self.next,
                "details": list(self.details), "task": self.task}


# A searcher looks in one place and returns (locations, checked, not_checked).
Searcher = Callable[["CollectContext", str, "Snapshot"],
                    "tuple[list[TraceLocation], list[str], list[tuple[str, str]]]"]
