"""Inline suppressions (`# celery-doctor: ignore[CD123]`) that silence nothing: the bookkeeping the runner's
suppression leaves behind, read after every check ran.

The source tree records which comments silenced a finding (RecordingTree: the runner asks the tree, see
runner._suppressed). A comment naming ids is reported when no check has such an id, or when every check it names
ran in this run and none of them reported anything on its line. A bare `ignore` (every check) is never reported:
checks that did not run (live ones during lint) might report there."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

from .masking import scrub_all
from .model import Check, CheckResult, CheckStatus, Finding, Location
from .parts.source import SourceTree


class RecordingTree(SourceTree):
    """A SourceTree that remembers the (path, line) of every suppression that silenced a finding."""

    def suppressed(self, path: Optional[str], line: Optional[int], check_id: str) -> bool:
        hit = SourceTree.suppressed(self, path, line, check_id)
        if hit:
            self.__dict__.setdefault("_used", set()).add((path, line))
        return hit

    @property
    def used(self) -> set:
        return self.__dict__.get("_used", set())


def recording(tree: Optional[SourceTree]) -> Optional[SourceTree]:
    """`tree` as a RecordingTree (the same files; made before any check indexes it)."""
    if tree is None or isinstance(tree, RecordingTree):
        return tree
    return RecordingTree(**{f.name: getattr(tree, f.name) for f in dataclasses.fields(tree) if f.init})


def _covers(ids: Iterable[str], check_id: str) -> bool:
    return any(check_id.startswith(prefix) for prefix in ids)


def idle_suppressions(check: Check, tree: Any, known: list[str], results: list[CheckResult]) -> list[Finding]:
    """The findings of `check` (CD174) for the comments of `tree` that named an unknown id or silenced nothing."""
    used = getattr(tree, "used", None)
    if used is None:
        return []
    ran = {r.id for r in results if r.status in (CheckStatus.PASSED, CheckStatus.FAILED)}
    found = []
    for source in tree.files:
        for line, ids in sorted((source.suppressions or {}).items()):
            if not ids or (source.path, line) in used or _covers(ids, check.id):
                continue
            unknown = sorted(i for i in ids if not any(k.startswith(i) for k in known))
            named = [k for k in known if _covers(ids, k)]
            if unknown:
                why = f"names {', '.join(unknown)}: no check has such an id (see `celery-doctor checks`)"
            elif named and all(k in ran for k in named):
                why = (f"every check it names ran ({', '.join(named[:6])}{' ...' if len(named) > 6 else ''}) and none "
                       "reported anything on this line: the comment silences nothing")
            else:
                continue
            found.append(check.finding(
                subject=f"suppression:{source.path}:{line}",
                evidence=scrub_all([f"# celery-doctor: ignore[{', '.join(sorted(ids))}] at {source.path}:{line}", why]),
                location=Location(source.path, line),
            ))
    return found


def with_idle_suppressions(check: Optional[Check], tree: Any, known: list[str], findings: list,
                           results: list[CheckResult]) -> tuple[list, list]:
    """The run's findings and check results with `check`'s findings added (when it ran)."""
    if check is None:
        return findings, results
    index = next((i for i, r in enumerate(results) if r.id == check.id), None)
    if index is None or results[index].status is not CheckStatus.PASSED:
        return findings, results
    extra = idle_suppressions(check, tree, known, results)
    if not extra:
        return findings, results
    results = list(results)
    results[index] = dataclasses.replace(results[index], status=CheckStatus.FAILED, findings=len(extra))
    return [*findings, *extra], results
