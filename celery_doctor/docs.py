"""Check runbooks rendered from the check's own text: `explain` and docs/checks/<ID>.md share this."""
from __future__ import annotations

import os
import sys
from typing import Iterable

from .model import CATEGORY_IMPACT, Check

HEADINGS = ("Symptom", "Why tasks are lost", "How to confirm", "Fix", "Risk of the fix")


def render_check_markdown(check: Check) -> str:
    rb = check.runbook
    needs = ", ".join(sorted(check.needs)) or "nothing"
    lines = [
        f"# {check.id} {check.slug}: {check.title}",
        "",
        f"- **Category:** {check.category.value} " + (
            f"(impact on task loss: {CATEGORY_IMPACT[check.category].value})" if check.category.is_loss
            else "(not a cause of task loss: reported apart from the ranked causes)"),
        f"- **Default impact:** {check.impact.value}",
        f"- **Needs:** {needs}",
        f"- **Since:** {check.since}",
        "",
    ]
    for heading, body in zip(HEADINGS, (rb.symptom, rb.why, rb.confirm, rb.fix, rb.risk)):
        lines += [f"## {heading}", "", body.strip(), ""]
    if rb.references:
        lines += ["## References", ""] + [f"- {ref}" for ref in rb.references] + [""]
    return "\n".join(lines)


def write_docs(checks: Iterable[Check], directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    written = []
    for check in checks:
        path = os.path.join(directory, f"{check.id}.md")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(render_check_markdown(check))
        written.append(path)
    return written


def builtin_checks() -> list[Check]:
    from .registry import BUILTIN_MODULE_PREFIX, load_registry

    registry = load_registry()
    if registry.errors:
        raise SystemExit(f"checks failed to load: {registry.errors}")
    return [c for c in registry.checks if c.run.__module__.startswith(BUILTIN_MODULE_PREFIX)]


if __name__ == "__main__":  # python -m celery_doctor.docs [docs/checks]
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join("docs", "checks")
    for stale in (f for f in os.listdir(target) if f.endswith(".md")) if os.path.isdir(target) else ():
        os.remove(os.path.join(target, stale))
    for path in write_docs(builtin_checks(), target):
        print(path)
