"""The source lint on large trees: the prefilter (files without anything the checks look for are not parsed)
changes no finding, deferred files are still found by name, and no file is skipped silently: one that cannot be
read, decoded or parsed, or a tree cut short, is listed under Not checked (text and JSON)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, write_tree

# A project whose tasks reach into files that hold none of the prefilter's tokens: a decorator factory used in
# another module, a task class through an intermediate class, a model through the project's own base model, a
# helper and a constant of a plain module, and an engine module imported by the worker through a plain module.
CROSS_FILE = {
    "proj/__init__.py": "",
    "proj/celery.py": """
        from celery import Celery
        app = Celery("proj", broker="redis://127.0.0.1:6379/0")
        app.autodiscover_tasks(["proj"])
        """,
    "proj/decorators.py": """
        from celery import shared_task
        background = shared_task(autoretry_for=(Exception,), max_retries=None, acks_late=True)
        """,
    "proj/jobs.py": """
        import logging
        from proj.decorators import background
        log = logging.getLogger(__name__)


        @background
        def sync_catalogue(url):
            try:
                fetch(url)
            except Exception:
                log.exception("sync failed")
        """,
    "proj/base.py": """
        from celery import Task


        class BaseTask(Task):
            acks_late = True
        """,
    "proj/mid.py": """
        from proj.base import BaseTask


        class Mid(BaseTask):
            pass
        """,
    "proj/cleanup.py": """
        from proj.mid import Mid


        class Cleanup(Mid):
            def run(self, path):
                try:
                    remove(path)
                except Exception:
                    pass
        """,
    "proj/models_base.py": """
        from django.db import models


        class Stamped(models.Model):
            class Meta:
                abstract = True
        """,
    "proj/orders.py": """
        from proj.models_base import Stamped


        class Order(Stamped):
            pass
        """,
    "proj/limits.py": """
        SLOW = 60 * 60 * 5


        def grab(client, key):
            return client.set(key, 1, nx=True, ex=SLOW)
        """,
    "proj/db.py": """
        from sqlalchemy import create_engine
        engine = create_engine("postgresql://db/proj")
        engine.connect()
        """,
    "proj/services.py": """
        from proj.db import engine


        def total():
            return engine
        """,
    "proj/tasks.py": """
        from celery import shared_task
        from proj.limits import SLOW, grab
        from proj.orders import Order
        from proj import services


        @shared_task(bind=True, soft_time_limit=SLOW, default_retry_delay=SLOW)
        def ship(self, order_id):
            if not grab(redis, f"ship:{order_id}"):
                return
            try:
                services.total()
            finally:
                redis.delete(f"ship:{order_id}")


        def checkout(pk):
            order = Order.objects.get(pk=pk)
            ship.delay(order)
            ship.apply_async((pk,), countdown=SLOW)
        """,
    "proj/aliased.py": """
        from proj.base import BaseTask as Basis


        class Aliased(Basis):
            pass
        """,
    "proj/rebuild.py": """
        from proj.aliased import Aliased


        class Rebuild(Aliased):
            def run(self):
                try:
                    work()
                except Exception:
                    pass
        """,
    "proj/plain.py": """
        def unrelated(values):
            return sorted(values)
        """,
    "proj/routing.py": """
        def to_reports(sig):
            return sig.set(queue="reports")
        """,
    "proj/shapes.py": """
        class Model:
            pass


        def describe(thing: Model) -> str:
            return "Base"
        """,
}


def _findings(source_dir: Path, prefilter: bool) -> tuple[list, object]:
    from celery import Celery
    from kombu import Queue

    from celery_doctor.collectors.config import collect_config
    from celery_doctor.collectors.source import collect_source
    from celery_doctor.model import Part, Snapshot, Target
    from celery_doctor.registry import load_registry
    from celery_doctor.runner import run_checks

    app = Celery("scale", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.task_queues = [Queue("celery")]
    config = collect_config(app)
    tree = collect_source([str(source_dir)], prefilter=prefilter)
    snapshot = Snapshot(target=Target(app="scale", broker=config.broker_url, transport=config.transport),
                        parts={"config": Part.gathered(config), "source": Part.gathered(tree)}, mode="lint",
                        now=time.time())
    result = run_checks(load_registry(), snapshot, (), ())
    found = sorted(json.dumps([f.check, f.location.path if f.location else None,
                               f.location.line if f.location else None, f.subject, list(f.evidence)])
                   for f in result.findings)
    return found, tree


def test_prefilter_changes_no_finding_on_a_cross_file_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, CROSS_FILE)
    everything, full = _findings(Path("proj"), prefilter=False)
    filtered, tree = _findings(Path("proj"), prefilter=True)
    assert filtered == everything
    assert not any(f.deferred for f in full.files)
    deferred = {f.path for f in tree.files if f.deferred}
    # plain files stay unparsed; files the tasks reach only by name are parsed by the closure or on demand
    assert "proj/plain.py" in deferred and "proj/services.py" in deferred and "proj/limits.py" in deferred
    assert "proj/shapes.py" in deferred  # model base names, but no class on them: checked in a worker, not parsed
    assert {"proj/jobs.py", "proj/mid.py", "proj/cleanup.py", "proj/orders.py", "proj/models_base.py"}.isdisjoint(
        deferred)
    checks = {json.loads(f)[0] for f in everything}
    located = {(json.loads(f)[0], json.loads(f)[1]) for f in everything}
    # the findings that need another file: the factory's options, the class task, the model instance
    assert ("CD520", "proj/jobs.py") in located and ("CD501", "proj/jobs.py") in located
    assert ("CD501", "proj/cleanup.py") in located
    assert ("CD501", "proj/rebuild.py") in located  # a task class through a base imported under another name
    assert {"proj/aliased.py", "proj/rebuild.py"}.isdisjoint(deferred)
    assert "CD514" in checks and "CD512" in checks
    assert ("CD170", "proj/routing.py") in located  # a queue named in a file with nothing else of Celery


@pytest.mark.parametrize("subdir", ["examples", "celery_doctor", "tests"])
def test_prefilter_changes_no_finding_on_real_code(subdir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    everything, _ = _findings(Path(subdir), prefilter=False)
    filtered, tree = _findings(Path(subdir), prefilter=True)
    assert filtered == everything
    assert any(f.deferred for f in tree.files)


def test_installed_celery_and_django_give_the_same_findings_with_the_prefilter(tmp_path):
    import celery
    import django

    everything, _ = _findings(Path(celery.__file__).parent / "app", prefilter=False)
    filtered, _ = _findings(Path(celery.__file__).parent / "app", prefilter=True)
    assert filtered == everything and everything
    everything, _ = _findings(Path(django.__file__).parent / "db" / "models", prefilter=False)
    filtered, _ = _findings(Path(django.__file__).parent / "db" / "models", prefilter=True)
    assert filtered == everything


def test_deferred_files_are_found_by_name_and_parsed_only_then():
    from celery_doctor.collectors.source import collect_source
    from celery_doctor.pyast import project

    root = write_tree(Path(os.environ.get("TMPDIR", "/tmp")) / f"cd-scale-{os.getpid()}", {
        "app/__init__.py": "",
        "app/helpers.py": "LIMIT = 30\n\n\ndef clean(x):\n    return x\n",
        "app/other.py": "def clean(x):\n    return None\n",
        "app/tasks.py": "from celery import shared_task\nfrom app.helpers import LIMIT, clean\n\n\n"
                        "@shared_task(time_limit=LIMIT)\ndef work(x):\n    return clean(x)\n",
    })
    tree = collect_source([str(root / "app")])
    assert [f.path.endswith("tasks.py") for f in tree.files if not f.deferred] == [True]
    proj = project(tree)
    task = proj.tasks[0]
    module, node = proj.function("clean", task.module)
    assert module.path.endswith("helpers.py") and node.name == "clean"
    assert proj.function("clean") is None  # two definitions in the tree: not unique
    assert proj.seconds(task.module, task.option("time_limit")) == 30
    assert tree.file(module.path).tree is None  # the deferred file itself stays text; its parse is kept aside


def test_unreadable_unparseable_and_oversized_files_are_listed_as_not_checked(tmp_path):
    from celery_doctor.collectors.source import MAX_FILE_BYTES

    src = write_tree(tmp_path / "src", {
        "shop/__init__.py": "",
        "shop/tasks.py": "from celery import shared_task\n\n\n@shared_task\ndef ok():\n    return 1\n",
        "shop/broken.py": "from celery import shared_task\n\n\n@shared_task\ndef broken(:\n    pass\n",
        "shop/plain_broken.py": "def plain(:\n    pass\n",
    })
    shop = src / "shop"
    (shop / "nul.py").write_bytes(b"from celery import shared_task\nx = 1\x00\n")
    (shop / "latin.py").write_bytes(b"from celery import shared_task\nname = '\xe9t\xe9'\n")
    (shop / "big.py").write_bytes(b"# padding\n" * (MAX_FILE_BYTES // 10 + 10))
    (shop / "gone.py").symlink_to(shop / "missing-target.py")
    newer = sys.version_info < (3, 12)
    if newer:
        (shop / "newer.py").write_text("type Pair = tuple[int, int]\n")
    args = ["lint", "--broker", "redis://127.0.0.1:6379/0", "--source", str(shop), "--select", "CD5"]
    data = json.loads(run_cli(*args, "--format", "json", cwd=tmp_path).stdout)
    listed = {n["part"]: n["reason"] for n in data["not_checked"]}
    base = "source file src/shop/"
    assert listed[base + "broken.py"].startswith("syntax error at line 5")
    assert listed[base + "plain_broken.py"].startswith("syntax error at line 1")  # a deferred file, checked too
    assert "null bytes" in listed[base + "nul.py"]
    assert listed[base + "latin.py"].startswith("not readable as Python source text: not valid utf-8")
    assert listed[base + "big.py"] == f"larger than {MAX_FILE_BYTES} bytes, not read"
    assert listed[base + "gone.py"].startswith("unreadable: ")
    if newer:
        assert listed[base + "newer.py"].startswith("syntax error at line 1")
    assert base + "tasks.py" not in listed and base + "__init__.py" not in listed

    text = run_cli(*args, "--format", "text", "--color", "never", cwd=tmp_path)
    assert "Traceback" not in text.stderr
    section = text.stdout[text.stdout.index("Not checked"):]
    for path in ("broken.py", "plain_broken.py", "nul.py", "latin.py", "big.py", "gone.py"):
        assert f"source file src/shop/{path}" in section, path
    assert "larger than" in section and "syntax error at line 5" in section


def test_a_truncated_tree_says_so(tmp_path, monkeypatch):
    from celery_doctor.collectors import source

    write_tree(tmp_path, {f"pkg/m{i}.py": "x = 1\n" for i in range(5)})
    monkeypatch.setattr(source, "MAX_FILES", 3)
    tree = source.collect_source([str(tmp_path / "pkg")])
    assert len(tree.files) == 3 and tree.truncated
    assert tree.not_checked()[-1][1] == "not every file was read: more than 3 Python files; the first 3 were read"


def test_a_coding_cookie_is_honoured(tmp_path):
    from celery_doctor.collectors.source import read_source_file

    path = tmp_path / "legacy.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\nfrom celery import shared_task\nname = '\xe9t\xe9'\n")
    source = read_source_file(str(path))
    assert source.error is None and "été" in source.text


def test_the_syntax_check_of_deferred_files_in_worker_processes(tmp_path, monkeypatch):
    from celery_doctor.collectors import source, syntax

    monkeypatch.setattr(syntax, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(syntax, "_workers", lambda: 2)
    files = {f"pkg/plain_{i}.py": f"def f{i}(x):\n    return x\n" for i in range(40)}
    files["pkg/orm.py"] = "from db import Base\n\n\nclass Row(Base):\n    pass\n"
    files["pkg/mention.py"] = "Base = None\n"
    files["pkg/plain_7.py"] = "def f(:\n    pass\n"
    files["pkg/nul_3.py"] = "x = 1\n"
    write_tree(tmp_path, files)
    (tmp_path / "pkg" / "nul_3.py").write_bytes(b"x = 1\x00\n")
    tree = source.collect_source([str(tmp_path / "pkg")])
    assert [f.path.endswith("orm.py") for f in tree.files if not f.deferred and f.error is None] == [True]
    listed = dict(tree.not_checked())
    assert len(listed) == 2
    assert next(v for k, v in listed.items() if k.endswith("plain_7.py")).startswith("syntax error at line 1")
    assert "null bytes" in next(v for k, v in listed.items() if k.endswith("nul_3.py"))
