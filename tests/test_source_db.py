"""Source checks CD510-CD514: publishing inside transactions, engines shared across fork, scoped sessions left
open, ORM instances as task arguments. Bad trees are found at the right line; fixed trees produce nothing."""
from __future__ import annotations

from celery import Celery

from celery_doctor.model import Confidence
from tests.test_source_support import findings, line_of, lines, text

APP = {"proj/__init__.py": "", "proj/celery.py": """
    from celery import Celery
    app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    app.autodiscover_tasks(["proj"])
    """}

MODELS = {"proj/models.py": """
    from sqlalchemy import Column, Integer, String
    from sqlalchemy.orm import declarative_base

    Base = declarative_base()

    class Order(Base):
        __tablename__ = "orders"
        id = Column(Integer, primary_key=True)
        status = Column(String)
    """}

TASKS = {"proj/tasks.py": """
    from .celery import app

    @app.task
    def process_order(order_id):
        return order_id

    @app.task
    def send_receipt(order_id):
        return order_id
    """}

SQLA_BAD = """
    from .models import Order
    from .tasks import process_order, send_receipt


    def create_order(session, payload):
        order = Order(**payload)
        session.add(order)
        session.flush()
        process_order.delay(order.id)
        session.commit()
        return order


    def pay(Session, order_id):
        with Session.begin() as session:
            session.get(Order, order_id).status = "paid"
            send_receipt.delay(order_id)
    """

SQLA_FIXED = """
    from .models import Order
    from .tasks import process_order, send_receipt


    def create_order(session, payload):
        order = Order(**payload)
        session.add(order)
        session.commit()
        process_order.delay(order.id)
        return order


    def pay(Session, order_id):
        with Session.begin() as session:
            session.get(Order, order_id).status = "paid"
        send_receipt.delay(order_id)
    """


def test_publish_before_sqlalchemy_commit(tmp_path):
    found = findings("CD510", tmp_path / "bad", {**APP, **MODELS, **TASKS, "proj/services.py": SQLA_BAD})
    assert lines(found) == [line_of(SQLA_BAD, "process_order.delay"), line_of(SQLA_BAD, "send_receipt.delay")]
    first, second = sorted(found, key=lambda f: f.location.line)
    assert first.subject == "task:proj.tasks.process_order"
    assert f"`session.add(order)` at line {line_of(SQLA_BAD, 'session.add')}" in first.evidence[0]
    assert f"committed at line {line_of(SQLA_BAD, 'session.commit')}" in first.evidence[0]
    assert "`with Session.begin()" in second.evidence[0]
    assert "before the transaction commits" in second.evidence[1]
    assert findings("CD510", tmp_path / "good", {**APP, **MODELS, **TASKS, "proj/services.py": SQLA_FIXED}) == []
    http = """
        import requests
        from .tasks import process_order

        def cancel_remote(order_id):
            http_session = requests.Session()
            http_session.delete(f"https://partner.example/orders/{order_id}")
            process_order.delay(order_id)
        """
    assert findings("CD510", tmp_path / "http", {**APP, **TASKS, "proj/remote.py": http}) == []


DJANGO_BAD = """
    from django.db import transaction

    from .models import Order
    from .tasks import process_order, send_receipt


    @transaction.atomic
    def checkout(request):
        order = Order.objects.create(user=request.user)
        process_order.delay(order.pk)
        return order


    def refund(order_id):
        with transaction.atomic():
            Order.objects.filter(pk=order_id).update(status="refunded")
            send_receipt.apply_async((order_id,))
    """

DJANGO_FIXED = """
    from functools import partial

    from django.db import transaction

    from .models import Order
    from .tasks import process_order, send_receipt


    @transaction.atomic
    def checkout(request):
        order = Order.objects.create(user=request.user)
        process_order.delay_on_commit(order.pk)
        return order


    def refund(order_id):
        with transaction.atomic():
            Order.objects.filter(pk=order_id).update(status="refunded")
            transaction.on_commit(lambda: send_receipt.apply_async((order_id,)))
            transaction.on_commit(partial(send_receipt.delay, order_id))
    """


def test_publish_inside_django_atomic(tmp_path):
    found = findings("CD511", tmp_path / "bad", {**APP, **TASKS, "proj/views.py": DJANGO_BAD})
    assert lines(found) == [line_of(DJANGO_BAD, "process_order.delay"), line_of(DJANGO_BAD, "apply_async")]
    assert "decorated with @transaction.atomic" in found[0].evidence[0]
    assert "inside `with transaction.atomic():`" in text(found)
    assert "delay_on_commit" in found[0].fix
    assert findings("CD511", tmp_path / "good", {**APP, **TASKS, "proj/views.py": DJANGO_FIXED}) == []


def test_atomic_on_a_read_replica_is_not_a_write_transaction(tmp_path):
    # saleor's generate_deferred_payloads: atomic(using=replica) to read one snapshot; nothing to commit
    views = """
        from django.conf import settings
        from django.db import transaction
        from .tasks import process_order


        def replay(order_id):
            with transaction.atomic(using=settings.DATABASE_CONNECTION_REPLICA_NAME, savepoint=False):
                process_order.delay(order_id)
            with transaction.atomic(using="default"):
                process_order.delay(order_id)
        """
    found = findings("CD511", tmp_path, {**APP, **TASKS, "proj/views.py": views})
    assert lines(found) == [line_of(views, "process_order.delay", 2)]


def test_publish_in_a_view_with_atomic_requests(tmp_path):
    settings = {"proj/settings.py": """
        DATABASES = {
            "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "ATOMIC_REQUESTS": True},
        }
        """}
    views = """
        from django.db import transaction
        from .tasks import process_order


        def place_order(request, order_id):
            process_order.delay(order_id)
            return None


        @transaction.non_atomic_requests
        def webhook(request, order_id):
            process_order.delay(order_id)
            return None
        """
    found = findings("CD511", tmp_path / "bad", {**APP, **TASKS, **settings, "proj/views.py": views})
    assert lines(found) == [line_of(views, "process_order.delay")]
    assert "ATOMIC_REQUESTS=True" in found[0].evidence[0] and found[0].confidence is Confidence.INFERRED
    fixed = views.replace("process_order.delay(order_id)\n            return None\n\n\n        @",
                          "transaction.on_commit(lambda: process_order.delay(order_id))\n            return None\n\n\n        @")
    assert fixed != views
    assert findings("CD511", tmp_path / "good", {**APP, **TASKS, **settings, "proj/views.py": fixed}) == []
    # without ATOMIC_REQUESTS, a plain view publishes after its autocommitted writes
    assert findings("CD511", tmp_path / "plain", {**APP, **TASKS, "proj/views.py": views}) == []
    # Django reads ATOMIC_REQUESTS only in a database's entry (django/db/utils.py configure_settings,
    # django/core/handlers/base.py make_view_atomic): a top-level setting does nothing
    top_level = {"proj/settings.py": """
        ATOMIC_REQUESTS = True
        DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop"}}

        class Settings:
            ATOMIC_REQUESTS = True
        """}
    assert findings("CD511", tmp_path / "top", {**APP, **TASKS, **top_level, "proj/views.py": views}) == []
    # ... but a database entry that reads it from a name, or sets it by subscript, does
    for n, settings_text in enumerate(("ATOMIC = True\nDATABASES = {'default': {'NAME': 'shop', 'ATOMIC_REQUESTS': ATOMIC}}\n",
                              "DATABASES = {'default': env.db()}\nDATABASES['default']['ATOMIC_REQUESTS'] = True\n")):
        found = findings("CD511", tmp_path / f"db{n}", {**APP, **TASKS, "proj/settings.py": settings_text, "proj/views.py": views})
        assert lines(found) == [line_of(views, "process_order.delay")]


DB_MODULE = """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from .models import Base

    engine = create_engine("postgresql://shop@db/shop", pool_size=5)
    Base.metadata.create_all(engine)
    Session = sessionmaker(bind=engine)
    """

DB_TASKS = {"proj/tasks.py": """
    from .celery import app
    from .db import Session

    @app.task
    def close_order(order_id):
        with Session() as session:
            session.get_order(order_id)
    """}


def test_engine_created_at_import_in_a_worker_module(tmp_path):
    found = findings("CD512", tmp_path / "bad", {**APP, **MODELS, **DB_TASKS, "proj/db.py": DB_MODULE})
    assert lines(found) == [line_of(DB_MODULE, "create_engine(")]
    finding = found[0]
    assert finding.subject.startswith("file:") and finding.subject.endswith("proj/db.py")
    assert "imported by" in finding.evidence[0] and "proj/tasks.py" in finding.evidence[0]
    assert "used at import time too" in text(found) and finding.confidence is Confidence.CONFIGURED
    assert "engine.dispose(close=False)" in finding.fix
    handler = {"proj/signals.py": """
        from celery.signals import worker_process_init
        from .db import engine

        @worker_process_init.connect
        def reset_engine(**kwargs):
            engine.dispose(close=False)
        """}
    assert findings("CD512", tmp_path / "good", {**APP, **MODELS, **DB_TASKS, **handler, "proj/db.py": DB_MODULE}) == []
    nullpool = DB_MODULE.replace("pool_size=5", "poolclass=NullPool")
    assert findings("CD512", tmp_path / "nullpool", {**APP, **MODELS, **DB_TASKS, "proj/db.py": nullpool}) == []
    # a module only the web process imports is not the worker's concern
    web_only = {"proj/tasks.py": "from .celery import app\n\n@app.task\ndef noop():\n    return 1\n",
                "proj/web.py": "from .db import Session\n"}
    assert findings("CD512", tmp_path / "web", {**APP, **MODELS, **web_only, "proj/db.py": DB_MODULE}) == []


def test_engine_check_respects_a_single_process_pool(tmp_path):
    solo = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    solo.conf.worker_pool = "solo"
    files = {**APP, **MODELS, **DB_TASKS, "proj/db.py": DB_MODULE}
    assert findings("CD512", tmp_path / "solo", files, app=solo) == []
    prefork = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    assert len(findings("CD512", tmp_path / "prefork", files, app=prefork)) == 1


SCOPED = """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = create_engine("postgresql://shop@db/shop")
    Session = scoped_session(sessionmaker(bind=engine))
    """

SCOPED_TASKS = {"proj/tasks.py": """
    from .celery import app
    from .db import Session
    from .models import Order

    @app.task
    def mark_shipped(order_id):
        order = Session.get(Order, order_id)
        order.status = "shipped"
        Session.commit()

    @app.task
    def count_orders():
        return Session.query(Order).count()
    """}


def test_scoped_session_without_remove(tmp_path):
    found = findings("CD513", tmp_path / "bad", {**APP, **MODELS, **SCOPED_TASKS, "proj/db.py": SCOPED})
    assert lines(found) == [line_of(SCOPED, "scoped_session(sessionmaker")]
    assert "2 task(s): proj.tasks.count_orders, proj.tasks.mark_shipped" in found[0].evidence[0]
    assert "PendingRollbackError" in found[0].evidence[1]
    postrun = {"proj/signals.py": """
        from celery.signals import task_postrun
        from .db import Session

        @task_postrun.connect
        def remove_session(**kwargs):
            Session.remove()
        """}
    assert findings("CD513", tmp_path / "good", {**APP, **MODELS, **SCOPED_TASKS, **postrun, "proj/db.py": SCOPED}) == []
    base_class = {"proj/base.py": """
        from celery import Task
        from .db import Session

        class DatabaseTask(Task):
            def after_return(self, *args, **kwargs):
                Session.remove()
        """}
    assert findings("CD513", tmp_path / "base", {**APP, **MODELS, **SCOPED_TASKS, **base_class,
                                                 "proj/db.py": SCOPED}) == []


ORM_BAD = """
    from django.db.models.signals import post_save
    from django.dispatch import receiver
    from django.shortcuts import get_object_or_404

    from .models import Invoice
    from .tasks import send_invoice, audit_login


    def resend_invoice(request, invoice_id):
        invoice = get_object_or_404(Invoice, pk=invoice_id)
        send_invoice.delay(invoice)
        audit_login.apply_async(args=(request.user,))


    def resend_all():
        for invoice in Invoice.objects.filter(status="failed"):
            send_invoice.delay(invoice=invoice)


    @receiver(post_save, sender=Invoice)
    def invoice_saved(sender, instance, created, **kwargs):
        send_invoice.delay(instance)
    """

ORM_FIXED = """
    from django.db.models.signals import post_save
    from django.dispatch import receiver
    from django.shortcuts import get_object_or_404

    from .models import Invoice
    from .tasks import send_invoice, audit_login


    def resend_invoice(request, invoice_id):
        invoice = get_object_or_404(Invoice, pk=invoice_id)
        send_invoice.delay(invoice.pk)
        audit_login.apply_async(args=(request.user.pk,))


    def resend_all():
        for invoice_id in Invoice.objects.filter(status="failed").values_list("pk", flat=True):
            send_invoice.delay(invoice=invoice_id)


    @receiver(post_save, sender=Invoice)
    def invoice_saved(sender, instance, created, **kwargs):
        send_invoice.delay(instance.pk)
    """

ORM_TREE = {"proj/models.py": """
    from django.db import models

    class Invoice(models.Model):
        status = models.CharField(max_length=20)
    """, "proj/tasks.py": """
    from .celery import app

    @app.task
    def send_invoice(invoice):
        return invoice

    @app.task
    def audit_login(user):
        return user
    """}


def test_orm_instances_passed_as_task_arguments(tmp_path):
    found = findings("CD514", tmp_path / "bad", {**APP, **ORM_TREE, "proj/views.py": ORM_BAD})
    assert lines(found) == [line_of(ORM_BAD, "send_invoice.delay(invoice)"), line_of(ORM_BAD, "request.user"),
                            line_of(ORM_BAD, "send_invoice.delay(invoice=invoice)"),
                            line_of(ORM_BAD, "send_invoice.delay(instance)")]
    evidence = text(found)
    assert "`invoice`, a model instance" in evidence and "`request.user`, the user model instance" in evidence
    assert "the model instance the signal was sent for" in evidence
    assert "EncodeError" in evidence
    assert {f.subject for f in found} == {"task:proj.tasks.send_invoice", "task:proj.tasks.audit_login"}
    assert findings("CD514", tmp_path / "good", {**APP, **ORM_TREE, "proj/views.py": ORM_FIXED}) == []


def test_orm_instance_is_not_reported_where_the_publish_cannot_fail(tmp_path):
    # Under pickle the instance is pickled and the task is sent (a stale copy is no lost task): the old test
    # expected a "stale data" finding here, which the check no longer claims.
    pickled = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    pickled.conf.task_serializer = "pickle"
    assert findings("CD514", tmp_path / "app", {**APP, **ORM_TREE, "proj/views.py": ORM_BAD}, app=pickled) == []
    # without an app, the serializer the Django settings set
    settings = {"proj/settings.py": 'CELERY_TASK_SERIALIZER = "pickle"\n'}
    assert findings("CD514", tmp_path / "src", {**APP, **ORM_TREE, **settings, "proj/views.py": ORM_BAD}) == []
    json_settings = {"proj/settings.py": 'CELERY_TASK_SERIALIZER = config("SERIALIZER", default="json")\n'}
    found = findings("CD514", tmp_path / "json", {**APP, **ORM_TREE, **json_settings, "proj/views.py": ORM_BAD})
    assert len(found) == 4 and "json serializer (CELERY_TASK_SERIALIZER in" in found[0].evidence[1]
    # a task base class that overrides apply_async/delay may convert instances (not known to fail)
    converting = {"proj/tasks.py": """
        from celery import Task
        from .celery import app

        class ModelTask(Task):
            def apply_async(self, args=None, kwargs=None, **options):
                args = [getattr(a, "pk", a) for a in args or ()]
                return super().apply_async(args, kwargs, **options)

        @app.task(base=ModelTask)
        def send_invoice(invoice):
            return invoice

        @app.task(serializer="pickle")
        def audit_login(user):
            return user
        """}
    assert findings("CD514", tmp_path / "base", {**APP, **ORM_TREE, **converting, "proj/views.py": ORM_BAD}) == []
    # a model kombu's JSONEncoder can encode (__json__)
    models = {"proj/models.py": """
        from django.db import models

        class Invoice(models.Model):
            status = models.CharField(max_length=20)

            def __json__(self):
                return {"pk": self.pk}
        """}
    assert findings("CD514", tmp_path / "json_model", {**APP, **ORM_TREE, **models, "proj/views.py": ORM_BAD}) == []


def test_a_task_class_that_publishes_on_commit_makes_atomic_publishes_safe(tmp_path):
    # addons-server's AMOTask (the app's task_cls) overrides apply_async to call transaction.on_commit: every
    # .delay() in an atomic block is sent after the commit (CD511 stays quiet), yet it still serializes the
    # arguments, so a model instance still fails (CD514 still reports it)
    app = {"proj/__init__.py": "", "proj/celery.py": """
        import functools
        from celery import Celery
        from celery.app.task import Task
        from django.db import transaction

        class AMOTask(Task):
            def apply_async(self, args=None, kwargs=None, **options):
                transaction.on_commit(functools.partial(super().apply_async, args=args, kwargs=kwargs, **options))

        app = Celery("proj", task_cls=AMOTask)
        task = app.task
        """}
    tasks = {"proj/tasks.py": """
        from .celery import task

        @task
        def process_order(order_id):
            return order_id
        """, "proj/models.py": ORM_TREE["proj/models.py"]}
    views = """
        from django.db import transaction
        from .models import Invoice
        from .tasks import process_order


        @transaction.atomic
        def place_order(request, order_id):
            invoice = Invoice.objects.get(pk=order_id)
            process_order.delay(invoice)
        """
    assert findings("CD511", tmp_path / "a", {**app, **tasks, "proj/views.py": views}) == []
    assert lines(findings("CD514", tmp_path / "b", {**app, **tasks, "proj/views.py": views})) == [
        line_of(views, "process_order.delay")]
    plain = {**app, "proj/celery.py": "from celery import Celery\napp = Celery('proj')\ntask = app.task\n"}
    assert lines(findings("CD511", tmp_path / "c", {**plain, **tasks, "proj/views.py": views})) == [
        line_of(views, "process_order.delay")]
