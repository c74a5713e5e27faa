"""OpenMetrics (Prometheus) exposition of a report, for `--format openmetrics` and `celery-doctor serve`.

What a run found: findings by check, impact, category and subject; the checks' statuses; the parts and what of
them was not checked; the run's duration. With the run's snapshot, what the broker held: per queue its depth,
unacked messages and consumers, the oldest unacked message, and the workers seen, answering and silent.

The exposition is prometheus_client's (its escaping, its `# EOF`); every label value is first masked (a broker
URL never carries its password) and made safe text (control characters escaped, bounded length), as in every
other format. Gauges only: each scan is a fresh reading, nothing here counts across runs.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator, Optional

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from ..masking import scrub
from ..parts.workers import CONNECTED, GONE
from ..safe_text import printable

PREFIX = "celery_doctor"
MAX_LABEL = 200  # a label value is bounded: a hostile queue name must not make one series kilobytes long


def label(value: object) -> str:
    """A label value: masked, terminal-safe text, at most MAX_LABEL characters."""
    text = printable(scrub("" if value is None else str(value)))
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def _gauge(name: str, doc: str, labels: tuple[str, ...], rows: Iterable[tuple[tuple[object, ...], float]]) -> Metric:
    """One gauge family; rows with the same (masked) labels are summed, so no series is exposed twice."""
    values: Counter = Counter()
    for key, value in rows:
        values[tuple(label(v) for v in key)] += value
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def report_metrics(report: Any) -> list[Metric]:
    """What the run found: target, findings, checks, parts not checked, duration."""
    findings = (*report.findings, *getattr(report, "security", ()))
    target = report.target
    out = [
        InfoMetricFamily(f"{PREFIX}_run", "The run: celery-doctor's version, the app, the broker (masked), its "
                                          "transport, the mode.",
                         value={"version": label(report.tool_version), "app": label(target.app or ""),
                                "broker": label(target.broker or ""), "transport": label(target.transport or ""),
                                "mode": label(report.mode)}),
        _gauge("findings", "Findings of the run, by check, impact, category and subject (the count of findings with "
                           "these labels).", ("check", "slug", "impact", "category", "subject"),
               [((f.finding.check, f.finding.slug, f.finding.impact.value, f.finding.category.value,
                  f.finding.subject), 1) for f in findings]),
        _gauge("findings_messages_at_risk", "Messages at risk the findings counted, by check and subject (only "
                                            "findings that could count them).", ("check", "subject"),
               [((f.finding.check, f.finding.subject), f.finding.messages_at_risk) for f in findings
                if f.finding.messages_at_risk is not None]),
        _gauge("checks", "Checks run, by status (passed, failed, skipped, error).", ("status",),
               [((str(getattr(c.status, "value", c.status)),), 1) for c in report.checks]),
        _gauge("not_checked", "What the run could not check (a part, or a piece of one; the reason is in the "
                              "report).", ("part",), [((part,), 1) for part, _ in report.not_checked]),
        _gauge("scan_duration_seconds", "How long the run took.", (), [((), float(report.duration_s))]),
    ]
    return out


def snapshot_metrics(snapshot: Any) -> list[Metric]:
    """What the broker held: the parts' statuses, queues, unacked messages, workers."""
    out = [_gauge("part", "Each part of the snapshot and its status (gathered, unavailable, not_applicable, "
                          "not_requested).", ("part", "status"),
                  [((name, part.status.value), 1) for name, part in snapshot.parts.items()])]
    out += _redis(snapshot.redis) if snapshot.redis is not None else []
    out += _rabbitmq(snapshot.rabbitmq) if snapshot.rabbitmq is not None else []
    if snapshot.workers is not None:
        state = snapshot.workers
        counts = Counter(dict.fromkeys(WORKER_STATES, 0))
        counts.update(worker_state(state, worker) for worker in state.workers)
        out.append(_gauge("workers", "Workers known to the broker or answering, by state: answered (replied to the "
                                     "control commands); silent (no reply, still connected: busy or blocked); dead "
                                     "(no reply, its mailbox has no listener left: killed or cut off); unknown (no "
                                     "reply, the broker cannot tell which).", ("state",),
                          [((name,), count) for name, count in counts.items()]))
    return out


WORKER_STATES = ("answered", "silent", "dead", "unknown")


def worker_state(state: Any, worker: Any) -> str:
    """The CD410 (silent-worker) reading of one worker (checks/workers_presence.py): on RabbitMQ a silent worker's
    exclusive mailbox queue still has a consumer, so its connection is open; on Redis the receivers of the scan's
    own ping tell a connected mailbox from one nobody listens to any more (`WorkerInfo.mailbox`)."""
    if worker.answered:
        return "answered"
    if state.transport != "redis":
        return "silent"
    return {CONNECTED: "silent", GONE: "dead"}.get(getattr(worker, "mailbox", None), "unknown")


def _queue_families(depth: list, unacked: list, consumers: list) -> list[Metric]:
    out = [_gauge("queue_depth", "Messages waiting in the queue (ready, not delivered).", ("queue",), depth),
           _gauge("queue_unacked", "Messages of the queue delivered to a worker and not acknowledged yet.",
                  ("queue",), unacked)]
    if consumers:
        out.append(_gauge("queue_consumers", "Consumers of the queue.", ("queue",), consumers))
    return out


def _redis(state: Any) -> list[Metric]:
    unacked = state.unacked
    out = _queue_families([((q.name,), q.depth) for q in state.queues],
                          [((queue,), count) for queue, count in unacked.by_queue.items()], [])
    out.append(_gauge("unacked", "Unacked messages on the broker (Redis: entries of the unacked hash).", (),
                      [((), unacked.entries)]))
    if unacked.oldest_age_s is not None:
        out.append(_gauge("unacked_oldest_age_seconds", "Age of the oldest unacked message (Redis: the oldest "
                                                        "entry of unacked_index).", (), [((), unacked.oldest_age_s)]))
    return out


def _rabbitmq(state: Any) -> list[Metric]:
    queues = list(state.queues.values())
    ready = [((q.name,), q.messages_ready if q.messages_ready is not None else q.messages)
             for q in queues if (q.messages_ready if q.messages_ready is not None else q.messages) is not None]
    unacked = [((q.name,), q.messages_unacknowledged) for q in queues if q.messages_unacknowledged is not None]
    consumers = [((q.name,), q.consumers) for q in queues if q.consumers is not None]
    out = _queue_families(ready, unacked, consumers)
    if unacked:
        out.append(_gauge("unacked", "Unacked messages on the broker (RabbitMQ: the queues' read).", (),
                          [((), sum(count for _, count in unacked))]))
    return out


class Families(Collector):
    """A fixed list of metric families, for a registry of their own."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def families(report: Any, snapshot: Optional[Any] = None) -> list[Metric]:
    return report_metrics(report) + (snapshot_metrics(snapshot) if snapshot is not None else [])


def format_openmetrics(report: Any, snapshot: Optional[Any] = None) -> str:
    """The report (and the snapshot's broker and workers, when given) in the OpenMetrics text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(families(report, snapshot)))
    return generate_latest(registry).decode("utf-8")
