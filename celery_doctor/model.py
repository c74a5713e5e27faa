"""The data model every other module speaks: checks, findings, snapshots and results."""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

from .options import SnapshotOptions

if TYPE_CHECKING:  # the live parts' types, for the Snapshot accessors (celery_doctor.parts imports this module)
    from .parts.rabbitmq import RabbitState
    from .parts.redis import RedisState
    from .parts.workers import WorkersState


class Category(str, enum.Enum):
    BROKER = "broker"
    WORKER = "worker"
    ROUTING = "routing"
    TASK_CODE = "task_code"
    SECURITY = "security"  # not a cause of task loss: reported apart from the ranked causes

    @property
    def is_loss(self) -> bool:
        """Whether findings of this category are ranked among the likely causes of lost tasks."""
        return self in CATEGORY_IMPACT


class Impact(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def order(self) -> int:
        return {"high": 3, "medium": 2, "low": 1}[self.value]


class Confidence(str, enum.Enum):
    OBSERVED = "observed"  # seen live on the broker or a worker
    CONFIGURED = "configured"  # follows from the configuration
    INFERRED = "inferred"  # heuristic


# The impact table (docs/ranking.md): how much a category weighs as a cause of task loss. SECURITY is not in it:
# a security finding is no cause of loss, it is reported in its own section, and its check declares its impact.
CATEGORY_IMPACT: Mapping[Category, Impact] = {
    Category.BROKER: Impact.HIGH,
    Category.WORKER: Impact.HIGH,
    Category.ROUTING: Impact.HIGH,
    Category.TASK_CODE: Impact.MEDIUM,
}

# Parts of a snapshot a check can need.
NEEDS = ("config", "source", "redis", "rabbitmq", "workers", "events", "logs")

CHECK_ID = re.compile(r"^[A-Z]{2,}[0-9]{3,}$")
BUILTIN_PREFIX = "CD"


@dataclass(frozen=True)
class Runbook:
    symptom: str
    why: str
    confirm: str
    fix: str
    risk: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Location:
    path: str
    line: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True)
class Finding:
    check: str
    title: str
    category: Category
    impact: Impact
    confidence: Confidence
    subject: str
    evidence: tuple[str, ...]
    fix: str
    messages_at_risk: Optional[int] = None
    location: Optional[Location] = None
    slug: str = ""
    # What makes two findings of a check one cause (ranking.group): by default the title (the check's
    # conclusion); a check whose title names the place declares a key of its own with `cause=`.
    cause: str = ""
    # A ranked row that stands for the same cause in several places: every place's own finding (each with no
    # occurrences of its own). Empty for a finding seen in one place. See ranking.group.
    occurrences: tuple["Finding", ...] = ()

    def sort_key(self) -> tuple:
        return (self.check, self.subject, str(self.location or ""), self.evidence)

    @property
    def places(self) -> tuple["Finding", ...]:
        """The findings this row stands for: its occurrences, or itself."""
        return self.occurrences or (self,)

    @property
    def subjects(self) -> tuple[str, ...]:
        """Every subject of the cause, in order, each once."""
        return tuple(dict.fromkeys(f.subject for f in self.places))

    @property
    def locations(self) -> tuple[Location, ...]:
        """Every location of the cause, in order, each once (findings without one add none)."""
        return tuple(dict.fromkeys(f.location for f in self.places if f.location is not None))


@dataclass(frozen=True)
class Check:
    """A check: metadata, its runbook, and a pure function from a snapshot to findings."""

    id: str
    slug: str
    title: str
    category: Category
    impact: Impact
    needs: frozenset[str]
    runbook: Runbook
    run: Callable[["Snapshot"], Iterable[Finding]]
    since: str = "0.1.0"

    def __post_init__(self) -> None:
        if not CHECK_ID.match(self.id):
            raise ValueError(f"check id {self.id!r} is not a code like CD123")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"check {self.id} needs unknown parts: {sorted(unknown)}")

    def finding(
        self,
        subject: str,
        evidence: Iterable[str] | str,
        fix: Optional[str] = None,
        *,
        confidence: Confidence = Confidence.CONFIGURED,
        messages_at_risk: Optional[int] = None,
        location: Optional[Location] = None,
        impact: Optional[Impact] = None,
        title: Optional[str] = None,
        cause: str = "",
    ) -> Finding:
        if isinstance(evidence, str):
            evidence = (evidence,)
        return Finding(
            check=self.id,
            slug=self.slug,
            title=title or self.title,
            category=self.category,
            impact=impact or self.impact,
            confidence=confidence,
            subject=subject,
            evidence=tuple(evidence),
            fix=fix or self.runbook.fix,
            messages_at_risk=messages_at_risk,
            location=location,
            cause=cause,
        )


def check(
    id: str,
    slug: str,
    title: str,
    category: Category,
    needs: Iterable[str],
    runbook: Runbook,
    impact: Optional[Impact] = None,
) -> Callable[[Callable[["Snapshot"], Iterable[Finding]]], Check]:
    """Decorator that turns a pure function into a Check (it does not register it anywhere)."""

    if impact is None and category not in CATEGORY_IMPACT:
        raise ValueError(f"check {id}: a {category.value} check declares its impact (it is not in the impact table)")

    def wrap(fn: Callable[["Snapshot"], Iterable[Finding]]) -> Check:
        return Check(
            id=id,
            slug=slug,
            title=title,
            category=category,
            impact=impact or CATEGORY_IMPACT[category],  # checked above
            needs=frozenset(needs),
            runbook=runbook,
            run=fn,
        )

    return wrap


class SkipCheck(Exception):
    """Raised by a check that finds, at run time, that the data it needs is not there; the message says why."""


class PartStatus(str, enum.Enum):
    GATHERED = "gathered"
    UNAVAILABLE = "unavailable"
    NOT_APPLICABLE = "not_applicable"  # e.g. the redis part when the broker is RabbitMQ
    NOT_REQUESTED = "not_requested"  # e.g. live parts during `lint`


COLLECTOR_CRASH = "collector failed:"  # an unavailable part's reason starts so when its collector raised (a bug)


@dataclass(frozen=True)
class Part:
    status: PartStatus
    data: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is PartStatus.GATHERED

    @classmethod
    def gathered(cls, data: Any) -> "Part":
        return cls(PartStatus.GATHERED, data)

    @classmethod
    def unavailable(cls, reason: str) -> "Part":
        return cls(PartStatus.UNAVAILABLE, None, reason)

    @classmethod
    def not_applicable(cls, reason: str) -> "Part":
        return cls(PartStatus.NOT_APPLICABLE, None, reason)

    @classmethod
    def not_requested(cls, reason: str) -> "Part":
        return cls(PartStatus.NOT_REQUESTED, None, reason)


@dataclass(frozen=True)
class Target:
    app: Optional[str]
    broker: Optional[str]  # masked
    transport: Optional[str]  # "redis", "rabbitmq", or another kombu transport name


@dataclass(frozen=True)
class Snapshot:
    """Everything the collectors gathered, once, read-only. Checks read only this."""

    target: Target
    parts: Mapping[str, Part] = field(default_factory=dict)
    mode: str = "lint"
    now: float = 0.0  # epoch seconds at collection time, so checks stay pure
    options: SnapshotOptions = field(default_factory=SnapshotOptions)  # the run's options checks may read

    def part(self, name: str) -> Part:
        return self.parts.get(name) or Part.not_requested(f"{name} was not collected")

    def get(self, name: str) -> Any:
        part = self.part(name)
        return part.data if part.ok else None

    @property
    def config(self):
        return self.get("config")

    @property
    def source(self):
        return self.get("source")

    @property
    def redis(self) -> Optional[RedisState]:
        """The gathered redis part, or None (not gathered, not applicable, not requested)."""
        return self.get("redis")

    @property
    def rabbitmq(self) -> Optional[RabbitState]:
        """The gathered rabbitmq part, or None."""
        return self.get("rabbitmq")

    @property
    def workers(self) -> Optional[WorkersState]:
        """The gathered workers part, or None."""
        return self.get("workers")

    def with_parts(self, **parts: Part) -> "Snapshot":
        merged = dict(self.parts)
        merged.update(parts)
        return replace(self, parts=merged)


class CheckStatus(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"  # produced findings
    SKIPPED = "skipped"
    ERROR = "error"  # the check crashed or could not be loaded
    IGNORED = "ignored"  # deselected by --select/--ignore


@dataclass(frozen=True)
class CheckResult:
    id: str
    slug: str
    title: str
    category: Optional[Category]
    status: CheckStatus
    reason: str = ""
    findings: int = 0


@dataclass(frozen=True)
class RankedFinding:
    rank: int
    score: float
    why: str
    finding: Finding


@dataclass(frozen=True)
class TimelineEvent:
    """One line of an incident's timeline: what happened when, and where (read from logs)."""

    at: Optional[float]  # epoch seconds (UTC); None when the log line carried no usable time
    where: str  # the worker, host or log it happened on
    what: str  # one sentence, no line breaks
    kind: str = ""  # a stable label (e.g. "pool-process-killed"), for filtering and styling
    count: int = 1  # events of this kind merged into this line
    until: Optional[float] = None  # the last merged event's time
    important: bool = False  # a loss or a cause of loss (kept first when the timeline is shortened)


@dataclass(frozen=True)
class Report:
    tool_version: str
    target: Target
    mode: str
    started_at: str
    duration_s: float
    findings: tuple[RankedFinding, ...]  # the likely causes of lost tasks, ranked (no security finding)
    checks: tuple[CheckResult, ...]
    not_checked: tuple[tuple[str, str], ...]  # (part, reason) for live parts that could not be gathered
    suppressed: int = 0  # findings silenced inline (# celery-doctor: ignore[...])
    anchor: Optional[Location] = None  # where findings without a file point to (the app's module)
    timeline: tuple[TimelineEvent, ...] = ()  # from logs (scan --logs, logs), in time order
    timeline_omitted: int = 0  # events left out of `timeline` to keep it short
    inputs: str = ""  # what was read besides the target, in words (e.g. "logs: 2 files, 120,345 lines")
    security: tuple[RankedFinding, ...] = ()  # security findings: not causes of loss, ranked among themselves
    baselined: int = 0  # places of findings left out because --baseline holds them (baseline.py)

    def summary(self) -> dict[str, int]:
        counts = {impact.value: 0 for impact in Impact}
        for ranked in self.findings:
            counts[ranked.finding.impact.value] += 1
        return counts
