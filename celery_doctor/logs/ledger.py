"""Bounded bookkeeping for the log engine: open tasks, per-signature summaries, the timeline.

Everything here has a fixed ceiling, whatever the size of the input: a summary keeps SAMPLE task ids and
NAMES task names (the totals stay exact), a stream's open-task map keeps the OPEN_TASKS most recent, the
timeline keeps TIMELINE_IMPORTANT + TIMELINE_OTHER merged lines. What a ceiling cut is counted and said.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import Any, Iterable, Optional

SAMPLE = 20  # task (name, id) pairs kept per summary
NAMES = 30  # distinct task names counted per summary (the rest are counted as "other")
OPEN_TASKS = 20000  # received-and-not-finished tasks remembered per stream
SNAPSHOT = 500  # open task ids copied when a process dies, a shutdown starts, a connection drops
EVENTS_PER_INCARNATION = 64  # kills, connection losses remembered per worker run (the rest only counted)
TIMELINE_IMPORTANT = 3000
TIMELINE_OTHER = 2000
MERGE_GAP = 60.0  # events of one kind at one place closer than this become one timeline line
MERGE_GAP_MINOR = 900.0  # the same for events that are not losses nor their causes (soft limits, discards)
MAX_VALUE = 200  # characters kept of any value read from a log line (a task name, a worker name)
OTHER_NAMES = "(other task names)"


def clip(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "…"


class NameCounter:
    """Counts of task names, at most NAMES distinct ones (the others summed under OTHER_NAMES)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        counts = self.counts
        if name in counts or len(counts) < NAMES:
            counts[name] = counts.get(name, 0) + n
        else:
            counts[OTHER_NAMES] = counts.get(OTHER_NAMES, 0) + n

    def merge(self, other: "NameCounter") -> None:
        for name, n in other.counts.items():
            self.add(name, n)

    def most(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self.counts.items(), key=lambda kv: (kv[0] == OTHER_NAMES, -kv[1], kv[0])))


class Summary:
    """One signature at one place, while reading: exact counts, first/last time, bounded samples."""

    __slots__ = ("count", "details", "first", "kind", "last", "names", "sources", "stream", "task_ids", "tasks",
                 "tasks_total")

    def __init__(self, kind: str, stream: Any) -> None:
        self.kind = kind
        self.stream = stream
        self.count = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.tasks: list[tuple[str, str]] = []
        self.task_ids: set[str] = set()
        self.tasks_total = 0
        self.names = NameCounter()
        self.details: dict[str, Any] = {}
        self.sources: set[str] = set()

    def seen(self, at: Optional[float], n: int = 1) -> None:
        self.count += n
        if at is not None:
            if self.first is None or at < self.first:
                self.first = at
            if self.last is None or at > self.last:
                self.last = at

    def task(self, name: Optional[str], task_id: Optional[str]) -> None:
        """A task involved (each id once; a name without an id still counts)."""
        if task_id is not None:
            if task_id in self.task_ids:
                return
            if len(self.task_ids) < SAMPLE * 50:
                self.task_ids.add(task_id)
        self.tasks_total += 1
        label = clip(name) if name else "(unknown task)"
        self.names.add(label)
        if task_id is not None and len(self.tasks) < SAMPLE:
            self.tasks.append((label, clip(task_id)))

    def bump(self, key: str, n: int = 1) -> None:
        self.details[key] = self.details.get(key, 0) + n

    def tally(self, key: str, label: str, n: int = 1) -> None:
        """details[key] is a bounded {label: count}."""
        table = self.details.setdefault(key, {})
        if label in table or len(table) < NAMES:
            table[label] = table.get(label, 0) + n
        else:
            table["(other)"] = table.get("(other)", 0) + n

    def keep(self, key: str, value: Any, limit: int = SAMPLE) -> None:
        """details[key] is a bounded list of distinct values, in order seen."""
        values = self.details.setdefault(key, [])
        if value not in values and len(values) < limit:
            values.append(value)

    def most(self, key: str, value: float) -> None:
        current = self.details.get(key)
        if current is None or value > current:
            self.details[key] = value


class OpenTasks(OrderedDict):
    """Tasks a worker received and has not finished: id -> (name, time). The oldest are forgotten beyond
    OPEN_TASKS (counted in `forgotten`)."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten = 0

    def opened(self, task_id: str, name: str, at: Any) -> bool:
        """Record a receipt; True when the id was already open (received again: a redelivery)."""
        again = task_id in self
        self[task_id] = (name, at)
        if not again and len(self) > OPEN_TASKS:
            self.popitem(last=False)
            self.forgotten += 1
        return again

    def snapshot(self) -> tuple[str, ...]:
        """The most recent SNAPSHOT open ids (O(SNAPSHOT), whatever the number open)."""
        if len(self) <= SNAPSHOT:
            return tuple(self)
        return tuple(islice(reversed(self), SNAPSHOT))[::-1]


class TimelineLine:
    __slots__ = ("at", "count", "details", "important", "kind", "names", "until", "where")

    def __init__(self, at: Optional[float], where: Any, kind: str, important: bool) -> None:
        self.at = at
        self.until = at
        self.where = where
        self.kind = kind
        self.count = 0
        self.names = NameCounter()
        self.details: dict[str, Any] = {}
        self.important = important


class Timeline:
    """Events as merged lines: one kind at one place within MERGE_GAP of the previous one is the same line."""

    def __init__(self) -> None:
        self.lines: list[TimelineLine] = []
        self.open: dict[tuple, TimelineLine] = {}
        self.kept = {True: 0, False: 0}
        self.omitted = 0

    def add(self, at: Optional[float], where: Any, kind: str, important: bool = False,
            names: Iterable[str] = (), merge: bool = True, **details: Any) -> Optional[TimelineLine]:
        key = (where, kind)
        line = self.open.get(key) if merge else None
        gap = MERGE_GAP if important else MERGE_GAP_MINOR
        if line is not None and at is not None and line.until is not None and 0 <= at - line.until <= gap:
            line.until = at
        elif line is not None and at is None and line.at is None:
            pass
        else:
            limit = TIMELINE_IMPORTANT if important else TIMELINE_OTHER
            if self.kept[important] >= limit:
                self.omitted += 1
                return None
            self.kept[important] += 1
            line = TimelineLine(at, where, kind, important)
            self.lines.append(line)
            self.open[key] = line
        line.count += 1
        for name in names:
            line.names.add(name)
        for key_, value in details.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key_ in line.details \
                    and key_.startswith("n_"):
                line.details[key_] += value
            elif key_ not in line.details:
                line.details[key_] = value
        return line
