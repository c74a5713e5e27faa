"""The options table (celery_doctor/options.py) drives the flags, --help, [tool.celery-doctor], the option
classes and docs/options.md; every command resolves its options through it, trace included."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from celery_doctor import cli
from celery_doctor.options import (
    BY_KEY,
    BY_NAME,
    OPTIONS,
    FailOn,
    Format,
    RunOptions,
    ScanOptions,
    SnapshotOptions,
    UsageError,
    render_markdown,
    resolve,
    run_options,
    snapshot_options,
)
from celery_doctor.options_file import OptionsFileError, load_options

DOCS = Path(__file__).resolve().parent.parent / "docs" / "options.md"


def test_docs_options_md_is_generated_from_the_table():
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        "docs/options.md is out of date; run: .venv/bin/python -m celery_doctor.options docs/options.md")
    page = DOCS.read_text(encoding="utf-8")
    for option in OPTIONS:
        assert f"`{option.flag}`" in page and (option.key is None or f"`{option.key}`" in page)


def _help(command: str) -> str:
    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", ["lint", "scan", "trace", "checks"])
def test_every_command_has_exactly_the_flags_and_help_of_the_table(command):
    text = _help(command)
    for option in OPTIONS:
        if command in option.commands:
            for flag in option.flags:
                assert f"{flag} " in text, (command, flag)
            assert option.help_text(command) in text, (command, option.name)
        else:
            assert f"{option.flag} " not in text, (command, option.flag)


def test_management_url_help_names_the_defaults():
    assert ("RabbitMQ management API URL (default: the broker's host, http 15672; https 15671 for amqps; "
            "a guess for other AMQP ports).") in _help("scan")
    assert "[tool.celery-doctor]" in _help("lint")  # not eaten as markup


def test_the_option_classes_are_the_tables_scopes():
    names = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    assert names(ScanOptions) == {o.name for o in OPTIONS if "scan" in o.scope} | {"progress"}
    assert names(RunOptions) == {o.name for o in OPTIONS if "run" in o.scope} | {"mode", "scan", "cwd"}
    assert names(SnapshotOptions) == {"timeout", "deep", "consumer_timeout", "max_messages"}
    assert RunOptions().scan == ScanOptions() and RunOptions().sources == [] and RunOptions().timeout == 10.0
    assert ScanOptions().max_messages == 1000 and ScanOptions().deep is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        SnapshotOptions().timeout = 1  # type: ignore[misc]


def test_resolve_takes_the_command_line_then_the_file_then_the_default():
    from_file = {"timeout": 3, "format": "json", "select": ["cd1"], "deep": True, "max_messages": 7,
                 "consumer_timeout": 600, "output": ["r.json"]}
    opts = resolve("scan", {"timeout": 5.0, "select": ["cd2", "cd3"], "deep": False, "output": []}, from_file)
    assert opts.timeout == 5.0 and opts.select == ["CD2", "CD3"] and opts.format is Format.json
    assert opts.deep is True and opts.max_messages == 7 and opts.output == ["r.json"]
    assert opts.fail_on is FailOn.high and opts.sources == [] and opts.consumer_timeout == 600
    assert resolve("lint", {}, {}).timeout == 10.0 and resolve("lint", {"max_messages": 0}, {}).max_messages == 1000
    assert resolve("scan", {"max_messages": 0}, {"max_messages": 9}).max_messages == 0  # 0 is given, not absent
    run = run_options(opts, "scan", progress=True)
    assert run.mode == "scan" and run.select == ["CD2", "CD3"] and run.timeout == 5.0
    assert run.scan.timeout == 5.0 and run.scan.deep is True and run.scan.progress is True
    assert snapshot_options(run) == SnapshotOptions(timeout=5.0, deep=True, consumer_timeout=600, max_messages=7)


@pytest.mark.parametrize("command", ["lint", "scan", "trace"])
@pytest.mark.parametrize("values, message", [
    ({"timeout": 0}, "--timeout must be a positive number of seconds"),
    ({"timeout": float("nan")}, "--timeout must be a positive number of seconds"),
    ({"timeout": float("inf")}, "--timeout must be a positive number of seconds"),
    ({"max_messages": -1}, "--max-messages must be zero or more"),
])
def test_bad_values_are_usage_errors_for_every_command(command, values, message):
    with pytest.raises(UsageError, match=message):
        resolve(command, {}, values)  # from the file
    if all(command in BY_NAME[name].commands for name in values):
        with pytest.raises(UsageError, match=message):
            resolve(command, values, {})  # from the command line


@pytest.mark.parametrize("text, message", [
    ("nosuch = 1", "unknown key 'nosuch'"),
    ("peek = true", "unknown key 'peek'"),
    ('timeout = "x"', "timeout must be a number, not str"),
    ("deep = 1", "deep must be a bool, not int"),
    ("max-messages = true", "max-messages must be a int, not bool"),
    ('format = "xml"', "format must be one of text, json, sarif, markdown, openmetrics, not 'xml'"),
    ("ignore = [1]", "ignore must be a list of strings, not of int"),
])
def test_the_options_file_is_checked_against_the_table(tmp_path, text, message):
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.celery-doctor]\n{text}\n")
    with pytest.raises(OptionsFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_options(str(path))


def test_the_options_file_gives_values_by_option_name(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.celery-doctor]\nsource = "src"\nfail-on = "low"\ntimeout = 2\nmax-messages = 5\n')
    assert load_options(str(path)) == {"sources": ["src"], "fail_on": "low", "timeout": 2, "max_messages": 5}
    assert set(BY_KEY) == {"app", "broker", "source", "select", "ignore", "format", "output", "fail-on", "timeout",
                           "deep", "max-messages", "management-url", "consumer-timeout", "show-checks", "color",
                           "baseline", "write-baseline"}


def _traced(tmp_path, monkeypatch, pyproject: str, *args: str):
    """Run `trace` in-process with its search replaced: the options it would search with, and the result."""
    import celery_doctor.trace as trace_module

    (tmp_path / "pyproject.toml").write_text("[tool.celery-doctor]\n" + pyproject)
    seen = {}

    class Result:
        found = False

    def fake_trace(options, task_id):
        seen["options"] = options
        return Result()

    monkeypatch.setattr(trace_module, "trace", fake_trace)
    for renderer in ("format_trace_json", "format_trace_markdown", "format_trace_text"):
        monkeypatch.setattr(f"celery_doctor.reporters.trace.{renderer}", lambda r, name=renderer: name + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # trace sets up logging on the runner's stderr
    result = CliRunner().invoke(cli.app, ["trace", "some-id", *args])
    return seen.get("options"), result


def test_trace_honours_the_options_file(tmp_path, monkeypatch):
    options, result = _traced(tmp_path, monkeypatch, 'broker = "redis://127.0.0.1:6379/0"\ndeep = true\n'
                              'max-messages = 50\ntimeout = 4\nformat = "json"\noutput = ["t.md"]\n'
                              'management-url = "http://mq:15672"\nselect = ["cd2"]\nconsumer-timeout = 60\n')
    assert result.exit_code == 1, result.output
    assert options.broker == "redis://127.0.0.1:6379/0" and options.mode == "scan" and options.timeout == 4.0
    assert options.scan.deep is True and options.scan.max_messages == 50 and options.scan.timeout == 4.0
    assert options.scan.management_url == "http://mq:15672" and options.scan.consumer_timeout == 60
    assert options.select == ["CD2"] and options.scan.peek is False and options.scan.progress is False
    assert (tmp_path / "t.md").read_text() == "format_trace_markdown\n" and result.stdout == ""
    # the command line still wins
    options, result = _traced(tmp_path, monkeypatch, 'deep = true\ntimeout = 4\nformat = "json"\n',
                              "--broker", "redis://h/0", "--timeout", "2", "--max-messages", "3", "-f", "markdown")
    assert options.timeout == 2.0 and options.scan.max_messages == 3 and options.scan.deep is True
    assert result.stdout == "format_trace_markdown\n"


def test_trace_refuses_sarif_from_the_file_too_but_a_files_sarif_format_leaves_it_in_text(tmp_path, monkeypatch):
    options, result = _traced(tmp_path, monkeypatch, 'broker = "redis://h/0"\noutput = ["t.sarif"]\n')
    assert options is None and result.exit_code == 2
    options, result = _traced(tmp_path, monkeypatch, 'broker = "redis://h/0"\nformat = "sarif"\n')
    assert options is not None and result.stdout == "format_trace_text\n"
    options, result = _traced(tmp_path, monkeypatch, 'broker = "redis://h/0"\n', "--format", "sarif")
    assert options is None and result.exit_code == 2


def test_checks_takes_its_format_from_the_table_not_the_file(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.celery-doctor]\nformat = "json"\nnosuch = 1\n')
    monkeypatch.chdir(tmp_path)
    text = CliRunner().invoke(cli.app, ["checks"])
    assert text.exit_code == 0 and text.stdout.startswith("CD")
    data = CliRunner().invoke(cli.app, ["checks", "--format", "json"])
    assert data.exit_code == 0 and json.loads(data.stdout)[0]["id"].startswith("CD")
