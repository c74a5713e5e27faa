"""Restricted or wrong management API access degrades per request, not per part (RabbitMQ).

Against the real RabbitMQ (a private vhost with 3 messages waiting in `celery`, nobody consuming) and small
fake servers started here on 127.0.0.1:

- a --management-url that does not speak HTTP (garbage bytes, the AMQP port, Redis' port), answers 100,000
  nested arrays, trickles bytes that never end within the deadline, or streams an endless body: the scan
  falls back to passive declares over AMQP (the 3 waiting messages are still counted: CD301), says in
  "Not checked" why the API was not used, and ends within --timeout plus a small margin;
- the API's own reason for a 401 (users created with rabbitmqctl): wrong password ("Login failed"), a user
  without the management/monitoring tag ("Not management user"), a user who may not use the vhost;
- the default API address follows the broker's conventions (5672 -> http 15672, 5671/amqps -> https 15671);
  a non-default AMQP port is a guess the report names;
- a dead AMQP port is CD001 even when a management API answers.
"""
from __future__ import annotations

import select
import socket
import subprocess
import threading
from urllib.parse import quote

import pytest

from tests.conftest import json_places
from tests.test_trust_support import cli, drop_vhost, make_vhost, rabbit_available, refused_port, uid

TIMEOUT, MARGIN = 4.0, 2.5
WAITING = 3  # messages in the vhost's `celery` queue

pytestmark = pytest.mark.rabbitmq


# ------------------------------------------------------------------------------------------ fake peers

class FakePeer:
    """A TCP server on 127.0.0.1 that handles each connection with `behave(conn, stop)` in its own thread."""

    def __init__(self, behave) -> None:
        self.behave = behave
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.behave(conn, self.stop)
        except OSError:
            pass  # the client went away
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self._accepter.join(2)
        self.sock.close()
        for thread in self._threads:
            thread.join(2)


def _read_request(conn: socket.socket) -> bytes:
    conn.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def garbage(conn, stop):
    _read_request(conn)
    conn.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not HTTP at all \xff\xfe\x00\r\n\r\n" * 50)


def http(body: bytes, status: str = "200 OK", content_type: str = "application/json"):
    def behave(conn, stop):
        _read_request(conn)
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
    return behave


def trickle_headers(conn, stop):
    """A status line, then a header that never ends: one byte every 50 ms."""
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
    while not stop.wait(0.05):
        conn.sendall(b"a")


def trickle_body(conn, stop):
    """Complete headers announcing 1 MB of JSON, then one byte every 50 ms."""
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[")
    while not stop.wait(0.05):
        conn.sendall(b"0")


def endless(conn, stop):
    """A body with no length that never ends, as fast as the reader takes it."""
    _read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
    chunk = b"0," * 32768
    while not stop.is_set():
        conn.sendall(chunk)


class Forwarder:
    """A TCP port that forwards to the real broker's AMQP port: RabbitMQ on a non-default port."""

    def __init__(self, target=("127.0.0.1", 5672)) -> None:
        self.target = target
        self.peer = FakePeer(self._pipe)
        self.port = self.peer.port

    def _pipe(self, conn, stop):
        upstream = socket.create_connection(self.target, timeout=5)
        try:
            conn.setblocking(False)
            upstream.setblocking(False)
            pair = {conn: upstream, upstream: conn}
            while not stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].setblocking(True)
                    pair[sock].sendall(data)
                    pair[sock].setblocking(False)
        finally:
            upstream.close()

    def close(self) -> None:
        self.peer.close()


# ----------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def vhost():
    """A private vhost whose `celery` queue holds 3 messages nobody consumes."""
    if not rabbit_available():
        pytest.skip("needs RabbitMQ with its management API")
    import pika

    name = make_vhost("cd-trust-api")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:5672/{quote(name, safe='')}"))
        channel = connection.channel()
        channel.queue_declare("celery", durable=True)
        for i in range(WAITING):
            channel.basic_publish("", "celery", b"[[1, 2], {}, {}]",
                                  pika.BasicProperties(headers={"lang": "py", "task": "proj.add", "id": f"t{i}"},
                                                       content_type="application/json", delivery_mode=2))
        connection.close()
        yield name
    finally:
        drop_vhost(name)


def broker(vhost_name: str, user: str = "guest", password: str = "guest", port: int = 5672) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:{port}/{quote(vhost_name, safe='')}"


def scan(tmp_path, broker_url: str, *args, timeout: float = TIMEOUT):
    run = cli("scan", "--broker", broker_url, *args, "--format", "json", "--timeout", f"{timeout:g}", cwd=tmp_path)
    assert not run.crash_logs and "Traceback" not in run.stdout + run.stderr, str(run)
    assert run.seconds <= timeout + MARGIN, f"{run.seconds:.2f} s > {timeout + MARGIN} s\n{run}"
    return run


def not_checked(run) -> list[tuple[str, str]]:
    return [(n.get("part") or n.get("where"), n["reason"]) for n in run.json()["not_checked"]]


def api_reason(run) -> str:
    reasons = [r for w, r in not_checked(run) if w == "rabbitmq management API"]
    assert len(reasons) == 1, (not_checked(run), str(run))
    return reasons[0]


def assert_read_over_amqp(run) -> None:
    """The broker itself was read (passive declares counted the waiting messages), and the run says so."""
    assert run.code == 1, str(run)
    report = run.json()
    assert "rabbitmq" not in dict(not_checked(run)), not_checked(run)
    assert not [c for c in report["checks"] if c["status"] == "error"], str(run)
    waiting = [f for f in json_places(report["findings"]) if f["check"] == "CD301" and f["subject"] == "queue:celery"]
    assert waiting and waiting[0]["messages_at_risk"] == WAITING, \
        [(f["check"], f["subject"], f["messages_at_risk"]) for f in report["findings"]]
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["CD319"] == "failed" and statuses["CD001"] == "passed", statuses
    assert "read over AMQP instead" in api_reason(run)


# ---------------------------------------------------------------------------- not the management API

def test_an_address_that_does_not_speak_http_falls_back_to_amqp(vhost, tmp_path):
    peers = [FakePeer(garbage), FakePeer(http(b"<html><body>Welcome to nginx!</body></html>",
                                               content_type="text/html"))]
    cases = [
        (f"http://127.0.0.1:{peers[0].port}", "did not answer HTTP"),
        (f"http://127.0.0.1:{peers[1].port}", "did not answer JSON"),
        ("http://127.0.0.1:5672", "AMQP"),  # the broker's own port
        ("http://127.0.0.1:6379", "did not answer HTTP"),  # Redis
    ]
    try:
        for url, words in cases:
            run = scan(tmp_path, broker(vhost), "--management-url", url)
            assert_read_over_amqp(run)
            reason = api_reason(run)
            assert words in reason and url in reason, (url, reason)
    finally:
        for peer in peers:
            peer.close()


def test_deeply_nested_json_is_refused_quickly(vhost, tmp_path):
    nested = FakePeer(http(b"[" * 100_000 + b"]" * 100_000))
    try:
        run = scan(tmp_path, broker(vhost), "--management-url", f"http://127.0.0.1:{nested.port}")
        assert_read_over_amqp(run)
        assert "nested" in api_reason(run), api_reason(run)
        assert "RecursionError" not in run.everything()
        assert run.seconds < TIMEOUT, f"{run.seconds:.2f} s: refusing a nested document must not wait for anything"
    finally:
        nested.close()


@pytest.mark.parametrize("behave", [trickle_headers, trickle_body], ids=["headers", "body"])
def test_an_api_that_trickles_forever_is_cut_off_and_the_broker_still_read(vhost, tmp_path, behave):
    slow = FakePeer(behave)
    try:
        run = scan(tmp_path, broker(vhost), "--management-url", f"http://127.0.0.1:{slow.port}")
        assert slow.connections >= 1
        assert_read_over_amqp(run)
        assert "did not answer within" in api_reason(run) and "still incomplete" in api_reason(run), api_reason(run)
    finally:
        slow.close()


def test_an_endless_body_is_capped(vhost, tmp_path):
    from celery_doctor.rabbitmq_api import MAX_RESPONSE_BYTES

    stream = FakePeer(endless)
    try:
        # a longer timeout: reading up to the cap must not race the deadline on a busy machine
        run = scan(tmp_path, broker(vhost), "--management-url", f"http://127.0.0.1:{stream.port}", timeout=15)
        assert_read_over_amqp(run)
        reason = api_reason(run)
        assert f"more than {MAX_RESPONSE_BYTES // 2**20} MiB" in reason, reason
        assert MAX_RESPONSE_BYTES <= 64 * 2**20
    finally:
        stream.close()


# ------------------------------------------------------------------------ the API's own 401 reasons

class RabbitctlUser:
    """A real RabbitMQ user made with rabbitmqctl for one test, deleted at the end."""

    def __init__(self, password: str, tags: tuple[str, ...] = (), vhosts: tuple[str, ...] = ()) -> None:
        self.name = f"cd-trust-api-{uid()}"
        self.password = password
        self._ctl("add_user", self.name, password)
        self._ctl("set_user_tags", self.name, *tags)
        for vhost in vhosts:
            self._ctl("set_permissions", "-p", vhost, self.name, ".*", ".*", ".*")

    @staticmethod
    def _ctl(*args: str) -> None:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)

    def delete(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", self.name], capture_output=True, timeout=60)


@pytest.fixture
def rabbitmqctl():
    try:
        subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("needs rabbitmqctl")
    made: list[RabbitctlUser] = []

    def make(*args, **kwargs) -> RabbitctlUser:
        user = RabbitctlUser(*args, **kwargs)
        made.append(user)
        return user

    yield make
    for user in made:
        user.delete()


def test_the_apis_own_reason_for_a_401(vhost, tmp_path, rabbitmqctl):
    password = f"pw-{uid()}"
    monitor = rabbitmqctl(password, tags=("monitoring",), vhosts=(vhost,))
    untagged = rabbitmqctl(password, vhosts=(vhost,))
    elsewhere = rabbitmqctl(password, tags=("management",), vhosts=("/",))  # may not use the scanned vhost

    # wrong password in --management-url (the broker URL's is right): 401 "Login failed"
    wrong = scan(tmp_path, broker(vhost, monitor.name, password),
                 "--management-url", f"http://{monitor.name}:not-{password}@127.0.0.1:15672")
    assert_read_over_amqp(wrong)
    assert "Login failed" in api_reason(wrong) and "wrong user name or password" in api_reason(wrong), api_reason(wrong)

    # a user without the management/monitoring tag, at the default address: 401 "Not management user"
    notag = scan(tmp_path, broker(vhost, untagged.name, password))
    assert_read_over_amqp(notag)
    assert "Not management user" in api_reason(notag), api_reason(notag)
    assert f"{untagged.name!r} has no management or monitoring tag" in api_reason(notag), api_reason(notag)
    assert "http://127.0.0.1:15672" in api_reason(notag)

    # an API user who may not use the vhost: 401 on /api/queues/<vhost>, "User not authorised to access virtual host"
    novhost = scan(tmp_path, broker(vhost),
                   "--management-url", f"http://{elsewhere.name}:{password}@127.0.0.1:15672")
    assert_read_over_amqp(novhost)
    reason = api_reason(novhost)
    assert "User not authorised to access virtual host" in reason and f"may not use the vhost {vhost!r}" in reason, reason

    # the same user as the broker's: AMQP refuses it too, and CD001 carries both reasons
    both = scan(tmp_path, broker(vhost, elsewhere.name, password))
    assert both.code == 1, str(both)
    cd001 = [f for f in both.json()["findings"] if f["check"] == "CD001"]
    assert cd001, str(both)
    evidence = " ".join(cd001[0]["evidence"])
    assert "User not authorised to access virtual host" in evidence and "access to the vhost refused" in evidence, evidence
    for run in (wrong, notag, novhost, both):
        assert password not in run.everything(), "a password leaked"


# ------------------------------------------------------------------------------ where the API is

def test_default_management_address_follows_the_broker():
    from celery_doctor.rabbitmq_api import broker_endpoint, management_guess, management_location

    assert management_location(broker_endpoint("amqp://u:p@mq.example:5672//"))[0] == "http://mq.example:15672"
    assert management_location(broker_endpoint("amqp://u:p@mq.example//"))[0] == "http://mq.example:15672"
    assert management_location(broker_endpoint("amqps://u:p@mq.example:5671//"))[0] == "https://mq.example:15671"
    assert management_location(broker_endpoint("amqps://u:p@mq.example//"))[0] == "https://mq.example:15671"
    assert management_location(broker_endpoint("amqp://u:p@[::1]:5672//"))[0] == "http://[::1]:15672"
    for url in ("amqp://u:p@mq.example:5672//", "amqps://u:p@mq.example:5671//"):
        assert management_guess(broker_endpoint(url)) is None
    odd = broker_endpoint("amqp://u:p@mq.example:5673//")
    assert management_location(odd)[0] == "http://mq.example:15672"
    assert "guess" in management_guess(odd) and "5673" in management_guess(odd)
    assert management_location(odd, "http://mq.example:15673")[0] == "http://mq.example:15673"
    assert management_guess(odd, "http://mq.example:15673") is None  # the user said where


def test_a_non_default_amqp_port_makes_the_api_address_a_guess(vhost, tmp_path):
    forwarder = Forwarder()
    try:
        run = scan(tmp_path, broker(vhost, port=forwarder.port))
        notes = [r for w, r in not_checked(run) if w == "rabbitmq management API (address guessed)"]
        assert len(notes) == 1, not_checked(run)
        assert "http://127.0.0.1:15672" in notes[0] and str(forwarder.port) in notes[0] and "guess" in notes[0]
        assert "same cluster" in notes[0], notes[0]  # the guess answered for the broker's own cluster
        assert "rabbitmq" not in dict(not_checked(run)) and "rabbitmq management API" not in dict(not_checked(run))
    finally:
        forwarder.close()


def test_an_api_of_another_cluster_is_not_used(vhost, tmp_path):
    """An API answering for a different cluster than the AMQP port's: its data would describe another broker."""
    overview = (b'{"rabbitmq_version": "3.10.8", "cluster_name": "rabbit@elsewhere", "node": "rabbit@elsewhere",'
                b' "management_version": "3.10.8"}')
    other = FakePeer(http(overview))
    try:
        run = scan(tmp_path, broker(vhost), "--management-url", f"http://127.0.0.1:{other.port}")
        assert_read_over_amqp(run)
        assert "rabbit@elsewhere" in api_reason(run) and "another cluster" in api_reason(run), api_reason(run)
    finally:
        other.close()


# ------------------------------------------------------------------------------ dead AMQP port

def test_a_dead_amqp_port_is_cd001_even_when_an_api_answers(tmp_path):
    if not rabbit_available():
        pytest.skip("needs RabbitMQ with its management API")
    port = refused_port()
    run = scan(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}//",
               "--management-url", "http://guest:guest@127.0.0.1:15672")
    assert run.code == 1, str(run)
    report = run.json()
    cd001 = [f for f in report["findings"] if f["check"] == "CD001"]
    assert cd001 and f"127.0.0.1:{port}" in cd001[0]["subject"], [(f["check"], f["subject"]) for f in report["findings"]]
    assert "connection refused" in " ".join(cd001[0]["evidence"])
    reason = dict(not_checked(run)).get("rabbitmq", "")
    assert "connection refused" in reason, not_checked(run)
    assert not [f for f in report["findings"] if f["check"].startswith("CD3")], "RabbitMQ findings from an API alone"
    assert "guest:guest" not in run.everything()
