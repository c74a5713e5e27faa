"""`celery -A proj doctor lint|scan|trace|watch|serve|logs|checks|explain`: celery-doctor inside Celery's own command line.

Celery's `celery` command adds every click command of the `celery.commands` entry-point group as a subcommand
(celery/bin/celery.py: `@with_plugins(entry_points(group='celery.commands'))`), after its group callback has
applied `-A/--app`, `-b/--broker` (exported as $CELERY_BROKER_URL) and `--workdir` (a chdir). This command hands
its arguments unchanged to celery-doctor's own command line (cli.main), adding `--app` with the spec `celery -A`
was given: the same options, output and exit codes as `celery-doctor`, on the app Celery loaded (find_app returns
the module's app object, which Celery's import already created).

This module is imported whenever `celery` starts (Celery loads its plugins eagerly): it imports click only.
"""
from __future__ import annotations

from typing import Optional

import click

# celery-doctor's commands that take --app; `logs`, `checks` and `explain` do not load an app.
APP_COMMANDS = ("lint", "scan", "trace", "watch", "serve")


def app_spec(ctx: click.Context) -> Optional[str]:
    """The `-A/--app` value of the root `celery` command ($CELERY_APP included), if it was a spec."""
    spec = ctx.find_root().params.get("app")
    return spec if isinstance(spec, str) and spec.strip() else None


def with_app(args: list[str], spec: Optional[str]) -> list[str]:
    """`args` with `--app SPEC` after the command name, for the commands that load an app."""
    if spec is None or not args or args[0] not in APP_COMMANDS:
        return args  # no -A: celery-doctor takes --app, --broker or $CELERY_BROKER_URL (set by `celery -b`)
    given = [a for a in args[1:] if a in ("-A", "--app") or a.startswith("--app=") or
             (a.startswith("-A") and not a.startswith("--"))]
    if given:
        raise click.UsageError(f"{given[0]} is a global option of celery here: celery -A proj doctor {args[0]} ...")
    return [args[0], "--app", spec, *args[1:]]


@click.command(
    "doctor",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def doctor(ctx: click.Context, args: tuple[str, ...], **_preload: object) -> None:
    """Find lost Celery tasks (celery-doctor): lint, scan, trace, watch, logs, checks, explain."""
    from .cli import main

    prog = f"{ctx.find_root().info_name or 'celery'} doctor"
    main(with_app(list(args), app_spec(ctx)), prog_name=prog)
