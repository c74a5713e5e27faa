"""The `celery-doctor` command line: lint, scan, checks, explain, trace."""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import sys
import tempfile
import traceback
from typing import Callable, List, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from .masking import scrub
from .options import FailOn, Format, UsageError, command, parameters
from .safe_text import printable, printable_block

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool killed by it



def _no_flag_metavars(params: list) -> list:
    """A flag takes no value: no `<bool>` after it in --help (typer's own --help and completion flags included);
    an argument's metavar (TASK_ID, PATH...) says what it is without the Python type (`<str>`) beside it."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""
        elif getattr(param, "param_type_name", "") == "argument" and getattr(param, "metavar", None):
            param.display_type_rich = lambda ctx: None
    return params


class _Group(TyperGroup):
    def get_params(self, ctx):
        return _no_flag_metavars(super().get_params(ctx))


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _no_flag_metavars(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    name="celery-doctor",
    help="Find lost Celery tasks: likely causes ranked by impact, with evidence, messages at risk and the fix.",
    add_completion=True,  # --install-completion / --show-completion: bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger("celery_doctor")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"celery-doctor {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                       metavar="", help="Print celery-doctor's version and exit.")) -> None:
    """Find lost Celery tasks: likely causes ranked by impact, with evidence, messages at risk and the fix."""


EXTENSIONS = {".json": Format.json, ".sarif": Format.sarif, ".md": Format.markdown, ".markdown": Format.markdown,
              ".txt": Format.text, ".prom": Format.openmetrics}


class OutputError(Exception):
    """stdout cannot take the report (a full disk, /dev/full, an I/O error): one line on stderr, exit 2."""


def fail_usage(message: str) -> None:
    typer.echo(f"celery-doctor: error: {printable(scrub(message))}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's last flush of stdout cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(text: str) -> None:
    """Write to stdout and flush: a reader gone is BrokenPipeError, any other failure an OutputError."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write to stdout: {exc.strerror or exc}") from None


def guarded(body: Callable[[], int]) -> None:
    """Run a command body: usage errors are one line and exit 2, crashes a line and a crash log, never a traceback."""
    from .options_file import OptionsFileError
    from .target import TargetError

    try:
        code = body()
    except typer.Exit:
        raise
    except (TargetError, OptionsFileError, UsageError) as exc:
        fail_usage(str(exc))
    except KeyboardInterrupt:
        typer.echo("celery-doctor: interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`celery-doctor checks | head`): not a crash. Quiet, like a SIGPIPE'd tool.
        _silence_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except OutputError as exc:
        # `celery-doctor scan > /dev/full`: the report was not written; say so in one line, no crash log.
        _silence_stdout()
        fail_usage(str(exc))
    except Exception as exc:  # noqa: BLE001 - last line of defence: no tracebacks for users
        with tempfile.NamedTemporaryFile("w", prefix="celery-doctor-crash-", suffix=".log", delete=False) as crash:
            crash.write(scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        typer.echo(f"celery-doctor: internal error: {printable(scrub(f'{type(exc).__name__}: {exc}'))} "
                   f"(details in {crash.name}; please attach it to a bug report)", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    from .terminal import is_terminal, text_width

    class Masking(logging.Formatter):
        """Secrets masked; the message on one line and terminal-safe (it may quote queue or task names)."""

        def formatMessage(self, record: logging.LogRecord) -> str:
            record.message = printable(record.message)
            return super().formatMessage(record)

        def format(self, record: logging.LogRecord) -> str:
            text = printable_block(scrub(super().format(record)))
            if not is_terminal(sys.stderr):
                return text
            from .reporters.text import wrap  # on a terminal, a log line never runs past its width

            width = text_width(sys.stderr)
            return "\n".join("\n     ".join(wrap(line, width - 5)) for line in text.split("\n"))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Masking("celery-doctor: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries (celery, kombu) stay quiet unless something is wrong
    logging.getLogger("celery_doctor").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fit_text(text: str, terminal_only: bool = False) -> str:
    """Plain text for stdout, every line within the terminal's width (a pipe: the stable 120 columns, or the text
    as it is with `terminal_only`)."""
    from .reporters.text import fit
    from .terminal import is_terminal, text_width

    if terminal_only and not is_terminal(sys.stdout):
        return text
    return fit(text, text_width(sys.stdout))


def use_color(stream, choice=None) -> bool:
    """--color auto|always|never (auto: a terminal, and not when NO_COLOR is set)."""
    from .terminal import use_color as decide

    return decide(stream, str(getattr(choice, "value", choice) or "auto"))


def _render(fmt: Format, report, registry, color: bool, show_checks: bool = False, snapshot=None) -> str:
    if fmt is Format.openmetrics:
        from .reporters.openmetrics import format_openmetrics

        return format_openmetrics(report, snapshot)
    from .reporters.json import format_json
    from .reporters.markdown import format_markdown
    from .reporters.sarif import format_sarif
    from .reporters.text import format_text

    if fmt is Format.json:
        return format_json(report)
    if fmt is Format.sarif:
        return format_sarif(report, registry.checks)
    if fmt is Format.markdown:
        return format_markdown(report)
    from .terminal import text_width

    return format_text(report, color=color, width=text_width(sys.stdout), show_checks=show_checks)


def exit_code(report, fail_on: FailOn) -> int:
    if fail_on is FailOn.never:
        return EXIT_OK
    threshold = {"high": 3, "medium": 2, "low": 1}[fail_on.value]
    # security findings are no likely cause, but they fail a run by their own impact like any finding
    counted = (*report.findings, *getattr(report, "security", ()))
    return EXIT_FINDINGS if any(r.finding.impact.order >= threshold for r in counted) else EXIT_OK


def _options(command_name: str, given: dict):
    """The command's options (celery_doctor/options.py): the command line, else [tool.celery-doctor], else defaults."""
    from .options import resolve
    from .options_file import find_pyproject, load_options

    return resolve(command_name, given, load_options(given.get("config") or find_pyproject()))


def _run(mode: str, given: dict) -> int:
    from .diagnose import diagnose
    from .options import run_options

    _setup_logging(given["verbose"])
    opts = _options(mode, given)
    options = run_options(opts, mode, progress=sys.stderr.isatty())
    snapshots: list = []
    report, registry = diagnose(options, snapshots=snapshots)
    from .baseline import apply_options  # --write-baseline, --baseline

    report = apply_options(report, opts)
    write_report(report, registry, opts, snapshot=snapshots[0] if snapshots else None)
    return exit_code(report, opts.fail_on)


def write_report(report, registry, opts, snapshot=None) -> None:
    """The report on stdout, or in each --output file (its format from its extension, else --format); the text
    report lists every check with --show-checks or -v, and always in a file."""
    show_checks = bool(getattr(opts, "show_checks", False) or getattr(opts, "verbose", False))
    color = getattr(opts, "color", None)
    if not opts.output:
        emit(_render(opts.format, report, registry, color=use_color(sys.stdout, color), show_checks=show_checks,
                     snapshot=snapshot))
    for path in opts.output:
        chosen = EXTENSIONS.get(os.path.splitext(path)[1].lower(), opts.format)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(_render(chosen, report, registry, color=False, show_checks=True, snapshot=snapshot))
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        log.info("wrote %s report to %s", chosen.value, path)


@command(app, "lint")
def lint(**given) -> None:
    """Static checks of the app's configuration and source. Opens no network connection."""
    guarded(lambda: _run("lint", given))


@command(app, "scan")
def scan(**given) -> None:
    """Static checks plus every live check the target allows: broker state, queued messages, workers."""
    guarded(lambda: _run("scan", given))


@command(app, "checks")
def list_checks(**given) -> None:
    """List every check: id, slug, category, default impact, what it needs."""

    def body() -> int:
        import json

        from .options import resolve
        from .registry import load_registry

        fmt = resolve("checks", given).format
        if fmt is Format.openmetrics:
            raise UsageError("checks lists checks in text or json; openmetrics is for lint, scan and serve")
        registry = load_registry()
        if fmt is Format.json:
            data = [{"id": c.id, "slug": c.slug, "title": c.title, "category": c.category.value,
                     "impact": c.impact.value, "needs": sorted(c.needs), "since": c.since} for c in registry.checks]
            data += [{"id": e.plugin, "error": e.message} for e in registry.errors]
            emit(json.dumps(data, indent=2, ensure_ascii=True) + "\n")
            return EXIT_OK
        from .terminal import text_width

        wide = text_width(sys.stdout) >= 100
        lines = []
        for c in registry.checks:
            needs = ",".join(sorted(c.needs))
            if wide:
                lines.append(f"{c.id}  {printable(c.slug):<48} {c.category.value:<9} {c.impact.value:<6} needs {needs}")
            else:  # narrow: the id and slug on one line, the rest below
                lines += [f"{c.id}  {printable(c.slug)}", f"       {c.category.value} · {c.impact.value} · needs {needs}"]
        lines += [f"{e.plugin}  failed to load: {printable(e.message)}" for e in registry.errors]
        emit(_fit_text("\n".join(printable(line) for line in lines), terminal_only=True) + "\n")
        return EXIT_OK

    guarded(body)


@app.command()
def explain(check_id: str = typer.Argument(..., metavar="CHECK", help="A check id (CD101) or slug.")) -> None:
    """Print a check's runbook: symptom, why tasks are lost, how to confirm, fix, risk of the fix."""

    def body() -> int:
        from .docs import render_check_markdown
        from .registry import load_registry

        check = load_registry().get(check_id)
        if check is None:
            raise UsageError(f"no check {check_id!r} (see `celery-doctor checks`)")
        # a plugin's strings are text too: its name and title on their line, its runbook's lines terminal-safe
        check = dataclasses.replace(check, slug=printable(check.slug), title=printable(check.title))
        emit(_fit_text(printable_block(render_check_markdown(check)), terminal_only=True))  # piped: the doc page
        return EXIT_OK

    guarded(body)


@command(app, "trace", inspect.Parameter("task_id", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                         default=typer.Argument(..., metavar="TASK_ID", help="The id of the task to look for.")))
def trace(task_id: str, **given) -> None:
    """Where is this task? Queues, unacked messages, workers and the result backend, read-only. Exit 0 found, 1 not found."""

    def body() -> int:
        from .options import run_options
        from .reporters.trace import format_trace_json, format_trace_markdown, format_trace_text
        from .trace import trace as run_trace

        _setup_logging(given["verbose"])
        if not task_id.strip() or len(task_id) > 255 or any(c.isspace() or not c.isprintable() for c in task_id):
            raise UsageError("TASK_ID must be a non-empty id without spaces (at most 255 characters)")
        if given.get("format") in (Format.sarif, Format.openmetrics):
            raise UsageError(TRACE_NO_SARIF)
        opts = _options("trace", given)
        # an options file's `format` is for lint and scan too: its sarif leaves a trace in text
        chosen = Format.text if opts.format in (Format.sarif, Format.openmetrics) else opts.format
        outputs = opts.output
        kinds = [EXTENSIONS.get(os.path.splitext(path)[1].lower(), chosen) for path in outputs]
        wrong = [path for path, kind in zip(outputs, kinds) if kind in (Format.sarif, Format.openmetrics)]
        if wrong:
            raise UsageError(f"{wrong[0]}: {TRACE_NO_SARIF}")
        options = run_options(opts, "scan")
        result = run_trace(options, task_id)
        renderers = {Format.json: format_trace_json, Format.markdown: format_trace_markdown, Format.text: format_trace_text}
        if not outputs:
            text = renderers[chosen](result)
            emit(_fit_text(text) if chosen is Format.text else text)
        for path, kind in zip(outputs, kinds):
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(renderers[kind](result))
            except OSError as exc:
                raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        return EXIT_OK if result.found else EXIT_FINDINGS

    guarded(body)


TRACE_NO_SARIF = ("trace has no SARIF or openmetrics format (it locates one task, it has no code-scanning results "
                  "or metrics): use text, json or markdown")


@command(app, "watch")
def watch(**given) -> None:
    """Follow Celery's event stream and report tasks being lost, live (Ctrl-C or --duration ends it with the report). Read-only: nothing is written to the broker."""

    def body() -> int:
        from .watch.command import run

        _setup_logging(given["verbose"])
        return run(_options("watch", given))

    guarded(body)


@command(app, "logs", inspect.Parameter("paths", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[List[str]],
                                        default=typer.Argument(None, metavar="PATH...", show_default=False,
                                                               help="Log files, globs, .gz files, or - for "
                                                                    "standard input.")))
def logs(paths: Optional[List[str]], **given) -> None:
    """Read worker, beat and kernel logs for the signatures of lost tasks: the causes ranked, the tasks they took, a timeline of the incident."""

    def body() -> int:
        from .logs.command import run

        _setup_logging(given["verbose"])
        return run(list(paths or ()), _options("logs", given))

    guarded(body)


# serve takes scan's options except those of a report's output (and --peek and --logs: not for a loop)
SERVE_SKIPS = ("format", "output", "fail_on", "show_checks", "color", "logs", "peek")


@command(app, "serve", *[p for p in parameters("scan") if p.name not in SERVE_SKIPS])
def serve(**given) -> None:
    """Prometheus exporter: scan every --interval seconds (read-only, each within --timeout) and serve the last scan's findings, queues and workers on /metrics (OpenMetrics). One per broker."""

    def body() -> int:
        from .options import resolve, run_options
        from .serve import run

        _setup_logging(given["verbose"])
        own = resolve("serve", given)
        options = run_options(_options("scan", given), "scan")
        return run(options, own.host, own.port, own.interval, say=lambda text: typer.echo(f"celery-doctor: {text}",
                                                                                             err=True))

    guarded(body)


for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def _is(exc: BaseException, name: str) -> bool:
    """Click's exception classes by name (typer vendors its own copy of click, or uses click's)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def main(args: Optional[List[str]] = None, prog_name: str = "celery-doctor") -> None:
    """The console script: bad usage is one line on stderr and exit 2, like every other bad input. `args` and
    `prog_name` let `celery doctor` (celery_command.py) run the same command line under Celery's."""
    try:
        code = app(args=args, standalone_mode=False, prog_name=prog_name)
    except KeyboardInterrupt:
        sys.stderr.write("celery-doctor: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # click's usage errors (and only those) are handled here
        if _is(exc, "NoArgsIsHelpError"):
            sys.exit(EXIT_USAGE)  # the help was printed
        if _is(exc, "Abort"):
            sys.stderr.write("celery-doctor: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        if _is(exc, "ClickException"):
            message = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            command = getattr(ctx, "command_path", None) or "celery-doctor"
            sys.stderr.write(f"celery-doctor: error: {printable(scrub(message))} (see `{command} --help`)\n")
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
        raise
    _exit(code if isinstance(code, int) else EXIT_OK)


def _exit(code: int) -> None:
    """End the process once the output is flushed, without the interpreter's teardown: freeing a large source
    lint's syntax trees one by one (and the final collections over them) took 3 of its 12 seconds (mypy ends the same
    way, for the same reason). Nothing is left to finish by then: the report is written and flushed, the
    syntax-check processes have been joined, and a connection still open is closed by the operating system, as a
    broker sees any client go (watch's RabbitMQ queue is exclusive and auto-delete: it goes with it)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    except Exception:  # noqa: BLE001 - a closed pipe: the exit code still says what happened
        pass
    os._exit(code)
