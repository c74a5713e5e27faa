"""Text report for a terminal or a pipe: the verdict first, then the ranked causes, details, what was not checked.

Layout (every line fits `width`, 40 columns and up; a terminal gets its own width, a pipe a stable 120):

1. a header line (tool, mode, target);
2. the verdict: what is most likely wrong and what to do first, in words (the top causes with their messages
   at risk and their fix);
3. the ranked causes: titles first, the subject and check id as secondary labels; an aligned list from 100
   columns, one block per finding below that (never a table whose cells wrap mid-word);
4. details of the top findings (subject shown whole, wrapped at separators, evidence, fix, ranking);
   then the security findings, apart (they are no cause of lost tasks);
5. "Not checked" (always: it says what the verdict does not cover); the per-check status lines only with
   `show_checks`; a summary line with the counts last.

Every value is untrusted (see safe_text): the report enters as `sanitized(report)` (no control, bidi or
zero-width character, no line break inside a value), rich never reads markup (`markup=False`, values in
`Text`), and a line that wraps continues at least 5 columns in, deeper than any field line (3), so a value
cannot pass for a line of its own (a forged `fix:`). Colour only repeats what the words say.
"""
from __future__ import annotations

import io
import re

from rich.console import Console
from rich.text import Text

from ..model import CheckStatus, RankedFinding, Report
from ..safe_text import sanitized

DETAILED = 5  # findings shown in detail
PLACES_SHOWN = 5  # places listed for a cause seen in several
VERDICT = 3  # causes named in the verdict
WIDE = 100  # from this width the ranked causes are an aligned list; below, one block per finding
PIPE_WIDTH = 120  # output that is not a terminal: a stable layout, whatever COLUMNS says
MIN_WIDTH = 40
FIELD, HANG = 3, 2  # detail lines of a finding; their continuation lines go HANG deeper
IMPACT_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
STATUS_STYLE = {"passed": "green", "failed": "red", "skipped": "dim", "error": "bold magenta", "ignored": "dim"}
_BREAK_AFTER = re.compile(r"[ /:.,;=_\-|)]")  # where a long value may be broken: after a space or a separator


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters: broken at spaces, else after a separator (`/ : . , = _ -`), else
    folded. Spaces at a break are dropped."""
    width = max(1, width)
    lines: list[str] = []
    rest = text
    while len(rest) > width:
        cut = rest.rfind(" ", 0, width + 1)
        if cut > 0:
            lines.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip(" ")
            continue
        candidates = [m.end() for m in _BREAK_AFTER.finditer(rest, 0, width)]
        cut = max((c for c in candidates if c > width // 3), default=width)
        lines.append(rest[:cut])
        rest = rest[cut:]
    if rest or not lines:
        lines.append(rest)
    return lines


def fit(text: str, width: int) -> str:
    """Plain text (a runbook, a trace) with every line wrapped to `width`: continuation lines keep the line's own
    indent plus 2, and at least 5 columns, so a wrapped value never reads as a line of its own."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        deeper = max(indent + 2, FIELD + HANG)
        pieces = wrap(line.strip(), width - indent)
        out.append(" " * indent + pieces[0])
        rest = line.strip()[len(pieces[0]):].lstrip(" ")
        out.extend(" " * deeper + piece for piece in wrap(rest, max(10, width - deeper)) if rest)
    return "\n".join(out)


class _Writer:
    """Prints wrapped, indented lines to a rich console of a fixed width."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.width = console.width

    def line(self, text: str = "", style: str = "", indent: int = 0, hang: int = HANG, first: str = "") -> None:
        """`first` (styled separately) then `text`, wrapped; continuation lines `indent + hang` deep."""
        if not text and not first:
            self.console.print()
            return
        deeper = max(indent + max(hang, 0), FIELD + HANG)  # deeper than any field line: nothing passes for one
        pieces = wrap(first + text, self.width - indent)
        if len(pieces) > 1:
            # re-wrap the rest to the narrower continuation width
            rest = (first + text)[len(pieces[0]):].lstrip(" ")
            pieces = [pieces[0], *wrap(rest, self.width - deeper)]
        for number, piece in enumerate(pieces):
            out = Text(" " * (indent if number == 0 else deeper))
            if number == 0 and first and piece.startswith(first):
                out.append(first, style=style or "")
                out.append(piece[len(first):])
            else:
                out.append(piece, style="" if first else style)
            self.console.print(out, soft_wrap=True)


def _target_line(report: Report) -> str:
    target = report.target
    parts = []
    if target.app:
        parts.append(f"app {target.app}")
    if target.broker:
        parts.append(f"broker {target.broker}")
    if target.transport:
        parts.append(f"transport {target.transport}")
    if getattr(report, "inputs", ""):
        parts.append(report.inputs)
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
    security = len(getattr(report, "security", ()))
    if security:
        line += f" · {security} security finding{'s' if security != 1 else ''} (not causes of loss)"
    if report.suppressed:
        line += f" · {report.suppressed} finding{'s' if report.suppressed != 1 else ''} suppressed inline"
    baselined = getattr(report, "baselined", 0)
    if baselined:
        line += f" · {baselined} baselined (in --baseline, not reported)"
    return line


def subject_label(finding) -> str:
    """The subject of a ranked row: its one subject, or the first and how many places the cause has."""
    count, others = len(finding.places), len(finding.subjects) - 1
    if count == 1:
        return finding.subject
    return f"{finding.subject}{f' and {others} more' if others else ''} ({count} places)"


def place_lines(finding, limit: int = PLACES_SHOWN) -> list[str]:
    """`subject at location` for the first `limit` places of a row, then how many are left out."""
    places = finding.places
    lines = [place.subject + (f" at {place.location}" if place.location else "") for place in places[:limit]]
    if len(places) > limit:
        lines.append(f"... and {len(places) - limit} more (--format json or markdown lists every one)")
    return lines


def own_evidence(row, place) -> list[str]:
    """The evidence of one place of a row that the row's own evidence does not already say."""
    return [line for line in place.evidence if line not in row.evidence]


def _at_risk(ranked: RankedFinding) -> str:
    count = ranked.finding.messages_at_risk
    return "-" if count is None else f"{count:,}"


def _verdict(out: _Writer, report: Report) -> None:
    findings = report.findings
    if not findings:
        out.line("Verdict: no likely cause of task loss found by the checks that ran.", style="bold green")
        if report.security:
            out.line(f"{len(report.security)} security finding(s) below: not causes of lost tasks.", indent=2)
        if getattr(report, "baselined", 0):
            out.line(f"{report.baselined} finding(s) in the baseline (--baseline) are not reported: only new ones "
                     "are.", indent=2)
        if report.not_checked:
            out.line(f"Not everything could be checked ({len(report.not_checked)} item(s) under Not checked "
                     "below): the verdict does not cover them.", indent=2)
        out.line()
        return
    summary = report.summary()
    out.line(f"Verdict: {len(findings)} likely cause{'s' if len(findings) != 1 else ''} of lost, duplicated or "
             f"stuck tasks ({summary['high']} high, {summary['medium']} medium, {summary['low']} low).",
             style="bold")
    out.line("What to do first:", style="bold")
    named: set[str] = set()
    shown = 0
    for ranked in findings:
        f = ranked.finding
        if f.check in named:
            continue
        named.add(f.check)
        shown += 1
        risk = f"; {f.messages_at_risk:,} message(s) at risk" if f.messages_at_risk else ""
        risk += f"; {len(f.places)} places" if len(f.places) > 1 else ""
        out.line(f"{f.title} ({f.impact.value}{risk})", indent=2, hang=3, first=f"{shown}. ",
                 style=IMPACT_STYLE[f.impact.value])
        out.line(f"fix: {f.fix}", indent=5, hang=HANG)
        if shown >= VERDICT:
            break
    out.line()


def _ranked_wide(out: _Writer, report: Report) -> None:
    out.line("Ranked causes (details below; `celery-doctor explain ID` for the runbook)", style="bold")
    out.line(f"{'#':>3}  {'impact':<6}  {'at risk':>8}  cause")
    title_at = 3 + 2 + 6 + 2 + 8 + 2
    for ranked in report.findings:
        f = ranked.finding
        head = f"{ranked.rank:>3}  {f.impact.value:<6}  {_at_risk(ranked):>8}  "
        lines = wrap(f.title, out.width - title_at)
        text = Text(head[:5])
        text.append(f.impact.value, style=IMPACT_STYLE[f.impact.value])
        text.append(head[5 + len(f.impact.value):] + lines[0])
        out.console.print(text, soft_wrap=True)
        for piece in lines[1:]:
            out.console.print(Text(" " * title_at + piece), soft_wrap=True)
        for piece in wrap(f"{subject_label(f)} · {f.check}", out.width - title_at):
            out.console.print(Text(" " * title_at + piece, style="dim"), soft_wrap=True)
    out.line()


def _ranked_compact(out: _Writer, report: Report) -> None:
    out.line("Ranked causes", style="bold")
    for ranked in report.findings:
        f = ranked.finding
        out.line(f" · {_at_risk(ranked)} at risk · {f.check}", indent=0, hang=FIELD + HANG,
                 first=f"{ranked.rank}. {f.impact.value}", style=IMPACT_STYLE[f.impact.value])
        out.line(f.title, indent=FIELD)
        out.line(subject_label(f), indent=FIELD, style="dim")
    out.line()


def _details(out: _Writer, report: Report) -> None:
    shown = report.findings[:DETAILED]
    if not shown:
        return
    out.line(f"Details of the top {len(shown)}", style="bold")
    for ranked in shown:
        f = ranked.finding
        out.line(f.title, indent=0, hang=FIELD + HANG, first=f"{ranked.rank}. ", style="bold")
        out.line(f"{f.check} {f.slug} · impact {f.impact.value} · {f.confidence.value}", indent=FIELD)
        if len(f.places) > 1:
            out.line(f"{len(f.places)} places:", indent=FIELD)
            for number, line in enumerate(place_lines(f)):
                out.line(f"- {line}", indent=FIELD + 2)
                for evidence in own_evidence(f, f.places[number]) if number < PLACES_SHOWN else ():
                    out.line(evidence, indent=FIELD + 4)
        else:
            out.line(f"subject: {f.subject}", indent=FIELD)
            if f.location:
                out.line(f"location: {f.location}", indent=FIELD)
        for evidence in f.evidence:
            out.line(f"- {evidence}", indent=FIELD)
        if f.messages_at_risk is not None:
            out.line(f"messages at risk: {f.messages_at_risk:,}", indent=FIELD)
        out.line(f"fix: {f.fix}", indent=FIELD)
        out.line(f"ranked: score {ranked.score:g} = {ranked.why}", indent=FIELD)
        out.line(f"runbook: celery-doctor explain {f.check}", indent=FIELD)
        out.line()
    rest = len(report.findings) - len(shown)
    if rest > 0:
        out.line(f"({rest} more finding{'s' if rest != 1 else ''} ranked above; --format json or markdown has "
                 "every detail)")
        out.line()


def _security(out: _Writer, report: Report) -> None:
    """Security findings: after the causes, apart from them (they are no cause of lost tasks)."""
    if not report.security:
        return
    out.line("Security (not causes of lost tasks; they count for --fail-on by their impact)", style="bold")
    for ranked in report.security:
        f = ranked.finding
        out.line(f.title, indent=0, hang=FIELD + HANG, first=f"S{ranked.rank}. {f.impact.value}: ",
                 style=IMPACT_STYLE[f.impact.value])
        out.line(f"{f.check} {f.slug} · " + "; ".join(place_lines(f, limit=3)), indent=FIELD)
        for evidence in f.evidence:
            out.line(f"- {evidence}", indent=FIELD)
        out.line(f"fix: {f.fix}", indent=FIELD)
        out.line(f"runbook: celery-doctor explain {f.check}", indent=FIELD)
    out.line()


def _not_checked(out: _Writer, report: Report) -> None:
    if not report.not_checked:
        return
    out.line("Not checked", style="bold")
    for part, reason in report.not_checked:
        out.line(f"{part}: {reason}", indent=2, hang=FIELD + HANG - 2)
    out.line()


def _checks(out: _Writer, report: Report, only_errors: bool = False) -> None:
    results = [r for r in report.checks if r.status is CheckStatus.ERROR] if only_errors else report.checks
    if not results:
        return
    out.line("Checks that crashed (the other checks ran)" if only_errors else "Checks", style="bold")
    dots_to = min(58, max(20, out.width - 24))
    for result in results:
        name = f"{result.id} {result.slug}".strip()
        status = result.status.value
        detail = status
        if result.status is CheckStatus.FAILED:
            detail = f"failed ({result.findings})"
        elif result.reason and result.status is not CheckStatus.IGNORED:
            detail = f"{status}: {result.reason}"
        dots = "." * max(3, dots_to - len(name))
        out.line(detail, indent=2, hang=FIELD + HANG, first=f"{name} {dots} ", style="")
    out.line()


def format_text(report: Report, color: bool = False, width: int = PIPE_WIDTH, show_checks: bool = False) -> str:
    report = sanitized(report)
    width = max(MIN_WIDTH, int(width))
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="standard" if color else None,
                      force_terminal=color, no_color=not color, highlight=False, emoji=False, soft_wrap=False,
                      markup=False)
    out = _Writer(console)
    from .. import __version__

    out.line(f"celery-doctor {__version__} {report.mode}: {_target_line(report)}", style="bold", hang=FIELD + HANG)
    out.line()
    _verdict(out, report)
    from .timeline import render_timeline  # what the logs said happened, when (scan --logs, logs)

    render_timeline(out, report)
    if report.findings:
        (_ranked_wide if width >= WIDE else _ranked_compact)(out, report)
        _details(out, report)
    _security(out, report)
    _not_checked(out, report)
    _checks(out, report, only_errors=not show_checks)
    out.line(footer(report))
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))
