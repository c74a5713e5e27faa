"""The source-analysis helpers (celery_doctor.pyast) the source checks build on, and a helper for their tests."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

from celery_doctor import pyast
from celery_doctor.collectors.config import collect_config
from celery_doctor.collectors.source import collect_source
from celery_doctor.model import Part, Snapshot, Target
from tests.conftest import by_id, write_tree


def source_snapshot(base: Path, files: dict, app=None) -> Snapshot:
    """A lint snapshot of a source tree written under `base` (and of a real app's config, when given)."""
    root = write_tree(base, files)
    parts = {"source": Part.gathered(collect_source([str(root)]))}
    if app is not None:
        parts["config"] = Part.gathered(collect_config(app))
    else:
        parts["config"] = Part.unavailable("no app in this test")
    return Snapshot(target=Target(app=None, broker=None, transport=None), parts=parts, mode="lint", now=0.0)


def findings(check_id: str, base: Path, files: dict, app=None) -> list:
    check = by_id(check_id)
    snapshot = source_snapshot(base, files, app)
    missing = [need for need in check.needs if not snapshot.part(need).ok]
    assert not missing, f"{check_id} needs {missing}"
    return list(check.run(snapshot))


def lines(found: list) -> list[Optional[int]]:
    return sorted(f.location.line for f in found)


def text(found: list) -> str:
    return " | ".join(e for f in found for e in f.evidence)


def test_project_index_names_modules_resolves_constants_and_follows_imports(tmp_path):
    snapshot = source_snapshot(tmp_path, {
        "proj/__init__.py": "",
        "proj/settings.py": "LOCK_EXPIRE = 60 * 10\n",
        "proj/db.py": "from sqlalchemy import create_engine\nengine = create_engine('sqlite://')\n",
        "proj/web.py": "from .db import engine\n",
        "proj/tasks.py": """
            from celery import shared_task
            from .settings import LOCK_EXPIRE
            from . import db

            @shared_task(name="custom.name")
            def a():
                return LOCK_EXPIRE

            @shared_task
            def b():
                return 1
            """,
        "proj/classy.py": """
            from celery import Task

            class Base(Task):
                max_retries = None

            class Import(Base):
                def run(self, x):
                    return x
            """,
    })
    proj = pyast.project(snapshot.source)
    assert pyast.project(snapshot.source) is proj  # built once per tree
    # the modules a check can need are parsed up front; the others (settings, web) on demand, by name
    assert {"proj.db", "proj.tasks", "proj.classy"} <= {m.name for m in proj.modules}
    assert all(proj.by_name.get(name) is not None for name in ("proj", "proj.settings", "proj.web"))
    tasks = {t.name: t for t in proj.tasks}
    assert set(tasks) == {"custom.name", "proj.tasks.b", "proj.classy.Import"}
    assert isinstance(tasks["proj.classy.Import"].option("max_retries"), ast.Constant)
    module = proj.by_name["proj.tasks"]
    ret = tasks["custom.name"].node.body[0].value
    assert proj.seconds(module, ret) == 600.0
    worker = proj.worker_modules()
    assert "imported by" in worker[proj.by_name["proj.db"].path]
    assert proj.by_name["proj.web"].path not in worker  # only the web code imports it


def test_literal_seconds_keeps_its_behaviour_and_follows_names_only_when_asked():
    expr = ast.parse("2 * timedelta(minutes=5)", mode="eval").body
    assert pyast.literal_seconds(expr) == 600.0
    name = ast.parse("TTL", mode="eval").body
    assert pyast.literal_seconds(name) is None
    assert pyast.literal_seconds(name, lambda n: ast.Constant(30)) == 30.0


def line_of(source: str, needle: str, nth: int = 1) -> int:
    """The line number of the nth line containing `needle`, in a snippet as write_tree writes it."""
    import textwrap

    hits = [n for n, line in enumerate(textwrap.dedent(source).lstrip().splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not found {nth} times"
    return hits[nth - 1]


def test_periodic_task_locations_point_at_the_code(tmp_path):
    snapshot = source_snapshot(tmp_path, {"proj/__init__.py": "", "proj/celery.py": """
        from celery import Celery
        app = Celery("proj")

        @app.on_after_configure.connect
        def setup(sender, **kwargs):
            sender.add_periodic_task(60.0, ping.s(), name="ping")
        """})
    [(where, name, sig)] = pyast.periodic_task_locations(snapshot.source)
    assert where.path.endswith("proj/celery.py") and where.line == 6
    assert (name, sig) == ("ping", "ping.s()")


def test_tasks_from_decorator_factory_functions_and_the_old_periodic_task_api(tmp_path):
    snapshot = source_snapshot(tmp_path, {
        "proj/__init__.py": "",
        "proj/celery.py": "from celery import Celery\ncelery = Celery('proj')\n",
        "proj/decorators.py": """
            from celery import shared_task

            def retrying_task(*args, **kwargs):
                kwargs.setdefault("autoretry_for", (Exception,))
                return shared_task(*args, acks_late=True, **kwargs)

            def plain_helper(**kwargs):
                return dict(**kwargs)
            """,
        "proj/tasks.py": """
            from datetime import timedelta

            from celery.task import periodic_task

            from .celery import celery
            from .decorators import plain_helper, retrying_task

            @retrying_task(max_retries=None)
            def sync(x):
                return x

            @retrying_task
            def ping():
                return 1

            @celery.periodic_task(run_every=timedelta(minutes=5))
            def sweep():
                return 1

            @periodic_task(run_every=timedelta(hours=1))
            def report():
                return 1

            @plain_helper(a=1)
            def not_a_task():
                return 1
            """,
    })
    tasks = {t.name: t for t in pyast.project(snapshot.source).tasks}
    assert set(tasks) == {"proj.tasks.sync", "proj.tasks.ping", "proj.tasks.sweep", "proj.tasks.report"}
    sync = tasks["proj.tasks.sync"]
    assert set(sync.options) >= {"autoretry_for", "acks_late", "max_retries"}
    assert sync.option_origin["autoretry_for"] == "decorator factory retrying_task"
    assert sync.option_origin["max_retries"] == "decorator"
    assert "run_every" in tasks["proj.tasks.sweep"].options
