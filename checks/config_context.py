"""Context gates for the config checks: a finding about the broker or acknowledgements is conditional when the
configuration is not a production one (eager mode, test settings: celery_doctor.facts.context). Such a finding
keeps its evidence, says why it is conditional, and ranks lower: one impact level down, confidence inferred.

Also the wording of an impact that a check chose from what the project shows (`impact_line`), so that the
ranking's reason is in the finding itself.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from typing import Iterable

from celery_doctor.facts.context import not_production_reason
from celery_doctor.model import Check, Confidence, Finding, Impact, Snapshot

LOWER = {Impact.HIGH: Impact.MEDIUM, Impact.MEDIUM: Impact.LOW, Impact.LOW: Impact.LOW}


def impact_line(impact: Impact, reason: str) -> str:
    """The evidence line that says why a finding has the impact it has."""
    return f"impact {impact.value}: {reason}"


def conditional(finding: Finding, reason: str) -> Finding:
    """`finding` made conditional on a production configuration: one impact level down, confidence inferred."""
    lowered = LOWER[finding.impact]
    note = impact_line(lowered, f"conditional, {reason}; this holds only where the same settings run with a broker "
                                f"and workers (lowered from {finding.impact.value}, confidence inferred)")
    return replace(finding, impact=lowered, confidence=Confidence.INFERRED, evidence=(*finding.evidence, note))


def gated(check: Check) -> Check:
    """`check` whose findings become conditional when the configuration is not a production one."""
    inner = check.run

    def run(snapshot: Snapshot) -> Iterable[Finding]:
        config = snapshot.config
        reason = not_production_reason(config) if config is not None else None
        for finding in inner(snapshot):
            yield conditional(finding, reason) if reason else finding

    functools.update_wrapper(run, inner)  # name, module and doc of the check's own function (docs, crash logs)
    return replace(check, run=run)
