"""A vhost with more queues than a few pages of the management API: the listing is read fullest first, and its
empty tail is skipped and said to be not read, so the one stranded queue is found and nothing is claimed of the rest.

The pages are made small here (50 queues, in this process) so that a few hundred queues stand for the 20,000 of
bench/rabbitmq_queues.py: deleting a vhost of thousands of queues keeps the management API busy for the tests that
follow."""
from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from celery_doctor import rabbitmq_api
from celery_doctor.diagnose import RunOptions, diagnose
from celery_doctor.options import ScanOptions
from celery_doctor.rabbitmq_api import FULL_PAGES, QUEUE_COLUMNS
from tests.test_trust_support import api, drop_vhost, make_vhost, rabbit_available

pytestmark = pytest.mark.rabbitmq

PAGE_SIZE = 50
EMPTY_QUEUES = FULL_PAGES * PAGE_SIZE + 60


@pytest.fixture(scope="module")
def big_vhost():
    if not rabbit_available():
        pytest.skip("no RabbitMQ management API on 127.0.0.1:15672")
    vhost = make_vhost("cd-big-vhost")
    path = quote(vhost, safe="")
    try:
        # Declared in one request; the stranded queue sorts last by name, so only the sort by messages finds it early.
        api("POST", f"/definitions/{path}", {"queues": [
            {"name": f"q-{i:05d}", "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}
            for i in range(EMPTY_QUEUES)] + [
            {"name": "zz-stranded", "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}]},
            timeout=120)
        for _ in range(3):
            api("POST", f"/exchanges/{path}/amq.default/publish",
                {"properties": {}, "routing_key": "zz-stranded", "payload": "{}", "payload_encoding": "string"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the API's counts lag by its stats interval: wait for a steady listing
            # as the scan asks (the broker caches a slow listing for a while, per query)
            listed = api("GET", f"/queues/{path}?page=1&page_size={PAGE_SIZE}&sort=messages&sort_reverse=true"
                                f"&columns={','.join(QUEUE_COLUMNS)}", timeout=30)["items"]
            # steady: counts and consumer counts known (a queue listed with consumers=None is not judged by CD301)
            if listed[0].get("messages") == 3 and all(q.get("messages") is not None and q.get("consumers") is not None
                                                      for q in listed):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the management API never listed the 3 messages")
        yield vhost
    finally:
        drop_vhost(vhost)


def test_the_stranded_queue_is_found_and_the_empty_tail_is_said_to_be_empty(big_vhost, tmp_path, monkeypatch):
    monkeypatch.setattr(rabbitmq_api, "PAGE_SIZE", PAGE_SIZE)
    broker = f"amqp://guest:guest@127.0.0.1:5672/{quote(big_vhost, safe='')}"
    report, _ = diagnose(RunOptions(mode="scan", broker=broker, cwd=str(tmp_path), timeout=30,
                                    scan=ScanOptions(timeout=30)))
    stranded = [r.finding for r in report.findings if r.finding.check == "CD301"]
    subjects = [f.subject for r in stranded for f in (r.occurrences or (r,))]
    assert "queue:zz-stranded" in subjects, (
        [r.finding.check for r in report.findings], report.not_checked,
        api("GET", f"/queues/{quote(big_vhost, safe='')}?page=1&page_size=3&sort=messages&sort_reverse=true"
                   "&columns=name,messages,consumers", timeout=30)["items"])
    notes = dict(report.not_checked)
    assert "rabbitmq queue listing" in notes, notes
    assert f"the {EMPTY_QUEUES + 1 - PAGE_SIZE:,} queues after the {PAGE_SIZE:,} fullest were not read" in (
        notes["rabbitmq queue listing"])
