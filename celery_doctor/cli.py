"""The `celery-doctor` command line: lint, scan, checks, explain, trace."""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import sys
import tempfile
import traceback
from typing import Callable, List, Optional

import typer

from .masking import scrub
from .safe_text import printable, printable_block

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool killed by it

app = typer.Typer(
    name="celery-doctor",
    help="Find lost Celery tasks: likely causes ranked by impact, with evidence, messages at risk and the fix.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger("celery_doctor")


class Format(str, enum.Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    markdown = "markdown"


class FailOn(str, enum.Enum):
    high = "high"
    medium = "medium"
    low = "low"
    never = "never"


EXTENSIONS = {".json": Format.json, ".sarif": Format.sarif, ".md": Format.markdown, ".markdown": Format.markdown,
              ".txt": Format.text}


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit 2."""


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
        raise typer.Exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`celery-doctor checks | head`): not a crash. Quiet, like a SIGPIPE'd tool.
        _silence_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE)
    except OutputError as exc:
        # `celery-doctor scan > /dev/full`: the report was not written; say so in one line, no crash log.
        _silence_stdout()
        fail_usage(str(exc))
    except Exception as exc:  # noqa: BLE001 - last line of defence: no tracebacks for users
        crash = tempfile.NamedTemporaryFile("w", prefix="celery-doctor-crash-", suffix=".log", delete=False)
        with crash:
            crash.write(scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
        typer.echo(f"celery-doctor: internal error: {printable(scrub(f'{type(exc).__name__}: {exc}'))} "
                   f"(details in {crash.name}; please attach it to a bug report)", err=True)
        raise typer.Exit(EXIT_INTERNAL)
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


def _pick(cli_value, file_options: dict, key: str, default=None):
    if cli_value not in (None, [], ()):
        return cli_value
    return file_options.get(key, default)


def _seconds(value) -> float:
    """--timeout: a positive, finite number of seconds (nan and inf would disable every bound)."""
    seconds = float(value)
    if not (0 < seconds < float("inf")):
        raise UsageError(f"--timeout must be a positive number of seconds, not {value!r}")
    return seconds


def use_color(stream) -> bool:
    from .terminal import use_color as decide

    return decide(stream, "auto")


def _render(fmt: Format, report, registry, color: bool, show_checks: bool = False) -> str:
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
    return EXIT_FINDINGS if any(r.finding.impact.order >= threshold for r in report.findings) else EXIT_OK


def _run(mode: str, app_spec, broker, source, select, ignore, fmt, output, fail_on, timeout, deep, max_messages,
         management_url, consumer_timeout, config_file, verbose, peek=False) -> int:
    from .collectors import ScanOptions
    from .diagnose import RunOptions, diagnose
    from .options_file import find_pyproject, load_options

    _setup_logging(verbose)
    file_options = load_options(config_file or find_pyproject())
    fmt = Format(_pick(fmt and fmt.value, file_options, "format", "text"))
    fail_on_value = _pick(fail_on and fail_on.value, file_options, "fail-on", "high")
    try:
        fail_on = FailOn(fail_on_value)
    except ValueError:
        raise UsageError(f"fail-on must be one of high, medium, low, never, not {fail_on_value!r}") from None
    timeout = _seconds(_pick(timeout, file_options, "timeout", 10.0))
    max_messages = int(_pick(max_messages, file_options, "max-messages", 1000))
    if max_messages < 0:
        raise UsageError("--max-messages must be zero or more")
    options = RunOptions(
        mode=mode,
        app=_pick(app_spec, file_options, "app"),
        broker=_pick(broker, file_options, "broker"),
        sources=list(_pick(source, file_options, "source", [])),
        select=[s.upper() for s in _pick(select, file_options, "select", [])],
        ignore=[s.upper() for s in _pick(ignore, file_options, "ignore", [])],
        timeout=timeout,
        scan=ScanOptions(
            deep=bool(deep or file_options.get("deep", False)),
            max_messages=max_messages,
            management_url=_pick(management_url, file_options, "management-url"),
            consumer_timeout=_pick(consumer_timeout, file_options, "consumer-timeout"),
            peek=peek,
            progress=sys.stderr.isatty(),
            timeout=timeout,
        ),
    )
    report, registry = diagnose(options)
    outputs = list(_pick(output, file_options, "output", []))
    if not outputs:
        emit(_render(fmt, report, registry, color=use_color(sys.stdout), show_checks=verbose))
    for path in outputs:
        chosen = EXTENSIONS.get(os.path.splitext(path)[1].lower(), fmt)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(_render(chosen, report, registry, color=False, show_checks=True))
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        log.info("wrote %s report to %s", chosen.value, path)
    return exit_code(report, fail_on)


AppOpt = typer.Option(None, "--app", "-A", help="Celery app as for `celery -A`: MODULE[:ATTR].")
BrokerOpt = typer.Option(None, "--broker", "-b", help="Broker URL (default: the app's, or $CELERY_BROKER_URL).")
SourceOpt = typer.Option(None, "--source", help="Python source to analyse (repeatable; default: the app's top-level package).")
SelectOpt = typer.Option(None, "--select", help="Run only checks whose id starts with this (repeatable).")
IgnoreOpt = typer.Option(None, "--ignore", help="Skip checks whose id starts with this (repeatable).")
FormatOpt = typer.Option(None, "--format", "-f", help="Report format (default text).")
OutputOpt = typer.Option(None, "--output", "-o", help="Write the report to FILE (repeatable; format from .json/.sarif/.md/.txt, else --format).")
FailOnOpt = typer.Option(None, "--fail-on", help="Exit 1 when a finding is at or above this impact (default high).")
TimeoutOpt = typer.Option(None, "--timeout", help="Bound on the whole run, in seconds (default 10).")
ConfigOpt = typer.Option(None, "--config", help="pyproject.toml to read [tool.celery-doctor] from (default: found upwards).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")


@app.command()
def lint(
    app_spec: Optional[str] = AppOpt,
    broker: Optional[str] = BrokerOpt,
    source: Optional[List[str]] = SourceOpt,
    select: Optional[List[str]] = SelectOpt,
    ignore: Optional[List[str]] = IgnoreOpt,
    fmt: Optional[Format] = FormatOpt,
    output: Optional[List[str]] = OutputOpt,
    fail_on: Optional[FailOn] = FailOnOpt,
    timeout: Optional[float] = TimeoutOpt,
    config_file: Optional[str] = ConfigOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Static checks of the app's configuration and source. Opens no network connection."""
    guarded(lambda: _run("lint", app_spec, broker, source, select, ignore, fmt, output, fail_on, timeout,
                         False, None, None, None, config_file, verbose))


@app.command()
def scan(
    app_spec: Optional[str] = AppOpt,
    broker: Optional[str] = BrokerOpt,
    source: Optional[List[str]] = SourceOpt,
    select: Optional[List[str]] = SelectOpt,
    ignore: Optional[List[str]] = IgnoreOpt,
    fmt: Optional[Format] = FormatOpt,
    output: Optional[List[str]] = OutputOpt,
    fail_on: Optional[FailOn] = FailOnOpt,
    timeout: Optional[float] = TimeoutOpt,
    deep: bool = typer.Option(False, "--deep", help="Analyse every queued message, not a bounded sample."),
    max_messages: Optional[int] = typer.Option(None, "--max-messages", help="Messages sampled per queue without --deep (default 1000)."),
    management_url: Optional[str] = typer.Option(None, "--management-url", help="RabbitMQ management API URL (default: broker host, port 15672)."),
    consumer_timeout: Optional[float] = typer.Option(None, "--consumer-timeout", help="RabbitMQ's consumer_timeout in seconds, when known (default assumed: 1800)."),
    peek: bool = typer.Option(False, "--peek", help="RabbitMQ: read message headers with basic.get + requeue (sets redelivered, can reorder)."),
    config_file: Optional[str] = ConfigOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Static checks plus every live check the target allows: broker state, queued messages, workers."""
    guarded(lambda: _run("scan", app_spec, broker, source, select, ignore, fmt, output, fail_on, timeout,
                         deep, max_messages, management_url, consumer_timeout, config_file, verbose, peek))


@app.command("checks")
def list_checks(fmt: Format = typer.Option(Format.text, "--format", "-f", help="text or json.")) -> None:
    """List every check: id, slug, category, default impact, what it needs."""

    def body() -> int:
        import json

        from .registry import load_registry

        registry = load_registry()
        if fmt is Format.json:
            data = [{"id": c.id, "slug": c.slug, "title": c.title, "category": c.category.value,
                     "impact": c.impact.value, "needs": sorted(c.needs), "since": c.since} for c in registry.checks]
            data += [{"id": e.plugin, "error": e.message} for e in registry.errors]
            emit(json.dumps(data, indent=2, ensure_ascii=True) + "\n")
            return EXIT_OK
        lines = [f"{c.id}  {c.slug:<48} {c.category.value:<9} {c.impact.value:<6} needs {','.join(sorted(c.needs))}"
                 for c in registry.checks]
        lines += [f"{e.plugin}  failed to load: {e.message}" for e in registry.errors]
        emit("".join(printable(line) + "\n" for line in lines))  # plugins' slugs and errors are text too
        return EXIT_OK

    guarded(body)


@app.command()
def explain(check_id: str = typer.Argument(..., help="A check id (CD101) or slug.")) -> None:
    """Print a check's runbook: symptom, why tasks are lost, how to confirm, fix, risk of the fix."""

    def body() -> int:
        from .docs import render_check_markdown
        from .registry import load_registry

        check = load_registry().get(check_id)
        if check is None:
            raise UsageError(f"no check {check_id!r} (see `celery-doctor checks`)")
        # a plugin's strings are text too: its name and title on their line, its runbook's lines terminal-safe
        check = dataclasses.replace(check, slug=printable(check.slug), title=printable(check.title))
        emit(printable_block(render_check_markdown(check)))
        return EXIT_OK

    guarded(body)


@app.command()
def trace(
    task_id: str = typer.Argument(..., help="The id of the task to look for."),
    app_spec: Optional[str] = AppOpt,
    broker: Optional[str] = BrokerOpt,
    fmt: Optional[Format] = typer.Option(None, "--format", "-f", help="text, json or markdown (default text)."),
    output: Optional[List[str]] = typer.Option(None, "--output", "-o", help="Write the trace to FILE (repeatable; format from .json/.md/.txt, else --format)."),
    timeout: Optional[float] = TimeoutOpt,
    management_url: Optional[str] = typer.Option(None, "--management-url", help="RabbitMQ management API URL."),
    peek: bool = typer.Option(False, "--peek", help="RabbitMQ: read queued message headers with basic.get + requeue (sets redelivered, can reorder)."),
    deep: bool = typer.Option(False, "--deep", help="With --peek: read up to --max-messages per queue instead of a small sample."),
    max_messages: Optional[int] = typer.Option(None, "--max-messages", help="Messages read per queue (default 1000)."),
    config_file: Optional[str] = ConfigOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Where is this task? Queues, unacked messages, workers and the result backend, read-only. Exit 0 found, 1 not found."""

    def body() -> int:
        from .collectors import ScanOptions
        from .diagnose import RunOptions
        from .options_file import find_pyproject, load_options
        from .reporters.trace import format_trace_json, format_trace_markdown, format_trace_text
        from .trace import trace as run_trace

        _setup_logging(verbose)
        if not task_id.strip() or len(task_id) > 255 or any(c.isspace() or not c.isprintable() for c in task_id):
            raise UsageError("TASK_ID must be a non-empty id without spaces (at most 255 characters)")
        file_options = load_options(config_file or find_pyproject())
        if fmt is Format.sarif:
            raise UsageError(TRACE_NO_SARIF)
        # an options file's `format` is for lint and scan: its sarif does not apply to a trace
        chosen = fmt or Format(file_options.get("format", "text"))
        if chosen is Format.sarif:
            chosen = Format.text
        outputs = list(output or [])
        kinds = [EXTENSIONS.get(os.path.splitext(path)[1].lower(), chosen) for path in outputs]
        if Format.sarif in kinds:
            raise UsageError(f"{outputs[kinds.index(Format.sarif)]}: {TRACE_NO_SARIF}")
        seconds = _seconds(_pick(timeout, file_options, "timeout", 10.0))
        options = RunOptions(
            mode="scan", app=_pick(app_spec, file_options, "app"), broker=_pick(broker, file_options, "broker"),
            sources=list(file_options.get("source", [])), timeout=seconds,
            select=[s.upper() for s in file_options.get("select", [])],
            ignore=[s.upper() for s in file_options.get("ignore", [])],
            scan=ScanOptions(management_url=_pick(management_url, file_options, "management-url"), peek=peek,
                             deep=deep, max_messages=int(_pick(max_messages, file_options, "max-messages", 1000)),
                             consumer_timeout=file_options.get("consumer-timeout"), timeout=seconds),
        )
        result = run_trace(options, task_id)
        renderers = {Format.json: format_trace_json, Format.markdown: format_trace_markdown, Format.text: format_trace_text}
        if not outputs:
            emit(renderers[chosen](result))
        for path, kind in zip(outputs, kinds):
            try:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(renderers[kind](result))
            except OSError as exc:
                raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        return EXIT_OK if result.found else EXIT_FINDINGS

    guarded(body)


TRACE_NO_SARIF = "trace has no SARIF format (it locates one task, it has no code-scanning results): use text, json or markdown"


def _is(exc: BaseException, name: str) -> bool:
    """Click's exception classes by name (typer vendors its own copy of click, or uses click's)."""
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def main() -> None:
    """The console script: bad usage is one line on stderr and exit 2, like every other bad input."""
    try:
        code = app(standalone_mode=False, prog_name="celery-doctor")
    except KeyboardInterrupt:
        sys.stderr.write("celery-doctor: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - click's usage errors (and only those) are handled here
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
    sys.exit(code if isinstance(code, int) else EXIT_OK)
