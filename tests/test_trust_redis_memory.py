"""A read-only scan must never become Redis' memory pressure (issue: trust, part 1).

Reply buffers count toward `maxmemory`. Before replies were bounded in bytes, one default `scan` of 600
queued 1 MB messages made Redis (allkeys-lru, 200 MB free) evict the very queue it read, and the client
itself grew to 2.3 GB. Each test here runs its own `redis-server` (a real one, on a free port, so that
`maxmemory` can be set without touching the shared server), fills it with real Celery messages, runs the
real CLI, and asserts what Redis and the process saw: nothing evicted, no producer refused, the peak reply
buffer small, celery-doctor's own memory small, and what was not read said so.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")]

MB = 1 << 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, gone afterwards."""
    import redis

    port = _free_port()
    folder = tempfile.mkdtemp(prefix="cd-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", folder, "--logfile", os.path.join(folder, "log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=30)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield port, client
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _send(port: int, count: int, size: int, queue: str = "celery") -> list[str]:
    """`count` real Celery messages with an argument of `size` bytes, published by Celery itself."""
    from celery import Celery

    app = Celery("bigproducer", broker=f"redis://127.0.0.1:{port}/0", set_as_current=False)
    payload = "x" * size
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            ids.append(app.send_task("big.task", args=[payload], queue=queue, producer=producer).id)
    return ids


class _PeakClientMemory:
    """Polls INFO memory's `mem_clients_normal` (the normal clients' buffers, replies included) meanwhile."""

    def __init__(self, port: int) -> None:
        import redis

        self.client = redis.Redis(port=port, socket_timeout=30)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, int(self.client.info("memory")["mem_clients_normal"]))
            time.sleep(0.002)

    def __enter__(self) -> "_PeakClientMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


_MEASURE = ("import resource, subprocess, sys\n"
            "p = subprocess.run([sys.executable, '-m', 'celery_doctor', *sys.argv[1:]], capture_output=True)\n"
            "sys.stdout.buffer.write(p.stdout)\n"
            "sys.stderr.write(f'\\n@@rc={p.returncode} maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
            "sys.stderr.buffer.write(p.stderr)\n")


def _doctor(*args: str, timeout: float = 120):
    """Run the CLI; (returncode, stdout, stderr, its peak RSS in MB)."""
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-c", _MEASURE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    marker = next(line for line in done.stderr.splitlines() if line.startswith("@@rc="))
    rc = int(marker.split()[0].split("=")[1])
    rss_mb = int(marker.split("maxrss_kb=")[1]) / 1024
    return rc, done.stdout, done.stderr, rss_mb


def _limit(client, headroom: int, policy: str) -> None:
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", policy)
    client.config_set("maxmemory", used + headroom)


def _report(stdout: str) -> dict:
    return json.loads(stdout)


def _finding(report: dict, check: str) -> dict:
    found = [f for f in report["findings"] if f["check"] == check]
    assert found, f"no {check} in {json.dumps(report['findings'])} {report['not_checked']}"
    return found[0]


def test_default_scan_does_not_make_allkeys_lru_evict_the_queue_it_reads(own_redis):
    port, client = own_redis
    _send(port, 200, MB)
    _limit(client, 100 * MB, "allkeys-lru")
    evicted = client.info("stats")["evicted_keys"]
    with _PeakClientMemory(port) as peak:
        rc, out, err, rss = _doctor("scan", "--broker", f"redis://127.0.0.1:{port}/0", "--format", "json",
                                    "--timeout", "30", "--fail-on", "never")
    assert rc == 0, err
    assert client.llen("celery") == 200, "the queue lost messages while it was read"
    assert client.info("stats")["evicted_keys"] == evicted
    assert peak.peak < 16 * MB, f"a reply buffer of {peak.peak / MB:.0f} MB"
    assert rss < 250, f"celery-doctor used {rss:.0f} MB"
    # ... and it still read every message (the sample covers the whole queue)
    evidence = " ".join(_finding(_report(out), "CD206")["evidence"])
    assert "big.task (200)" in evidence


def test_deep_scan_and_trace_never_get_a_producer_refused_under_noeviction(own_redis):
    import redis

    port, client = own_redis
    ids = _send(port, 150, MB)
    _limit(client, 80 * MB, "noeviction")
    refused: list[str] = []
    pushed = []
    stop = threading.Event()

    def produce() -> None:
        producer = redis.Redis(port=port, socket_timeout=30)
        while not stop.is_set():
            try:
                producer.lpush("side", b"x" * 1000)
                pushed.append(1)
            except redis.ResponseError as exc:
                refused.append(str(exc))
            time.sleep(0.001)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        with _PeakClientMemory(port) as peak:
            rc, _out, err, rss = _doctor("scan", "--deep", "--broker", f"redis://127.0.0.1:{port}/0", "--format",
                                        "json", "--timeout", "30", "--fail-on", "never")
            assert rc == 0, err
            # the oldest message: the trace reads the whole list before it reaches it
            rc_trace, trace_out, trace_err, trace_rss = _doctor(
                "trace", ids[0], "--broker", f"redis://127.0.0.1:{port}/0", "--timeout", "30")
    finally:
        stop.set()
        thread.join(5)
    assert not refused, f"{len(refused)} push(es) refused while celery-doctor read: {refused[:1]}"
    assert pushed
    assert peak.peak < 16 * MB, f"a reply buffer of {peak.peak / MB:.0f} MB"
    assert max(rss, trace_rss) < 250
    assert rc_trace == 0, trace_err  # found
    assert "queued" in trace_out and "not found" not in trace_out.lower(), trace_out + trace_err
    assert client.llen("celery") == 150


def test_close_to_maxmemory_the_scan_stops_reading_and_says_so(own_redis):
    port, client = own_redis
    _send(port, 20, MB)
    _limit(client, MB, "allkeys-lru")
    evicted = client.info("stats")["evicted_keys"]
    rc, out, err, _ = _doctor("scan", "--broker", f"redis://127.0.0.1:{port}/0", "--format", "json", "--timeout",
                              "20", "--fail-on", "never")
    assert rc == 0, err
    report = _report(out)
    near = _finding(report, "CD202")
    assert near["impact"] == "high"
    assert any("stopped reading queued messages" in line for line in near["evidence"])
    not_checked = " ".join(entry["reason"] for entry in report["not_checked"])
    assert "'celery'" in not_checked and "maxmemory" in not_checked
    statuses = {c["id"]: c for c in report["checks"]}
    assert statuses["CD213"]["status"] == "skipped" and "partly read" in statuses["CD213"]["reason"]
    assert client.llen("celery") == 20
    assert client.info("stats")["evicted_keys"] == evicted


def test_one_huge_message_is_drained_not_kept_and_the_rest_is_read(own_redis):
    port, client = own_redis
    _send(port, 10, 1000)
    _send(port, 1, 80 * MB)
    _send(port, 10, 1000)
    rc, out, err, rss = _doctor("scan", "--deep", "--broker", f"redis://127.0.0.1:{port}/0", "--format", "json",
                                "--timeout", "60", "--fail-on", "never")
    assert rc == 0, err
    report = _report(out)
    not_checked = " ".join(entry["reason"] for entry in report["not_checked"])
    assert "1 message(s) larger than 64 MB were skipped" in not_checked
    assert "big.task (20)" in " ".join(_finding(report, "CD206")["evidence"])
    assert rss < 250, f"celery-doctor used {rss:.0f} MB"
    assert client.llen("celery") == 21


class _EndlessRedis:
    """Answers like Redis until LRANGE, then sends an element without end (a server that is not Redis)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _reply(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"INFO":
            text = b"redis_version:7.0.0\r\nrole:master\r\nused_memory:1000\r\nmaxmemory:0\r\n"
            return b"$%d\r\n%s\r\n" % (len(text), text)
        if name == b"SCAN":
            return b"*2\r\n$1\r\n0\r\n*1\r\n$6\r\ncelery\r\n"
        if name == b"TYPE":
            return b"+list\r\n"
        if name in (b"LLEN", b"MEMORY"):
            return b":1000\r\n"
        if name in (b"CONFIG", b"SMEMBERS", b"ZRANGE", b"CLIENT") and command[1:2] != [b"SETNAME"]:
            return b"*0\r\n"
        if name == b"LINDEX":
            return b"$-1\r\n"
        if name == b"LRANGE":
            return b""  # the endless part follows
        return b":0\r\n"

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while buffer.startswith(b"*") and b"\r\n" in buffer:
                    command, buffer = self._parse(buffer)
                    if command is None:
                        break
                    if command[0].upper() == b"CLIENT" and command[1:2] == [b"SETNAME"]:
                        conn.sendall(b"+OK\r\n")
                        continue
                    reply = self._reply(command)
                    if command[0].upper() == b"LRANGE":
                        self._endless(conn)
                        return
                    conn.sendall(reply)
        except OSError:
            return
        finally:
            conn.close()

    @staticmethod
    def _parse(buffer: bytes):
        lines = buffer.split(b"\r\n")
        count = int(lines[0][1:])
        if len(lines) < 1 + 2 * count + 1:
            return None, buffer
        args = [lines[2 + 2 * i] for i in range(count)]
        consumed = sum(len(line) + 2 for line in lines[:1 + 2 * count])
        return args, buffer[consumed:]

    def _endless(self, conn: socket.socket) -> None:
        chunk = b"y" * 65536
        head = b"*1\r\n$4000000000\r\n" if self.mode == "huge-element" else b"*1\r\n$10\r\n0123456789\r\n*"
        conn.sendall(head)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn.sendall(chunk)
            self.sent += len(chunk)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("mode", ["huge-element", "garbage-after-reply"])
def test_a_server_sending_an_endless_reply_costs_bounded_memory_and_time(mode):
    fake = _EndlessRedis(mode)
    try:
        started = time.monotonic()
        rc, out, err, rss = _doctor("scan", "--deep", "--broker", f"redis://127.0.0.1:{fake.port}/0", "--format",
                                    "json", "--timeout", "6", "--fail-on", "never", timeout=60)
        took = time.monotonic() - started
    finally:
        fake.close()
    assert rc in (0, 1), err
    assert "Traceback" not in err
    assert took < 12, f"took {took:.1f} s with --timeout 6"
    assert rss < 300, f"celery-doctor used {rss:.0f} MB against an endless reply"
    report = _report(out)
    not_checked = " ".join(entry["reason"] for entry in report["not_checked"])
    assert "celery" in not_checked, not_checked


def test_unacked_messages_are_read_in_groups_bounded_in_bytes(own_redis):
    """Workers keep delivered messages in the `unacked` hash: HMGET of 30 of them at 1 MB is a 30 MB reply."""
    port, client = own_redis
    ids = _send(port, 30, MB)
    raw = client.lrange("celery", 0, -1)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i, message in enumerate(raw):
        tag = f"tag-{i}"
        pipe.hset("unacked", tag, json.dumps([json.loads(message), "", "celery"]))
        pipe.zadd("unacked_index", {tag: now - 10})
    pipe.delete("celery")
    pipe.execute()
    _limit(client, 20 * MB, "allkeys-lru")
    evicted = client.info("stats")["evicted_keys"]
    with _PeakClientMemory(port) as peak:
        rc, out, err, rss = _doctor("trace", ids[-1], "--broker", f"redis://127.0.0.1:{port}/0", "--format", "json",
                                    "--timeout", "30")
        rc_scan, _scan_out, scan_err, _ = _doctor("scan", "--broker", f"redis://127.0.0.1:{port}/0", "--format",
                                                 "json", "--timeout", "30", "--fail-on", "never")
    assert rc == 0 and rc_scan == 0, err + scan_err
    assert json.loads(out)["locations"][0]["state"] == "unacked"
    assert client.hlen("unacked") == 30
    assert client.info("stats")["evicted_keys"] == evicted
    assert peak.peak < 8 * MB, f"a reply buffer of {peak.peak / MB:.0f} MB"
    assert rss < 250, f"celery-doctor used {rss:.0f} MB"
