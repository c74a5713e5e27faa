"""Source checks CD530-CD531: de-duplication locks that expire before the task can finish, and locks released
by a run that never acquired them. Bad trees are found at the right line; fixed trees produce nothing."""
from __future__ import annotations

from celery import Celery

from celery_doctor.model import Confidence
from tests.test_source_support import findings, line_of, lines, text

APP = {"proj/__init__.py": "", "proj/celery.py": """
    from celery import Celery
    app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    """}

REDIS_LOCK = """
    import redis
    from .celery import app

    LOCK_TTL = 60 * 5
    r = redis.Redis()


    @app.task(time_limit=1800, soft_time_limit=1700)
    def sync_inventory(warehouse_id):
        key = f"lock:sync:{warehouse_id}"
        if not r.set(key, "1", nx=True, ex=LOCK_TTL):
            return "already running"
        try:
            return run_sync(warehouse_id)
        finally:
            r.delete(key)
    """

# The Celery task cookbook's pattern: a lock helper (context manager) with a module constant, no time limit.
COOKBOOK = """
    import time
    from contextlib import contextmanager

    from django.core.cache import cache

    from .celery import app

    LOCK_EXPIRE = 60 * 10


    @contextmanager
    def memcache_lock(lock_id, oid):
        timeout_at = time.monotonic() + LOCK_EXPIRE - 3
        status = cache.add(lock_id, oid, LOCK_EXPIRE)
        try:
            yield status
        finally:
            if time.monotonic() < timeout_at and status:
                cache.delete(lock_id)


    @app.task(bind=True)
    def import_feed(self, feed_url):
        with memcache_lock(f"import-{feed_url}", self.app.oid) as acquired:
            if acquired:
                return do_import(feed_url)
    """


def test_lock_expiring_before_the_time_limit(tmp_path):
    found = findings("CD530", tmp_path / "bad", {**APP, "proj/tasks.py": REDIS_LOCK})
    assert lines(found) == [line_of(REDIS_LOCK, "nx=True")]
    assert "locks for 5 min; task proj.tasks.sync_inventory may run up to time_limit=30 min (decorator)" in \
        found[0].evidence[0]
    assert found[0].confidence is Confidence.CONFIGURED
    fixed = REDIS_LOCK.replace("time_limit=1800, soft_time_limit=1700", "time_limit=290, soft_time_limit=270")
    assert findings("CD530", tmp_path / "good", {**APP, "proj/tasks.py": fixed}) == []
    longer = REDIS_LOCK.replace("LOCK_TTL = 60 * 5", "LOCK_TTL = 60 * 40")
    assert findings("CD530", tmp_path / "longer", {**APP, "proj/tasks.py": longer}) == []


def test_a_throttle_key_left_to_expire_is_not_a_lock(tmp_path):
    throttle = """
        import redis
        from .celery import app

        r = redis.Redis()


        @app.task
        def notify_user(user_id):
            if not r.set(f"notified:{user_id}", "1", nx=True, ex=60):
                return "throttled"
            return send_push(user_id)
        """
    assert findings("CD530", tmp_path / "throttle", {**APP, "proj/tasks.py": throttle}) == []


def test_lock_in_a_helper_without_any_time_limit(tmp_path):
    found = findings("CD530", tmp_path / "bad", {**APP, "proj/tasks.py": COOKBOOK})
    assert lines(found) == [line_of(COOKBOOK, "cache.add(")]
    assert "locks for 10 min" in found[0].evidence[0] and "has no time_limit" in found[0].evidence[0]
    assert found[0].confidence is Confidence.INFERRED
    fixed = COOKBOOK.replace("@app.task(bind=True)", "@app.task(bind=True, time_limit=9 * 60)")
    assert findings("CD530", tmp_path / "good", {**APP, "proj/tasks.py": fixed}) == []


def test_lock_against_the_apps_global_time_limit(tmp_path):
    app = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.task_time_limit = 3600
    found = findings("CD530", tmp_path / "global", {**APP, "proj/tasks.py": COOKBOOK}, app=app)
    assert len(found) == 1 and "task_time_limit=1 h" in found[0].evidence[0]
    app.conf.task_time_limit = 300
    assert findings("CD530", tmp_path / "short", {**APP, "proj/tasks.py": COOKBOOK}, app=app) == []


def test_a_zero_time_limit_is_the_workers_limit_not_a_limit_of_zero(tmp_path):
    """Under the prefork pool time_limit=0 falls back to task_time_limit (billiard: `timeout or self.timeout`), and
    without one there is no limit: it used to count as a limit of 0 s, shorter than any lock."""
    zero = COOKBOOK.replace("@app.task(bind=True)", "@app.task(bind=True, time_limit=0)")
    app = Celery("proj", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    app.conf.task_time_limit = 3600
    found = findings("CD530", tmp_path / "global", {**APP, "proj/tasks.py": zero}, app=app)
    assert len(found) == 1 and found[0].confidence is Confidence.CONFIGURED
    assert "task_time_limit=1 h (time_limit=0 falls back to it)" in found[0].evidence[0]
    unbounded = findings("CD530", tmp_path / "none", {**APP, "proj/tasks.py": zero})
    assert len(unbounded) == 1 and "has no time_limit" in unbounded[0].evidence[0]


RELEASE_BAD = """
    from django.core.cache import cache
    from .celery import app


    @app.task
    def rebuild_search_index():
        acquired = cache.add("lock:rebuild", "1", 600)
        try:
            if not acquired:
                return "busy"
            return rebuild()
        finally:
            cache.delete("lock:rebuild")


    def nightly_export(client):
        try:
            if not client.set("lock:export", "1", nx=True, ex=3600):
                return
            export_everything()
        finally:
            client.delete("lock:export")
    """

RELEASE_FIXED = """
    from django.core.cache import cache
    from .celery import app


    @app.task
    def rebuild_search_index():
        acquired = cache.add("lock:rebuild", "1", 600)
        if not acquired:
            return "busy"
        try:
            return rebuild()
        finally:
            cache.delete("lock:rebuild")


    def nightly_export(client):
        acquired = client.set("lock:export", "1", nx=True, ex=3600)
        try:
            if acquired:
                export_everything()
        finally:
            if acquired:
                client.delete("lock:export")
    """


def test_lock_released_in_finally_when_never_acquired(tmp_path):
    found = findings("CD531", tmp_path / "bad", {**APP, "proj/tasks.py": RELEASE_BAD})
    assert lines(found) == [line_of(RELEASE_BAD, 'cache.delete'), line_of(RELEASE_BAD, 'client.delete')]
    first, second = sorted(found, key=lambda f: f.location.line)
    assert first.subject == "task:proj.tasks.rebuild_search_index"
    assert "before the try, and the try runs whether or not it succeeded" in first.evidence[0]
    assert second.subject.startswith("file:") and "inside the try" in second.evidence[0]
    assert "deletes the holder's lock" in text(found)
    assert findings("CD531", tmp_path / "good", {**APP, "proj/tasks.py": RELEASE_FIXED}) == []
    # the cookbook's guarded release is fine
    assert findings("CD531", tmp_path / "cookbook", {**APP, "proj/tasks.py": COOKBOOK}) == []
