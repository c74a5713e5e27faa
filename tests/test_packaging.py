"""The wheel holds every module of the engine and the built-in checks (as celery_doctor.checks), and no
top-level `checks` package: a module missing from pyproject's package list works in an editable install and
breaks in a real one. The wheel installs and runs in a virtualenv of its own; the command line reads well
(--help, --version, shell completion)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert "Warning" not in build.stderr and "deprecated" not in build.stderr, build.stderr
    [built] = out.glob("celery_doctor-*.whl")
    return built


def test_the_wheel_ships_every_module_and_no_top_level_checks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "celery_doctor").rglob("*.py")
                if "__pycache__" not in p.parts}
    expected |= {"celery_doctor/checks/" + p.name for p in (ROOT / "checks").glob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith("checks/")], "the wheel claims a top-level 'checks' package"
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "[celery.commands]\ndoctor = celery_doctor.celery_command:doctor" in entry_points


def test_the_wheel_installs_and_runs_in_a_fresh_virtualenv(wheel, tmp_path):
    """A new virtualenv, the wheel installed in it (not editable), its dependencies those of this test run's
    environment (a path entry: no network needed), run from a directory without the source tree."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies: this environment's site-packages as a plain path entry (its .pth files, among them the
    # editable celery_doctor's finder, are not run), after the new environment's own
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr  # every declared dependency is there

    work = tmp_path / "project"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__", "plugin"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CELERY_BROKER_URL")}
    env["COLUMNS"] = "200"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=120)

    where = run(str(python), "-c", "import celery_doctor, celery_doctor.checks; print(celery_doctor.__file__)")
    assert where.stdout.startswith(site), where.stdout + where.stderr  # the wheel's, not the source tree's
    version = run(str(venv / "bin" / "celery-doctor"), "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"celery-doctor {project_version()}"
    listed = run(str(venv / "bin" / "celery-doctor"), "checks", "--format", "json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) > 100, listed.stderr  # built-in checks load
    lint = run(str(python), "-m", "celery_doctor", "lint", "--app", "examples.shop", "--format", "json",
               "--fail-on", "never")
    assert lint.returncode == 0 and json.loads(lint.stdout)["findings"], lint.stderr
    through_celery = run(str(python), "-m", "celery", "-A", "examples.shop", "doctor", "lint", "--format", "json",
                         "--fail-on", "never")
    assert through_celery.returncode == 0, through_celery.stderr
    assert json.loads(through_celery.stdout)["target"]["app"] == "examples.shop"


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_version_and_python_m():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout == f"celery-doctor {project_version()}\n"
    from celery_doctor import __version__

    assert __version__ == project_version()


@pytest.mark.parametrize("command", ["lint", "scan", "trace", "checks", "explain", "watch", "logs", "serve", ""])
def test_help_names_values_not_python_types(command):
    result = run_cli(*([command] if command else []), "--help", env={"TERM": "dumb"})
    assert result.returncode == 0, result.stderr
    assert not re.findall(r"<(?:str|bool|int|float|list\[str\])>", result.stdout), result.stdout
    if command in ("scan", "serve"):
        assert "SECONDS" in result.stdout and "MODULE[:ATTR]" in result.stdout


def test_shell_completion_completes_commands_and_choices():
    def complete(words: str, cword: int) -> list[str]:
        env = dict(os.environ, _CELERY_DOCTOR_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
        done = subprocess.run([str(Path(sys.executable).with_name("celery-doctor"))], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("celery-doctor sc", 1) == ["scan"]
    assert complete("celery-doctor scan --format ", 3) == ["text", "json", "sarif", "markdown", "openmetrics"]
    shown = run_cli("--show-completion", "bash")
    assert shown.returncode == 0 and "_CELERY_DOCTOR_COMPLETE" in shown.stdout
