"""SARIF 2.1.0: one rule per check, `ruleId` on every result (GitHub code scanning accepts it)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from ..model import Check, Impact, Location, Report
from .json import docs_url

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Impact.HIGH: "error", Impact.MEDIUM: "warning", Impact.LOW: "note"}
SECURITY_SEVERITY = {Impact.HIGH: "8.0", Impact.MEDIUM: "5.0", Impact.LOW: "2.0"}


def _rule(check: Check) -> dict[str, Any]:
    from ..docs import render_check_markdown

    properties: dict[str, Any] = {"category": check.category.value, "tags": ["celery", check.category.value],
                                  "problem.severity": LEVEL[check.impact]}
    if not check.category.is_loss:  # GitHub code scanning files these under security alerts
        properties["security-severity"] = SECURITY_SEVERITY[check.impact]
    return {
        "id": check.id,
        "name": check.slug,
        "shortDescription": {"text": check.title},
        "fullDescription": {"text": check.runbook.why},
        "helpUri": docs_url(check.id),
        "help": {"text": check.runbook.fix, "markdown": render_check_markdown(check)},
        "defaultConfiguration": {"level": LEVEL[check.impact]},
        "properties": properties,
    }


def _location(location: Location | None, anchor: Location | None) -> dict[str, Any]:
    where = location or anchor
    if where is None:
        where = Location("pyproject.toml", 1)
    return {"physicalLocation": {"artifactLocation": {"uri": where.path.replace("\\", "/")},
                                 "region": {"startLine": max(1, where.line or 1)}}}


def format_sarif(report: Report, checks: Sequence[Check] = ()) -> str:
    from .. import __version__

    rules = [_rule(c) for c in sorted(checks, key=lambda c: c.id)]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = []
    for ranked in (*report.findings, *report.security):  # security results keep their own rank (category says)
        row = ranked.finding
        for f in row.places:  # one result per place of the cause, all with the row's rank
            message = f"{f.title} ({f.subject}). " + " ".join(f.evidence) + f" Fix: {f.fix}"
            fingerprint = hashlib.sha256(f"{f.check}|{f.subject}|{f.location}".encode()).hexdigest()[:32]
            result: dict[str, Any] = {
                "ruleId": f.check,
                "level": LEVEL[f.impact],
                "message": {"text": message},
                "locations": [_location(f.location, report.anchor)],
                "partialFingerprints": {"celeryDoctor/v1": fingerprint},
                "properties": {"rank": ranked.rank, "score": ranked.score, "confidence": f.confidence.value,
                               "category": f.category.value, "subject": f.subject,
                               "messages_at_risk": f.messages_at_risk, "places": len(row.places)},
            }
            if f.check in index:
                result["ruleIndex"] = index[f.check]
            results.append(result)
    sarif = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "celery-doctor", "version": __version__, "semanticVersion": __version__,
                                "informationUri": "https://github.com/celery-doctor/celery-doctor", "rules": rules}},
            "results": results,
            "columnKind": "unicodeCodePoints",
        }],
    }
    return json.dumps(sarif, indent=2, ensure_ascii=True) + "\n"  # exact values, every non-ASCII one escaped
