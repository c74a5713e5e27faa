"""The first screen (issue: a report an on-call engineer can read in any terminal).

The real CLI runs on pseudo-terminals of 60, 80, 100 and 160 columns and through a pipe: no line is wider
than the terminal, the verdict comes first, the ranked causes and details follow, "Not checked" stays, the
per-check list appears only on request, the summary line is last. Colour follows NO_COLOR.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from celery_doctor.reporters.text import wrap

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ("--app", "examples.shop")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(*args: str, columns: int, env: dict | None = None, timeout: float = 60) -> str:
    """Run `python -m celery_doctor ARGS` with stdout and stderr on a pseudo-terminal `columns` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    full_env = dict(os.environ)
    full_env.pop("CELERY_BROKER_URL", None)
    full_env.pop("COLUMNS", None)
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "celery_doctor", *args], cwd=ROOT, env=full_env,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(10)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def visible(text: str) -> str:
    return ANSI.sub("", text)


def widest(text: str) -> int:
    return max(len(line) for line in visible(text).split("\n"))


def sections(text: str) -> list[str]:
    """The order in which the report's sections start."""
    names = ("Verdict:", "Ranked causes", "Details of the top", "Not checked", "Checks")
    order = []
    for line in visible(text).split("\n"):
        for name in names:
            if line.startswith(name) and name not in order:
                order.append(name)
    return order


@pytest.mark.parametrize("columns", [60, 80, 100, 160])
def test_the_lint_report_fits_the_terminal_and_leads_with_the_verdict(columns):
    out = on_terminal("lint", *EXAMPLE, "--fail-on", "never", columns=columns)
    assert "Traceback" not in out
    assert widest(out) <= columns, [line for line in visible(out).split("\n") if len(line) > columns]
    lines = [line for line in visible(out).split("\n") if line.strip()]
    verdict = next(i for i, line in enumerate(lines) if line.startswith("Verdict: "))
    assert lines[0].startswith("celery-doctor ") and all(line.startswith("     ") for line in lines[1:verdict])
    todo = next(i for i, line in enumerate(lines) if line.startswith("What to do first:"))
    assert todo <= verdict + 2 and lines[todo + 1].startswith("  1. ")
    assert sections(out) == ["Verdict:", "Ranked causes", "Details of the top", "Not checked"]
    summary = next(i for i, line in enumerate(lines) if re.match(r"\d+ findings \(", line))
    assert all(line.startswith("     ") for line in lines[summary + 1:])  # the summary line (wrapped) is last
    assert re.match(r"\d+ findings \(\d+ high, \d+ medium, \d+ low\) · \d+ checks: ",
                    " ".join(line.strip() for line in lines[summary:]))
    assert not re.search(r"CD101 acks-early-crash-loss \.+ passed", out)  # quiet by default
    if columns < 100:
        assert re.search(r"^1\. high · - at risk · CD1\d\d$", visible(out), re.M)  # one block per finding
    else:
        assert re.search(r"^  #  impact   at risk  cause$", visible(out), re.M)


def test_colour_only_on_a_terminal_and_never_with_no_color():
    coloured = on_terminal("lint", *EXAMPLE, "--fail-on", "never", columns=100)
    plain = on_terminal("lint", *EXAMPLE, "--fail-on", "never", columns=100, env={"NO_COLOR": "1"})
    assert ANSI.search(coloured) and not ANSI.search(plain)
    assert visible(coloured) == plain  # colour carries nothing the words do not say


def test_a_pipe_gets_a_stable_layout_whatever_columns_says():
    env = dict(os.environ, COLUMNS="300")
    env.pop("CELERY_BROKER_URL", None)
    outs = [subprocess.run([sys.executable, "-m", "celery_doctor", "lint", *EXAMPLE, "--fail-on", "never"],
                           cwd=ROOT, env=dict(env, COLUMNS=cols), capture_output=True, text=True).stdout
            for cols in ("300", "50")]
    assert outs[0] == outs[1]
    assert widest(outs[0]) <= 120 and not ANSI.search(outs[0])
    assert sections(outs[0])[:3] == ["Verdict:", "Ranked causes", "Details of the top"]


def test_long_values_wrap_at_separators_not_mid_name():
    subject = "setting:broker_transport_options.visibility_timeout"
    assert wrap(subject, 40) == ["setting:broker_transport_options.", "visibility_timeout"]
    assert wrap("a b c", 10) == ["a b c"]
    assert all(len(line) <= 7 for line in wrap("x" * 20, 7))  # no separator at all: folded


def test_verbose_adds_the_status_line_of_every_check():
    out = visible(on_terminal("lint", *EXAMPLE, "--fail-on", "never", "-v", columns=80))
    assert sections(out)[-1] == "Checks"
    assert re.search(r"CD101 acks-early-crash-loss \.+ passed", out)
    assert widest(out) <= 80


@pytest.mark.parametrize("columns", [60, 80])
def test_explain_checks_and_trace_fit_the_terminal_too(columns):
    for args in (("explain", "CD102"), ("checks",),
                 ("trace", "0b6f3d0e-8c3a-4c8e-9d6a-000000000000", "--broker", "redis://127.0.0.1:6379/13",
                  "--timeout", "3")):
        out = on_terminal(*args, columns=columns)
        assert "Traceback" not in out, args
        assert widest(out) <= columns, (args, [line for line in visible(out).split("\n") if len(line) > columns])


def test_color_option_and_show_checks_option():
    always = subprocess.run([sys.executable, "-m", "celery_doctor", "lint", *EXAMPLE, "--fail-on", "never",
                             "--color", "always", "--show-checks"], cwd=ROOT, capture_output=True, text=True)
    assert ANSI.search(always.stdout) and sections(always.stdout)[-1] == "Checks"
    never = on_terminal("lint", *EXAMPLE, "--fail-on", "never", "--color", "never", columns=100)
    assert not ANSI.search(never)
    bad = subprocess.run([sys.executable, "-m", "celery_doctor", "lint", *EXAMPLE, "--color", "pink"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
