"""Parity: `lint --app` (the app imported) and `lint` without --app (read statically, celery_doctor.static) give
the same findings (check id + subject) on the fixture apps of the tests and on the example project.

The fixture apps are the tests' own: written by their write_app helpers (test_redis_fixtures, test_workers_redis,
test_watch_redis), the app texts of test_cli and test_trust_badinput, every wrong-typed setting of
test_trust_badinput.WRONG_TYPES, and examples/shop. Where the two modes legitimately differ, the difference is
listed with the reason."""
from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest

from celery_doctor.diagnose import diagnose
from celery_doctor.options import RunOptions
from tests.conftest import ROOT, run_cli, write_tree

DB = 3  # this helper's Redis database (nothing here connects: lint only)
REDIS = f"redis://127.0.0.1:6379/{DB}"


def uid() -> str:
    return uuid.uuid4().hex[:8]


def subject(text: str) -> str:
    """A file subject by the file's name: the two modes show paths relative to different directories."""
    return "file:" + os.path.basename(text[5:]) if text.startswith("file:") else text


def findings(report) -> set:
    """(check, subject) of every place: a ranked row stands for the places of one cause (Finding.occurrences)."""
    return {(f.check, subject(f.subject)) for r in report.findings for f in (r.finding.occurrences or (r.finding,))}


def places(report: dict) -> set:
    return {(f["check"], subject(p["subject"])) for f in report["findings"] for p in (f.get("occurrences") or [f])}


def imported_findings(directory: Path, module: str, env: Optional[dict] = None) -> set:
    """`lint --app` in a process of its own: an app imported here would leak its shared tasks into every app this
    process finalizes later (Celery's connect_on_app_finalize), the other fixtures' included."""
    run = run_cli("lint", "--app", module, "--source", str(directory), "--format", "json", cwd=directory, env=env)
    assert run.returncode in (0, 1), run.stderr
    return places(json.loads(run.stdout))


def both_modes(directory: Path, module: str) -> tuple[set, set, object]:
    static, _ = diagnose(RunOptions(mode="lint", cwd=str(directory), sources=[str(directory)], timeout=30))
    return imported_findings(directory, module), findings(static), static


def assert_same(imported: set, static: set, allowed: Optional[dict] = None, label: str = "") -> None:
    """The same findings, but for the differences in `allowed` ((check, subject) -> why they differ)."""
    allowed = allowed or {}
    only_imported = {f for f in imported - static if f not in allowed}
    only_static = {f for f in static - imported if f not in allowed}
    assert not only_imported and not only_static, (label, "import only:", only_imported, "static only:", only_static)


def test_example_shop():
    static, _ = diagnose(RunOptions(mode="lint", cwd=str(ROOT), sources=[str(ROOT / "examples" / "shop")]))
    assert len(findings(static)) >= 8  # the same as --app: test_example_shop_from_the_command_line
    # the example's broker and backend come from $SHOP_BROKER_URL / $SHOP_RESULT_BACKEND: the static report says so
    assert "broker_url ($SHOP_BROKER_URL)" in static.inputs
    assert static.target.app == "examples.shop.celery:app"


def test_example_shop_from_the_command_line():
    """End to end: `celery-doctor lint --source examples/shop` (no --app) gives the example's findings."""
    static = run_cli("lint", "--source", "examples/shop", "--format", "json")
    imported = run_cli("lint", "--app", "examples.shop", "--format", "json")
    assert static.returncode == imported.returncode and static.returncode in (0, 1), static.stderr
    a, b = json.loads(static.stdout), json.loads(imported.stdout)
    assert places(a) == places(b)
    located = {f["check"]: f["location"] for f in a["findings"] if f["check"] in ("CD102", "CD501")}
    assert located["CD102"]["path"] == "examples/shop/celeryconfig.py"  # the project's files, not ours
    assert located["CD501"] == {"path": "examples/shop/tasks.py", "line": 25}


def test_redis_fixture_apps(tmp_path):
    from tests.test_redis_fixtures import write_app

    confs = ["", 'app.conf.task_acks_late = True\napp.conf.broker_transport_options = {"visibility_timeout": 30}',
             'app.conf.update(task_routes={"x.add": {"queue": "nowhere"}}, worker_prefetch_multiplier=1)']
    for index, conf in enumerate(confs):
        directory = tmp_path / f"r{index}"
        directory.mkdir()
        module = write_app(directory, f"cdstatic_{uid()}", DB, conf=conf)
        imported, static, _ = both_modes(directory, module)
        assert_same(imported, static, label=conf)


def test_workers_fixture_app(tmp_path):
    from tests.test_workers_redis import write_app

    module = write_app(tmp_path, f"cdstatic_w_{uid()}", uid(), DB, transport_options={"visibility_timeout": 10})
    imported, static, report = both_modes(tmp_path, module)
    assert_same(imported, static)
    assert "$CDT_DRIFT" not in report.inputs  # the if's test read an unset variable: its branch was not taken


def test_watch_fixture_app(tmp_path):
    from tests.test_watch_redis import write_app

    module = write_app(tmp_path, uid(), DB)
    imported, static, report = both_modes(tmp_path, module)
    # Its tasks are registered in a loop (`for _name in (...): app.task(name=_name)(_sleep)`): only decorated
    # functions are read as tasks, so the static run has none of them, and says so under Not checked.
    assert_same(imported, static)
    assert any("calling the decorator" in what for what, _ in report.not_checked)


CLI_APPS = {
    "factory": """
        import functools
        from celery import Celery, shared_task

        app = Celery("proj", broker="redis://127.0.0.1:6379/3")
        app.conf.task_acks_late = True
        app.conf.worker_prefetch_multiplier = 4
        critical = app.task(acks_late=True, reject_on_worker_lost=True, time_limit=7200)
        slow = functools.partial(shared_task, time_limit=3 * 3600)

        @critical
        def charge(order):
            return order

        @slow(name="reports.build")
        def build():
            return 0
    """,
    "task_cls": """
        from celery import Celery, Task

        class BaseTask(Task):
            acks_late = True
            time_limit = 7200

        app = Celery("proj", broker="redis://127.0.0.1:6379/3", task_cls=BaseTask)
        app.conf.worker_prefetch_multiplier = 4

        @app.task
        def slow():
            pass
    """,
    "periodic": """
        from celery import Celery
        from celery.schedules import crontab

        app = Celery("perapp", broker="redis://127.0.0.1:6379/3")

        @app.on_after_configure.connect
        def setup_periodic_tasks(sender, **kwargs):
            sender.add_periodic_task(10.0, test.s("hello"), name="add every 10")
            sender.add_periodic_task(30.0, test.s("world"), expires=10)
            sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1), test.s("Happy Mondays!"))

        @app.task(time_limit=60)
        def test(arg):
            print(arg)
    """,
    "eager": """
        from celery import Celery
        app = Celery('proj', broker='redis://127.0.0.1:6379/0')
        app.conf.task_always_eager = True

        @app.task
        def ping():
            return 1
    """,
    "ignore": """
        from datetime import datetime
        from celery import Celery
        app = Celery('proj', broker='redis://127.0.0.1:6379/0')

        @app.task
        def t():
            return 1

        def go():
            t.apply_async(expires=datetime.utcnow())  # celery-doctor: ignore[CD146]
            t.apply_async(eta=datetime.utcnow())
    """,
    "wrong_types": f"""
        from celery import Celery
        app = Celery(__name__, broker="{REDIS}")
        app.conf.task_routes = 5
        app.conf.accept_content = "json"
        app.conf.worker_prefetch_multiplier = "4"
        app.conf.broker_transport_options = "x"
        app.conf.beat_schedule = []
        app.conf.task_default_queue = 5

        @app.task
        def add(x, y):
            return x + y
    """,
    "styles": f"""
        import os
        from datetime import timedelta
        from celery import Celery
        from celery.schedules import crontab
        from kombu import Exchange, Queue

        MINUTE = 60
        app = Celery(__name__, broker=os.environ.get("CDSTATIC_UNSET_BROKER", "{REDIS}"),
                     backend="redis://127.0.0.1:6379/4")
        app.conf.update({{"task_acks_late": True, "task_time_limit": 5 * MINUTE}}, worker_prefetch_multiplier=1)
        app.conf.task_queues = [Queue("default", Exchange("default"), routing_key="default"),
                                Queue("mail", Exchange("mail", type="topic"), routing_key="mail.#")]
        app.conf.task_default_queue = "default"
        app.conf.task_routes = {{"*.send": {{"queue": "mail"}}, "x.y": {{"queue": "missing"}}}}
        app.conf.beat_schedule = {{"often": {{"task": "x.send", "schedule": timedelta(seconds=30)}}}}
        app.conf.beat_schedule["nightly"] = {{"task": "x.report", "schedule": crontab(hour=3, minute=0)}}
        app.conf.result_expires = None

        @app.task(acks_late=False, time_limit=10 * MINUTE, autoretry_for=(ConnectionError,), max_retries=None)
        def send(to):
            return to

        @app.task(name="x.report", queue="reports", soft_time_limit=timedelta(minutes=50).total_seconds())
        def report():
            return 0
    """,
}


@pytest.mark.parametrize("name", sorted(CLI_APPS))
def test_cli_fixture_apps(tmp_path, name):
    module = f"cdstatic_{name}_{uid()}"
    write_tree(tmp_path, {f"{module}.py": CLI_APPS[name]})
    imported, static, _ = both_modes(tmp_path, module)
    assert_same(imported, static, label=name)
    assert imported  # every one of them has findings


def test_wrong_typed_settings(tmp_path):
    """Every wrong-typed setting of test_trust_badinput (`app.conf[setting] = value`), a few per app (each app
    sets a setting once)."""
    from tests.test_trust_badinput import WRONG_TYPES

    groups: list[list] = []
    for setting, value, _ in WRONG_TYPES:
        if setting == "include":
            continue  # importing it fails: a usage error at load time in import mode
        group = next((g for g in groups if len(g) < 6 and all(s != setting for s, _ in g)), None)
        if group is None:
            groups.append(group := [])
        group.append((setting, value))
    fixtures = []
    for index, group in enumerate(groups):
        directory = tmp_path / f"w{index}"
        directory.mkdir()
        module = f"cdstatic_types_{index}_{uid()}"
        lines = "\n".join(f"app.conf[{setting!r}] = {value!r}" for setting, value in group)
        (directory / f"{module}.py").write_text(
            f"from celery import Celery\napp = Celery(__name__, broker={REDIS!r})\n{lines}\n\n"
            "@app.task(name='t.add')\ndef add(x, y):\n    return x + y\n")
        fixtures.append((directory, module, group))
    with ThreadPoolExecutor(3) as pool:
        imported = list(pool.map(lambda f: imported_findings(f[0], f[1]), fixtures))
    for (directory, _, label), expected in zip(fixtures, imported):
        static, _ = diagnose(RunOptions(mode="lint", cwd=str(directory), sources=[str(directory)], timeout=30))
        assert_same(expected, findings(static), label=label)
    assert sum(len(g) for g in groups) == len(WRONG_TYPES) - 1


def test_django_project(tmp_path):
    pytest.importorskip("django")
    write_tree(tmp_path, {
        "proj/__init__.py": "from .celery import app as celery_app\n",
        "proj/settings.py": """
            import os
            from datetime import timedelta
            SECRET_KEY = "not-a-secret"
            INSTALLED_APPS = ["shopapp"]
            CELERY_BROKER_URL = os.environ.get("CDSTATIC_REDIS", "redis://:djangopw42@127.0.0.1:6379/5")
            CELERY_TASK_ACKS_LATE = True
            CELERY_WORKER_PREFETCH_MULTIPLIER = 4
            CELERY_BEAT_SCHEDULE = {"tick": {"task": "shopapp.tasks.place_order", "schedule": timedelta(seconds=5)}}
        """,
        "proj/celery.py": """
            import os
            from celery import Celery
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
            app = Celery("proj")
            app.config_from_object("django.conf:settings", namespace="CELERY")
            app.autodiscover_tasks()
        """,
        "shopapp/__init__.py": "",
        "shopapp/tasks.py": """
            from celery import shared_task

            @shared_task(time_limit=60)
            def place_order(order_id):
                return order_id
        """,
    })
    runs = [run_cli("lint", "--app", "proj", "--source", ".", "--format", "json", cwd=tmp_path,
                    env={"DJANGO_SETTINGS_MODULE": "proj.settings"}),
            run_cli("lint", "--format", "json", cwd=tmp_path)]
    imported, static = (json.loads(r.stdout) for r in runs)
    assert_same(places(imported), places(static))
    assert static["target"]["broker"] == imported["target"]["broker"] == "redis://:***@127.0.0.1:6379/5"
    assert "djangopw42" not in runs[1].stdout + runs[1].stderr
    assert "settings proj/settings.py" in static["inputs"] and "$CDSTATIC_REDIS" in static["inputs"]


def test_a_value_from_the_environment_may_differ_and_is_said(tmp_path):
    """The one legitimate difference: a setting read from the environment. Imported, the app sees the variable
    ($CDSTATIC_ACKS=1: acks late); read statically, the default written in the source is used (acks early), and
    the finding says that the value comes from the environment."""
    module = f"cdstatic_env_{uid()}"
    write_tree(tmp_path, {f"{module}.py": f"""
        import os
        from celery import Celery
        app = Celery(__name__, broker="{REDIS}")
        app.conf.task_acks_late = os.environ.get("CDSTATIC_ACKS", "0") == "1"
        app.conf.task_reject_on_worker_lost = True

        @app.task(time_limit=60)
        def work():
            return 1
    """})
    imported = imported_findings(tmp_path, module, env={"CDSTATIC_ACKS": "1"})
    report, _ = diagnose(RunOptions(mode="lint", cwd=str(tmp_path), sources=[str(tmp_path)], timeout=30))
    why = "task_acks_late comes from $CDSTATIC_ACKS: set to 1 for the imported app, the source's default '0' statically"
    assert_same(imported, findings(report), allowed={
        ("CD101", "setting:task_acks_late"): why,
        ("CD104", "setting:worker_cancel_long_running_tasks_on_connection_loss"): why + " (CD104 is about late acks)"})
    early = [r.finding for r in report.findings if r.finding.check == "CD101"]
    assert early and any("comes from the environment ($CDSTATIC_ACKS)" in e for e in early[0].evidence)
    assert ("CD101", "setting:task_acks_late") not in imported


def test_task_names_that_are_not_identifiers(tmp_path):
    """`name="export-products"`: Celery compiles a stub from the function's name, so a stand-in named after the
    task would not compile (a SyntaxError stopped the static lint on saleor). Both modes agree, without warnings."""
    module = f"cdstatic_names_{uid()}"
    (tmp_path / f"{module}.py").write_text(
        f"from celery import Celery\napp = Celery(__name__, broker={REDIS!r})\n"
        "app.conf.beat_schedule = {'export': {'task': 'export-products', 'schedule': 60.0}}\n\n"
        "@app.task(name='export-products', queue='bulk')\ndef export_products():\n    pass\n\n"
        "@app.task(name='a.b-c.class')\ndef weird():\n    pass\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stand-in's queue= would warn (deprecated task attribute)
        imported, static, _ = both_modes(tmp_path, module)
    assert ("CD141", "beat:export") in static
    assert_same(imported, static)
