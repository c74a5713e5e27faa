"""The `celery-doctor logs PATH...` command's body: read the logs, report like `scan` does (same formats, outputs
and exit codes), the checks that read logs only."""
from __future__ import annotations

import logging
from typing import Any, Sequence

log = logging.getLogger("celery_doctor")


def run(paths: Sequence[str], opts: Any) -> int:
    """`opts`: the resolved options of the `logs` command (celery_doctor/options.py). Returns the exit code."""
    from .. import cli
    from ..options import UsageError
    from .readers import InputError
    from .run import diagnose_logs

    if not paths:
        raise UsageError("give at least one log: a file, a glob, a .gz file, or - for standard input")
    try:
        report, registry = diagnose_logs(paths, select=opts.select, ignore=opts.ignore)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    log.info("read %s", report.inputs)
    cli.write_report(report, registry, opts)  # stdout or --output files; --color, --show-checks as scan
    return cli.exit_code(report, opts.fail_on)
