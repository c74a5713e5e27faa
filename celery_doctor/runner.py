"""Running checks over one snapshot: selection, skipping for missing parts, isolation and suppression."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

from .masking import scrub, scrub_all
from .model import Check, CheckResult, CheckStatus, Finding, SkipCheck, Snapshot
from .registry import Registry, selected

RAISE_ENV = "CELERY_DOCTOR_RAISE_CHECK_ERRORS"  # tests set it so that a crashing check cannot hide
ISSUES_URL = "https://github.com/celery-doctor/celery-doctor/issues"


@dataclass
class RunResult:
    findings: list[Finding]
    results: list[CheckResult]
    suppressed: int


def _missing_part(check: Check, snapshot: Snapshot) -> str:
    for need in sorted(check.needs):
        part = snapshot.part(need)
        if not part.ok:
            return f"needs {need}: {part.reason or part.status.value}"
    return ""


def _clean(finding: Finding) -> Finding:
    return replace(
        finding,
        subject=scrub(finding.subject),
        evidence=scrub_all(finding.evidence),
        fix=scrub(finding.fix),
        title=scrub(finding.title),
    )


def _suppressed(finding: Finding, snapshot: Snapshot) -> bool:
    source = snapshot.source
    if source is None or finding.location is None:
        return False
    return source.suppressed(finding.location.path, finding.location.line, finding.check)


def run_checks(registry: Registry, snapshot: Snapshot, select: Sequence[str] = (), ignore: Sequence[str] = (),
               raise_errors: bool | None = None) -> RunResult:
    if raise_errors is None:
        raise_errors = os.environ.get(RAISE_ENV) == "1"
    findings: list[Finding] = []
    results: list[CheckResult] = []
    suppressed = 0
    for error in registry.errors:
        results.append(CheckResult(id=error.plugin, slug="", title="plugin failed to load", category=None,
                                   status=CheckStatus.ERROR, reason=f"{error.message} (report it to the plugin's authors)"))
    for check in registry.checks:
        base = dict(id=check.id, slug=check.slug, title=check.title, category=check.category)
        if not selected(check.id, select, ignore):
            results.append(CheckResult(**base, status=CheckStatus.IGNORED, reason="deselected by --select/--ignore"))
            continue
        missing = _missing_part(check, snapshot)
        if missing:
            results.append(CheckResult(**base, status=CheckStatus.SKIPPED, reason=missing))
            continue
        try:
            produced = [_clean(f) for f in check.run(snapshot) or ()]
        except SkipCheck as exc:
            results.append(CheckResult(**base, status=CheckStatus.SKIPPED, reason=scrub(str(exc))))
            continue
        except Exception as exc:  # one crashing check must not stop the others
            if raise_errors:
                raise
            results.append(CheckResult(**base, status=CheckStatus.ERROR,
                                       reason=scrub(f"crashed: {type(exc).__name__}: {exc} (please report it: {ISSUES_URL})")))
            continue
        kept = []
        for finding in produced:
            if _suppressed(finding, snapshot):
                suppressed += 1
            else:
                kept.append(finding)
        findings.extend(kept)
        status = CheckStatus.FAILED if kept else CheckStatus.PASSED
        results.append(CheckResult(**base, status=status, findings=len(kept)))
    return RunResult(findings, results, suppressed)
