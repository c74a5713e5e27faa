"""A vhost with more queues than a few pages of the management API: the listing is read fullest first, and its
empty tail is skipped and said to be empty, so the one stranded queue is found and nothing is claimed of the rest."""
from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from celery_doctor.rabbitmq_api import FULL_PAGES, PAGE_SIZE, QUEUE_COLUMNS
from tests.test_trust_support import api, cli, drop_vhost, make_vhost, rabbit_available

pytestmark = pytest.mark.rabbitmq

EMPTY_QUEUES = FULL_PAGES * PAGE_SIZE + 300


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


def test_the_stranded_queue_is_found_and_the_empty_tail_is_said_to_be_empty(big_vhost, tmp_path):
    run = cli("scan", "--broker", f"amqp://guest:guest@127.0.0.1:5672/{quote(big_vhost, safe='')}",
              "--timeout", "30", "--format", "json", "--fail-on", "never", cwd=tmp_path)
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    stranded = [f for f in report["findings"] if f["check"] == "CD301"]
    assert stranded and "queue:zz-stranded" in stranded[0]["subjects"], (
        [f["check"] for f in report["findings"]], report["not_checked"],
        api("GET", f"/queues/{quote(big_vhost, safe='')}?page=1&page_size=3&sort=messages&sort_reverse=true"
                   "&columns=name,messages,consumers", timeout=30)["items"])
    notes = {n["part"]: n["reason"] for n in report["not_checked"]}
    assert "rabbitmq queue listing" in notes, notes
    assert f"the {EMPTY_QUEUES + 1 - PAGE_SIZE:,} queues after the {PAGE_SIZE:,} fullest were not read" in (
        notes["rabbitmq queue listing"])
