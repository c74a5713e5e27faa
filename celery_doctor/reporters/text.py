"""Text report for a terminal: ranked table, top causes in detail, a status line per check, a footer.

Every value is untrusted (see safe_text): the report enters as `sanitized(report)` (no control, bidi or
zero-width character, no line break inside a value), rich never reads markup (`markup=False`, values in
`Text`), and a detail line that wraps continues with a deeper indent, so a value cannot pass for a line
of its own (a forged `fix:`).
"""
from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..model import CheckStatus, Report
from ..safe_text import sanitized

DETAILED = 10
INDENT, HANG = 3, 2  # detail lines of a finding; their continuation lines go HANG deeper
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


def _detail(console: Console, line: str | Text, indent: int = INDENT, hang: int = HANG) -> None:
    """One line, wrapped to the console: continuation lines indented `hang` deeper than the first."""
    text = line if isinstance(line, Text) else Text(line)
    first = text.wrap(console, max(20, console.width - indent), overflow="fold")[0]
    first.rstrip()
    console.print(Text(" " * indent) + first, soft_wrap=True)
    rest = len(first.plain)
    while rest < len(text.plain) and text.plain[rest] == " ":
        rest += 1
    if rest < len(text.plain):
        for piece in text[rest:].wrap(console, max(20, console.width - indent - hang), overflow="fold"):
            piece.rstrip()
            console.print(Text(" " * (indent + hang)) + piece, soft_wrap=True)


def format_text(report: Report, color: bool = False, width: int = 120) -> str:
    report = sanitized(report)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, no_color=not color, highlight=False, emoji=False, soft_wrap=False,
                      markup=False)
    from .. import __version__

    _detail(console, Text(f"celery-doctor {__version__} {report.mode}: {_target_line(report)}", style="bold"),
            indent=0, hang=INDENT + HANG)
    console.print()
    if report.findings:
        table = Table(title="Likely causes of lost, duplicated or stuck tasks (ranked)", title_justify="left",
                      show_lines=False, expand=False, pad_edge=False)
        for column, justify in (("#", "right"), ("impact", "left"), ("confidence", "left"), ("check", "left"),
                                ("cause", "left"), ("subject", "left"), ("at risk", "right")):
            table.add_column(column, justify=justify, overflow="fold")
        for ranked in report.findings:
            f = ranked.finding
            table.add_row(Text(str(ranked.rank)), Text(f.impact.value, style=IMPACT_STYLE[f.impact.value]),
                          Text(f.confidence.value), Text(f.check), Text(f.slug), Text(f.subject),
                          Text(f"{f.messages_at_risk:,}" if f.messages_at_risk is not None else "-"))
        console.print(table)
        console.print()
        for ranked in report.findings[:DETAILED]:
            f = ranked.finding
            _detail(console, Text(f"{ranked.rank}. {f.check} {f.slug}: {f.title}", style="bold"), indent=0,
                    hang=INDENT + HANG)
            lines = [f"subject: {f.subject}" + (f"   location: {f.location}" if f.location else "")]
            lines += [f"- {line}" for line in f.evidence]
            if f.messages_at_risk is not None:
                lines.append(f"messages at risk: {f.messages_at_risk:,}")
            lines += [f"fix: {f.fix}", f"ranked: score {ranked.score:g} = {ranked.why}",
                      f"runbook: celery-doctor explain {f.check}"]
            for line in lines:
                _detail(console, line)
            console.print()
        if len(report.findings) > DETAILED:
            console.print(Text(f"({len(report.findings) - DETAILED} more findings in the table above; "
                               "--format json has every detail)"))
            console.print()
    else:
        console.print(Text("No likely cause of task loss found by the checks that ran.", style="green"))
        console.print()
    if report.not_checked:
        console.print(Text("Not checked", style="bold"))
        for part, reason in report.not_checked:
            _detail(console, f"{part}: {reason}", indent=2, hang=INDENT + HANG - 2)
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
        _detail(console, line, indent=0, hang=INDENT + HANG)
    console.print()
    console.print(Text(footer(report)))
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))
