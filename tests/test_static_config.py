"""Reading the Celery configuration statically (celery_doctor.static): values, configuration styles, what is not
checked, and that nothing of the project runs."""
from __future__ import annotations

import ast
import datetime as dt
import json

import pytest

from celery_doctor.collectors.source import collect_source
from celery_doctor.static import read_static_config
from celery_doctor.static.collect import collect_static_config
from celery_doctor.static.values import Evaluator, Unresolved
from tests.conftest import run_cli, write_tree


def evaluate(text: str, names: dict | None = None):
    names = names or {}

    def lookup(name):
        if name in names:
            return names[name]
        raise Unresolved(f"{name} is unknown")

    evaluator = Evaluator(lookup)
    return evaluator(ast.parse(text, mode="eval").body), evaluator.env


@pytest.mark.parametrize("text, value, env", [
    ("60 * 60 * 2", 7200, {}),
    ("{'a': [1, 2], **{'b': (3,)}}", {"a": [1, 2], "b": (3,)}, {}),
    ("f'redis://{HOST}:6379/0'", "redis://cache:6379/0", {}),
    ("os.environ.get('X_URL', 'redis://a/1')", "redis://a/1", {"X_URL": "redis://a/1"}),
    ("os.getenv('X_URL')", None, {"X_URL": None}),
    ("int(os.getenv('N', '4'))", 4, {"N": "4"}),
    ("os.environ.get('A') or 'fallback'", "fallback", {"A": None}),
    ("env.int('WORKERS', default=8)", 8, {"WORKERS": 8}),
    ("env('BROKER', default='amqp://x//')", "amqp://x//", {"BROKER": "amqp://x//"}),
    ("config('ACKS', default='true', cast=bool)", True, {"ACKS": True}),
    ("config('LIMIT', default='30', cast=int)", 30, {"LIMIT": 30}),
    ("timedelta(hours=1, minutes=30)", dt.timedelta(hours=1, minutes=30), {}),
    ("'a' if HOST == 'cache' else 'b'", "a", {}),
    ("'{}/{}'.format('redis://h', 3)", "redis://h/3", {}),
])
def test_values(text, value, env):
    got, used = evaluate(text, {"HOST": "cache"})
    assert got == value and used == env


def test_celery_and_kombu_objects_are_built_by_our_code():
    crontab, _ = evaluate("crontab(minute='*/5')")
    queue, _ = evaluate("Queue('mail', Exchange('mail', type='topic'), routing_key='mail.#')")
    assert crontab.__class__.__name__ == "crontab" and queue.name == "mail" and queue.exchange.type == "topic"


@pytest.mark.parametrize("text, why", [
    ("os.environ['SECRET_URL']", "SECRET_URL"),
    ("config('X')", "no default"),
    ("get_url()", "a call to get_url()"),
    ("UNKNOWN + 1", "UNKNOWN"),
    ("'x' * 10 ** 9", "too large"),
])
def test_what_cannot_be_known_says_why(text, why):
    with pytest.raises(Unresolved, match=why):
        evaluate(text)


def static_config(tmp_path, files: dict):
    write_tree(tmp_path, files)
    tree = collect_source([str(tmp_path)])
    static = read_static_config(tree, str(tmp_path))
    return static, collect_static_config(static)


def test_old_names_class_config_and_star_imports(tmp_path):
    _, config = static_config(tmp_path, {
        "proj/__init__.py": "",
        "proj/base.py": "BROKER_URL = 'redis://127.0.0.1:6379/3'\nCELERY_ACKS_LATE = True\n",
        "proj/celeryconfig.py": "from .base import *\nCELERYD_PREFETCH_MULTIPLIER = 1\n",
        "proj/celery.py": """
            from celery import Celery
            app = Celery("proj")
            app.config_from_object("proj.celeryconfig")

            class Overrides:
                task_time_limit = 300
        """,
    })
    assert config.value("broker_url") == "redis://127.0.0.1:6379/3"
    assert config.setting("task_acks_late").explicit and config.value("task_acks_late") is True
    assert config.setting("task_acks_late").set_as == "CELERY_ACKS_LATE"
    assert config.value("worker_prefetch_multiplier") == 1
    assert str(config.located("task_acks_late")).endswith("proj/base.py:2")  # where it is written, across the import


def test_class_object_and_conf_statements(tmp_path):
    _, config = static_config(tmp_path, {
        "app.py": """
            from datetime import timedelta
            from celery import Celery

            class Config:
                broker_url = "redis://127.0.0.1:6379/3"
                task_default_queue = "work"

            app = Celery("app")
            app.config_from_object(Config)
            app.conf.beat_schedule = {}
            app.conf.beat_schedule["tick"] = {"task": "app.tick", "schedule": timedelta(minutes=1)}
            app.conf["task_time_limit"] = 120

            @app.task(queue="other", acks_late=True)
            def tick():
                pass
        """,
    })
    assert config.default_queue == "work" and config.value("task_time_limit") == 120
    assert [(b.name, b.interval_s) for b in config.beat] == [("tick", 60.0)]
    task = config.tasks["app.tick"]
    assert task.queue == "other" and task.acks_late is True and str(task.location).endswith("app.py:14")  # the first decorator's line, as --app


def test_what_is_not_read_is_listed_with_its_place(tmp_path):
    static, config = static_config(tmp_path, {
        "proj.py": """
            import os
            from celery import Celery
            from somewhere import make_url
            app = Celery("proj", broker=make_url())
            app.conf.result_backend = os.environ["RESULT_URL"]

            @app.task(time_limit=compute())
            def work():
                pass
        """,
    })
    notes = dict(static.not_checked)
    assert any("Celery(broker=...)" in what and "proj.py:4" in what for what in notes), notes
    assert any("conf.result_backend" in what and "proj.py:5" in what for what in notes), notes
    assert any("time_limit" in what and "proj.py:7" in what for what in notes), notes
    assert config.tasks["proj.work"].time_limit is None


def test_nothing_of_the_project_runs(tmp_path):
    marker = tmp_path / "ran"
    write_tree(tmp_path, {"proj/__init__.py": f"open({str(marker)!r}, 'w').write('x')\n",
                          "proj/celery.py": f"""
        open({str(marker)!r}, "w").write("x")
        from celery import Celery
        app = Celery("proj", broker="redis://127.0.0.1:6379/3")
        app.config_from_object("proj.settings")
    """, "proj/settings.py": f"open({str(marker)!r}, 'w').write('x')\ntask_acks_late = True\n",
        "proj/tasks.py": f"""
        from celery import shared_task
        open({str(marker)!r}, "w").write("x")

        @shared_task
        def charge(order):
            return order
    """})
    result = run_cli("lint", "--format", "json", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr  # findings; whether they fail the run is --fail-on's
    assert not marker.exists()
    data = json.loads(result.stdout)
    assert data["target"]["app"] == "proj.celery:app"
    assert "CD102" in {f["check"] for f in data["findings"]}  # acks late without reject_on_worker_lost


def test_several_apps_one_is_read_the_others_are_named(tmp_path):
    static, _ = static_config(tmp_path, {
        "a.py": "from celery import Celery\napp = Celery('a')\napp.conf.task_acks_late = True\n",
        "b.py": "from celery import Celery\nother = Celery('b')\n",
    })
    assert static.found.variable == "app"
    assert any("other" in what and "b.py:2" in what for what, _ in static.not_checked)


def test_a_settings_file_read_but_not_parsed_by_the_source_collector_is_parsed_here(tmp_path):
    """The source collector may keep a file unparsed when nothing in it concerns the source checks (a settings
    module): the static reader parses it itself."""
    import dataclasses

    write_tree(tmp_path, {"proj/__init__.py": "", "proj/settings.py": "task_acks_late = True\n",
                          "proj/celery.py": "from celery import Celery\napp = Celery('proj')\n"
                                            "app.config_from_object('proj.settings')\n"})
    tree = collect_source([str(tmp_path)])
    files = tuple(dataclasses.replace(f, tree=None) if f.path.endswith("settings.py") else f for f in tree.files)
    unparsed = dataclasses.replace(tree, files=files)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = collect_static_config(read_static_config(unparsed, str(elsewhere)))  # not found under the cwd
    assert config.value("task_acks_late") is True


def test_imports_are_read_only_when_a_value_needs_them(tmp_path):
    """A task module's imports (models, services...) are not read unless a setting or an option uses them; an
    imported setting keeps the place it is written in."""
    from celery_doctor.static.modules import Modules

    write_tree(tmp_path, {
        "proj/__init__.py": "",
        "proj/limits.py": "SLOW = 10 * 60\n",
        "proj/heavy.py": "import numpy\nTABLE = compute()\n",
        "proj/celery.py": "from celery import Celery\nfrom proj.limits import SLOW\napp = Celery('proj')\n"
                          "app.conf.task_time_limit = SLOW\n",
        "proj/tasks.py": "from proj.celery import app\nfrom proj.heavy import TABLE\nfrom proj.limits import SLOW\n\n"
                         "@app.task(soft_time_limit=SLOW - 60)\ndef work():\n    return TABLE\n",
    })
    tree = collect_source([str(tmp_path)])
    read = []
    original = Modules.module

    def spy(self, name):
        read.append(name)
        return original(self, name)

    Modules.module = spy
    try:
        static = read_static_config(tree, str(tmp_path))
    finally:
        Modules.module = original
    config = collect_static_config(static)
    assert config.value("task_time_limit") == 600 and config.tasks["proj.tasks.work"].soft_time_limit == 540
    assert "proj.heavy" not in read


@pytest.mark.parametrize("task_cls", ["BaseTask", "'proj:BaseTask'"])
def test_the_apps_task_class_gives_every_task_its_options(tmp_path, task_cls):
    _, config = static_config(tmp_path, {"proj.py": f"""
        from celery import Celery, Task

        class BaseTask(Task):
            acks_late = True
            time_limit = 120

            def before_start(self, task_id, args, kwargs):
                pass

        app = Celery("proj", task_cls={task_cls})

        @app.task(time_limit=30)
        def quick():
            pass

        @app.task
        def slow():
            pass
    """})
    assert config.tasks["proj.slow"].acks_late is True and config.tasks["proj.slow"].time_limit == 120
    assert config.tasks["proj.quick"].time_limit == 30 and config.tasks["proj.quick"].acks_late is True


@pytest.mark.parametrize("configure", [
    "import proj.settings as conf\napp.config_from_object(conf)",
    "from proj import settings\napp.config_from_object(settings)",
    "app.config_from_object('proj.settings:Production')",
    "app.config_from_object('proj.settings.Production')",
    "from proj.settings import Production\napp.config_from_object(Production)",
])
def test_config_from_object_forms(tmp_path, configure):
    _, config = static_config(tmp_path, {
        "proj/__init__.py": "",
        "proj/settings.py": "task_time_limit = 300\n\nclass Production:\n    task_time_limit = 300\n",
        "proj/celery.py": f"from celery import Celery\napp = Celery('proj')\n{configure}\n",
    })
    assert config.value("task_time_limit") == 300 and config.setting("task_time_limit").explicit
    assert str(config.located("task_time_limit")).endswith(("proj/settings.py:1", "proj/settings.py:4"))


def test_config_source_keyword_and_namespace(tmp_path):
    _, config = static_config(tmp_path, {
        "proj/__init__.py": "",
        "proj/settings.py": "CELERY_TASK_TIME_LIMIT = 300\nTASK_TIME_LIMIT = 5\n",
        "proj/celery.py": "from celery import Celery\napp = Celery('proj', config_source='proj.settings', "
                          "namespace='CELERY')\n",
    })
    assert config.value("task_time_limit") == 300


def test_django_settings_read_through_django_conf(tmp_path):
    """`from django.conf import settings` stands for the settings module the source names by default (here in
    manage.py); task options and conf values read from it."""
    _, config = static_config(tmp_path, {
        "manage.py": "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site.settings')\n",
        "site/__init__.py": "",
        "site/settings.py": "REPORT_LIMIT = 45 * 60\nCELERY_TASK_ACKS_LATE = True\nlowercase = 1\n",
        "site/celery.py": """
            from celery import Celery
            from django.conf import settings
            app = Celery("site")
            app.config_from_object("django.conf:settings", namespace="CELERY")
            app.conf.task_soft_time_limit = settings.REPORT_LIMIT - 60
        """,
        "reports/__init__.py": "",
        "reports/tasks.py": """
            from celery import shared_task
            from django.conf import settings

            @shared_task(time_limit=settings.REPORT_LIMIT)
            def build():
                pass
        """,
    })
    assert config.value("task_acks_late") is True and config.value("task_soft_time_limit") == 2640
    assert config.tasks["reports.tasks.build"].time_limit == 2700


def test_conf_update_forms(tmp_path):
    _, config = static_config(tmp_path, {"proj.py": """
        from celery import Celery
        BASE = {"task_time_limit": 300}
        EXTRA = dict(task_soft_time_limit=240)
        app = Celery("proj")
        app.conf.update(**BASE)
        app.conf.update(EXTRA, worker_prefetch_multiplier=1)
    """})
    assert (config.value("task_time_limit"), config.value("task_soft_time_limit"),
            config.value("worker_prefetch_multiplier")) == (300, 240, 1)


def test_configuration_inside_a_function_is_named_not_guessed(tmp_path):
    static, config = static_config(tmp_path, {"proj.py": """
        from celery import Celery
        app = Celery("proj")

        def configure(production):
            app.conf.task_acks_late = production
    """})
    assert config.value("task_acks_late") is False  # Celery's default: the function is not run
    assert any("configure()" in what and "proj.py:5" in what for what, _ in static.not_checked)


def test_configuration_in_another_module_is_named(tmp_path):
    static, _ = static_config(tmp_path, {
        "proj/__init__.py": "",
        "proj/celery.py": "from celery import Celery\napp = Celery('proj')\n",
        "proj/schedule.py": "from .celery import app\n\napp.conf.beat_schedule = {}\n",
    })
    assert any("proj/schedule.py:3" in what for what, _ in static.not_checked), static.not_checked


def test_configuration_in_modules_importing_the_app_from_its_package_is_named(tmp_path):
    """The app in a package's __init__: `from . import app` names no module, `from .. import app` neither; both
    are found. A relative import in another package reaches another module: it is not named, nor even parsed."""
    files = {
        "proj/__init__.py": "from celery import Celery\napp = Celery('proj')\n",
        "proj/tasks.py": "from . import app\n\napp.conf.task_acks_late = True\n",
        "proj/sub/__init__.py": "",
        "proj/sub/deep.py": "from .. import app\n\napp.conf.task_default_queue = 'x'\n",
        "other/__init__.py": "app = None\n",
        "other/mod.py": "from . import app\n\napp.conf.worker_prefetch_multiplier = 1\n",
        "top.py": "from proj import app\n\napp.conf.worker_prefetch_multiplier = 4\n",
    }
    write_tree(tmp_path, files)
    tree = collect_source([str(tmp_path)])
    other = next(f.path for f in tree.files if f.path.endswith("other/mod.py"))
    assert tree.file(other).deferred  # nothing in it for the source checks: read, not parsed
    static = read_static_config(tree, str(tmp_path))
    assert other not in tree._loaded  # it cannot import the app's module: not parsed to look for configuration
    assert static.found.path.endswith("proj/__init__.py"), static.found
    named = " ".join(what for what, _ in static.not_checked)
    assert "proj/tasks.py:3" in named and "proj/sub/deep.py:3" in named and "top.py:3" in named, named
    assert "other/mod.py" not in named, named
