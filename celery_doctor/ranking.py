"""Ranking likely causes: the impact table, weighted by confidence and by messages at risk.

Security findings (Category.SECURITY) are no cause of lost tasks: `rank` leaves them out, `rank_security` ranks
them among themselves, by the same arithmetic (their check's impact, not the impact table's)."""
from __future__ import annotations

import math
from typing import Iterable

from .model import CATEGORY_IMPACT, Confidence, Finding, Impact, RankedFinding

IMPACT_POINTS = {Impact.HIGH: 60.0, Impact.MEDIUM: 30.0, Impact.LOW: 10.0}
CONFIDENCE_FACTOR = {Confidence.OBSERVED: 1.0, Confidence.CONFIGURED: 0.75, Confidence.INFERRED: 0.5}
MAX_AT_RISK_POINTS = 20.0


def at_risk_points(messages: int | None) -> float:
    """Up to 20 points, logarithmic: 10 messages ~ 5, 1,000 ~ 15, 10,000+ = 20."""
    if not messages or messages <= 0:
        return 0.0
    return min(MAX_AT_RISK_POINTS, 5.0 * math.log10(messages + 1))


def score(finding: Finding) -> tuple[float, str]:
    impact_points = IMPACT_POINTS[finding.impact]
    factor = CONFIDENCE_FACTOR[finding.confidence]
    risk = at_risk_points(finding.messages_at_risk)
    total = round(impact_points * factor + risk, 1)
    table = CATEGORY_IMPACT.get(finding.category)
    where = f"{table.value} in the impact table" if table else "not a cause of task loss"
    why = (f"impact {finding.impact.value} ({finding.category.value}: {where}) "
           f"{impact_points:g} x {finding.confidence.value} {factor:g}")
    if finding.messages_at_risk:
        why += f" + {finding.messages_at_risk:,} messages at risk {risk:.1f}"
    return total, f"{why} = {total:g}"


def rank(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    """The likely causes of lost tasks, best first: every finding but the security ones."""
    return _ranked(f for f in findings if f.category.is_loss)


def rank_security(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    """The security findings, ranked among themselves (their own ranks, from 1)."""
    return _ranked(f for f in findings if not f.category.is_loss)


def _ranked(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    scored = [(score(f), f) for f in findings]
    scored.sort(key=lambda item: (-item[0][0], -item[1].impact.order, item[1].sort_key()))
    return tuple(RankedFinding(rank=i, score=s, why=why, finding=f) for i, ((s, why), f) in enumerate(scored, 1))
