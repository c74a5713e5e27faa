"""Shared helpers for the Redis tests (no tests here): real Celery apps in a tmp dir, key snapshots, cleanup.

Databases 1-6 of the local Redis belong to these tests. Each test deletes exactly the keys it created:
the keys present after it that were not present before (and nothing when the db was shared meanwhile
by keys named with another test's uuid).
"""
from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

REDIS_URL = "redis://127.0.0.1:6379"


def client(db: int):
    return redis.Redis(host="127.0.0.1", port=6379, db=db, socket_timeout=10)


def redis_available() -> bool:
    try:
        return bool(client(1).ping())
    except Exception:  # noqa: BLE001
        return False


def key_dump(db: int) -> dict:
    """Every key of the db with its type and full contents, order included (lists, zsets)."""
    r = client(db)
    out = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "hash":
            value = sorted(r.hgetall(key).items())
        elif kind == "set":
            value = sorted(r.smembers(key))
        elif kind == "zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            value = r.get(key)
        else:
            value = None
        out[key] = (kind, value)
    return out


class KeyJanitor:
    """Deletes, at the end, the keys of a db that appeared during the test."""

    def __init__(self, db: int) -> None:
        self.db = db
        self.before = set(client(db).scan_iter(count=1000))

    def cleanup(self) -> None:
        r = client(self.db)
        created = [k for k in r.scan_iter(count=1000) if k not in self.before]
        for i in range(0, len(created), 500):
            r.delete(*created[i:i + 500])


@pytest.fixture
def janitor():
    made = []

    def make(db: int) -> KeyJanitor:
        j = KeyJanitor(db)
        made.append(j)
        return j

    yield make
    for j in made:
        j.cleanup()


def uid() -> str:
    return uuid.uuid4().hex[:8]


def write_app(directory: Path, module: str, db: int, body: str = "", conf: str = "") -> str:
    """A small Celery app module (tasks `add`, `slow`, `record`) on the given db; returns the module name."""
    text = f'''
        import time
        from celery import Celery
        app = Celery({module!r}, broker="{REDIS_URL}/{db}")
        app.conf.update(task_default_queue="celery")
        {textwrap.indent(textwrap.dedent(conf), "        ").strip()}

        @app.task
        def add(x, y):
            return x + y

        @app.task(acks_late=True)
        def slow(seconds):
            time.sleep(seconds)

        @app.task
        def record(n):
            import redis
            redis.Redis(db={db}).rpush("{module}:done", n)
        {textwrap.indent(textwrap.dedent(body), "        ").strip()}
    '''
    (directory / f"{module}.py").write_text(textwrap.dedent(text).lstrip())
    return module


def import_app(directory: Path, module: str):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    sys.modules.pop(module, None)
    importlib.invalidate_caches()
    return importlib.import_module(module).app


def collect(app, deep: bool = False, max_messages: int = 1000, timeout: float = 20.0, url: str | None = None):
    from celery_doctor.broker_target import BrokerTarget
    from celery_doctor.collectors import CollectContext, ScanOptions
    from celery_doctor.collectors.config import collect_config
    from celery_doctor.collectors.redis import collect_redis
    from celery_doctor.deadline import Deadline

    ctx = CollectContext(app=app, broker=BrokerTarget.parse(url) if url else BrokerTarget.of_app(app), config=collect_config(app),
                         deadline=Deadline(timeout), options=ScanOptions(deep=deep, max_messages=max_messages))
    return collect_redis(ctx)


def snapshot_with(app, part, now: float | None = None):
    from tests.conftest import make_snapshot

    snap = make_snapshot(app, mode="scan", redis=part)
    if now is not None:
        from dataclasses import replace

        snap = replace(snap, now=now)
    return snap


def run_checks(snapshot, prefix: str = "CD2"):
    from celery_doctor.registry import load_registry

    registry = load_registry()
    out = []
    for check in registry.checks:
        if check.id.startswith(prefix):
            out.extend(check.run(snapshot))
    return out


def wait_for(predicate, timeout: float = 20.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def env_with_path(directory: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(directory), env.get("PYTHONPATH", "")])
    return env
