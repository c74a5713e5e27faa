"""Inline suppressions that silence nothing (CD174): found after the other checks ran
(celery_doctor.suppressions), since only then is it known what each comment silenced."""
from __future__ import annotations

from celery_doctor.model import Category, Impact, Runbook, Snapshot, check


@check(
    id="CD174",
    slug="suppression-silences-nothing",
    title="An inline `# celery-doctor: ignore[...]` names an unknown check or silences nothing",
    category=Category.TASK_CODE,
    needs=("source",),
    impact=Impact.LOW,
    runbook=Runbook(
        symptom="A `# celery-doctor: ignore[CDxxx]` comment stays in the code after the problem it hid was fixed, "
                "or names a check id that does not exist (a typo): the next real finding on that line would be "
                "hidden, or the one meant to be hidden is not.",
        why="A suppression silences the findings of the checks it names on its own line. One that matched no "
            "finding in a run where every check it names ran hides nothing today; one whose id matches no check "
            "(built-in or plugin) never will. Bare `ignore` comments (every check) are not reported: checks that "
            "did not run (live ones, during lint) may report on that line.",
        confirm="Remove the comment and run `celery-doctor lint` (and `scan` when the check is a live one): nothing "
                "new is reported on that line.",
        fix="Delete the comment, or correct the id (`celery-doctor checks` lists them).",
        risk="None: a comment that silences nothing changes nothing when removed.",
    ),
)
def suppression_silences_nothing(snapshot: Snapshot):
    """Its findings are added by the run after every other check (celery_doctor.suppressions)."""
    return ()


CHECKS = [suppression_silences_nothing]
