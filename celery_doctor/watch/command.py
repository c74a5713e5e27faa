"""The `celery-doctor watch` command's body: resolve the target, watch (or replay), report like `scan` does."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("celery_doctor")
DEFAULT_LOST_AFTER = 30.0


def run(opts: Any) -> int:
    """`opts`: the resolved options of the `watch` command (celery_doctor/options.py). Returns the exit code."""
    from .. import cli
    from .engine import build_report

    if opts.replay:
        state, target, config = _replayed(opts)
        started = state.started_at
    else:
        started = time.time()
        state, target, config = _watched(opts)
    report, registry = build_report(state, target, config=config, select=opts.select, ignore=opts.ignore,
                                    started=started)
    cli.write_report(report, registry, opts)  # stdout or --output files; --color, --show-checks as scan
    return cli.exit_code(report, opts.fail_on)


def _replayed(opts: Any):
    """(events state, report target, no app configuration) of the recording --replay names."""
    from ..model import Target
    from ..options import UsageError
    from .engine import replay
    from .recording import RecordingError

    if opts.record or opts.enable_events:
        raise UsageError("--replay reads a recording: it takes neither --record nor --enable-events")
    try:
        state, header = replay(opts.replay, bound=opts.lost_after)  # None: the recording's own
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    target = Target(app=_text(header, "app"), broker=_text(header, "broker"), transport=_text(header, "transport"))
    return state, target, None


def _text(header: dict, key: str):
    return header.get(key) if isinstance(header.get(key), str) else None


def _watched(opts: Any):
    """(events state, report target, the app's configuration when --app loaded one) of a live watch."""
    from ..deadline import Deadline
    from ..diagnose import load_target
    from ..model import Target
    from ..options import UsageError, run_options
    from .engine import WatchError, WatchOptions, run_watch, target_for_app

    app, broker = load_target(run_options(opts, "scan"), Deadline(opts.timeout))
    config = _app_config(app) if opts.app else None
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
    return state, Target(app=opts.app, broker=target.masked, transport=target.transport), config


def _app_config(app: Any):
    from ..collectors.config import collect_config

    try:
        return collect_config(app)
    except Exception:  # noqa: BLE001 - the configuration only adds acks and time limits to the evidence
        return None
