"""Source checks CD501-CD503: swallowed task errors, swallowed publish errors, waiting on results in a task.
Each bad tree is found at the right line; the same tree with the fix applied produces nothing."""
from __future__ import annotations

import textwrap

from celery_doctor.model import Category
from tests.test_source_support import findings, line_of, lines, text

APP = {"proj/__init__.py": "", "proj/celery.py": """
    from celery import Celery
    app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    """}

WELCOME_BAD = """
    import logging
    from smtplib import SMTPException

    from celery import shared_task

    from .mail import send_mail

    log = logging.getLogger(__name__)


    @shared_task(bind=True)
    def send_welcome_email(self, user_id):
        try:
            send_mail(user_id, "welcome")
        except Exception:
            log.exception("welcome mail failed for %s", user_id)
    """

WELCOME_FIXED = """
    import logging
    from smtplib import SMTPException

    from celery import shared_task

    from .mail import send_mail

    log = logging.getLogger(__name__)


    @shared_task(bind=True, max_retries=5)
    def send_welcome_email(self, user_id):
        try:
            send_mail(user_id, "welcome")
        except SMTPException as exc:
            raise self.retry(exc=exc, countdown=2 ** self.request.retries)
        except Exception:
            log.exception("welcome mail failed for %s", user_id)
            raise
    """


def test_broad_except_in_task_body(tmp_path):
    found = findings("CD501", tmp_path / "bad", {**APP, "proj/mail.py": "def send_mail(*a): pass\n",
                                                 "proj/tasks.py": WELCOME_BAD})
    assert lines(found) == [line_of(WELCOME_BAD, "except Exception")]
    assert found[0].subject == "task:proj.tasks.send_welcome_email"
    assert found[0].location.path.endswith("proj/tasks.py")
    assert f"`except Exception:` at line {found[0].location.line}" in found[0].evidence[0] and "logs" in found[0].evidence[0]
    assert "SUCCESS" in text(found)
    assert found[0].category is Category.TASK_CODE
    fixed = findings("CD501", tmp_path / "good", {**APP, "proj/mail.py": "def send_mail(*a): pass\n",
                                                  "proj/tasks.py": WELCOME_FIXED})
    assert fixed == []


def test_broad_except_variants_bare_suppress_loop_and_swallowed_retry(tmp_path):
    source = """
        from contextlib import suppress
        from .celery import app

        @app.task(bind=True)
        def refresh(self, ids):
            for item in ids:
                try:
                    fetch(item)
                except:
                    pass

        @app.task(bind=True)
        def charge(self, order_id):
            try:
                if not gateway_ready():
                    self.retry(countdown=30)
                do_charge(order_id)
            except Exception as exc:
                return {"error": str(exc)}

        @app.task
        def cleanup(path):
            with suppress(Exception):
                remove(path)
        """
    found = findings("CD501", tmp_path / "bad", {**APP, "proj/tasks.py": source})
    assert lines(found) == [line_of(source, "except:"), line_of(source, "except Exception"), line_of(source, "with suppress")]
    evidence = text(found)
    assert "a bare `except:`" in evidence and "in a loop" in evidence
    assert f"self.retry() at line {line_of(source, 'self.retry')}" in evidence and "subclass Exception" in evidence
    assert "contextlib.suppress(Exception)" in evidence
    fixed = findings("CD501", tmp_path / "good", {**APP, "proj/tasks.py": """
        from .celery import app

        class NotFound(Exception):
            pass

        @app.task(bind=True)
        def refresh(self, ids):
            for item in ids:
                try:
                    fetch(item)
                except NotFound:
                    continue

        @app.task(bind=True, max_retries=3)
        def charge(self, order_id):
            try:
                do_charge(order_id)
            except Exception as exc:
                mark_failed(order_id)
                raise

        @app.task
        def audit(order_id):
            try:
                send(order_id)
            except Exception as exc:
                Order.objects.filter(pk=order_id).update(status="audit_failed", error=str(exc))
        """})
    assert fixed == []


def test_broad_except_in_a_decorator_and_a_base_class_around_tasks(tmp_path):
    decorator = """
        import functools
        import logging

        log = logging.getLogger(__name__)


        def log_errors(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                try:
                    return func(*args, **kwargs)
                except Exception:
                    log.exception("task %s failed", func.__name__)
                    {reraise}
            return wrapper


        class SafeTask(Task):
            def __call__(self, *args, **kwargs):
                try:
                    return super().__call__(*args, **kwargs)
                except Exception:
                    log.exception("failed")
                    {reraise}
        """
    tasks = """
        from celery import Task
        from .celery import app
        from .wrappers import log_errors, SafeTask

        @app.task
        @log_errors
        def import_orders(batch_id):
            return batch_id

        @app.task
        @log_errors
        def import_customers(batch_id):
            return batch_id

        @app.task(base=SafeTask)
        def export_orders(day):
            return day

        @log_errors  # wraps the Task object, which the worker never calls: not a swallow in the worker
        @app.task
        def export_customers(day):
            return day
        """
    bad = findings("CD501", tmp_path / "bad", {**APP, "proj/tasks.py": tasks,
                                               "proj/wrappers.py": "from celery import Task\n" + textwrap.dedent(decorator).replace("{reraise}", "")})
    wrappers = "from celery import Task\n" + textwrap.dedent(decorator)
    assert [(f.location.path.rsplit("/", 1)[-1], f.location.line) for f in bad] == [
        ("wrappers.py", line_of(wrappers, "except Exception", 1)), ("wrappers.py", line_of(wrappers, "except Exception", 2))]
    assert "decorator @log_errors wraps 2 task(s) (proj.tasks.import_customers, proj.tasks.import_orders)" in bad[0].evidence[0]
    assert "base class SafeTask.__call__ wraps 1 task(s) (proj.tasks.export_orders)" in bad[1].evidence[0]
    good = findings("CD501", tmp_path / "good", {**APP, "proj/tasks.py": tasks,
                                                 "proj/wrappers.py": "from celery import Task\n" + textwrap.dedent(decorator).replace("{reraise}", "raise")})
    assert good == []


def test_swallowed_publish_error(tmp_path):
    views = """
        import logging
        from kombu.exceptions import OperationalError
        from .tasks import charge_order

        logger = logging.getLogger(__name__)

        def place_order(request, order_id):
            try:
                charge_order.delay(order_id)
            except Exception:
                logger.warning("could not queue the charge for %s", order_id)
            return "ok"

        def retry_payment(order_id):
            try:
                charge_order.apply_async((order_id,), countdown=60)
            except OperationalError:
                pass
        """
    bad = findings("CD502", tmp_path / "bad", {**APP, "proj/views.py": views, "proj/tasks.py": """
        from .celery import app

        @app.task
        def charge_order(order_id):
            return order_id
        """})
    assert lines(bad) == [line_of(views, "except Exception"), line_of(views, "except OperationalError")]
    assert bad[0].subject == "file:" + bad[0].location.path
    assert f"`charge_order.delay(order_id)` at line {line_of(views, '.delay(')}" in bad[0].evidence[0]
    assert "OperationalError" in text(bad)
    # the same publish in a task body is reported once, by CD502 (not also by CD501)
    in_task = {**APP, "proj/tasks.py": """
        import logging
        from .celery import app
        log = logging.getLogger(__name__)

        @app.task
        def fan_out(ids):
            try:
                for i in ids:
                    process.delay(i)
            except Exception:
                log.exception("fan out failed")

        @app.task
        def process(i):
            return i
        """}
    assert lines(findings("CD502", tmp_path / "task", in_task)) == [line_of(in_task["proj/tasks.py"], "except")]
    assert findings("CD501", tmp_path / "task2", in_task) == []
    good = findings("CD502", tmp_path / "good", {**APP, "proj/tasks.py": """
        from .celery import app

        @app.task
        def charge_order(order_id):
            return order_id
        """, "proj/views.py": """
        import logging
        from kombu.exceptions import OperationalError
        from .models import PendingTask
        from .tasks import charge_order

        logger = logging.getLogger(__name__)

        def place_order(request, order_id):
            charge_order.delay(order_id)
            return "ok"

        def retry_payment(order_id):
            try:
                charge_order.apply_async((order_id,), countdown=60)
            except OperationalError:
                logger.warning("broker down, stored in the outbox")
                PendingTask.objects.create(name="charge_order", args=[order_id])

        def notify(order_id):
            try:
                charge_order.delay(order_id)
            except ValueError:
                pass
        """})
    assert good == []


def test_result_get_inside_task(tmp_path):
    source = """
        from celery import group
        from celery.result import allow_join_result
        from .celery import app

        @app.task
        def fetch_part(day, part):
            return part

        @app.task
        def build_report(day):
            first = fetch_part.delay(day, 0)
            head = first.get(timeout=60)
            rest = group(fetch_part.s(day, p) for p in range(1, 4))().get()
            return [head, *rest]

        @app.task
        def build_summary(day):
            with allow_join_result():
                return fetch_part.apply_async((day, 0)).get()
        """
    bad = findings("CD503", tmp_path / "bad", {**APP, "proj/tasks.py": source})
    assert lines(bad) == [line_of(source, "first.get"), line_of(source, "().get()"), line_of(source, "apply_async((day")]
    assert "RuntimeError" in bad[0].evidence[1]
    assert "deadlocks" in bad[2].evidence[1]
    good = findings("CD503", tmp_path / "good", {**APP, "proj/tasks.py": """
        from celery import chain, chord
        from .celery import app

        @app.task
        def fetch_part(day, part):
            return part

        @app.task
        def assemble(parts, day):
            return parts

        @app.task
        def build_report(day):
            options = {"day": day}
            day = options.get("day")
            chord(fetch_part.s(day, p) for p in range(4))(assemble.s(day))

        def report_now(day):
            # outside a task, waiting is allowed
            return fetch_part.delay(day, 0).get(timeout=10)
        """})
    assert good == []


HANDLERS = """
    import logging

    from celery import shared_task
    from django.http import JsonResponse

    from .locks import cache_lock
    from .tasks_impl import fetch, import_feed

    log = logging.getLogger(__name__)


    @shared_task
    def sync_feed(feed_id):
        lock = cache_lock(feed_id)
        try:
            fetch(feed_id)
        except Exception:
            log.exception("sync failed")
            lock.release()
            return


    @shared_task
    def classify(item_id):
        try:
            result = fetch(item_id)
        except Exception as exc:
            note = f"classification failed: {exc}"
        else:
            note = str(result)
        return note


    @shared_task
    def refresh(item_id):
        try:
            fetch(item_id)
        except Exception:
            log.warning("refresh failed, re-enqueued")
            enqueue_refresh(item_id)


    def start_import(request, url):
        try:
            import_feed.delay(url)
        except Exception:
            log.exception("could not queue the import")
            return JsonResponse({"error": "try again"}, status=503)
        return JsonResponse({"queued": True})


    def start_import_quietly(request, url):
        try:
            import_feed.delay(url)
        except Exception:
            log.exception("could not queue the import")
        return JsonResponse({"queued": True})
    """


def test_handlers_that_tell_the_caller_requeue_or_fall_back_are_not_swallowing(tmp_path):
    files = {**APP, "proj/tasks.py": HANDLERS}
    # logs, releases its lock and returns: the work is still lost
    assert lines(findings("CD501", tmp_path / "a", files)) == [line_of(HANDLERS, "except Exception:", 1)]
    # an error response tells the caller; only the quiet view drops the task
    assert lines(findings("CD502", tmp_path / "b", files)) == [line_of(HANDLERS, "except Exception:", 4)]


CONSUMED = """
    import logging

    from celery import chain, group, shared_task

    log = logging.getLogger(__name__)


    @shared_task
    def index_chunk(ids):
        try:
            index(ids)
        except Exception:
            log.exception("indexing failed")
            return "index_chunk threw an error"


    @shared_task
    def finish(results):
        if any(results):
            raise RuntimeError(results)


    @shared_task
    def start_reindex():
        try:
            tasks = group(index_chunk.si(ids) for ids in chunks())
        except Exception:
            log.exception("could not plan")
            return "start_reindex threw an error"
        return chain(tasks, finish.s())()


    @shared_task
    def ping_partner(url):
        try:
            post(url)
        except Exception:
            log.exception("ping failed")
            return "ping failed"


    def recreate_index_command():
        result = start_reindex.delay()
        error = result.get()
        if error:
            raise SystemExit(error)
    """


def test_an_error_returned_to_a_reader_of_the_result_is_reported(tmp_path):
    # micromasters' recreate_index: chord members and the entry task return their error as the result, which a
    # chord callback or the command waiting on it raises; nobody reads ping_partner's result
    found = findings("CD501", tmp_path, {**APP, "proj/tasks.py": CONSUMED})
    assert [f.subject for f in found] == ["task:proj.tasks.ping_partner"]
