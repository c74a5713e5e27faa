"""Markdown report, ready to paste into an incident ticket.

Every value is untrusted (see safe_text): it enters as `sanitized(report)` and is inserted with `md_text`
(literal text: HTML and markdown escaped) or `md_code` (a code span no backtick inside can close).
"""
from __future__ import annotations

from ..model import CheckStatus, Report
from ..safe_text import md_code, md_text, sanitized
from .text import _target_line, footer, own_evidence


def _timeline(report: Report) -> list[str]:
    """The incident timeline from logs (scan --logs, logs): one list item per event, in time order."""
    if not report.timeline:
        return []
    import time

    def clock(epoch):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch is not None else "(no time)"

    lines = ["## Timeline (UTC)", ""]
    for event in report.timeline:
        until = f" (until {clock(event.until)})" if event.until is not None else ""
        lines.append(f"- {md_text(clock(event.at))} {md_code(event.where)}: {md_text(event.what + until)}")
    if report.timeline_omitted:
        lines.append(f"- ({report.timeline_omitted} more events not kept)")
    return [*lines, ""]


PLACES_LISTED = 50  # places of one cause listed in the ticket (the JSON report lists every one)


def _place(place) -> str:
    return md_code(place.subject) + (f" at {md_code(place.location)}" if place.location else "")


def _places(f) -> list[str]:
    """The subject of a cause, or every place it was seen (at most PLACES_LISTED)."""
    if len(f.places) == 1:
        return [f"- **Subject:** {_place(f)}"]
    lines = [f"- **Places ({len(f.places)}):**"]
    for place in f.places[:PLACES_LISTED]:
        lines.append(f"  - {_place(place)}")
        lines += [f"    - {md_text(line)}" for line in own_evidence(f, place)]
    if len(f.places) > PLACES_LISTED:
        lines.append(f"  - ... and {len(f.places) - PLACES_LISTED} more (the JSON report lists every one)")
    return lines


def _security(report: Report) -> list[str]:
    """Security findings, apart from the ranked causes: they are no cause of lost tasks."""
    if not report.security:
        return []
    lines = ["## Security (not causes of lost tasks)", "",
             "These count for `--fail-on` by their impact, but they are not among the likely causes above.", ""]
    for ranked in report.security:
        f = ranked.finding
        lines += [f"### S{ranked.rank}. {md_text(f.check)} {md_text(f.slug)}: {md_text(f.title)}", ""]
        lines += _places(f)
        lines.append(f"- **Impact / confidence:** {f.impact.value} / {f.confidence.value}")
        lines.append("- **Evidence:**")
        lines += [f"  - {md_text(e)}" for e in f.evidence]
        lines += [f"- **Fix:** {md_text(f.fix)}", f"- **Runbook:** {md_code(f'celery-doctor explain {f.check}')}", ""]
    return lines


def format_markdown(report: Report) -> str:
    from .. import __version__

    report = sanitized(report)
    lines = [
        f"# celery-doctor {md_text(report.mode)} report",
        "",
        f"- **Target:** {md_text(_target_line(report))}",
        f"- **Started:** {md_text(report.started_at)} ({report.duration_s:g} s)",
        f"- **Tool:** celery-doctor {__version__}",
        f"- **Summary:** {md_text(footer(report))}",
        "",
    ]
    lines += _timeline(report)
    lines += [
        "## Likely causes (ranked)",
        "",
    ]
    if report.findings:
        lines += ["| # | impact | confidence | check | subject | finding | at risk |", "|---:|---|---|---|---|---|---:|"]
        for ranked in report.findings:
            f = ranked.finding
            at_risk = f"{f.messages_at_risk:,}" if f.messages_at_risk is not None else "-"
            more = f" and {len(f.places) - 1} more" if len(f.places) > 1 else ""
            lines.append(f"| {ranked.rank} | {f.impact.value} | {f.confidence.value} | {md_text(f.check)} | "
                         f"{md_code(f.subject, table=True)}{more} | {md_text(f.title)} | {at_risk} |")
        lines.append("")
        for ranked in report.findings:
            f = ranked.finding
            lines += [f"### {ranked.rank}. {md_text(f.check)} {md_text(f.slug)}: {md_text(f.title)}", ""]
            lines += _places(f)
            lines.append(f"- **Impact / confidence:** {f.impact.value} / {f.confidence.value} "
                         f"(score {ranked.score:g}: {md_text(ranked.why)})")
            if f.messages_at_risk is not None:
                lines.append(f"- **Messages at risk:** {f.messages_at_risk:,}")
            lines.append("- **Evidence:**")
            lines += [f"  - {md_text(e)}" for e in f.evidence]
            lines += [f"- **Fix:** {md_text(f.fix)}", f"- **Runbook:** {md_code(f'celery-doctor explain {f.check}')}", ""]
    else:
        lines += ["No likely cause of task loss found by the checks that ran.", ""]
    lines += _security(report)
    lines += ["## Not checked", ""]
    if report.not_checked:
        lines += [f"- **{md_text(part)}:** {md_text(reason)}" for part, reason in report.not_checked]
    not_run = [c for c in report.checks if c.status in (CheckStatus.SKIPPED, CheckStatus.ERROR)]
    lines += [f"- {md_code(c.id)} {md_text(c.slug)}: {c.status.value}: {md_text(c.reason)}" for c in not_run]
    if not report.not_checked and not not_run:
        lines.append("Everything applicable was checked.")
    lines.append("")
    return "\n".join(lines)
