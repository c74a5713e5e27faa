"""CD410 (scan): a worker that does not answer is told busy or killed from the broker's view of its connections,
the same evidence `celery-doctor watch` uses. On Redis a SIGKILLed worker leaves its mailbox binding but no
subscribed connection (CLIENT LIST, read by the Redis collector); on RabbitMQ its exclusive mailbox queue would
be gone, so a silent worker found there is connected."""
from __future__ import annotations

from celery import Celery

from celery_doctor.model import Part
from celery_doctor.parts import redis as red
from celery_doctor.parts import workers as wrk
from tests.conftest import by_id, findings_of, make_snapshot

ANSWERED, SILENT = wrk.example_worker("celery@worker1"), wrk.example_worker("celery@worker2", answered=())


def _snapshot(subscribed=None, silent=(SILENT,), transport="redis"):
    app = Celery("t", broker="redis://127.0.0.1:6379/0" if transport == "redis" else "amqp://127.0.0.1//",
                 set_as_current=False)
    parts = {"workers": Part.gathered(wrk.example(workers=(ANSWERED, *silent), transport=transport))}
    if subscribed is not None:
        parts["redis"] = Part.gathered(red.example(clients=red.example_clients(subscribers_by_db={0: subscribed})))
    return make_snapshot(app, mode="scan", options={"timeout": 10.0}, **parts)


def test_a_silent_worker_without_a_mailbox_connection_was_killed_not_busy():
    [finding] = findings_of(by_id("CD410"), _snapshot(subscribed=1))
    text = "\n".join(finding.evidence)
    assert "killed without a clean shutdown" in text and "not busy" in text and "not absent" not in text
    assert finding.impact.value == "high" and "it was killed" in finding.title


def test_a_silent_worker_still_subscribed_may_be_busy():
    [finding] = findings_of(by_id("CD410"), _snapshot(subscribed=2))
    text = "\n".join(finding.evidence)
    assert "may still be connected (busy or blocked)" in text and "not absent" in text
    assert finding.impact.value == "medium"


def test_when_fewer_connections_are_missing_than_workers_are_silent_it_says_it_cannot_single_out_which():
    third = wrk.example_worker("celery@worker3", answered=())
    found = findings_of(by_id("CD410"), _snapshot(subscribed=2, silent=(SILENT, third)))
    assert len(found) == 2
    assert all("at least 1 of the 2 silent workers hold none" in "\n".join(f.evidence)
               and "cannot single out which" in "\n".join(f.evidence) for f in found)


def test_without_client_list_or_on_rabbitmq_it_says_what_it_knows():
    [redis_only] = findings_of(by_id("CD410"), _snapshot(subscribed=None))
    assert "check the process exists" in "\n".join(redis_only.evidence)
    [rabbit] = findings_of(by_id("CD410"), _snapshot(transport="rabbitmq"))
    assert "exclusive to the worker's connection" in "\n".join(rabbit.evidence)
