"""Source checks CD520-CD522: unbounded retries, autoretry_for=(Exception,), retries without backoff.
Bad trees are found at the right line; fixed trees produce nothing."""
from __future__ import annotations

from celery import Celery

from celery_doctor.model import Impact
from tests.test_source_support import findings, line_of, lines, text

APP = {"proj/__init__.py": "", "proj/celery.py": """
    from celery import Celery
    app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    """}

UNBOUNDED = """
    import requests
    from celery import Task
    from .celery import app


    @app.task(bind=True, max_retries=None, retry_backoff=True)
    def push_webhook(self, url, payload):
        try:
            requests.post(url, json=payload, timeout=10).raise_for_status()
        except requests.RequestException as exc:
            raise self.retry(exc=exc)


    class PatientTask(Task):
        max_retries = None
        autoretry_for = (ConnectionError,)
        retry_backoff = True


    @app.task(base=PatientTask)
    def sync_crm(contact_id):
        return contact_id


    @app.task(max_retries=None)
    def never_retries(x):
        return x
    """


def test_unbounded_retries(tmp_path):
    found = findings("CD520", tmp_path / "bad", {**APP, "proj/tasks.py": UNBOUNDED})
    assert lines(found) == [line_of(UNBOUNDED, "max_retries=None, retry_backoff"), line_of(UNBOUNDED, "def sync_crm")]
    assert "max_retries=None (decorator) and the task retries (self.retry() at line" in found[0].evidence[0]
    assert "max_retries=None (base class PatientTask) and the task retries (autoretry_for=(ConnectionError))" in \
        found[1].evidence[0]
    fixed = UNBOUNDED.replace("max_retries=None, retry_backoff", "max_retries=8, retry_backoff").replace(
        "max_retries = None", "max_retries = 10")
    assert findings("CD520", tmp_path / "good", {**APP, "proj/tasks.py": fixed}) == []


def _poll(self):
    return None


def test_unbounded_retries_set_through_the_app_config(tmp_path):
    """task_annotations can unbound a task the source leaves at the default: the app's value wins."""
    source = """
        from .celery import app

        @app.task(bind=True, name="proj.tasks.poll")
        def poll(self):
            raise self.retry(countdown=2 ** self.request.retries)
        """
    app = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.task_annotations = {"proj.tasks.poll": {"max_retries": None}}
    app.task(name="proj.tasks.poll", bind=True, shared=False)(_poll)
    found = findings("CD520", tmp_path / "annotated", {**APP, "proj/tasks.py": source}, app=app)
    assert len(found) == 1 and "the app's task settings" in found[0].evidence[0]
    plain = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    plain.task(name="proj.tasks.poll", bind=True, shared=False)(_poll)
    assert findings("CD520", tmp_path / "plain", {**APP, "proj/tasks.py": source}, app=plain) == []


AUTORETRY = """
    from celery import shared_task


    @shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
    def import_feed(url):
        return url
    """


def test_autoretry_for_exception(tmp_path):
    found = findings("CD521", tmp_path / "bad", {**APP, "proj/tasks.py": AUTORETRY})
    assert lines(found) == [line_of(AUTORETRY, "autoretry_for")]
    assert "retried 5 times" in text(found)
    narrow = AUTORETRY.replace("(Exception,)", "(ConnectionError, TimeoutError)")
    assert findings("CD521", tmp_path / "narrow", {**APP, "proj/tasks.py": narrow}) == []
    excluded = AUTORETRY.replace("retry_backoff=True,", "dont_autoretry_for=(ValueError,), retry_backoff=True,")
    assert findings("CD521", tmp_path / "excluded", {**APP, "proj/tasks.py": excluded}) == []


NO_BACKOFF = """
    from celery import shared_task


    @shared_task(autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=60)
    def refresh_rates(day):
        return day


    @shared_task(bind=True, max_retries=5)
    def fetch_statement(self, account_id):
        try:
            return download(account_id)
        except ConnectionError as exc:
            raise self.retry(exc=exc, countdown=30)


    @shared_task(bind=True)
    def ping_partner(self, partner_id):
        try:
            return ping(partner_id)
        except TimeoutError as exc:
            raise self.retry(exc=exc)
    """


def test_retries_without_backoff(tmp_path):
    found = findings("CD522", tmp_path / "bad", {**APP, "proj/tasks.py": NO_BACKOFF})
    assert lines(found) == [line_of(NO_BACKOFF, "autoretry_for"), line_of(NO_BACKOFF, "countdown=30"),
                            line_of(NO_BACKOFF, "raise self.retry(exc=exc)")]
    by_line = sorted(found, key=lambda f: f.location.line)
    assert "every retry waits 60 s (default_retry_delay)" in by_line[0].evidence[0]
    assert "all retries are spent within 3 min" in by_line[0].evidence[1]
    assert "max_retries=5: all retries are spent within 150 s" in by_line[1].evidence[1]
    assert "a fixed 3 min (default_retry_delay, Celery's default)" in by_line[2].evidence[0]
    assert all(f.impact is Impact.MEDIUM for f in found)
    fixed = NO_BACKOFF.replace("default_retry_delay=60", "retry_backoff=True, retry_backoff_max=600").replace(
        "countdown=30", "countdown=min(600, 10 * 2 ** self.request.retries)").replace(
        "raise self.retry(exc=exc)\n", "raise self.retry(exc=exc, countdown=backoff(self.request.retries))\n")
    assert findings("CD522", tmp_path / "good", {**APP, "proj/tasks.py": fixed}) == []


PER_CALL = """
    from celery import shared_task

    @shared_task(bind=True, max_retries=None)
    def bounded_per_call(self, url):
        try:
            return fetch(url)
        except IOError as exc:
            raise self.retry(exc=exc, max_retries=5, countdown=2 ** self.request.retries)

    @shared_task(bind=True, max_retries=None, autoretry_for=(IOError,), retry_kwargs={"max_retries": 8})
    def bounded_autoretry(self, url):
        return fetch(url)

    @shared_task(bind=True, max_retries=None)
    def unbounded(self, url):
        try:
            return fetch(url)
        except IOError as exc:
            raise self.retry(exc=exc, max_retries=None)
    """


def test_a_per_call_max_retries_bounds_the_retry(tmp_path):
    # Task.retry uses the task's max_retries only when the call passes None (celery/app/task.py Task.retry);
    # autoretry passes retry_kwargs to it (celery/app/autoretry.py)
    found = findings("CD520", tmp_path, {**APP, "proj/tasks.py": PER_CALL})
    assert [f.subject for f in found] == ["task:proj.tasks.unbounded"]


SPLAT = """
    from celery import shared_task
    from requests import RequestException

    from . import app_settings

    LITERAL_OPTIONS = dict(max_retries=5)


    @shared_task(bind=True, autoretry_for=(RequestException,), **app_settings.API_TASK_RETRY_OPTIONS)
    def options_from_settings(self, device_pk):
        return device_pk


    @shared_task(bind=True, autoretry_for=(RequestException,), **LITERAL_OPTIONS)
    def literal_options(self, device_pk):
        return device_pk
    """


def test_options_passed_as_double_star_are_read_or_treated_as_unknown(tmp_path):
    # openwisp-controller: **API_TASK_RETRY_OPTIONS comes from get_setting(..., dict(retry_backoff=True, ...)):
    # the options cannot be read, so nothing may be assumed about them (no default_retry_delay finding)
    settings = {"proj/app_settings.py": """
        API_TASK_RETRY_OPTIONS = get_setting("API_TASK_RETRY_OPTIONS", dict(max_retries=5, retry_backoff=True))
        """}
    found = findings("CD522", tmp_path, {**APP, **settings, "proj/tasks.py": SPLAT})
    assert [(f.subject, f.location.line) for f in found] == [("task:proj.tasks.literal_options",
                                                               line_of(SPLAT, "autoretry_for", 2))]
    assert "max_retries=5" in found[0].evidence[1]


def test_a_per_call_bound_with_a_fixed_countdown_is_a_fixed_interval_retry(tmp_path):
    source = PER_CALL.replace("countdown=2 ** self.request.retries", "countdown=30")
    found = findings("CD522", tmp_path, {**APP, "proj/tasks.py": source})
    assert [f.subject for f in found] == ["task:proj.tasks.bounded_per_call"]
    assert "max_retries=5: all retries are spent within 150 s" in found[0].evidence[1]
