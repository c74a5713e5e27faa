"""The logs part of a scan (`scan --logs PATH`): a collector like the live ones, reading local files only.

`collect_logs(ctx)` reads the paths in `ctx.options.logs` under the run's deadline: it stops between batches of
lines just before the deadline passes, and the part says what was not read. A path that names nothing readable is
a usage error raised when the options are resolved (celery_doctor/options.py), before any collection starts.
Without --logs the part is not applicable (its checks are skipped, and "Not checked" does not list it).
"""
from __future__ import annotations

from typing import Any

from ..masking import scrub
from ..model import Part
from . import InputError, expand, scan

STOP_MARGIN_S = 0.3


def logs_of(options: Any) -> tuple[str, ...]:
    return tuple(getattr(options, "logs", None) or ())


def collect_logs(ctx: Any) -> Part:
    """The logs part: every signature in the logs given, read once under the run's deadline."""
    paths = logs_of(ctx.options)
    if not paths:
        return Part.not_applicable("no --logs given")
    deadline = ctx.deadline
    try:  # stop a little before the deadline: the scan waits for this part only until then
        state = scan(expand(paths), stop=lambda: deadline.remaining() < STOP_MARGIN_S)
    except InputError as exc:
        return Part.unavailable(scrub(str(exc)))
    return Part.gathered(state)
