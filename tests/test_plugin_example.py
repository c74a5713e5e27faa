"""The plugin of docs/plugins.md is a real package (examples/plugin): installed with pip, loaded through its
`celery_doctor.checks` entry point, it finds what it says on an app without task_queues (the default queue and
a routed queue count), and the documented code is exactly the package's code."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_tree

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugin"


def test_the_documented_plugin_is_the_packaged_one():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    code = (PLUGIN / "acme_celery_checks" / "checks.py").read_text()
    assert any(block.strip() == code.strip() for block in blocks), "docs/plugins.md shows other code"
    assert 'acme = "acme_celery_checks.checks:CHECKS"' in doc


def test_the_plugin_installs_loads_through_its_entry_point_and_finds_unprefixed_queues(tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(PLUGIN)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert list(target.glob("acme_celery_checks-*.dist-info/entry_points.txt"))
    write_tree(tmp_path / "proj", {"acmeapp.py": '''
        from celery import Celery
        app = Celery("acmeapp", broker="redis://127.0.0.1:6379/0")
        app.conf.task_routes = {"acmeapp.report": {"queue": "reports"}, "acmeapp.mail": {"queue": "acme-mail"}}

        @app.task
        def report():
            pass

        @app.task
        def mail():
            pass
    '''})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(tmp_path / "proj"), str(ROOT)]))
    env.pop("CELERY_BROKER_URL", None)
    run = subprocess.run([sys.executable, "-m", "celery_doctor", "lint", "--app", "acmeapp", "--select", "ACME",
                          "--format", "json", "--fail-on", "never"], cwd=tmp_path / "proj", env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    status = {c["id"]: c["status"] for c in report["checks"]}
    assert status["ACME001"] == "failed"
    rows = [f for f in report["findings"] if f["check"] == "ACME001"]
    assert len(rows) == 1  # one cause (one title), in two places
    assert rows[0]["subjects"] == ["queue:celery", "queue:reports"]  # the default queue and a routed one; acme-mail is fine
