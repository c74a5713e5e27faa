"""Rendering a trace result (text, json, markdown): pure functions of the result.

Every value is untrusted (see safe_text): text and markdown take the result through `sanitized`, markdown
inserts values with `md_text`/`md_code`; JSON keeps the exact values, escaped by the encoder.
"""
from __future__ import annotations

import json

from ..safe_text import md_code, md_text, sanitized
from .json import SCHEMA_VERSION, ranked_dict

MAX_CAUSES = 5


def trace_dict(result) -> dict:
    from .. import __version__

    target = result.target
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "celery-doctor", "version": __version__},
        "task_id": result.task_id,
        "target": {"app": target.app, "broker": target.broker, "transport": target.transport} if target else None,
        "started_at": result.started_at,
        "duration_s": result.duration_s,
        "found": result.found,
        "locations": [loc.as_dict() for loc in result.locations],
        "checked": list(result.checked),
        "not_checked": [{"where": where, "reason": reason} for where, reason in result.not_checked],
        "likely_causes": [ranked_dict(r) for r in result.likely_causes],
    }


def format_trace_json(result) -> str:
    return json.dumps(trace_dict(result), indent=2, default=str, ensure_ascii=True) + "\n"


def _plain(value) -> str:
    return str(value)


def _lines(result, bullet: str, text=_plain, code=_plain) -> list[str]:
    lines = []
    if result.found:
        for loc in result.locations:
            task = f" ({text(loc.task)})" if loc.task else ""
            lines.append(f"{bullet}{text(loc.where)} {code(loc.name)}: {text(loc.state)}{task}")
            lines += [f"    {text(d)}" for d in loc.details]
            if loc.next:
                lines.append(f"    next: {text(loc.next)}")
    else:
        if result.not_checked:
            lines.append(f"{bullet}not found in what was searched; the search was not complete (see Not checked)")
        else:
            lines.append(f"{bullet}not found: every place listed under Checked was searched to the end")
    return lines


def format_trace_text(result) -> str:
    result = sanitized(result)
    target = result.target
    head = f"celery-doctor trace {result.task_id}"
    if target:
        head += f": {', '.join(p for p in (target.app and f'app {target.app}', target.broker and f'broker {target.broker}') if p)}"
    out = [head, "", "Where it is" if result.found else ("Where it is: not found in what could be searched" if result.not_checked
                                                  else "Where it is: not found"), *_lines(result, "  - "), ""]
    out.append("Checked: " + (", ".join(result.checked) or "nothing"))
    if result.not_checked:
        out.append("Not checked:")
        out += [f"  - {where}: {reason}" for where, reason in result.not_checked]
    out.append("")
    if result.likely_causes:
        out.append("Likely causes (from the scan, related ones first):")
        for ranked in result.likely_causes[:MAX_CAUSES]:
            f = ranked.finding
            out.append(f"  {ranked.rank}. [{f.impact.value}/{f.confidence.value}] {f.check} {f.title} ({f.subject})")
            out.append(f"     fix: {f.fix}")
    out.append("")
    return "\n".join(out)


def format_trace_markdown(result) -> str:
    result = sanitized(result)
    target = result.target
    out = [f"# Trace of task {md_code(result.task_id)}", "",
           f"- **Target:** {md_text(target.app or '-')} / {md_text(target.broker or '-')}" if target else "- **Target:** -",
           f"- **Started:** {md_text(result.started_at)} ({result.duration_s:g} s)",
           f"- **Found:** {'yes' if result.found else 'no'}", "", "## Where it is", ""]
    out += _lines(result, "- ", text=md_text, code=md_code)
    out += ["", "## Not checked", ""]
    out += [f"- **{md_text(where)}:** {md_text(reason)}" for where, reason in result.not_checked] \
        or ["Everything applicable was checked."]
    out += ["", "## Likely causes", ""]
    for ranked in result.likely_causes[:MAX_CAUSES]:
        f = ranked.finding
        out.append(f"{ranked.rank}. **{md_text(f.check)}** {md_text(f.title)} ({md_code(f.subject)}, "
                   f"{f.impact.value}/{f.confidence.value}) — fix: {md_text(f.fix)}")
    out.append("")
    return "\n".join(out)
