"""JSON report (schema_version 2, docs/formats.md): a pure function of the report.

Values are exact (untrusted text is not altered); the encoder escapes them, and `ensure_ascii` writes every
non-ASCII character (bidi controls, C1 controls, zero-width characters included) as `\\uXXXX`, so the file
is safe to `cat` in a terminal.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Optional

from ..model import Finding, RankedFinding, Report, TimelineEvent

SCHEMA_VERSION = 2  # 2: security findings in `security`, not in `findings`; one row per cause (`occurrences`)
DOCS_BASE = "https://github.com/celery-doctor/celery-doctor/blob/main/docs/checks/"


def docs_url(check_id: str) -> str:
    return f"{DOCS_BASE}{check_id}.md"


def _location(location) -> Optional[dict[str, Any]]:
    return {"path": location.path, "line": location.line} if location else None


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A ranked row: one cause, with every place it was seen (`subjects`, `locations`, `occurrences`)."""
    return {
        "check": finding.check,
        "slug": finding.slug,
        "title": finding.title,
        "category": finding.category.value,
        "impact": finding.impact.value,
        "confidence": finding.confidence.value,
        "subject": finding.subject,
        "evidence": list(finding.evidence),
        "messages_at_risk": finding.messages_at_risk,
        "fix": finding.fix,
        "docs": docs_url(finding.check),
        "location": _location(finding.location),
        "subjects": list(finding.subjects),
        "locations": [_location(location) for location in finding.locations],
        "occurrences": [{"subject": place.subject, "location": _location(place.location),
                         "evidence": list(place.evidence), "messages_at_risk": place.messages_at_risk,
                         "impact": place.impact.value, "confidence": place.confidence.value, "fix": place.fix}
                        for place in finding.places],
    }


def ranked_dict(ranked: RankedFinding) -> dict[str, Any]:
    return {"rank": ranked.rank, "score": ranked.score, "why_ranked": ranked.why, **finding_dict(ranked.finding)}


def report_dict(report: Report) -> dict[str, Any]:
    from .. import __version__

    summary = report.summary()
    statuses: dict[str, int] = {}
    for result in report.checks:
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "celery-doctor", "version": __version__},
        "mode": report.mode,
        "target": {"app": report.target.app, "broker": report.target.broker, "transport": report.target.transport},
        "started_at": report.started_at,
        "duration_s": report.duration_s,
        "findings": [ranked_dict(r) for r in report.findings],
        "security": [ranked_dict(r) for r in report.security],
        "checks": [
            {"id": c.id, "slug": c.slug, "title": c.title, "category": c.category.value if c.category else None,
             "status": c.status.value, "reason": c.reason or None, "findings": c.findings}
            for c in report.checks
        ],
        "not_checked": [{"part": part, "reason": reason} for part, reason in report.not_checked],
        "inputs": report.inputs or None,
        "timeline": [timeline_dict(e) for e in report.timeline],
        "timeline_omitted": report.timeline_omitted,
        "summary": {**summary, "total": len(report.findings), "security": len(report.security),
                    "suppressed": report.suppressed, "baselined": report.baselined, "checks": statuses},
    }


def _iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


def timeline_dict(event: TimelineEvent) -> dict[str, Any]:
    return {"at": _iso(event.at), "until": _iso(event.until), "where": event.where, "what": event.what,
            "kind": event.kind, "count": event.count, "important": event.important}


def format_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False, default=str, ensure_ascii=True) + "\n"
