"""Ranking likely causes: the impact table, weighted by confidence and by messages at risk.

Security findings (Category.SECURITY) are no cause of lost tasks: `rank` leaves them out, `rank_security` ranks
them among themselves, by the same arithmetic (their check's impact, not the impact table's)."""
from __future__ import annotations

import math
import re
from dataclasses import replace
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


def impact_reason(finding: Finding) -> str:
    """Why the check gave this finding its impact, when it says so in an evidence line `impact <level>: <reason>`
    (the impact follows the loss mechanism and what the project shows, e.g. a library default is low)."""
    prefix = f"impact {finding.impact.value}: "
    return next((e[len(prefix):] for e in finding.evidence if e.startswith(prefix)), "")


def score(finding: Finding) -> tuple[float, str]:
    impact_points = IMPACT_POINTS[finding.impact]
    factor = CONFIDENCE_FACTOR[finding.confidence]
    risk = at_risk_points(finding.messages_at_risk)
    total = round(impact_points * factor + risk, 1)
    table = CATEGORY_IMPACT.get(finding.category)
    where = f"{table.value} in the impact table" if table else "not a cause of task loss"
    reason = impact_reason(finding)
    why = (f"impact {finding.impact.value} ({reason + '; ' if reason else ''}{finding.category.value}: {where}) "
           f"{impact_points:g} x {finding.confidence.value} {factor:g}")
    if finding.messages_at_risk:
        why += f" + {finding.messages_at_risk:,} messages at risk {risk:.1f}"
    return total, f"{why} = {total:g}"


def rank(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    """The likely causes of lost tasks, best first, one row per cause (`group`): every finding but the security
    ones."""
    return _ranked(group(f for f in findings if f.category.is_loss))


def rank_security(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    """The security findings, one row per cause, ranked among themselves (their own ranks, from 1)."""
    return _ranked(group(f for f in findings if not f.category.is_loss))


# ---------------------------------------------------------------------------------------------- one row per cause

_STRENGTH = {Confidence.OBSERVED: 3, Confidence.CONFIGURED: 2, Confidence.INFERRED: 1}


def cause_key(finding: Finding) -> tuple:
    """Findings with the same key are one cause seen in several places: the same check and category, and the
    same `cause` the check declared, or else the same title, the check's conclusion (a check that reaches another
    conclusion says so in another title: CD141's beat entry that fails to load). The fix may name the place
    (`-Q reports`): each place keeps its own. The impact may differ: the row takes the highest."""
    return (finding.check, finding.category, finding.cause or finding.title)


def group(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per cause. A cause seen in one place is its finding unchanged; seen in several, one finding
    whose `occurrences` are the places' own findings (flattened: a row given again is regrouped from its places)."""
    groups: dict[tuple, list[Finding]] = {}
    for finding in findings:
        for place in finding.places:
            groups.setdefault(cause_key(place), []).append(place)
    out = []
    for places in groups.values():
        places = sorted(set(places), key=_most_severe_first)
        out.append(places[0] if len(places) == 1 else merged(places))
    return out


def _natural(text: str) -> tuple:
    """`job_2` before `job_10`."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def _most_severe_first(finding: Finding) -> tuple:
    where = finding.location
    return (-finding.impact.order, -_STRENGTH[finding.confidence], -(finding.messages_at_risk or 0),
            _natural(finding.subject), (where.path, where.line or 0) if where else ("", 0), finding.sort_key())


def merged(places: list[Finding]) -> Finding:
    """The row of one cause in several places, most severe first (impact, confidence, then messages at risk):
    the first place's subject, location, title, impact and confidence (no place's grade is lent to another);
    messages at risk without counting any twice (`messages_at_risk`); evidence: the first place's, then
    how many more places there are (each keeps its own evidence among the occurrences); the first place's fix,
    saying so when the others differ (a fix that names its place)."""
    first = places[0]
    more = len(places) - 1
    evidence = (*first.evidence, f"the same cause at {more} more place{'s' if more != 1 else ''} (each with its "
                                 "own evidence in the finding's occurrences)")
    fix = first.fix
    if any(place.fix != fix for place in places):
        fix += f" (Likewise for the other {more} place{'s' if more != 1 else ''}: each has its own fix.)"
    return replace(first, messages_at_risk=messages_at_risk(places), evidence=evidence, fix=fix,
                   occurrences=tuple(places))


def messages_at_risk(places: Iterable[Finding]) -> int | None:
    """The messages at risk of one cause in several places, none counted twice. Subjects of one kind (`queue:a`,
    `queue:b`) are distinct things: their counts add up; one subject seen twice is the same messages: its largest
    count. Subjects of different kinds may be two views of the same messages (a vhost's drop counter and one of
    its exchanges): the largest kind's total, not their sum. None when no place counted any."""
    per_subject: dict[str, int] = {}
    for place in places:
        if place.messages_at_risk is not None:
            per_subject[place.subject] = max(per_subject.get(place.subject, 0), place.messages_at_risk)
    if not per_subject:
        return None
    per_kind: dict[str, int] = {}
    for subject, count in per_subject.items():
        kind = subject.split(":", 1)[0] if ":" in subject else ""
        per_kind[kind] = per_kind.get(kind, 0) + count
    return max(per_kind.values())


def _ranked(findings: Iterable[Finding]) -> tuple[RankedFinding, ...]:
    scored = [(score(f), f) for f in findings]
    scored.sort(key=lambda item: (-item[0][0], -item[1].impact.order, item[1].sort_key()))
    return tuple(RankedFinding(rank=i, score=s, why=why, finding=f) for i, ((s, why), f) in enumerate(scored, 1))
