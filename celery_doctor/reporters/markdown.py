"""Markdown report, ready to paste into an incident ticket."""
from __future__ import annotations

from ..model import CheckStatus, Report
from .text import _target_line, footer


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(report: Report) -> str:
    from .. import __version__

    lines = [
        f"# celery-doctor {report.mode} report",
        "",
        f"- **Target:** {_cell(_target_line(report))}",
        f"- **Started:** {report.started_at} ({report.duration_s:g} s)",
        f"- **Tool:** celery-doctor {__version__}",
        f"- **Summary:** {footer(report)}",
        "",
        "## Likely causes (ranked)",
        "",
    ]
    if report.findings:
        lines += ["| # | impact | confidence | check | subject | finding | at risk |", "|---:|---|---|---|---|---|---:|"]
        for ranked in report.findings:
            f = ranked.finding
            at_risk = f"{f.messages_at_risk:,}" if f.messages_at_risk is not None else "-"
            lines.append(f"| {ranked.rank} | {f.impact.value} | {f.confidence.value} | {f.check} | "
                         f"`{_cell(f.subject)}` | {_cell(f.title)} | {at_risk} |")
        lines.append("")
        for ranked in report.findings:
            f = ranked.finding
            lines += [f"### {ranked.rank}. {f.check} {f.slug}: {_cell(f.title)}", ""]
            lines.append(f"- **Subject:** `{_cell(f.subject)}`" + (f" at `{f.location}`" if f.location else ""))
            lines.append(f"- **Impact / confidence:** {f.impact.value} / {f.confidence.value} (score {ranked.score:g}: {ranked.why})")
            if f.messages_at_risk is not None:
                lines.append(f"- **Messages at risk:** {f.messages_at_risk:,}")
            lines.append("- **Evidence:**")
            lines += [f"  - {_cell(e)}" for e in f.evidence]
            lines += [f"- **Fix:** {_cell(f.fix)}", f"- **Runbook:** `celery-doctor explain {f.check}`", ""]
    else:
        lines += ["No likely cause of task loss found by the checks that ran.", ""]
    lines += ["## Not checked", ""]
    if report.not_checked:
        lines += [f"- **{part}:** {_cell(reason)}" for part, reason in report.not_checked]
    not_run = [c for c in report.checks if c.status in (CheckStatus.SKIPPED, CheckStatus.ERROR)]
    lines += [f"- `{c.id}` {c.slug}: {c.status.value}: {_cell(c.reason)}" for c in not_run]
    if not report.not_checked and not not_run:
        lines.append("Everything applicable was checked.")
    lines.append("")
    return "\n".join(lines)
