"""Hostile and broken messages: reported, never loaded, never crashing a scan or a trace.

- Property-based (hypothesis): `decode_payload` and `from_parts` never raise and always return an
  Envelope, whatever they are given; the streaming summariser never raises, accounts every message, and its
  fast path (canonical kombu layout) and slow path (full JSON decode) agree on every message kombu itself
  could decode.
- Real Redis (db 13): a queue of garbage bytes, non-JSON, JSON of the wrong shape, missing headers, wrong
  types, a huge message, pickle and yaml bodies whose load would create a marker file, a pickled envelope,
  invalid base64, deep nesting, plus hostile unacked entries, binding members and a queue key of the wrong
  type: the scan reports them (CD213/CD214) with no check in `error`, exactly counts them, leaves every key
  as it was, and the marker file never appears.
- Real RabbitMQ with --peek: hostile headers and bodies are reported the same way and all requeued.
"""
from __future__ import annotations

import base64
import json
import pickle
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_doctor.envelope import Envelope, decode_payload, from_parts, iso_to_epoch
from celery_doctor.message_stats import EnvelopeStats
from tests.conftest import json_places
from tests.test_trust_support import (
    cli,
    delete_new_keys,
    drop_vhost,
    make_vhost,
    rabbit_available,
    redis_available,
    redis_client,
    uid,
    vhost_names,
    write_module,
)

DB = 13

# --------------------------------------------------------------------------------------- builders


def canonical(task="proj.add", task_id=None, eta=None, expires=None, argsrepr="(1, 2)", kwargsrepr="{}",
              origin="gen1@host", content_type="application/json", body=None, **header_overrides) -> bytes:
    """A message laid out exactly as kombu's Redis transport writes a Celery protocol-2 task."""
    task_id = task_id or str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": eta, "expires": expires,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
               "parent_id": None, "argsrepr": argsrepr, "kwargsrepr": kwargsrepr, "origin": origin,
               "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    headers.update(header_overrides)
    body = body if body is not None else base64.b64encode(b'[[1, 2], {}, {"callbacks": null}]').decode()
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": content_type, "headers": headers,
        "properties": {"correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }).encode()


class Explode:
    """Unpickling this creates the marker file: proof that a body was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Explode(str(marker)), protocol=2)


def evil_yaml(marker: Path) -> bytes:
    return f'!!python/object/apply:builtins.open ["{marker}", "w"]\n'.encode()


def hostile_messages(marker: Path, task: str) -> dict[str, bytes]:
    """name -> raw Redis list element. Every one of them must be reported and none loaded."""
    pickled_body = base64.b64encode(evil_pickle(marker)).decode()
    yaml_body = base64.b64encode(evil_yaml(marker)).decode()
    return {
        "garbage bytes": bytes(range(256)) * 4,
        "empty": b"",
        "not json": b"hello, I am not a message",
        "truncated json": canonical(task)[:-40],
        "json array": b"[1, 2, 3]",
        "json string": b'"just a string"',
        "json null": b"null",
        "no headers or properties": json.dumps({"body": "e30=", "content-type": "application/json"}).encode(),
        "headers a list": json.dumps({"body": "e30=", "headers": ["task", task], "properties": {}}).encode(),
        "task an int": canonical(task=12345),
        "id a dict": canonical(task, task_id={"nested": True}),
        "missing task header": json.dumps({"body": "e30=", "content-type": "application/json",
                                            "headers": {"id": "x"}, "properties": {}}).encode(),
        "body not a string": json.dumps({"body": {"a": 1}, "content-type": "application/json",
                                          "headers": {"task": task, "id": str(uuid.uuid4())},
                                          "properties": {"body_encoding": "base64"}}).encode(),
        "wrong types everywhere": json.dumps({"body": "e30=", "content-type": 7, "content-encoding": [],
                                              "headers": {"task": task, "id": str(uuid.uuid4()), "eta": [1],
                                                          "expires": {"x": 1}, "retries": "many",
                                                          "argsrepr": 5, "redelivered": "yes"},
                                              "properties": {"priority": "high", "delivery_info": "nope",
                                                             "delivery_tag": None}}).encode(),
        "eta not a date": canonical(task, eta="not-a-date", expires="yesterday"),
        "eta out of range": canonical(task, eta="99999-01-01T00:00:00", expires="0001-01-01T00:00:00"),
        "invalid utf-8 in json": canonical(task)[:-3] + b'\xff\xfe"}}',
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "pickled envelope": evil_pickle(marker),
        "pickle body": canonical(task, content_type="application/x-python-serialize", body=pickled_body),
        "yaml body": canonical(task, content_type="application/x-yaml", body=yaml_body),
        "invalid base64 body": canonical(task, body="!!!! not base64 @@@@"),
        "unknown body encoding": canonical(task).replace(b'"body_encoding": "base64"', b'"body_encoding": "rot13"'),
        "protocol 1 body": json.dumps({"body": base64.b64encode(json.dumps({"task": task, "id": "p1", "args": []}).encode()).decode(),
                                       "content-type": "application/json", "headers": {},
                                       "properties": {"body_encoding": "base64"}}).encode(),
        "huge": canonical(task, argsrepr="x" * 3_000_000),
    }


# Of those, the ones a worker can still receive (reported by other checks: CD214 for pickle/yaml, CD211 for
# unknown task names); every other one is rejected or dropped by the worker and counted by CD213.
RUNNABLE = {"pickle body", "yaml body", "huge"}


# ------------------------------------------------------------------------------------ properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
anything = st.one_of(json_values, st.binary(max_size=50), st.tuples(st.integers()), st.sets(st.integers()),
                     st.builds(object), st.just(float("inf")), st.just(Envelope(ok=True)))
header_keys = st.sampled_from(["task", "id", "eta", "expires", "retries", "root_id", "parent_id", "origin",
                               "group", "argsrepr", "kwargsrepr", "celery_beat_task", "redelivered", "lang"])
headers_like = st.one_of(anything, st.dictionaries(st.one_of(header_keys, st.text(max_size=5), st.integers()),
                                                    anything, max_size=8))
kombu_like = st.fixed_dictionaries(
    {},
    optional={"body": json_values | st.text(),
              "headers": json_values | st.dictionaries(header_keys, json_values, max_size=8),
              "properties": json_values | st.fixed_dictionaries({}, optional={
                  "priority": json_values, "delivery_info": json_values, "body_encoding": json_values,
                  "delivery_tag": json_values}),
              "content-type": json_values | st.sampled_from(["application/json", "application/x-python-serialize",
                                                              "application/x-yaml", "APPLICATION/YAML"]),
              "content-encoding": json_values},
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=500), anything))
def test_decode_payload_never_raises_on_anything(raw):
    envelope = decode_payload(raw)
    assert isinstance(envelope, Envelope)
    assert envelope.ok or envelope.error


@FAST
@given(kombu_like)
def test_decode_payload_never_raises_on_kombu_shaped_json(document):
    for raw in (json.dumps(document, default=str), json.dumps(document, default=str).encode("utf-16")):
        envelope = decode_payload(raw)
        assert isinstance(envelope, Envelope)
        if envelope.ok:
            assert isinstance(envelope.task, str) and isinstance(envelope.id, str)
            assert isinstance(document.get("body"), str)


@FAST
@given(headers_like, anything, anything, anything, st.integers(min_value=0, max_value=10**12))
def test_from_parts_never_raises(headers, properties, content_type, content_encoding, size):
    envelope = from_parts(headers, properties, content_type, content_encoding, size)
    assert isinstance(envelope, Envelope)
    assert envelope.size == size
    for name in ("task", "id", "eta", "expires", "argsrepr", "kwargsrepr", "content_type", "routing_key"):
        value = getattr(envelope, name)
        assert value is None or isinstance(value, str), (name, value)
    assert envelope.retries is None or isinstance(envelope.retries, int)
    assert isinstance(envelope.redelivered, bool) and isinstance(envelope.beat, bool)
    _ = envelope.unsafe_serializer, envelope.args_key


@FAST
@given(st.one_of(st.text(max_size=70), json_values))
def test_iso_to_epoch_never_raises(value):
    result = iso_to_epoch(value)
    assert result is None or isinstance(result, float)


task_names = st.one_of(st.sampled_from(["proj.add", "proj.mul", "a.b.c"]), st.text(min_size=1, max_size=20))
times = st.one_of(st.none(), st.sampled_from(["2030-01-01T00:00:00", "2000-01-01T00:00:00+00:00", "garbage",
                                              "2030-01-01T00:00:00Z", "99999-01-01"]), st.text(max_size=12))


@st.composite
def messages(draw):
    """A canonical message, sometimes mutated at the byte level (flip, insert, delete, cut)."""
    overrides = {}
    if draw(st.integers(0, 9)) == 0:
        overrides["id"] = draw(st.sampled_from([None, 5, {"x": 1}, "", ["a"]]))
    raw = canonical(task=draw(task_names), eta=draw(times), expires=draw(times),
                    argsrepr=draw(st.sampled_from(["(1, 2)", "(3,)", draw(st.text(max_size=10))])),
                    kwargsrepr=draw(st.sampled_from(["{}", "{'a': 1}"])),
                    task_id=draw(st.sampled_from(["fixed-id", str(uuid.uuid4())])),
                    body=draw(st.sampled_from([None, None, "e30=", "", "abc", "!!!!", "QUJD\u00e9"])), **overrides)
    kind = draw(st.sampled_from(["keep", "keep", "flip", "insert", "delete", "cut", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "keep":
        return raw
    at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if kind == "flip":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    if kind == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + draw(st.integers(1, 5)):]
    return raw[:at]


def _comparable(summary):
    data = dict(summary.__dict__)
    data.pop("fast_path")
    data["malformed_reasons"] = sorted(data["malformed_reasons"])
    data["content_types"] = sorted(data["content_types"])
    data["duplicates"] = sorted((g.task, g.argsrepr, g.kwargsrepr, g.count) for g in data["duplicates"])
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=12), st.floats(min_value=0, max_value=4e9),
       st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)))
def test_summariser_accounts_every_message_and_both_paths_agree(items, now, vt):
    chunked = EnvelopeStats(now=now, vt=vt)
    chunked.add_raw_chunk(list(items))
    one_by_one = EnvelopeStats(now=now, vt=vt)
    for raw in items:
        one_by_one.add_raw(raw)  # never the fast path: one full decode per message
    a, b = chunked.summary(), one_by_one.summary()
    assert a.analysed == b.analysed == len(items)
    assert a.malformed <= a.analysed and sum(c for _, c in a.malformed_reasons) == a.malformed
    assert sum(a.task_counts.values()) + a.malformed == a.analysed
    assert b.fast_path == 0
    decodable = all(_kombu_can_decode(raw) for raw in items)
    if decodable:
        assert _comparable(a) == _comparable(b), (a, b)


def _kombu_can_decode(raw: bytes) -> bool:
    """What kombu's Redis transport does before Celery sees a message: JSON-decode it, undo the body encoding."""
    from kombu.transport.virtual.base import Channel

    try:
        document = json.loads(raw)
        body = document.get("body")
        encoding = (document.get("properties") or {}).get("body_encoding")
        if body:
            Channel.decode_body(Channel.__new__(Channel), body, encoding)
        return True
    except Exception:  # noqa: BLE001 - anything kombu would raise on
        return False


def test_summariser_reports_every_hostile_kind(tmp_path):
    marker = tmp_path / "loaded"
    hostile = hostile_messages(marker, "proj.add")
    stats = EnvelopeStats(now=0.0, vt=3600)
    stats.add_raw_chunk(list(hostile.values()))
    summary = stats.summary()
    assert summary.analysed == len(hostile)
    assert summary.malformed == len(hostile) - len(RUNNABLE), summary.malformed_reasons
    assert dict(summary.unsafe) == {"pickle": 1, "yaml": 1}
    assert not marker.exists()
    for name, raw in hostile.items():
        envelope = decode_payload(raw)
        assert envelope.ok == (name in RUNNABLE), (name, envelope.error)


# --------------------------------------------------------------------------------------- redis

@pytest.mark.redis
def test_scan_and_trace_report_hostile_redis_messages_and_change_nothing(tmp_path):
    if not redis_available():
        pytest.skip("no Redis")
    r = redis_client(DB)
    before = set(r.scan_iter(count=1000))
    tag = uid()
    name = f"trust_hostile_{tag}"
    queue, wrong_type = f"hostile-{tag}", f"hostile-str-{tag}"
    marker = tmp_path / "loaded"
    write_module(tmp_path, name, f'''
        from celery import Celery
        from kombu import Queue
        app = Celery(__name__, broker="redis://127.0.0.1:6379/{DB}")
        app.conf.task_default_queue = {queue!r}
        app.conf.task_queues = [Queue({queue!r}), Queue({wrong_type!r})]

        @app.task
        def add(x, y):
            return x + y
    ''')
    task = f"{name}.add"
    hostile = hostile_messages(marker, task)
    good_id = str(uuid.uuid4())
    try:
        pipe = r.pipeline(transaction=False)
        for raw in hostile.values():
            pipe.rpush(queue, raw)
        pipe.rpush(queue, canonical(task, task_id=good_id))
        # a priority sub-queue holding garbage too
        pipe.rpush(f"{queue}\x06\x163", b"\x00\x01garbage")
        # the queue name used by a key of another type
        pipe.set(wrong_type, b"not a list")
        # kombu's binding set with broken members
        pipe.sadd(f"_kombu.binding.{queue}", f"{queue}\x06\x16\x06\x16{queue}", b"\xff\xfe", "a\x06\x16b", "")
        # unacked entries of every wrong shape
        pipe.hset("unacked", mapping={"t1": b"\x80\x04garbage", "t2": b"[1]", "t3": b"not json",
                                      "t4": json.dumps([canonical(task).decode(), "", queue]),
                                      "t5": json.dumps(["x", 1, None, 4]), "t6": evil_pickle(marker)})
        pipe.zadd("unacked_index", {"t1": 1.0, "t2": 2.0, "ghost": 3.0, b"\xff": 4.0})
        pipe.execute()
        dump_before = _dump(r)
        env = {"CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1"}
        runs = [cli("scan", "--app", name, "--format", "json", "--timeout", "20", cwd=tmp_path, env=env),
                cli("scan", "--app", name, "--format", "json", "--deep", "--max-messages", "5", "--timeout", "20",
                    cwd=tmp_path, env=env),
                cli("trace", good_id, "--app", name, "--format", "json", "--timeout", "20", cwd=tmp_path, env=env),
                cli("trace", "t6", "--app", name, "--format", "json", "--timeout", "20", cwd=tmp_path, env=env)]
        for run in runs:
            assert run.code in (0, 1) and "Traceback" not in run.stderr, str(run)
            assert not run.crash_logs
        scan, deep, found, missing = runs
        for report in (scan.json(), deep.json()):
            statuses = {c["id"]: c["status"] for c in report["checks"]}
            assert "error" not in statuses.values(), [c for c in report["checks"] if c["status"] == "error"]
            assert not [n for n in report["not_checked"] if n["part"] == "redis"], report["not_checked"]
            by_check = {}
            for f in json_places(report["findings"]):
                by_check.setdefault(f["check"], []).append(f)
            malformed = [f for f in by_check.get("CD213", []) if f["subject"] == f"queue:{queue}"]
            assert malformed, by_check.keys()
            assert malformed[0]["messages_at_risk"] == len(hostile) - len(RUNNABLE) + 1, malformed[0]
            unsafe = [f for f in by_check.get("CD214", []) if f["subject"] == f"queue:{queue}"]
            assert unsafe and "pickle (1)" in " ".join(unsafe[0]["evidence"]) and "yaml (1)" in " ".join(unsafe[0]["evidence"])
        assert found.code == 0 and found.json()["locations"], found
        assert missing.code in (0, 1)
        assert not marker.exists(), "a pickle or yaml body was loaded"
        assert _dump(r) == dump_before, "a scan or trace changed a key"
    finally:
        delete_new_keys(DB, before)


def _dump(r) -> dict:
    out = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        value = {"list": lambda: r.lrange(key, 0, -1), "hash": lambda: sorted(r.hgetall(key).items()),
                 "set": lambda: sorted(r.smembers(key)), "zset": lambda: r.zrange(key, 0, -1, withscores=True),
                 "string": lambda: r.get(key)}.get(kind, lambda: None)()
        out[key] = (kind, value)
    return out


# ------------------------------------------------------------------------------------ rabbitmq

@pytest.mark.rabbitmq
def test_peek_reports_hostile_rabbitmq_messages_and_requeues_them(tmp_path):
    if not rabbit_available():
        pytest.skip("no RabbitMQ")
    import pika

    vhost = make_vhost("cd-trust-hostile")
    marker = tmp_path / "loaded"
    try:
        tag = uid()
        name = f"trust_rhostile_{tag}"
        queue = f"hostile-{tag}"
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        write_module(tmp_path, name, f'''
            from celery import Celery
            app = Celery(__name__, broker={url!r})
            app.conf.task_default_queue = {queue!r}

            @app.task
            def add(x, y):
                return x + y
        ''')
        task = f"{name}.add"
        params = pika.URLParameters(url)
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        good = {"lang": "py", "task": task, "id": "good-id", "argsrepr": "()", "kwargsrepr": "{}"}
        bodies = [
            (None, None, bytes(range(256))),  # no headers, no content type, garbage
            ({"task": 5, "id": ["x"]}, "application/json", b"{}"),  # wrong types
            ({"task": task}, "application/json", b"not json"),  # missing id
            ({"task": {"nested": {"deeper": [1, 2, {"x": b"bytes"}]}}, "id": Decimal("1.5")}, "text/plain", b""),
            ({**good, "id": "pickle-id"}, "application/x-python-serialize", evil_pickle(marker)),
            ({**good, "id": "yaml-id"}, "application/x-yaml", evil_yaml(marker)),
            ({**good, "id": "b64-id", "eta": "not-a-date", "retries": "lots"}, "application/json", b"!!!"),
            ({**good, "id": "huge-id"}, "application/json", b"[" + b"1," * 500_000 + b"1]"),
            (good, "application/json", b'[[], {}, {}]'),
        ]
        for headers, content_type, body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(headers=headers, content_type=content_type,
                                                                         delivery_mode=2))
        connection.close()
        env = {"CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1"}
        scan = cli("scan", "--app", name, "--peek", "--format", "json", "--timeout", "15", cwd=tmp_path, env=env)
        # right after the scan's peek: the management API's counts still show its reads as unacked, 0 ready
        trace = cli("trace", "good-id", "--app", name, "--peek", "--format", "json", "--timeout", "15",
                    cwd=tmp_path, env=env)
        bare = cli("trace", "good-id", "--broker", url, "--peek", "--format", "json", "--timeout", "15",
                   cwd=tmp_path, env=env)  # no app: every queue of the vhost is in scope
        for run in (scan, trace, bare):
            assert run.code in (0, 1) and not run.crash_logs and "Traceback" not in run.stderr, str(run)
        report = scan.json()
        assert "error" not in {c["status"] for c in report["checks"]}
        side = [f for f in report["findings"] if f["check"] == "CD321"]
        text = " ".join(side[0]["evidence"]) if side else ""
        assert f"--peek sample of {len(bodies)}" in text, report["findings"]
        assert "pickle (1)" in text and "yaml (1)" in text, text
        assert "5 malformed" in text, text  # no headers, wrong types (2), no id, unreadable eta
        assert trace.code == 0 and trace.json()["locations"], trace
        assert bare.code == 0 and bare.json()["locations"], bare
        assert not marker.exists(), "a pickle or yaml body was loaded"
        # everything is still there (requeued), nothing of the doctor's was declared
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        assert channel.queue_declare(queue, passive=True).method.message_count == len(bodies)
        connection.close()
        assert vhost_names("queues", vhost) == [queue]
    finally:
        drop_vhost(vhost)
