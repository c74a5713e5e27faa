"""Checks about the run itself: a broker the scan could not reach is the first thing on-call must know."""
from __future__ import annotations

from celery_doctor.model import COLLECTOR_CRASH, Category, Confidence, Impact, PartStatus, Runbook, Snapshot, check

from . import engine_suppressions

BROKER_PARTS = {"redis": "redis", "rabbitmq": "rabbitmq"}


@check(
    id="CD001",
    slug="broker-unreachable",
    title="The broker could not be reached",
    category=Category.BROKER,
    needs=(),
    impact=Impact.HIGH,
    runbook=Runbook(
        symptom="Tasks are not picked up, `.delay()` raises OperationalError or hangs, workers log "
                "`consumer: Cannot connect to ...` and retry.",
        why="Producers cannot publish while the broker is down: `apply_async` retries under "
            "`task_publish_retry_policy` (about 0.7 s by default) and then raises; a caller that swallows that "
            "error loses the task. Workers that exhaust `broker_connection_max_retries` exit.",
        confirm="`redis-cli -u $BROKER_URL ping` or `rabbitmq-diagnostics -q ping`; "
                "`celery -A proj inspect ping`; check the network path and credentials from the worker hosts.",
        fix="Bring the broker back or fix the URL/credentials; then re-run `celery-doctor scan` for the live checks "
            "that could not run.",
        risk="None from the diagnosis itself. Restarting a broker without persistence drops every queued message.",
    ),
)
def broker_unreachable(snapshot: Snapshot):
    if snapshot.mode != "scan":
        return
    transport = snapshot.target.transport
    name = BROKER_PARTS.get(transport or "")
    if not name:
        return
    part = snapshot.part(name)
    if part.status is PartStatus.UNAVAILABLE and not part.reason.startswith(COLLECTOR_CRASH):
        yield broker_unreachable.finding(
            subject=f"broker:{snapshot.target.broker}",
            evidence=[f"{name}: {part.reason}",
                      "live checks of queues, unacked messages and workers could not run"],
            confidence=Confidence.OBSERVED,
        )


CHECKS = [broker_unreachable, *engine_suppressions.CHECKS]
