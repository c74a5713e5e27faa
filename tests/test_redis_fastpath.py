"""The deep scan's fast path against the full-decoding path, on tricky messages read back from the real Redis
(db 7) exactly as the deep scan reads them (the project's LRANGE reader).

Each tricky message is summarised in a chunk of canonical messages: the chunk either takes the fast path (the
tricky message is in the canonical layout and reads as `json.loads` reads it) or goes down the slow path as a
whole; either way the summary must be exactly the one the full-decoding path (`add_raw`, one `decode_payload`
per message) gives. Some of these were counted differently by the fast path before (an empty task name, a name
longer than 300 characters, a raw control character in a name or an `eta`): they now take the slow path.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import pytest

from celery_doctor.deadline import Deadline
from celery_doctor.message_stats import EnvelopeStats
from celery_doctor.redisio import connect_url
from tests.test_redis_fixtures import client, redis_available, uid
from tests.test_trust_messages import canonical

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB = 7
NOW = time.time()
VT = 3600.0


def _json_without_ascii_escapes(raw: bytes) -> bytes:
    return json.dumps(json.loads(raw), ensure_ascii=False).encode()


def tricky() -> dict[str, tuple[bytes, bool]]:
    """name -> (raw message, whether its chunk may take the fast path)."""
    same_id = str(uuid.uuid4())
    return {
        "canonical": (canonical("proj.add"), True),
        "escaped quote in the task name": (canonical('proj."quoted"'), False),
        "backslash in the task name": (canonical("proj\\add"), False),
        "unicode task name, \\u escapes (kombu's json)": (canonical("proj.ünïcødé"), False),
        "unicode task name, raw UTF-8": (_json_without_ascii_escapes(canonical("proj.ünïcødé")), True),
        "unicode and quotes in argsrepr": (canonical("proj.add", argsrepr="('ünï', '\"q\"', '\\\\')"), True),
        "empty task name": (canonical(""), False),
        "task name of 400 characters": (canonical("p" * 400), False),
        "raw tab in the task name": (canonical("proj.a\tb").replace(b"\\t", b"\t"), False),
        "raw control character in eta": (
            canonical("proj.add", eta="2030-01-01T00:00:00+00:00\n").replace(b"\\n", b"\n"), False),
        "eta beyond the visibility timeout": (canonical("proj.add", eta="2099-01-01T00:00:00+00:00"), True),
        "naive eta": (canonical("proj.add", eta="2099-01-01T00:00:00"), True),
        "eta with Z": (canonical("proj.add", eta="2099-01-01T00:00:00Z"), True),
        "expired": (canonical("proj.add", expires="2000-01-01T00:00:00+00:00"), True),
        "eta a worker rejects": (canonical("proj.add", eta="not a date"), False),
        "id a number": (canonical("proj.add", task_id=5), False),
        "same id twice": (canonical("proj.add", task_id=same_id), True),
        "missing headers": (json.dumps({"body": "e30=", "content-type": "application/json",
                                        "properties": {"body_encoding": "base64"}}).encode(), False),
        "protocol 1 (task in the body)": (json.dumps({
            "body": "eyJ0YXNrIjogInByb2ouYWRkIiwgImlkIjogIngifQ==", "content-type": "application/json",
            "content-encoding": "utf-8", "headers": {}, "properties": {"body_encoding": "base64"}}).encode(), False),
        "truncated JSON": (canonical("proj.add")[:-30], False),
        "not JSON at all": (b"\x80\x04\x95 pickled envelope", False),
        "pickle content type": (canonical("proj.add", content_type="application/x-python-serialize"), False),
        "yaml content type": (canonical("proj.add", content_type="application/x-yaml"), False),
        "msgpack content type": (canonical("proj.add", content_type="application/x-msgpack"), False),
        "task header a number": (canonical(12345), False),
    }


@pytest.fixture(scope="module")
def read_back():
    """Every tricky message, in a list of its own after canonical messages (two copies of the same call among
    them), LPUSHed to db 7 and read back with the deep scan's reader: name -> (the chunk's raw elements, fast)."""
    r = client(DB)
    reader = connect_url(f"redis://127.0.0.1:6379/{DB}", Deadline(30))
    keys = []
    out = {}
    try:
        twin = canonical("proj.mul", argsrepr="(6, 7)")
        for name, (raw, fast) in tricky().items():
            key = f"fastpath-{uid()}"
            keys.append(key)
            chunk = [canonical("proj.add"), twin, canonical("proj.mul", argsrepr="(6, 7)"), raw, raw]
            r.rpush(key, *chunk)
            read = [item for items in reader.stream_list(key) for item in items]
            assert read == chunk
            out[name] = (read, fast)
        yield out
    finally:
        reader.close()
        if keys:
            r.delete(*keys)


@pytest.mark.parametrize("name", list(tricky()))
def test_fast_path_equals_the_full_decoding_path(read_back, name):
    items, fast_expected = read_back[name]
    fast = EnvelopeStats(NOW, VT)
    fast.add_raw_chunk(items)
    slow = EnvelopeStats(NOW, VT)
    for raw in items:
        slow.add_raw(raw)
    a, b = fast.summary(), slow.summary()
    assert b.fast_path == 0
    assert a.fast_path == (len(items) if fast_expected else 0), name
    assert replace(a, fast_path=0) == replace(b, fast_path=0), name
    assert a.analysed == len(items)
    assert a.duplicate_calls >= 1  # the two copies of proj.mul (6, 7), whichever path counted them


def test_every_tricky_message_in_one_list_summarises_alike(read_back):
    """All of them in chunks of 7 (some fast, some slow): the same summary as one full decode per message."""
    items = [raw for name in sorted(read_back) for raw in read_back[name][0]]
    fast = EnvelopeStats(NOW, VT)
    for i in range(0, len(items), 7):
        fast.add_raw_chunk(items[i:i + 7])
    slow = EnvelopeStats(NOW, VT)
    for raw in items:
        slow.add_raw(raw)
    a, b = fast.summary(), slow.summary()
    assert 0 < a.fast_path < a.analysed == len(items)
    assert replace(a, fast_path=0) == replace(b, fast_path=0)
    assert a.malformed > 0 and a.unsafe and a.protocol1 and a.eta_beyond_vt and a.expired


def test_a_helper_whose_parent_stops_early_ends_quietly(read_back, capfd):
    """A scan that stops in the middle (an error, Ctrl-C) closes the helper's connection: the helper ends on its
    own, exit code 0, no traceback on the user's terminal."""
    from celery_doctor.message_stats import SplitStats

    items = read_back["canonical"][0]
    split = SplitStats(EnvelopeStats(NOW, VT), 30.0)
    split.add_raw_chunk(items)
    assert split.sent == len(items)  # handed to the helper (a free slot)
    split.close()
    assert split._process.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


def test_the_helper_summarises_chunks_copied_from_the_reply(read_back):
    """The deep scan hands the helper each chunk as its LRANGE reply carried it (`ListStream.raw`: the reply's
    bytes and where each element lies, the element re-read for the overlap left out): the merged summary equals
    one process's over the same messages, slow and fast chunks alike."""
    import os

    from celery_doctor.message_stats import HELPER_NICE, HELPER_SLOTS, SplitStats

    items = [raw for name in sorted(read_back) for raw in read_back[name][0]]
    r = client(DB)
    key = f"fastpath-{uid()}"
    r.rpush(key, *items)
    reader = connect_url(f"redis://127.0.0.1:6379/{DB}", Deadline(30))
    try:
        split = SplitStats(EnvelopeStats(NOW, VT), 30.0)
        stream = reader.stream_list(key, chunk=7)  # chunks of 7 overlapping by one: the first element is skipped
        seen, chunks = [], 0
        for chunk in stream:
            data, starts, ends = stream.raw
            assert [data[s:e] for s, e in zip(starts, ends)] == chunk
            seen += chunk
            chunks += 1
            split.add_raw_chunk(chunk, stream.raw)
            while split._conn is not None and len(split._free) < HELPER_SLOTS:  # the helper takes every chunk
                split._collect()
        assert seen == items and chunks > 1
        assert split.sent == len(items)
        assert os.getpriority(os.PRIO_PROCESS, split._process.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0)
                                                                          + HELPER_NICE)
        merged = split.finish(10.0)
    finally:
        reader.close()
        r.delete(key)
    alone = EnvelopeStats(NOW, VT)
    for raw in items:
        alone.add_raw(raw)
    a, b = merged.summary(), alone.summary()
    assert a.analysed == len(items) and 0 < a.fast_path < len(items)
    assert replace(a, fast_path=0) == replace(b, fast_path=0)
