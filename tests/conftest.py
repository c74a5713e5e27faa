"""Shared test helpers: snapshots from real Celery app objects, and running the CLI for real."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest

os.environ.setdefault("CELERY_DOCTOR_RAISE_CHECK_ERRORS", "1")

ROOT = Path(__file__).resolve().parent.parent


def make_snapshot(app, source_dir: Optional[str] = None, mode: str = "lint", options: Optional[dict] = None, **parts):
    from celery_doctor.collectors.config import collect_config
    from celery_doctor.collectors.source import collect_source
    from celery_doctor.model import Part, Snapshot, Target
    from celery_doctor.options import SnapshotOptions

    config = collect_config(app)
    all_parts = {"config": Part.gathered(config)}
    all_parts["source"] = Part.gathered(collect_source([source_dir])) if source_dir else Part.unavailable("no source in this test")
    all_parts.update(parts)
    return Snapshot(target=Target(app="test", broker=config.broker_url, transport=config.transport),
                    parts=all_parts, mode=mode, now=time.time(),
                    options=SnapshotOptions(**(options or {})))


def by_id(check_id: str):
    from celery_doctor.registry import load_registry

    check = load_registry().get(check_id)
    assert check is not None, f"no check {check_id}"
    return check


def findings_of(check, snapshot):
    return list(check.run(snapshot))


def json_places(rows: list) -> list:
    """One dict per place of a JSON report's findings (a cause seen in several places is one row): each
    occurrence with its row's other fields (check, title, ...), as findings were before rows grouped places."""
    return [{**row, **place} for row in rows for place in row.get("occurrences") or [row]]


def write_tree(base: Path, files: dict) -> Path:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return base


def run_cli(*args, cwd=None, env=None, timeout=120, input=None):
    """Run `python -m celery_doctor ARGS` as a user would; returns CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.pop("CELERY_BROKER_URL", None)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "celery_doctor", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)


@pytest.fixture
def tree(tmp_path):
    def make(files: dict) -> Path:
        return write_tree(tmp_path, files)
    return make
