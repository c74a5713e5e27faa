"""The `celery-doctor watch` command's body: resolve the target, watch (or replay), report like `scan` does."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("celery_doctor")
DEFAULT_LOST_AFTER = 30.0


def run(opts: Any) -> int:
    """`opts`: the resolved options of the `watch` command (celery_doctor/options.py). Returns the exit code."""
    from .. import cli
    from ..collectors.config import collect_config
    from ..model import Target
    from ..options import UsageError
    from .engine import WatchError, WatchOptions, build_report, replay, run_watch, target_for_app
    from .recording import RecordingError

    started = time.time()
    config = None
    if opts.replay:
        if opts.record or opts.enable_events:
            raise UsageError("--replay reads a recording: it takes neither --record nor --enable-events")
        try:
            state, header = replay(opts.replay, bound=opts.lost_after)  # None: the recording's own
        except RecordingError as exc:
            raise UsageError(str(exc)) from None
        target = Target(app=header.get("app") if isinstance(header.get("app"), str) else None,
                        broker=header.get("broker") if isinstance(header.get("broker"), str) else None,
                        transport=header.get("transport") if isinstance(header.get("transport"), str) else None)
        started = state.started_at
    else:
        from ..diagnose import load_target
        from ..deadline import Deadline
        from ..options import run_options

        run = run_options(opts, "scan")
        app, broker = load_target(run, Deadline(opts.timeout))
        if opts.app:
            try:
                config = collect_config(app)
            except Exception:  # noqa: BLE001 - the configuration only adds acks and time limits to the evidence
                config = None
        try:
            target = target_for_app(app, opts.app, broker_url=getattr(broker, "raw", None), config=config)
        except WatchError as exc:
            raise UsageError(str(exc)) from None
        options = WatchOptions(duration=opts.duration, bound=opts.lost_after or DEFAULT_LOST_AFTER, record=opts.record,
                               enable_events=opts.enable_events, max_open=opts.max_open,
                               management_url=opts.management_url)
        log.info("watching %s (%s)%s", target.masked, target.transport,
                 f" for {opts.duration:g} s" if opts.duration else " until Ctrl-C")
        try:
            state = run_watch(target, options, view_stream=sys.stderr)
        except WatchError as exc:
            raise UsageError(str(exc)) from None
        target = Target(app=opts.app, broker=target.masked, transport=target.transport)
    report, registry = build_report(state, target, config=config, select=opts.select, ignore=opts.ignore,
                                    started=started)
    if not opts.output:
        cli.emit(cli._render(opts.format, report, registry, color=cli.use_color(sys.stdout),
                             show_checks=opts.verbose))
    for path in opts.output:
        chosen = cli.EXTENSIONS.get(os.path.splitext(path)[1].lower(), opts.format)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(cli._render(chosen, report, registry, color=False, show_checks=True))
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        log.info("wrote %s report to %s", chosen.value, path)
    return cli.exit_code(report, opts.fail_on)
