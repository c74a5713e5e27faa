"""Precision on real projects: the source checks linted, as a user would (`lint --source`), on excerpts of the task
code of public Celery projects (tests/fixtures/corpus/<project>/, each with its SOURCE.md). Every finding was
judged by hand in tests/fixtures/corpus/expectations.json ("true", "false" or "debatable", with a reason): a finding
judged true must still be found, one judged false must not come back, and no finding nobody judged may appear,
so a regression either way fails. Only the source checks run: the config checks need an importable app."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
EXPECTATIONS = json.loads((CORPUS / "expectations.json").read_text(encoding="utf-8"))
SOURCE_CHECKS = ("CD50", "CD51", "CD52", "CD53", "CD540")


def lint(project: str) -> set[str]:
    """`check path:line` of every finding of the source checks on one project's excerpt (path inside it)."""
    select = [arg for prefix in SOURCE_CHECKS for arg in ("--select", prefix)]
    result = run_cli("lint", "--broker", "redis://127.0.0.1:6379/9", "--source", project, *select,
                     "--format", "json", "--timeout", "120", cwd=CORPUS, timeout=180)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    # a finding may group several places of one cause: each occurrence is judged on its own
    return {f"{f['check']} {o['location']['path'].split('/', 1)[1]}:{o['location']['line']}"
            for f in report["findings"] for o in (f.get("occurrences") or [f])}


def test_every_project_has_its_source_and_judgements():
    projects = {p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith(".")}  # not .ruff_cache
    assert projects == set(EXPECTATIONS["projects"])
    for name, project in EXPECTATIONS["projects"].items():
        assert (CORPUS / name / "SOURCE.md").is_file()
        assert all(v["judgement"] in ("true", "false", "debatable") and v["reason"]
                   for v in project["findings"].values()), name


@pytest.mark.parametrize("project", sorted(EXPECTATIONS["projects"]))
def test_corpus_findings_match_the_judgements(project):
    judged = EXPECTATIONS["projects"][project]["findings"]
    found = lint(project)
    unexpected = sorted(found - set(judged))
    came_back = sorted(k for k in found if judged.get(k, {}).get("judgement") == "false")
    lost = sorted(k for k, v in judged.items() if v["judgement"] == "true" and k not in found)
    assert not (unexpected or came_back or lost), (
        f"{project}: not judged yet: {unexpected}; judged false but found: {came_back}; judged true but no longer "
        f"found: {lost}")
