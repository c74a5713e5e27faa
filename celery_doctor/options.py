"""Every option of the command line and of `[tool.celery-doctor]`, spelled once: `OPTIONS`.

Each `Option` carries its flags, its `[tool.celery-doctor]` key, its type, choices, default, help text and the
commands that take it. Everything else is driven by this table:

- the typer parameters of `lint`, `scan`, `trace`, `checks`, `watch` and `logs`, and so their `--help`
  (`parameters`);
- the validation of `[tool.celery-doctor]` (celery_doctor/options_file.py): unknown keys, types, choices;
- the values a command runs with (`resolve`: the command line, else the options file, else the default;
  then checked: a bad value is a `UsageError`, one line, exit 2);
- `RunOptions` (what `diagnose` and `trace` take), `ScanOptions` (what the collectors read) and
  `SnapshotOptions` (`Snapshot.options`, what checks may read), generated from the options' scopes;
- docs/options.md (`python -m celery_doctor.options docs/options.md`; a test fails when it drifts).

An option with a key is read from `[tool.celery-doctor]` by every command that reads the file (lint, scan,
trace), whether or not that command has its flag: `trace` takes `source`, `select`, `ignore` and
`consumer-timeout` from the file only.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional

COMMANDS = ("lint", "scan", "trace", "checks", "watch", "logs")
FILE_COMMANDS = ("lint", "scan", "trace", "watch", "logs")  # the commands that read [tool.celery-doctor]
RUN_COMMANDS = ("lint", "scan", "trace", "watch")
REPORT_COMMANDS = ("lint", "scan")


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit 2."""


def _seconds(value: Any) -> float:
    """A positive, finite number of seconds (nan and inf would disable every bound)."""
    seconds = float(value)
    if not (0 < seconds < math.inf):
        raise UsageError(f"--timeout must be a positive number of seconds, not {value!r}")
    return seconds


def _not_negative(value: Any) -> int:
    count = int(value)
    if count < 0:
        raise UsageError("--max-messages must be zero or more")
    return count


def _positive(flag: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        seconds = float(value)
        if not (0 < seconds < math.inf):
            raise UsageError(f"{flag} must be a positive number of seconds, not {value!r}")
        return seconds

    return check


def _at_least_one(value: Any) -> int:
    count = int(value)
    if count < 1:
        raise UsageError("--max-open must be 1 or more")
    return count


def _log_paths(values: list) -> list:
    """--logs: every path names a readable file (a glob at least one), or is - (standard input)."""
    from .logs.readers import InputError, expand

    try:
        expand(values)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return values


def _port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0 (any free port) to 65535, not {value!r}")
    return port


def _upper(values: list) -> list:
    return [value.upper() for value in values]


@dataclass(frozen=True)
class Option:
    """One option. `name` is its Python name everywhere (RunOptions.sources, ScanOptions.max_messages, ...)."""

    name: str
    flags: tuple[str, ...]
    type: type  # str, int, float, bool or list (a repeatable option: a list of strings)
    default: Any
    help: str  # `{default}` is replaced by the default
    commands: tuple[str, ...]  # the commands that have the flag
    key: Optional[str] = None  # its [tool.celery-doctor] key; None: command line only
    choices: tuple[str, ...] = ()
    help_for: Mapping[str, str] = field(default_factory=dict)  # a command's own help text, when it differs
    scope: tuple[str, ...] = ()  # "run": a RunOptions field; "scan": a ScanOptions field; "snapshot": Snapshot.options
    check: Optional[Callable[[Any], Any]] = None  # validates and normalises the value (raises UsageError)

    @property
    def flag(self) -> str:
        return self.flags[0]

    @property
    def enum(self) -> Optional[type[enum.Enum]]:
        return ENUMS.get(self.name)

    def help_text(self, command: Optional[str] = None) -> str:
        text = self.help_for.get(command, self.help) if command else self.help
        return text.format(default=_shown(self.default))

    def file_types(self) -> tuple[tuple[type, ...], str]:
        """(accepted Python types, their name in an error) of the key's value in [tool.celery-doctor]."""
        if self.type is float:
            return (int, float), "number"
        return (self.type,), self.type.__name__

    def finish(self, value: Any) -> Any:
        """The resolved value, checked and normalised."""
        if self.type is list:
            value = list(value or ())
        elif self.enum is not None and value is not None:
            raw = value.value if isinstance(value, enum.Enum) else value
            try:
                value = self.enum(raw)
            except ValueError:
                raise UsageError(f"{self.key or self.flag} must be one of {', '.join(self.choices)}, "
                                 f"not {raw!r}") from None
        if self.check is not None and value is not None:
            value = self.check(value)
        return value


FORMATS = ("text", "json", "sarif", "markdown", "openmetrics")
IMPACTS = ("high", "medium", "low", "never")

OPTIONS: tuple[Option, ...] = (
    Option("app", ("--app", "-A"), str, None, "Celery app as for `celery -A`: MODULE[:ATTR] (imported; `lint` "
           "without it reads the app's configuration statically from the source, importing nothing).",
           RUN_COMMANDS, key="app", scope=("run",)),
    Option("broker", ("--broker", "-b"), str, None, "Broker URL (default: the app's, or $CELERY_BROKER_URL).",
           RUN_COMMANDS, key="broker", scope=("run",)),
    Option("sources", ("--source",), list, (),
           "Python source to analyse (repeatable; default: the app's top-level package; for `lint` without --app, "
           "the current directory, where the Celery configuration is read statically).",
           REPORT_COMMANDS, key="source", scope=("run",)),
    Option("select", ("--select",), list, (), "Run only checks whose id starts with this (repeatable).",
           (*REPORT_COMMANDS, "watch", "logs"), key="select", scope=("run",), check=_upper),
    Option("ignore", ("--ignore",), list, (), "Skip checks whose id starts with this (repeatable).",
           (*REPORT_COMMANDS, "watch", "logs"), key="ignore", scope=("run",), check=_upper),
    Option("format", ("--format", "-f"), str, "text", "Report format (default {default}).",
           COMMANDS, key="format", choices=FORMATS,
           help_for={"trace": "text, json or markdown (default {default}).", "checks": "text or json."}),
    Option("output", ("--output", "-o"), list, (),
           "Write the report to FILE (repeatable; format from .json/.sarif/.md/.txt/.prom, else --format).",
           (*RUN_COMMANDS, "logs"), key="output",
           help_for={"trace": "Write the trace to FILE (repeatable; format from .json/.md/.txt, else --format)."}),
    Option("fail_on", ("--fail-on",), str, "high",
           "Exit 1 when a finding is at or above this impact (default {default}).",
           (*REPORT_COMMANDS, "watch", "logs"), key="fail-on", choices=IMPACTS),
    Option("timeout", ("--timeout",), float, 10.0, "Bound on the whole run, in seconds (default {default}).",
           RUN_COMMANDS, key="timeout", scope=("run", "scan", "snapshot"), check=_seconds,
           help_for={"watch": "Bound on importing the app and connecting, in seconds (default {default}); the watch "
                              "itself lasts --duration."}),
    Option("deep", ("--deep",), bool, False, "Analyse every queued message, not a bounded sample.",
           ("scan", "trace"), key="deep", scope=("scan", "snapshot"),
           help_for={"trace": "With --peek: read up to --max-messages per queue instead of a small sample."}),
    Option("max_messages", ("--max-messages",), int, 1000,
           "Messages sampled per queue without --deep (default {default}).",
           ("scan", "trace"), key="max-messages", scope=("scan", "snapshot"), check=_not_negative,
           help_for={"trace": "Messages read per queue (default {default})."}),
    Option("management_url", ("--management-url",), str, None,
           "RabbitMQ management API URL (default: the broker's host, http 15672; https 15671 for amqps; "
           "a guess for other AMQP ports).",
           ("scan", "trace", "watch"), key="management-url", scope=("scan",),
           help_for={"watch": "RabbitMQ management API URL, to tell a silent worker busy from dead by its mailbox queue "
                              "(default: the broker's host, http 15672; https 15671 for amqps)."}),
    Option("consumer_timeout", ("--consumer-timeout",), float, None,
           "RabbitMQ's consumer_timeout in seconds, when known (default assumed: 1800).",
           ("scan",), key="consumer-timeout", scope=("scan", "snapshot")),
    Option("peek", ("--peek",), bool, False,
           "RabbitMQ: read queued message headers with basic.get + requeue (sets redelivered, can reorder).",
           ("scan", "trace"), scope=("scan",)),
    Option("logs", ("--logs",), list, (),
           "Worker, beat or kernel log to read for the signatures of lost tasks, added to the ranking with a "
           "timeline (repeatable; files, globs, .gz, - for standard input; read within --timeout).",
           ("scan",), scope=("scan",), check=_log_paths),
    Option("config", ("--config",), str, None,
           "pyproject.toml to read [tool.celery-doctor] from (default: found upwards).", (*RUN_COMMANDS, "logs")),
    Option("verbose", ("--verbose", "-v"), bool, False,
           "Log progress to stderr (and list every check's status, as --show-checks).", (*RUN_COMMANDS, "logs")),
    Option("show_checks", ("--show-checks",), bool, False,
           "List every check's status (passed, failed, skipped and why) in the text report.",
           (*REPORT_COMMANDS, "watch", "logs"), key="show-checks"),
    Option("baseline", ("--baseline",), str, None,
           "Report only findings not in this baseline file (written by --write-baseline); the others are counted "
           "as baselined and do not fail --fail-on.", REPORT_COMMANDS, key="baseline"),
    Option("write_baseline", ("--write-baseline",), str, None,
           "Write every finding of this run to FILE as a baseline (fingerprints that survive line moves; no "
           "secrets), for --baseline; without --baseline, this run reports against it and passes.", REPORT_COMMANDS,
           key="write-baseline"),
    Option("color", ("--color",), str, "auto",
           "Colour the text output: auto (only a terminal, and not when NO_COLOR is set), always or never "
           "(default {default}).", (*COMMANDS, "watch", "logs"), key="color", choices=("auto", "always", "never")),
    # watch only (celery_doctor/watch)
    Option("duration", ("--duration",), float, None,
           "Watch this many seconds, then report (default: until Ctrl-C, which reports too).", ("watch",),
           check=_positive("--duration")),
    Option("lost_after", ("--lost-after",), float, None,
           "Report a task sent and not received by any worker within this many seconds (default 30; with "
           "--replay, the recording's).", ("watch",), check=_positive("--lost-after")),
    Option("record", ("--record",), str, None,
           "Write what the watch receives to FILE (JSON lines: masked, no message bodies), for --replay.",
           ("watch",)),
    Option("replay", ("--replay",), str, None,
           "Rebuild the report from a recording made with --record (no broker needed).", ("watch",)),
    Option("enable_events", ("--enable-events",), bool, False,
           "Turn the workers' task events on for the watch (celery control enable_events) and off at its end "
           "(disable_events), also on Ctrl-C. This changes the workers.", ("watch",)),
    Option("max_open", ("--max-open",), int, 10000,
           "Open tasks the ledger keeps at most; the oldest are dropped and counted (default {default}).",
           ("watch",), check=_at_least_one),
    # serve only (celery_doctor/serve.py); serve also takes scan's options but those of the report's output
    Option("port", ("--port",), int, 9808,
           "Port to serve /metrics on (default {default}; 0: any free port, said on stderr).", ("serve",),
           check=_port),
    Option("host", ("--host",), str, "127.0.0.1",
           "Address to listen on (default {default}; 0.0.0.0 for every interface, e.g. in a container).",
           ("serve",)),
    Option("interval", ("--interval",), float, 60.0,
           "Seconds between the end of a scan and the start of the next (default {default}); each scan is "
           "bounded by --timeout.", ("serve",), check=_positive("--interval")),
)

BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}
BY_KEY: Mapping[str, Option] = {option.key: option for option in OPTIONS if option.key}


def _enum_name(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


# Format, FailOn: the choices of an option as a str Enum (typer shows and checks them).
ENUMS: Mapping[str, type[enum.Enum]] = {
    option.name: enum.Enum(_enum_name(option.name), [(c, c) for c in option.choices], type=str,  # type: ignore[misc]
                           module=__name__)
    for option in OPTIONS if option.choices
}
Format = ENUMS["format"]
FailOn = ENUMS["fail_on"]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


# --------------------------------------------------------------------------- the option classes


def _annotation(option: Option) -> str:
    if option.type is list:
        return "list[str]"
    if option.type is bool:
        return "bool"
    inner = _enum_name(option.name) if option.choices else option.type.__name__
    return inner if option.default is not None else f"Optional[{inner}]"


def _field(option: Option) -> tuple[str, str, Any]:
    if option.type is list:
        return option.name, _annotation(option), field(default_factory=list)
    return option.name, _annotation(option), field(default=option.default)


def _options_class(name: str, scope: Optional[str], doc: str, before: tuple = (), after: tuple = (),
                   frozen: bool = False) -> type:
    """A dataclass whose fields are the options of `scope` (every option when None), between `before` and `after`."""
    fields = [*before, *(_field(o) for o in OPTIONS if scope is None or scope in o.scope), *after]
    cls = dataclasses.make_dataclass(name, fields, frozen=frozen, namespace={"__doc__": doc})
    cls.__module__ = __name__
    return cls


ScanOptions = _options_class(
    "ScanOptions", "scan",
    "What the live collectors read: the options of scope 'scan', and `progress` (a progress display on stderr, "
    "only when it is a terminal).",
    after=(("progress", "bool", field(default=False)),))

RunOptions = _options_class(
    "RunOptions", "run",
    "What `diagnose` and `trace` take: `mode` ('lint' or 'scan'), the options of scope 'run', the collectors' "
    "ScanOptions and the directory the app is imported from.",
    before=(("mode", "str", field(default="scan")),),
    after=(("scan", "ScanOptions", field(default_factory=ScanOptions)), ("cwd", "Optional[str]", field(default=None))))

SnapshotOptions = _options_class(
    "SnapshotOptions", "snapshot",
    "`Snapshot.options`: the run's options a check may read (read-only), as attributes.", frozen=True)

Options = _options_class(
    "Options", None,
    "Every option's value for one command: from the command line, else [tool.celery-doctor], else its default.",
    frozen=True)


def run_options(options: Any, mode: str, progress: bool = False) -> Any:
    """The RunOptions (with its ScanOptions) of resolved `Options`."""
    scan = ScanOptions(progress=progress, **{o.name: getattr(options, o.name) for o in OPTIONS if "scan" in o.scope})
    return RunOptions(mode=mode, scan=scan, **{o.name: getattr(options, o.name) for o in OPTIONS if "run" in o.scope})


def snapshot_options(run: Any) -> Any:
    """The SnapshotOptions of a RunOptions (a run-wide value wins over the collectors' copy of it)."""
    return SnapshotOptions(**{o.name: getattr(run if "run" in o.scope else run.scan, o.name)
                              for o in OPTIONS if "snapshot" in o.scope})


# --------------------------------------------------------------------------- resolving a command's options


def _missing(option: Option, value: Any) -> bool:
    if option.type is bool:
        return not value  # a flag: absent is False, and there is no --no-flag to say False explicitly
    return value is None or (option.type is list and not value)


def resolve(command: str, given: Mapping[str, Any], from_file: Optional[Mapping[str, Any]] = None) -> Any:
    """Every option's value for `command`: `given` (the command line, by name), else `from_file`
    ([tool.celery-doctor], by name, already validated), else the default; then checked (UsageError)."""
    from_file = from_file or {}
    values = {}
    for option in OPTIONS:
        value = given.get(option.name) if command in option.commands else None
        if _missing(option, value) and option.key is not None:
            value = from_file.get(option.name)
        if _missing(option, value):
            value = option.default
        values[option.name] = option.finish(value)
    return Options(**values)


# --------------------------------------------------------------------------- typer parameters


# What --help shows for an option's value (typer would show the Python type: <str>, <list[str]>, <bool>).
METAVARS: Mapping[str, str] = {
    "app": "MODULE[:ATTR]", "broker": "URL", "sources": "PATH", "select": "ID", "ignore": "ID", "output": "FILE",
    "management_url": "URL", "logs": "PATH", "config": "FILE", "record": "FILE", "replay": "FILE", "port": "PORT",
    "host": "ADDRESS", "baseline": "FILE", "write_baseline": "FILE",
}


def metavar(option: Option) -> str:
    """The value's name in --help: none for a flag, the choices, else a word (SECONDS for every float option)."""
    if option.type is bool:
        return ""
    if option.choices:
        return "[" + "|".join(option.choices) + "]"
    return METAVARS.get(option.name) or {int: "N", float: "SECONDS"}.get(option.type, "TEXT")


def parameters(command: str) -> list[inspect.Parameter]:
    """The typer parameters of `command`, in the table's order. A command that reads the options file gets
    None for an option not given (so the file can fill it in); `checks` gets the defaults themselves."""
    import typer
    from rich.markup import escape

    out = []
    for option in OPTIONS:
        if command not in option.commands:
            continue
        if option.type is bool:
            annotation: Any = bool
            default: Any = False
        else:
            base = option.enum or (str if option.type is list else option.type)
            annotation = Optional[List[base]] if option.type is list else Optional[base]  # type: ignore[valid-type]
            default = None
            if command not in FILE_COMMANDS and option.default is not None:
                annotation, default = base, option.finish(option.default)
        info = typer.Option(default, *option.flags, help=escape(option.help_text(command)), metavar=metavar(option))
        out.append(inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                     annotation=annotation))
    return out


def command(app: Any, name: str, *arguments: inspect.Parameter) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `body` as the typer command `name`, its parameters the arguments given and the options of the
    table for `name`. `body` is called with them all as keyword arguments; its docstring is the command's help."""

    def register(body: Callable[..., Any]) -> Callable[..., Any]:
        def callback(**given: Any) -> Any:
            return body(**given)

        callback.__name__ = body.__name__
        callback.__qualname__ = body.__qualname__
        callback.__doc__ = body.__doc__
        callback.__module__ = body.__module__
        callback.__signature__ = inspect.Signature([*arguments, *parameters(name)])  # type: ignore[attr-defined]
        app.command(name)(callback)
        return body

    return register


# --------------------------------------------------------------------------- docs/options.md


def file_only(command_name: str) -> list[Option]:
    """The options `command_name` takes from [tool.celery-doctor] though it has no flag for them."""
    return [o for o in OPTIONS if o.key and command_name not in o.commands and o.scope]


def render_markdown() -> str:
    """docs/options.md: the table of every option, from OPTIONS."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def type_of(option: Option) -> str:
        if option.choices:
            return " \\| ".join(f"`{c}`" for c in option.choices)
        return {str: "text", int: "integer", float: "seconds" if "timeout" in option.name else "number",
                bool: "flag", list: "list of text (repeatable)"}[option.type]

    def default_of(option: Option) -> str:
        if option.type is bool:
            return "off"
        if option.default in (None, ()):
            return "-"
        return f"`{_shown(option.default)}`"

    lines = [
        "# Options",
        "",
        "Generated from `celery_doctor/options.py`, the one table every option is spelled in (the command line,",
        "`--help`, the `[tool.celery-doctor]` keys of `pyproject.toml` and their checks are all driven by it):",
        "`python -m celery_doctor.options docs/options.md`; a test fails when this page drifts.",
        "",
        "A value on the command line wins over `[tool.celery-doctor]` in `pyproject.toml`, which wins over the",
        "default. In the file, an unknown key, a value of the wrong type or one not among the choices is a usage",
        "error (exit 2). " + ", ".join(f"`{c}`" for c in FILE_COMMANDS) + " read the file (`checks` does not), "
        "each taking every key it uses, also those it has no flag for (`trace` takes "
        + ", ".join(f"`{o.key}`" for o in file_only("trace")) + " from the file only). `trace` writes no SARIF:",
        "`--format sarif` or an output ending in `.sarif` is a usage error, on the command line or in the file;",
        "a `format = \"sarif\"` in the file (meant for `lint` and `scan`) leaves `trace` in text.",
        "",
        "| option | `[tool.celery-doctor]` key | value | default | commands | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        flags = ", ".join(f"`{f}`" for f in option.flags)
        key = f"`{option.key}`" if option.key else "(command line only)"
        helps = [cell(option.help_text())]
        helps += [f"{c}: {cell(option.help_text(c))}" for c in option.commands if c in option.help_for]
        lines.append(f"| {flags} | {key} | {type_of(option)} | {default_of(option)} | "
                     f"{', '.join(option.commands)} | {'<br>'.join(helps)} |")
    lines += [
        "",
        "Example:",
        "",
        "```toml",
        "[tool.celery-doctor]",
        'app = "proj"',
        'fail-on = "medium"',
        'ignore = ["CD147"]',
        "timeout = 15",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m celery_doctor.options [docs/options.md]
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/options.md"
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(render_markdown())
    print(target)
