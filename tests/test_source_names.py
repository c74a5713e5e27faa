"""Source checks CD540-CD541: periodic tasks added in code without expires, and task names sent by string that
the app does not register. Bad trees are found at the right line; fixed trees produce nothing."""
from __future__ import annotations

from celery import Celery

from celery_doctor.model import Category
from tests.test_source_support import findings, line_of, lines, text

APP = {"proj/__init__.py": ""}

PERIODIC = """
    from celery import Celery
    from celery.schedules import crontab

    app = Celery("proj", broker="redis://127.0.0.1:6379/0")


    @app.on_after_configure.connect
    def setup_periodic_tasks(sender, **kwargs):
        sender.add_periodic_task(300.0, sync_inventory.s(), name="sync inventory")
        cleanup = purge_carts.s(days=30)
        sender.add_periodic_task(crontab(hour=3, minute=0), cleanup)


    @app.task
    def sync_inventory():
        return 0


    @app.task
    def purge_carts(days):
        return days
    """


def test_add_periodic_task_without_expires(tmp_path):
    found = findings("CD540", tmp_path / "bad", {**APP, "proj/celery.py": PERIODIC})
    assert lines(found) == [line_of(PERIODIC, "300.0"), line_of(PERIODIC, "crontab(hour=3")]
    first, second = sorted(found, key=lambda f: f.location.line)
    assert first.subject == "beat:sync inventory" and "every 5 min without expires" in first.evidence[0]
    assert "expires=270" in first.fix
    assert second.subject == "task:proj.celery.purge_carts"
    fixed = PERIODIC.replace('name="sync inventory")', 'name="sync inventory", expires=270)').replace(
        "purge_carts.s(days=30)", "purge_carts.s(days=30).set(expires=3600)")
    assert findings("CD540", tmp_path / "good", {**APP, "proj/celery.py": fixed}) == []
    # expires on the task itself applies to every run beat sends
    task_level = PERIODIC.replace("@app.task\n    def sync_inventory", "@app.task(expires=270)\n    def sync_inventory")
    task_level = task_level.replace("purge_carts.s(days=30)", "purge_carts.s(days=30).set(expires=3600)")
    assert task_level != PERIODIC
    assert findings("CD540", tmp_path / "task", {**APP, "proj/celery.py": task_level}) == []


def test_periodic_entry_already_in_the_apps_beat_schedule_is_left_to_cd141(tmp_path):
    app = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.beat_schedule = {"sync inventory": {"task": "proj.celery.sync_inventory", "schedule": 300.0}}
    found = findings("CD540", tmp_path / "cfg", {**APP, "proj/celery.py": PERIODIC}, app=app)
    assert [f.subject for f in found] == ["task:proj.celery.purge_carts"]


SENDER = """
    from .celery import app


    def place_order(order_id):
        app.send_task("proj.tasks.charge_ordr", args=[order_id])
        app.send_task("proj.tasks.charge_order", args=[order_id])
        app.send_task("billing.refund", args=[order_id])
        app.signature("proj.tasks.notify_customer", args=(order_id,)).delay()
        app.send_task("charge_order", args=[order_id])
    """


def _registered_app():
    app = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)

    def body(*args):
        return None

    app.task(name="proj.tasks.charge_order", shared=False)(body)
    return app


def test_send_task_names_that_no_task_registers(tmp_path):
    files = {**APP, "proj/celery.py": "app = None\n", "proj/sender.py": SENDER, "proj/tasks.py": """
        from .celery import app

        @app.task
        def notify_customer(order_id):
            return order_id
        """}
    found = findings("CD541", tmp_path / "bad", files, app=_registered_app())
    assert lines(found) == [line_of(SENDER, "charge_ordr"), line_of(SENDER, "notify_customer"),
                            line_of(SENDER, '"charge_order"')]
    assert all(f.category is Category.ROUTING for f in found)
    evidence = text(found)
    assert "closest registered name: 'proj.tasks.charge_order'" in evidence
    assert "defined at" in evidence and "does not import its module" in evidence
    assert "billing.refund" not in evidence  # another service's task: not this app's to judge
    fixed = SENDER.replace("charge_ordr", "charge_order").replace(
        'app.signature("proj.tasks.notify_customer", args=(order_id,)).delay()\n', "").replace(
        'app.send_task("charge_order"', 'app.send_task("proj.tasks.charge_order"')
    assert findings("CD541", tmp_path / "good", {**files, "proj/sender.py": fixed}, app=_registered_app()) == []


def test_send_task_names_are_not_judged_for_a_producer_only_app(tmp_path):
    producer = Celery("web", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    files = {**APP, "proj/celery.py": "app = None\n", "proj/sender.py": SENDER}
    assert findings("CD541", tmp_path / "producer", files, app=producer) == []
