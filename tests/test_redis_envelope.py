"""Message summaries: messages published by a real Celery producer into Redis db 1, read back raw, and
summarised by the fast (vectorised) path and the slow (per-message JSON) path: both must agree."""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import replace

import pytest

from celery_doctor import envelope as E
from celery_doctor import message_stats as S
from tests.test_redis_fixtures import client, import_app, janitor, redis_available, uid, write_app  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB = 1


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One queue filled by a real Celery producer with every kind of message the summary tells apart."""
    directory = tmp_path_factory.mktemp("envapp")
    name = f"envapp_{uid()}"
    write_app(directory, name, DB)
    app = import_app(directory, name)
    queue = f"env-{uid()}"
    r = client(DB)
    before = set(r.scan_iter(count=1000))
    try:
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        add = app.tasks[f"{name}.add"]
        with app.producer_or_acquire() as producer:
            for i in range(40):
                add.apply_async((i % 4, "x"), queue=queue, producer=producer)  # 4 calls, 10 copies each
            for i in range(5):
                add.apply_async((100 + i, 1), queue=queue, countdown=7200, producer=producer)  # ETA beyond 1 h
            for i in range(3):
                add.apply_async((200 + i, 1), queue=queue, expires=past, producer=producer)  # already expired
            add.apply_async(("quote \" and \\ backslash", "ünïcødé"), queue=queue, producer=producer)
            app.send_task(f"{name}.add", (1,), {"k": [1, 2]}, queue=queue, priority=6, producer=producer)
            app.send_task("nobody.registers.this", (1, 2), queue=queue, producer=producer)
            add.apply_async((7, 7), queue=queue, serializer="pickle", producer=producer)
        raw = r.lrange(queue, 0, -1) + r.lrange(f"{queue}\x06\x166", 0, -1)
        yield app, name, raw
    finally:
        created = [k for k in r.scan_iter(count=1000) if k not in before]
        if created:
            r.delete(*created)


def summaries(raw, vt=3600.0, now=None, chunk=7):
    now = now or time.time()
    fast = S.EnvelopeStats(now, vt)
    for i in range(0, len(raw), chunk):
        fast.add_raw_chunk(raw[i:i + chunk])
    slow = S.EnvelopeStats(now, vt)
    for item in raw:
        slow.add_raw(item)
    return fast.summary(), slow.summary()


def test_fast_and_slow_paths_agree_on_real_messages(published):
    app, name, raw = published
    assert len(raw) == 40 + 5 + 3 + 1 + 1 + 1 + 1
    fast, slow = summaries(raw)
    assert fast.fast_path > 0, "canonical Celery messages must take the fast path"
    assert slow.fast_path == 0
    assert replace(fast, fast_path=0) == replace(slow, fast_path=0)
    assert fast.analysed == len(raw)
    assert fast.task_counts == {f"{name}.add": len(raw) - 1, "nobody.registers.this": 1}
    assert fast.unknown_tasks(app.tasks.keys()) == {"nobody.registers.this": 1}
    assert fast.eta_count == 5 and fast.eta_beyond_vt == 5
    assert fast.expires_count == 3 and fast.expired == 3
    assert fast.unsafe == (("pickle", 1),)
    assert fast.malformed == 0
    # 4 calls x 10 copies: 36 extra copies; the top group is one of them
    assert fast.duplicate_calls == 4 and fast.duplicate_copies == 36
    assert {(g.task, g.argsrepr, g.count) for g in fast.duplicates} == {
        (f"{name}.add", f"({i}, 'x')", 10) for i in range(4)}


def test_eta_within_visibility_timeout_and_not_yet_expired(published):
    _, _, raw = published
    long_vt, _ = summaries(raw, vt=10 * 3600)
    assert long_vt.eta_count == 5 and long_vt.eta_beyond_vt == 0
    earlier, _ = summaries(raw, now=time.time() - 3600)  # an hour ago, the expired ones were still valid
    assert earlier.expired == 0


def test_malformed_and_foreign_payloads_take_the_slow_path(published):
    _, _, raw = published
    canonical = raw[:10]
    bad = [b"not json at all", b'{"body": "abc", "headers": ', b"\x80\x04\x95pickled", b"[1, 2, 3]",
           json.dumps({"body": "", "headers": {}, "properties": {}}).encode(), canonical[0][:-5]]
    fast, slow = summaries(canonical + bad, chunk=100)
    assert fast.fast_path == 0  # one bad message sends its whole chunk down the slow path
    assert replace(fast, fast_path=0) == replace(slow, fast_path=0)
    assert fast.malformed == len(bad)
    assert fast.analysed == len(canonical) + len(bad)
    reasons = dict(fast.malformed_reasons)
    assert any("pickle" in r for r in reasons)
    assert any("not a JSON envelope" in r for r in reasons)


def test_duplicate_table_stays_bounded(published, monkeypatch):
    _, _, raw = published
    monkeypatch.setattr(S, "DUPLICATE_TABLE", 20)
    template = raw[0]
    marker = b'"argsrepr": "('
    at = template.index(marker) + len(marker)
    unique = [template[:at] + str(10_000 + i).encode() + b", " + template[at:] for i in range(200)]
    stats = S.EnvelopeStats(time.time(), 3600)
    for i in range(0, 200, 50):
        stats.add_raw_chunk(unique[i:i + 50] + [template] * 5)
    assert len(stats._dups) <= 20 + 55
    summary = stats.summary()
    assert summary.duplicates_approximate
    assert summary.duplicates[0].count >= 19  # 20 copies of the template: at most the first one forgotten
    assert summary.analysed == 220


def test_iso_to_epoch():
    assert E.iso_to_epoch("1970-01-01T00:01:00+00:00") == 60.0
    assert E.iso_to_epoch("1970-01-01T00:01:00") == 60.0  # naive: UTC
    assert E.iso_to_epoch("1970-01-01T01:01:00+01:00") == 60.0
    assert E.iso_to_epoch("1970-01-01T00:01:00Z") == 60.0
    assert E.iso_to_epoch("soon") is None and E.iso_to_epoch(None) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the helper process is forked: Linux only")
def test_the_helper_process_gives_the_same_summary(published):
    """Every other chunk summarised by the forked helper, merged back: the same summary as one process (each
    duplicated call is repeated on both sides, so the examples' text is kept too)."""
    _app, _name, raw = published
    items = raw * 6
    now = time.time()
    alone = S.EnvelopeStats(now, 3600.0)
    split = S.SplitStats(S.EnvelopeStats(now, 3600.0), 30.0)
    for i in range(0, len(items), 9):
        alone.add_raw_chunk(items[i:i + 9])
        split.add_raw_chunk(items[i:i + 9])
    assert split.sent > 0
    merged = split.finish(10.0)
    assert split.lost == 0 and split.error is None
    assert not split._process.is_alive()
    a, b = merged.summary(), alone.summary()
    # the same up to order: which chunk a process saw first decides the first examples and the order of ties
    assert sorted(map(repr, a.duplicates)) == sorted(map(repr, b.duplicates)) and len(b.duplicates) > 0
    assert len(a.eta_examples) == len(b.eta_examples) > 0
    assert {task for task, _ in a.eta_examples} == {task for task, _ in b.eta_examples}
    assert replace(a, duplicates=(), eta_examples=()) == replace(b, duplicates=(), eta_examples=())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the helper process is forked: Linux only")
def test_a_helper_that_dies_loses_its_share_and_says_so(published):
    _app, _name, raw = published
    split = S.SplitStats(S.EnvelopeStats(time.time(), 3600.0), 30.0)
    split.add_raw_chunk(raw[:10])  # kept
    split.add_raw_chunk(raw[10:20])  # sent to the helper
    split._process.kill()
    split._process.join(5)
    for i in range(20, len(raw), 10):
        split.add_raw_chunk(raw[i:i + 10])
    merged = split.finish(5.0)
    assert split.error and "helper process" in split.error
    assert split.lost >= 10
    assert merged.analysed == len(raw) - split.lost  # what the helper took is not counted: the read is incomplete
