"""What the messages queued on a broker say, summarised in bounded space: the part of a queue's state that comes
from reading its messages (celery_doctor/message_stats.py builds it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

OTHER_TASKS = "<other task names>"  # messages of task names beyond the ones remembered are counted under this


@dataclass(frozen=True)
class DuplicateGroup:
    task: str
    argsrepr: Optional[str]
    kwargsrepr: Optional[str]
    count: int  # messages of this call in what was analysed (a lower bound when `approximate`)


@dataclass(frozen=True)
class MessageSummary:
    """What the analysed messages of one queue say, in bounded space."""

    analysed: int = 0
    fast_path: int = 0  # of those, read through the canonical-layout fast path (structure checked, not fully parsed)
    malformed: int = 0
    malformed_reasons: tuple[tuple[str, int], ...] = ()
    unsafe: tuple[tuple[str, int], ...] = ()  # serializer -> messages (pickle, yaml)
    content_types: tuple[tuple[str, int], ...] = ()  # only the non-JSON ones
    task_counts: Mapping[str, int] = field(default_factory=dict)
    eta_count: int = 0
    eta_beyond_vt: int = 0  # ETA further than the visibility timeout from the scan time
    eta_max: Optional[float] = None
    eta_examples: tuple[tuple[str, str], ...] = ()  # (task, eta) of messages beyond the visibility timeout
    expires_count: int = 0
    expired: int = 0  # `expires` already in the past at scan time
    expired_examples: tuple[tuple[str, str], ...] = ()
    protocol1: int = 0
    duplicate_copies: int = 0  # messages beyond the first of each (task, args, kwargs) call
    duplicate_calls: int = 0  # distinct calls present more than once
    duplicates: tuple[DuplicateGroup, ...] = ()  # the largest groups
    duplicates_approximate: bool = False
    vt: Optional[float] = None  # the visibility timeout `eta_beyond_vt` was measured against
    now: Optional[float] = None

    def unknown_tasks(self, registered) -> dict[str, int]:
        return {name: count for name, count in self.task_counts.items()
                if name != OTHER_TASKS and name not in registered}
