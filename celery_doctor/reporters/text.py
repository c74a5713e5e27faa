"""Text report for a terminal: ranked table, top causes in detail, a status line per check, a footer."""
from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..model import CheckStatus, Report

DETAILED = 10
IMPACT_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
STATUS_STYLE = {"passed": "green", "failed": "red", "skipped": "dim", "error": "bold magenta", "ignored": "dim"}


def _target_line(report: Report) -> str:
    target = report.target
    parts = []
    if target.app:
        parts.append(f"app {target.app}")
    if target.broker:
        parts.append(f"broker {target.broker}")
    if target.transport:
        parts.append(f"transport {target.transport}")
    return ", ".join(parts) or "no target"


def footer(report: Report) -> str:
    summary = report.summary()
    counts: dict[str, int] = {}
    for result in report.checks:
        counts[result.status.value] = counts.get(result.status.value, 0) + 1
    total = len(report.findings)
    line = (f"{total} finding{'s' if total != 1 else ''} ({summary['high']} high, {summary['medium']} medium, "
            f"{summary['low']} low) · {len(report.checks)} checks: {counts.get('passed', 0)} passed, "
            f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped, {counts.get('error', 0)} errors")
    if counts.get("ignored"):
        line += f", {counts['ignored']} ignored"
    if report.suppressed:
        line += f" · {report.suppressed} finding{'s' if report.suppressed != 1 else ''} suppressed inline"
    return line


def format_text(report: Report, color: bool = False, width: int = 120) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, no_color=not color, highlight=False, emoji=False, soft_wrap=False)
    from .. import __version__

    console.print(Text(f"celery-doctor {__version__} {report.mode}: {_target_line(report)}", style="bold"))
    console.print()
    if report.findings:
        table = Table(title="Likely causes of lost, duplicated or stuck tasks (ranked)", title_justify="left",
                      show_lines=False, expand=False, pad_edge=False)
        for column, justify in (("#", "right"), ("impact", "left"), ("confidence", "left"), ("check", "left"),
                                ("cause", "left"), ("subject", "left"), ("at risk", "right")):
            table.add_column(column, justify=justify, overflow="fold")
        for ranked in report.findings:
            f = ranked.finding
            table.add_row(str(ranked.rank), Text(f.impact.value, style=IMPACT_STYLE[f.impact.value]),
                          f.confidence.value, f.check, f.slug, escape(f.subject),
                          f"{f.messages_at_risk:,}" if f.messages_at_risk is not None else "-")
        console.print(table)
        console.print()
        for ranked in report.findings[:DETAILED]:
            f = ranked.finding
            console.print(Text(f"{ranked.rank}. {f.check} {f.slug}: {f.title}", style="bold"))
            lines = [f"subject: {f.subject}" + (f"   location: {f.location}" if f.location else "")]
            lines += [f"- {line}" for line in f.evidence]
            if f.messages_at_risk is not None:
                lines.append(f"messages at risk: {f.messages_at_risk:,}")
            lines += [f"fix: {f.fix}", f"ranked: score {ranked.score:g} = {ranked.why}",
                      f"runbook: celery-doctor explain {f.check}"]
            for line in lines:
                console.print(Padding(Text(line), (0, 0, 0, 3), expand=False))
            console.print()
        if len(report.findings) > DETAILED:
            console.print(f"({len(report.findings) - DETAILED} more findings in the table above; --format json has every detail)")
            console.print()
    else:
        console.print(Text("No likely cause of task loss found by the checks that ran.", style="green"))
        console.print()
    if report.not_checked:
        console.print(Text("Not checked", style="bold"))
        for part, reason in report.not_checked:
            console.print(f"  {part}: {escape(reason)}")
        console.print()
    console.print(Text("Checks", style="bold"))
    for result in report.checks:
        name = f"{result.id} {result.slug}".strip()
        status = result.status.value
        detail = status
        if result.status is CheckStatus.FAILED:
            detail = f"failed ({result.findings})"
        elif result.reason and result.status is not CheckStatus.IGNORED:
            detail = f"{status}: {result.reason}"
        dots = "." * max(3, 56 - len(name))
        line = Text(f"  {name} {dots} ")
        line.append(detail, style=STATUS_STYLE.get(status, ""))
        console.print(line, overflow="fold")
    console.print()
    console.print(footer(report))
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))
