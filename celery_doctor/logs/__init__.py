"""Reading worker, beat and kernel logs for the signatures of lost tasks (`celery-doctor logs`, `scan --logs`).

readers (files, globs, gzip, stdin) -> formats (envelopes, times) -> engine (records, signatures, ledger) ->
the logs part (celery_doctor.parts.logs), which the checks in checks/logs.py read.
"""
from __future__ import annotations

from .engine import scan
from .readers import Input, InputError, expand

__all__ = ["Input", "InputError", "expand", "scan", "scan_paths"]


def scan_paths(paths, stop=None):
    """Expand `paths` (files, globs, "-") and read them: the logs part's data. InputError for a bad path;
    `stop()`, asked between batches of lines, ends the reading early (a deadline)."""
    return scan(expand(paths), stop)
