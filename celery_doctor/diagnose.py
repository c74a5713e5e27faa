"""One run, end to end: load the target, collect the snapshot once, run the checks, rank, report."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import threading
import time
from typing import Any, Optional

from .broker_target import BrokerTarget, BrokerURLError
from .collectors import CollectContext
from .collectors.config import collect_config
from .collectors.source import collect_source, default_source_roots, thaw_heap
from .deadline import Deadline
from .masking import SECRETS, scrub
from .model import Location, Part, PartStatus, Report, Snapshot, Target
from .options import RunOptions, snapshot_options
from .ranking import rank, rank_security
from .registry import Registry, load_registry
from .runner import run_checks
from .sources import DATA_SOURCES, gather_live
from .static.collect import describe, with_env_notes
from .static.modules import module_name
from .static.secrets import register_source_secrets
from .suppressions import recording, with_idle_suppressions
from .target import TargetError, app_for_broker, load_app, register_app_secrets, validate_management_url

log = logging.getLogger(__name__)


@contextlib.contextmanager
def bounded(seconds: float, what: str, shown: Optional[float] = None):
    """Raise TargetError if the body (user code: importing the app) runs longer than `seconds`."""
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_alarm:
        yield
        return

    def expired(signum, frame):
        raise TargetError(f"{what} did not finish within {shown or seconds:g} s (--timeout)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def load_target(options: RunOptions, deadline: Optional[Deadline] = None) -> tuple[Any, BrokerTarget]:
    """The app, and the run's one BrokerTarget: the URL the app will use, parsed, masked, its secrets
    registered and its transport decided here, once. A malformed URL is a TargetError when it was given
    (--broker, $CELERY_BROKER_URL) or is to be connected to (scan)."""
    given = options.broker or (None if options.app else os.environ.get("CELERY_BROKER_URL"))
    if options.broker and os.environ.pop("CELERY_BROKER_URL", None) is not None:
        # Celery's conf.broker_url reads $CELERY_BROKER_URL before any setting: left in place, it would win over
        # --broker and the run would read another broker than the one asked for.
        log.debug("--broker given: $CELERY_BROKER_URL is ignored")
    if options.scan.management_url:
        validate_management_url(options.scan.management_url)
    if options.app:
        with bounded(deadline.remaining(0.01) if deadline else options.timeout, f"importing app {options.app!r}",
                     shown=options.timeout):
            app = load_app(options.app, options.cwd)
        if given:
            _register_replaced_broker(app)
            app.conf.broker_url = given
    elif given:
        app = app_for_broker(given)
    else:
        raise TargetError("nothing to diagnose: give --app MODULE[:ATTR] or --broker URL (or set CELERY_BROKER_URL)")
    broker = BrokerTarget.of_app(app)
    log.debug("target: app %s, broker %s", options.app or "(none)", broker.masked)
    if broker.raw and (given or options.mode == "scan"):
        try:
            broker.validate()
        except BrokerURLError as exc:
            raise TargetError(str(exc)) from None
    return app, broker


def static_target(options: RunOptions) -> tuple[Any, Any, Any]:
    """`lint` without --app: the source (--source, default the current directory) and the Celery app found in it,
    configured statically (celery_doctor.static: nothing of the project is imported). Returns (static, tree,
    sources); static is None when the source creates no app."""
    from .static import read_static_config

    roots = list(options.sources) or [options.cwd or "."]
    missing = [r for r in roots if not os.path.exists(r)]
    if missing:
        raise TargetError(f"--source path does not exist: {missing[0]}")
    tree = recording(collect_source(roots))
    register_source_secrets(tree)
    try:
        static = read_static_config(tree, options.cwd)
    except Exception as exc:  # a source our reader does not cope with: one line, exit 2
        if os.environ.get("CELERY_DOCTOR_RAISE_CHECK_ERRORS") == "1":
            raise
        raise TargetError(f"reading the Celery configuration statically failed: {type(exc).__name__}: {exc} "
                          "(please report it; --app imports the app instead)") from None
    return static, tree, roots


def load_static_target(options: RunOptions, static: Any, roots: list) -> tuple[Any, BrokerTarget]:
    """The bare app of a static run (or, when the source has no app, a bare app for --broker) and the BrokerTarget."""
    given = options.broker or os.environ.get("CELERY_BROKER_URL")
    if options.broker:
        os.environ.pop("CELERY_BROKER_URL", None)
    if static is None:
        if not given:
            raise TargetError(f"nothing to diagnose: no Celery app found in {', '.join(roots)} (give --app "
                              "MODULE[:ATTR], --source DIR or --broker URL, or set CELERY_BROKER_URL)")
        app = app_for_broker(given)
    else:
        app = static.app
        register_app_secrets(app)
        if options.broker:
            _register_replaced_broker(app)
            app.conf.broker_url = options.broker
    broker = BrokerTarget.of_app(app)
    if broker.raw and options.broker:
        try:
            broker.validate()
        except BrokerURLError as exc:
            raise TargetError(str(exc)) from None
    return app, broker


def _register_replaced_broker(app: Any) -> None:
    """The app's own broker URL, replaced by --broker, is not the target, but its password is still a secret."""
    try:
        SECRETS.add_url(app.conf.get("broker_url"))
    except Exception:  # noqa: BLE001 - a lazy settings object may raise on access
        pass


def _config_part(app: Any, broker: BrokerTarget, static: Any) -> Part:
    try:
        if static is not None:
            from .static.collect import collect_static_config

            return Part.gathered(collect_static_config(static, broker))
        return Part.gathered(collect_config(app, broker))  # an imported app, or --broker's with Celery's defaults
    except Exception as exc:  # noqa: BLE001 - a config value of the wrong type is a reason, not a traceback
        return Part.unavailable(scrub(f"reading the app's configuration failed: {type(exc).__name__}: {exc}"))


def build_snapshot(options: RunOptions, deadline: Deadline, app: Any, broker: BrokerTarget,
                   static: Any = None, tree: Any = None) -> tuple[Snapshot, Optional[CollectContext]]:
    """`static` and `tree`: a static run's configuration and source (static_target), else the app is read."""
    parts: dict[str, Part] = {"config": _config_part(app, broker, static)}
    config = parts["config"].data
    roots = options.sources or default_source_roots(config.app_module_file if config else None, options.app)
    if tree is not None:
        parts["source"] = Part.gathered(tree)
    elif roots:
        missing = [r for r in roots if not os.path.exists(r)]
        if missing:
            raise TargetError(f"--source path does not exist: {missing[0]}")
        parts["source"] = Part.gathered(recording(collect_source(roots)))
        register_source_secrets(parts["source"].data)
    else:
        parts["source"] = Part.unavailable("no --source given and no app module to start from")
    spec = options.app or (f"{module_name(static.found.path)}:{static.found.variable}" if static else None)
    target = Target(app=spec, broker=broker.masked, transport=broker.transport)
    context = None
    if options.mode == "lint":
        for source in DATA_SOURCES:
            parts[source.name] = (Part.not_applicable("lint reads no logs (scan --logs, or celery-doctor logs)")
                                  if source.local else Part.not_requested("lint opens no network connection (use scan)"))
    else:
        context = CollectContext(app=app, broker=broker, config=config, deadline=deadline,
                                 options=options.scan, app_spec=options.app)
        parts.update(gather_live(context, broker.transport))
    snapshot = Snapshot(target=target, parts=parts, mode=options.mode, now=time.time(),
                        options=snapshot_options(options))
    return snapshot, context


def _not_checked(snapshot: Snapshot) -> tuple[tuple[str, str], ...]:
    """Parts that could not be gathered, and the pieces missing from parts that were (partial failures)."""
    out = []
    for name, part in sorted(snapshot.parts.items()):
        if part.status in (PartStatus.UNAVAILABLE, PartStatus.NOT_REQUESTED):
            out.append((name, scrub(part.reason)))
        elif part.ok and part.data is not None:
            out.extend((label, scrub(reason)) for label, reason in partly_checked(name, part.data))
    return tuple(out)


def _rabbit_note(note: str) -> tuple[str, str]:
    """A rabbitmq part's note as (what, why): 'rabbitmq queue listing: ...' names itself; the others are about the
    management API's guessed address."""
    what, sep, why = note.partition(": ")
    if sep and what.startswith("rabbitmq "):
        return what, why
    return "rabbitmq management API (address guessed)", note


def partly_checked(name: str, data: Any) -> list[tuple[str, str]]:
    """(what, why) for the pieces of a gathered live part that could not be read."""
    out: list[tuple[str, str]] = []
    try:
        if name == "rabbitmq":
            if not getattr(data, "api_reachable", True) and getattr(data, "api_error", None):
                out.append(("rabbitmq management API", f"{data.api_error} (read over AMQP instead: only queue "
                                                       "depths and consumer counts of the app's queues)"))
            if getattr(data, "amqp_error", None):
                out.append(("rabbitmq AMQP", str(data.amqp_error)))
            out.extend(_rabbit_note(str(note)) for note in (getattr(data, "notes", None) or ()))
        elif name == "redis":
            out.extend(("redis (partly read)", str(note)) for note in (getattr(data, "notes", None) or ()))
        elif name == "logs":
            out.extend(("logs (partly read)", str(note)) for note in (getattr(data, "notes", None) or ()))
        elif name == "source":
            out.extend((f"source file {path}", reason) for path, reason in data.not_checked())
        elif name == "workers":
            silent = [w.name for w in (getattr(data, "silent", None) or ())]
            if silent:
                out.append(("workers (partly read)", f"{', '.join(silent)} did not answer within {data.wait_s:g} s: "
                                       "their queues, tasks and settings were not read"))
    except Exception:  # noqa: BLE001 - a report must never fail on its own bookkeeping
        return out
    return out


def diagnose(options: RunOptions, registry: Optional[Registry] = None,
             snapshots: Optional[list] = None) -> tuple[Report, Registry]:
    """One run. `snapshots`, when given, receives the run's snapshot (openmetrics reads the broker's queues and
    the workers from it)."""
    try:
        return _diagnose(options, registry, snapshots)
    finally:
        thaw_heap()


def _diagnose(options: RunOptions, registry: Optional[Registry], snapshots: Optional[list]) -> tuple[Report, Registry]:
    started = time.time()
    deadline = Deadline(options.timeout)
    registry = registry or load_registry()
    static = tree = None
    if options.app or options.mode != "lint":
        app, broker = load_target(options, deadline)
    else:
        static, tree, roots = static_target(options)
        app, broker = load_static_target(options, static, roots)
    snapshot, _ = build_snapshot(options, deadline, app, broker, static=static, tree=tree)
    if snapshots is not None:
        snapshots.append(snapshot)
    result = run_checks(registry, snapshot, options.select, options.ignore)
    result.findings, result.results = with_idle_suppressions(
        registry.get("CD174"), snapshot.source, [c.id for c in registry.checks], result.findings, result.results)
    log.debug("ran %d checks in %s mode: %d findings, %d suppressed inline", len(result.results), options.mode,
              len(result.findings), result.suppressed)
    config = snapshot.config
    anchor = None
    if config and config.app_module_file:
        rel = os.path.relpath(config.app_module_file)
        anchor = Location(rel if not rel.startswith("..") else config.app_module_file, 1)
    report = Report(
        tool_version=_version(),
        target=snapshot.target,
        mode=options.mode,
        started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.time() - started, 2),
        findings=rank(with_env_notes(static, result.findings)),
        checks=tuple(result.results),
        not_checked=_not_checked(snapshot) + _static_not_checked(static),
        suppressed=result.suppressed,
        anchor=anchor,
        security=rank_security(result.findings),
        **_logs_extras(snapshot),
        **({"inputs": describe(static)} if static is not None else {}),
    )
    return report, registry


def _static_not_checked(static: Any) -> tuple[tuple[str, str], ...]:
    return tuple((scrub(what), scrub(why)) for what, why in (static.not_checked if static else ()))


def _logs_extras(snapshot: Snapshot) -> dict[str, Any]:
    """The timeline and the inputs line when the scan read logs (--logs)."""
    if snapshot.get("logs") is None:
        return {}
    from .logs.run import report_extras

    return report_extras(snapshot)


def _version() -> str:
    from . import __version__

    return __version__
