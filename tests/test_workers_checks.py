"""The workers part's pure pieces: reply parsing (shapes taken from real Celery 5.7 replies), never loading
unsafe payloads, dropping secrets, and the checks that live tests cannot provoke (version skew)."""
from __future__ import annotations

import pickle

from celery import Celery

from celery_doctor.collectors.workers import _decode_body, _decode_redis_payload, _worker
from celery_doctor.model import Part
from celery_doctor.parts.workers import COMMANDS, WorkersState
from tests.conftest import by_id, findings_of, make_snapshot

STATS = {"total": {"a.sleepy": 1}, "pid": 9823, "uptime": 12,
         "pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 2, "processes": [1, 2]},
         "broker": {"hostname": "127.0.0.1", "userid": None, "password": "hunter22", "transport": "redis",
                    "transport_options": {"visibility_timeout": 30, "sentinel_kwargs": {"password": "hunter22"}}},
         "prefetch_count": 8}
ACTIVE = [{"id": "a1", "name": "a.sleepy", "args": "(3,)", "kwargs": "{}", "type": "a.sleepy", "hostname": "w@h",
           "time_start": 1000.0, "acknowledged": False,
           "delivery_info": {"exchange": "", "routing_key": "qa", "priority": 0, "redelivered": False},
           "worker_pid": 9826}]
SCHEDULED = [{"eta": "2026-11-23T12:30:24.452324+00:00", "priority": 6,
              "request": {"id": "b7", "name": "a.add", "args": [1, 2], "kwargs": {}, "type": "a.add",
                          "time_start": None, "acknowledged": False,
                          "delivery_info": {"exchange": "", "routing_key": "qa", "priority": 0, "redelivered": False},
                          "worker_pid": None}}]
REPORT = {"ok": "\nsoftware -> celery:5.6.2 (recovery) kombu:5.6.1 py:3.11.7\n            billiard:4.3.2 redis:8.1.0\n"
                "broker_url: 'redis://:********@127.0.0.1:6379/7'\n"}


def replies(**over):
    base = {"ping": {"ok": "pong"}, "active_queues": [{"name": "qa", "exchange": {"name": "qa", "type": "direct"},
                                                       "routing_key": "qa"}],
            "registered": ["a.add", "a.sleepy [rate_limit=10/m]"], "stats": STATS,
            "conf": {"task_acks_late": True, "broker_url": "redis://:hunter22@127.0.0.1:6379/7",
                     "broker_transport_options": {"visibility_timeout": 30, "password": "hunter22"}},
            "active": ACTIVE, "reserved": [], "scheduled": SCHEDULED, "revoked": ["x", "y"], "report": REPORT}
    base.update(over)
    return base


def test_a_worker_is_parsed_from_real_reply_shapes_without_secrets_or_arguments():
    worker = _worker("w@h", True, replies())
    assert worker.answered == COMMANDS and not worker.silent
    assert worker.queue_names == {"qa"} and worker.registered == {"a.add", "a.sleepy"}
    assert worker.concurrency == 2 and worker.prefetch_count == 8 and worker.pid == 9823
    assert worker.visibility_timeout == 30 and worker.broker_transport == "redis"
    assert worker.active[0].acknowledged is False and worker.active[0].time_start == 1000.0
    assert worker.scheduled[0].name == "a.add" and worker.scheduled[0].eta_ts > 1.7e9
    assert worker.revoked == 2 and (worker.celery_version, worker.kombu_version) == ("5.6.2", "5.6.1")
    dumped = repr(worker)
    assert "hunter22" not in dumped and "broker_url" not in worker.conf and "(3,)" not in dumped


def test_error_replies_are_errors_not_data():
    worker = _worker("w@h", True, replies(stats={"error": "KeyError('x')"}))
    assert worker.errors == {"stats": "KeyError('x')"} and worker.pid is None


def test_unsafe_reply_bodies_are_never_loaded():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    body = pickle.dumps({"w@h": Boom()})
    assert _decode_body(body, "application/x-python-serialize") == (None, "application/x-python-serialize")
    assert _decode_body(b"!!python/object/apply:os.system ['true']", "application/x-yaml")[0] is None
    assert _decode_body(b'{"w@h": {"ok": "pong"}}', "application/json") == ({"w@h": {"ok": "pong"}}, None)
    _headers, value, undecoded = _decode_redis_payload(b"\x80\x04garbage")
    assert value is None and undecoded


def _state(*workers):
    return WorkersState(transport="redis", namespace="celery", workers=tuple(workers),
                        discovery="redis pidbox bindings", discovered=True, discovery_error=None, wait_s=2.5,
                        elapsed_s=0.1)


def test_version_skew_names_the_workers_that_differ_from_the_app():
    app = Celery("skew", broker="redis://127.0.0.1:6379/7", set_as_current=False)
    app.conf.task_default_queue = "qa"
    old = _worker("old@h", True, replies())
    same_report = {"ok": "software -> celery:%s (x) kombu:%s py:3.11.7" % _installed()}
    new = _worker("new@h", True, replies(report=same_report))
    snapshot = make_snapshot(app, mode="scan", workers=Part.gathered(_state(old, new)))
    found = findings_of(by_id("CD404"), snapshot)
    assert [f.subject for f in found] == ["worker:old@h"]
    assert "celery 5.6.2 / kombu 5.6.1" in found[0].evidence[0]


def test_silent_and_absent_are_told_apart():
    app = Celery("silent", broker="redis://127.0.0.1:6379/7", set_as_current=False)
    app.conf.task_default_queue = "qa"
    busy = _worker("busy@h", True, {})
    snapshot = make_snapshot(app, mode="scan", workers=Part.gathered(_state(busy)))
    assert [f.subject for f in findings_of(by_id("CD410"), snapshot)] == ["worker:busy@h"]
    assert findings_of(by_id("CD409"), snapshot) == []
    empty = make_snapshot(app, mode="scan", workers=Part.gathered(_state()))
    assert len(findings_of(by_id("CD409"), empty)) == 1 and findings_of(by_id("CD410"), empty) == []


def _installed():
    from importlib.metadata import version

    return version("celery"), version("kombu")


class _BrokerPart:
    """Stands in for a gathered broker part: only what parts.broker.broker_queues reads."""

    def __init__(self, views):
        self.views = views

    def queue_views(self):
        return self.views


def test_queued_messages_of_a_task_no_consumer_registers_are_counted():
    from celery_doctor.parts.broker import QueueView

    app = Celery("queued", broker="redis://127.0.0.1:6379/7", set_as_current=False)
    app.conf.task_default_queue = "qa"
    app.conf.task_routes = {"a.orphan": {"queue": "nobody"}}

    @app.task(name="a.orphan", shared=False)
    def orphan():
        return 1

    worker = _worker("w@h", True, replies())  # consumes qa, registers a.add and a.sleepy
    views = {"qa": QueueView(name="qa", messages=5, task_counts={"a.ghost": 3, "a.add": 2}, sampled=5),
             "nobody": QueueView(name="nobody", messages=4, consumers=0, task_counts={"a.orphan": 4}, sampled=4)}
    snapshot = make_snapshot(app, mode="scan", workers=Part.gathered(_state(worker)),
                             redis=Part.gathered(_BrokerPart(views)))
    ghost = [f for f in findings_of(by_id("CD402"), snapshot) if f.subject == "task:a.ghost"]
    assert len(ghost) == 1 and ghost[0].messages_at_risk == 3
    assert "3 messages of it waiting" in ghost[0].evidence[0]
    assert not [f for f in findings_of(by_id("CD402"), snapshot) if f.subject == "task:a.add"]
    unconsumed = {f.subject: f for f in findings_of(by_id("CD401"), snapshot)}
    assert set(unconsumed) == {"queue:nobody"} and unconsumed["queue:nobody"].messages_at_risk == 4
    assert "4 messages waiting in 'nobody'" in unconsumed["queue:nobody"].evidence
