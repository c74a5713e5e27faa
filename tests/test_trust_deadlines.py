"""--timeout bounds the whole run: every network call is under it.

Peers that never answer, for Redis, AMQP, the RabbitMQ management API and the result backend: a local
listener that completes the TCP handshake and then stays silent, and one whose accept queue is full so that
connect() itself never completes (what a firewall dropping SYNs looks like). `scan` and `trace` must end
within the deadline plus 2.5 s (interpreter start included), and say what did not answer and in how long.
The longest run is printed (-s) by the last test.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_trust_support import Blackholes, cli, rabbit_available, redis_available, refused_port, uid, write_module

TIMEOUT = 3.0
MARGIN = 2.5
LONGEST: dict[str, float] = {}


@pytest.fixture(scope="module")
def holes():
    h = Blackholes()
    if not h.connect_hangs:
        h.close()
        pytest.skip("this kernel completes connects to a full accept queue: no unconnectable port to test")
    yield h
    h.close()


def _run_all(cases, tmp_path, parallel=3):
    def one(case):
        args, _ = case
        return cli(*args, "--format", "json", "--timeout", f"{TIMEOUT:g}", cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        runs = list(pool.map(one, cases))
    for (args, expected), run in zip(cases, runs):
        LONGEST[" ".join(map(str, args))] = run.seconds
        assert run.code in (0, 1) and not run.crash_logs and "Traceback" not in run.stderr, str(run)
        assert run.seconds <= TIMEOUT + MARGIN, f"{run.seconds:.2f} s > {TIMEOUT + MARGIN} s:\n{run}"
        data = run.json()
        entries = [(n.get("part") or n.get("where"), n["reason"]) for n in data["not_checked"]]
        for where, words in expected:
            assert any(w.startswith(where) and words in r for w, r in entries), (args, where, words, entries)
        for where, reason in entries:  # "within 2 s", "within 1.7 s": a duration a person can read
            for number in re.findall(r"within ([0-9.]+) s", reason):
                assert re.fullmatch(r"\d+(\.\d)?", number), (where, reason)
    return runs


@pytest.mark.redis
def test_redis_that_never_answers_scan_and_trace(holes, tmp_path):
    if not redis_available():
        pytest.skip("no Redis")
    silent, dark = f"redis://127.0.0.1:{holes.silent}/0", f"redis://127.0.0.1:{holes.unconnectable}/0"
    answer = ("redis", "did not answer within")
    workers = ("workers", "did not answer within")
    _run_all([
        (("scan", "--broker", silent), [answer, workers]),
        (("scan", "--broker", dark), [answer, workers]),
        (("trace", "some-id", "--broker", silent), [answer, workers]),
        (("trace", "some-id", "--broker", dark), [answer, workers]),
    ], tmp_path)


@pytest.mark.rabbitmq
def test_amqp_and_management_api_that_never_answer_scan_and_trace(holes, tmp_path):
    if not rabbit_available():
        pytest.skip("no RabbitMQ")
    s, d = holes.silent, holes.unconnectable
    real = "amqp://guest:guest@127.0.0.1:5672//"
    broker_gone = [("rabbitmq", "did not answer within"), ("workers", "did not answer within")]
    api_gone = [("rabbitmq management API", "did not answer within")]
    _run_all([
        (("scan", "--broker", f"amqp://guest:guest@127.0.0.1:{s}//", "--management-url", f"http://127.0.0.1:{s}"),
         broker_gone),
        (("scan", "--broker", f"amqp://guest:guest@127.0.0.1:{d}//", "--management-url", f"http://127.0.0.1:{d}",
          "--peek"), broker_gone),
        (("scan", "--broker", real, "--management-url", f"http://127.0.0.1:{s}"), api_gone),
        (("scan", "--broker", real, "--management-url", f"http://127.0.0.1:{d}", "--peek"), api_gone),
        (("trace", "some-id", "--broker", f"amqp://guest:guest@127.0.0.1:{s}//", "--management-url",
          f"http://127.0.0.1:{s}", "--peek"), broker_gone),
        (("trace", "some-id", "--broker", f"amqp://guest:guest@127.0.0.1:{d}//", "--management-url",
          f"http://127.0.0.1:{d}"), broker_gone),
        (("trace", "some-id", "--broker", real, "--management-url", f"http://127.0.0.1:{d}", "--peek"), api_gone),
    ], tmp_path)


@pytest.mark.redis
def test_result_backend_that_never_answers_trace(holes, tmp_path):
    if not redis_available():
        pytest.skip("no Redis")
    tag = uid()
    name = write_module(tmp_path, f"trust_deadline_backend_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker="redis://127.0.0.1:6379/14",
                     backend="redis://127.0.0.1:{holes.silent}/0")
        app.conf.task_default_queue = "trust-deadline-{tag}"
    ''')
    dark = write_module(tmp_path, f"trust_deadline_dark_backend_{tag}", f'''
        from celery import Celery
        app = Celery(__name__, broker="redis://127.0.0.1:6379/14",
                     backend="redis://127.0.0.1:{holes.unconnectable}/0")
        app.conf.task_default_queue = "trust-deadline-{tag}"
    ''')
    # ("result backend" names the place; "search backend" is what trace says when the search itself is cut off)
    runs = _run_all([
        (("trace", "some-id", "--app", name), []),
        (("trace", "some-id", "--app", dark), []),
    ], tmp_path, parallel=2)
    for run in runs:
        backend = [n["reason"] for n in run.json()["not_checked"] if n["where"] in ("result backend", "search backend")]
        assert any("did not answer" in r or "timed out" in r.lower() or "timeout" in r.lower() for r in backend), \
            run.json()["not_checked"]


def test_refused_and_unresolvable_are_fast(tmp_path):
    port = refused_port()
    runs = _run_all([
        (("scan", "--broker", f"redis://127.0.0.1:{port}/0"), [("redis", "refused")]),
        (("scan", "--broker", f"redis://nosuchhost-{uid()}.invalid:6379/0"), [("redis", "cannot reach")]),
        (("trace", "x", "--broker", f"amqp://guest:guest@127.0.0.1:{port}//", "--management-url",
          f"http://127.0.0.1:{port}"), [("rabbitmq", "refused")]),
    ], tmp_path)
    for run in runs:
        assert run.seconds < TIMEOUT, str(run)  # nothing to wait for: well before the deadline


def test_longest_run_against_an_unreachable_target():
    """Runs last: the longest wall time above (interpreter start included)."""
    if not LONGEST:
        pytest.skip("nothing ran")
    worst = max(LONGEST, key=LONGEST.get)
    print(f"\nlongest run against an unreachable target: {LONGEST[worst]:.2f} s with --timeout {TIMEOUT:g} "
          f"({worst}); {len(LONGEST)} runs")
    assert LONGEST[worst] <= TIMEOUT + MARGIN
