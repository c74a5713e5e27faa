"""docs/checks/<ID>.md are generated from each check's own runbook; they must not drift."""
from pathlib import Path

from celery_doctor.docs import HEADINGS, builtin_checks, render_check_markdown
from celery_doctor.model import CATEGORY_IMPACT, Category

DOCS = Path(__file__).resolve().parent.parent / "docs" / "checks"


def test_every_builtin_check_has_an_up_to_date_page_and_no_stale_pages():
    checks = builtin_checks()
    expected = {f"{c.id}.md": render_check_markdown(c) for c in checks}
    actual = {p.name: p.read_text(encoding="utf-8") for p in DOCS.glob("*.md")}
    stale = sorted(set(actual) - set(expected))
    missing = sorted(set(expected) - set(actual))
    drifted = sorted(name for name in set(expected) & set(actual) if expected[name] != actual[name])
    regenerate = "run: .venv/bin/python -m celery_doctor.docs docs/checks"
    assert not missing, f"missing pages {missing}; {regenerate}"
    assert not stale, f"pages of no check {stale}; {regenerate}"
    assert not drifted, f"pages out of date {drifted}; {regenerate}"


def test_every_runbook_is_complete_and_ids_are_unique():
    checks = builtin_checks()
    ids = [c.id for c in checks]
    slugs = [c.slug for c in checks]
    assert len(ids) == len(set(ids)) and len(slugs) == len(set(slugs))
    for check in checks:
        rb = check.runbook
        for heading, text in zip(HEADINGS, (rb.symptom, rb.why, rb.confirm, rb.fix, rb.risk)):
            assert text and len(text.strip()) > 3, f"{check.id}: empty '{heading}'"
        assert check.category in CATEGORY_IMPACT or check.category is Category.SECURITY
        page = render_check_markdown(check)
        for heading in HEADINGS:
            assert f"## {heading}" in page
