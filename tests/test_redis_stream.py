"""The deep scan's list reading: LRANGE replies read straight off the socket (BulkArrayReader) and the
next chunk asked for ahead. Same elements as redis-py's own LRANGE, whatever the payload bytes; a command
run in the middle of a stream still gets its own reply; the stream stays in step when producers push."""
from __future__ import annotations

import pytest
import redis as redis_py

from celery_doctor.deadline import Deadline
from celery_doctor.redisio import connect_url
from tests.test_redis_fixtures import client, redis_available, uid

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB = 1


@pytest.fixture
def keys():
    made: list[str] = []
    yield made
    if made:
        client(DB).delete(*made)


def test_raw_lrange_equals_redis_py_for_awkward_payloads(keys):
    r = client(DB)
    key = f"stream-{uid()}"
    keys.append(key)
    odd = [b"", b"a\r\nb", b"\r\n$3\r\nxyz\r\n", b"*2\r\n", b"\x00\xff" * 50_000, b"$", "ünï".encode()]
    r.rpush(key, *odd, *[f"m{i}".encode() * (i % 7) for i in range(3000)])
    reader = connect_url(f"redis://127.0.0.1:6379/{DB}", Deadline(10))
    try:
        for start, stop in [(0, -1), (0, 6), (3, 2500), (2990, 5000), (9000, 9999)]:
            assert reader.lrange_raw(key, start, stop) == r.lrange(key, start, stop)
        assert [x for chunk in reader.stream_list(key, chunk=100) for x in chunk] == r.lrange(key, 0, -1)
        wrong = f"stream-{uid()}"
        keys.append(wrong)
        r.set(wrong, "x")
        with pytest.raises(redis_py.ResponseError):
            reader.lrange_raw(wrong, 0, 10)
        assert reader.call("LLEN", key) == len(odd) + 3000  # still in step after the error reply
    finally:
        reader.close()


def test_commands_inside_a_stream_get_their_own_replies_and_pushes_are_accounted(keys):
    r = client(DB)
    key = f"stream-{uid()}"
    keys.append(key)
    r.rpush(key, *[f"msg-{i}".encode() for i in range(5000)])
    reader = connect_url(f"redis://127.0.0.1:6379/{DB}", Deadline(10))
    try:
        stream = reader.stream_list(key, chunk=1000)
        seen = []
        for number, chunk in enumerate(stream):
            seen.extend(chunk)
            # a chunk was asked for ahead: other commands must still get their own reply
            assert reader.call("LLEN", key) == 5000 + 3 * min(number, 2)
            assert reader.call("PING") is True
            if number < 2:
                r.lpush(key, *[f"new-{number}-{j}".encode() for j in range(3)])  # producers push at the head
        assert stream.shifted == 6 and not stream.lost_track
        assert seen == [f"msg-{i}".encode() for i in range(5000)]
        # a stream left half-way leaves no reply behind
        for _ in reader.stream_list(key, chunk=100):
            break
        assert reader.call("LLEN", key) == 5006
    finally:
        reader.close()
