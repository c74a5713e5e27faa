"""Baselines for adopting celery-doctor in CI: accept today's findings, fail on new ones.

`--write-baseline FILE` writes every finding of the run (each place of each cause) as a fingerprint with a count;
`--baseline FILE` reports the findings it holds as "baselined" (counted in the footer, not ranked, not failing
--fail-on) and ranks the others, which are new. `--write-baseline` alone reports against the file it wrote: every
finding baselined, exit 0.

A fingerprint survives line moves, as ruff's and semgrep's do: it is a hash of the check id, the subject, the
file's path and the code of the finding's line with its whitespace normalised, never the line number. A finding
without a file location (a live one, a setting found nowhere) is its check and subject. Each fingerprint has a
count: a second identical occurrence (the same line pasted again) is new.

The file is JSON: a version, then one entry per fingerprint (check, masked subject, path, count), sorted, so that a
diff of it reads. It holds no
secret: subjects are masked (they were when the checks made them, and are scrubbed again here), and code lines
appear only hashed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from typing import Any, Optional

from .masking import scrub
from .model import Finding, Location, Report
from .options import UsageError
from .ranking import rank, rank_security

VERSION = 1


def _path(location: Location) -> str:
    """The location's path as the baseline stores it: relative to the current directory when under it, with `/`."""
    path = location.path
    if os.path.isabs(path):
        relative = os.path.relpath(path)
        if not relative.startswith(".."):
            path = relative
    return path.replace("\\", "/")


class _Lines:
    """The lines of the files findings point to, read once each (a file that cannot be read has none)."""

    def __init__(self) -> None:
        self._files: dict[str, list[str]] = {}

    def code(self, location: Optional[Location]) -> str:
        if location is None or not location.line:
            return ""
        if location.path not in self._files:
            try:
                with open(location.path, encoding="utf-8", errors="replace") as handle:
                    self._files[location.path] = handle.read().splitlines()
            except OSError:
                self._files[location.path] = []
        lines = self._files[location.path]
        if not 0 < location.line <= len(lines):
            return ""
        return " ".join(lines[location.line - 1].split())


def _subject(place: Finding) -> str:
    """The subject without the line number a check may end it with (`file:proj/celery.py:6`): the line's code is
    in the fingerprint, its number must not be."""
    subject = scrub(place.subject)
    where = place.location
    if where is not None and where.line and subject.endswith(f":{where.line}"):
        subject = subject[: -len(f":{where.line}")]
    return subject


def fingerprint(place: Finding, lines: _Lines) -> str:
    path = _path(place.location) if place.location else ""
    key = "\0".join((place.check, _subject(place), path, lines.code(place.location)))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def places(report: Report) -> list[Finding]:
    """Every place of every finding in the report (causes and security), in a stable order."""
    out = [place for ranked in (*report.findings, *report.security) for place in ranked.finding.places]
    return sorted(out, key=Finding.sort_key)


# ------------------------------------------------------------------------------------------ writing


def baseline_document(report: Report) -> dict[str, Any]:
    lines = _Lines()
    counts: Counter[str] = Counter()
    described: dict[str, dict[str, Any]] = {}
    for place in places(report):
        key = fingerprint(place, lines)
        counts[key] += 1
        described.setdefault(key, {"check": place.check, "subject": _subject(place),
                                   "path": _path(place.location) if place.location else None})
    entries = [{"fingerprint": key, **described[key], "count": counts[key]} for key in counts]
    entries.sort(key=lambda e: (e["check"], e["path"] or "", e["subject"], e["fingerprint"]))
    return {"version": VERSION, "tool": "celery-doctor", "findings": entries}


def write_baseline(report: Report, path: str) -> int:
    """Write the report's findings as a baseline; the number of places written."""
    document = baseline_document(report)
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write baseline {path}: {exc.strerror or exc}") from None
    return sum(entry["count"] for entry in document["findings"])


# ------------------------------------------------------------------------------------------ reading


def load_baseline(path: str) -> Counter[str]:
    """fingerprint -> count of a baseline file; a missing or malformed file is a UsageError (exit 2)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"baseline {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise UsageError(f"baseline {path} is not a celery-doctor baseline of version {VERSION} "
                         "(write it again with --write-baseline)")
    counts: Counter[str] = Counter()
    for entry in document.get("findings") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
            raise UsageError(f"baseline {path}: an entry without a fingerprint")
        count = entry.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise UsageError(f"baseline {path}: the count of {entry['fingerprint']} is not a positive integer")
        counts[entry["fingerprint"]] += count
    return counts


def apply_baseline(report: Report, baseline: Counter[str]) -> Report:
    """The report without the places the baseline holds (each fingerprint as many times as its count): the
    rest ranked again, the others counted in `baselined`."""
    lines = _Lines()
    left = Counter(baseline)
    new: list[Finding] = []
    for place in places(report):
        key = fingerprint(place, lines)
        if left[key] > 0:
            left[key] -= 1
        else:
            new.append(place)
    baselined = len(places(report)) - len(new)
    return dataclasses.replace(report, findings=rank(new), security=rank_security(new), baselined=baselined)


def apply_options(report: Report, opts: Any) -> Report:
    """--write-baseline FILE writes every finding of this run; then the run reports only what is not in
    --baseline FILE, or, without --baseline, what is not in the baseline it just wrote (nothing: adopting a
    baseline is a run that passes, its findings counted as baselined)."""
    write_to = getattr(opts, "write_baseline", None)
    if write_to:
        write_baseline(report, write_to)
    read_from = getattr(opts, "baseline", None) or write_to
    if read_from:
        report = apply_baseline(report, load_baseline(read_from))
    return report
