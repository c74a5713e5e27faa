"""RabbitMQ broker part: real RabbitMQ (127.0.0.1:5672, management API on 15672) in a private vhost this
module creates and deletes. Queues are declared by a real Celery app (its own task_queues) and by pika with
the arguments the checks look for; tasks are published with the app's own `.delay()`.

Proves: the findings of CD301-CD321 through the CLI, the read-only guarantee (queues, counts, consumers,
exchanges and bindings identical before and after a scan; nothing of the doctor's left behind), the
management-API-down fallback to passive declares, secret masking, and bounded time against a silent peer.
"""
from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import os
import socket
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pika
import pytest

from celery_doctor.broker_target import BrokerTarget
from celery_doctor.collectors import CollectContext, ScanOptions
from celery_doctor.collectors.config import collect_config
from celery_doctor.collectors.rabbitmq import collect_rabbitmq
from celery_doctor.deadline import Deadline
from celery_doctor.model import Part
from celery_doctor.parts.rabbitmq import RabbitState
from tests.conftest import json_places, make_snapshot, run_cli

pytestmark = pytest.mark.rabbitmq

API = "http://127.0.0.1:15672/api"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, data=data, method=method,
                                     headers={"Authorization": AUTH, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
        return json.loads(text) if text else None


def q(text):
    return quote(text, safe="")


APP = '''
from celery import Celery
from kombu import Exchange, Queue

app = Celery("{mod}", broker="{url}")
app.conf.task_queues = [
    Queue("work", Exchange("work", type="direct"), routing_key="work"),
    Queue("capped", queue_arguments={{"x-max-length": 5}}),
    Queue("ttl", queue_arguments={{"x-message-ttl": 600000}}),
    Queue("drift", queue_arguments={{"x-max-priority": 10}}),
    Queue("quorum", queue_arguments={{"x-queue-type": "quorum", "x-delivery-limit": 3}}),
    Queue("topicq", Exchange("cdt-topic", type="topic"), routing_key="orders.created"),
]
app.conf.task_routes = {{
    "{mod}.add": {{"queue": "work"}},
    "{mod}.cap": {{"queue": "capped"}},
    "{mod}.expiring": {{"queue": "ttl"}},
    "{mod}.prio": {{"queue": "drift"}},
    "{mod}.slow": {{"queue": "quorum"}},
    "{mod}.order": {{"queue": "topicq"}},
    "{mod}.lost": {{"queue": "nowhere"}},
    "{mod}.longtask": {{"queue": "ctimeout"}},
    "{mod}.ephemeral": {{"queue": "transientq"}},
    "{mod}.held_task": {{"queue": "held"}},
    "{mod}.served_task": {{"queue": "served"}},
    "{mod}.policy_ttl": {{"queue": "polttl"}},
}}


@app.task
def add(x, y):
    return x + y


@app.task
def cap(i):
    return i


@app.task
def expiring():
    return 1


@app.task
def prio():
    return 1


@app.task(acks_late=True, reject_on_worker_lost=True)
def slow():
    return 1


@app.task
def order():
    return 1


@app.task
def lost():
    return 1


@app.task(acks_late=True, time_limit=3600)
def longtask():
    return 1


@app.task
def ephemeral():
    return 1


@app.task
def held_task():
    return 1


@app.task
def served_task():
    return 1


@app.task
def policy_ttl():
    return 1


def later():
    slow.apply_async(countdown=7200)
'''


def pika_conn(vhost):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, vhost, pika.PlainCredentials("guest", "guest"), socket_timeout=5, stack_timeout=5))


@dataclasses.dataclass
class Env:
    vhost: str
    url: str
    mod: str
    base: str
    app: object
    user: str
    password: str
    add_ids: tuple


def wait_for(predicate, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    os.environ["CELERY_DOCTOR_RAISE_CHECK_ERRORS"] = "1"
    uid = uuid.uuid4().hex[:8]
    vhost = f"cd-rabbit-{uid}"
    user, password = f"cd-user-{uid}", f"pw-{uuid.uuid4().hex}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    base = tmp_path_factory.mktemp("rabbitmq_scan")
    mod = f"cdtapp_{uid}"
    (base / f"{mod}.py").write_text(textwrap.dedent(APP.format(mod=mod, url=url)))
    api("PUT", f"/vhosts/{q(vhost)}", {})
    api("PUT", f"/permissions/{q(vhost)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api("PUT", f"/users/{q(user)}", {"password": password, "tags": "monitoring"})
    api("PUT", f"/permissions/{q(vhost)}/{q(user)}", {"configure": "", "write": "", "read": ".*"})
    conns = []
    sys.path.insert(0, str(base))
    try:
        app_module = importlib.import_module(mod)
        app = app_module.app
        # The app declares its own queues, exactly as a worker would (except "drift": see below).
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in ("work", "capped", "ttl", "quorum", "topicq"):
                app.amqp.queues[name](channel).declare()
        # Queues an operator (or an older deploy) created with other arguments, with pika.
        c = pika_conn(vhost)
        conns.append(c)
        ch = c.channel()
        ch.queue_declare("drift", durable=True)  # the app declares x-max-priority=10: PRECONDITION_FAILED
        ch.queue_declare("ctimeout", durable=True, arguments={"x-consumer-timeout": 600000})
        ch.queue_declare("transientq", durable=False)
        ch.queue_declare("mirrored", durable=True)
        ch.queue_declare("polttl", durable=True)
        ch.queue_declare("held", durable=True)
        ch.queue_declare("served", durable=True)
        ch.queue_unbind("topicq", "cdt-topic", "orders.created")  # the binding the route needs is gone ...
        ch.queue_bind("topicq", "cdt-topic", "billing.#")  # ... only an unrelated one is left
        api("PUT", f"/policies/{q(vhost)}/cdt-ha", {"pattern": "^mirrored$", "definition": {"ha-mode": "all"},
                                                     "apply-to": "queues"})
        api("PUT", f"/policies/{q(vhost)}/cdt-ttl", {"pattern": "^polttl$", "definition": {"message-ttl": 30000},
                                                      "apply-to": "queues"})
        # Messages, published by the app itself.
        add_ids = tuple(app_module.add.delay(1, 2).id for _ in range(3))
        for i in range(8):
            app_module.cap.delay(i)  # x-max-length 5, drop-head: 3 of them are already gone
        app_module.expiring.delay()
        app_module.slow.delay()
        app_module.policy_ttl.delay()
        app_module.held_task.delay()
        app_module.served_task.delay()
        ch.basic_publish("", "work", b"{}", pika.BasicProperties(delivery_mode=1, headers={"task": "x", "id": "t"}))
        ch.basic_publish("cdt-topic", "orders.created", b"{}")  # unroutable: no binding matches
        # One delivery held without ack (a stuck worker), one consumer holding its delivery.
        holder = pika_conn(vhost)
        conns.append(holder)
        hch = holder.channel()
        wait_for(lambda: hch.queue_declare("held", passive=True).method.message_count == 1, 5, "held message")
        method, _, _ = hch.basic_get("held", auto_ack=False)
        assert method is not None
        consumer = pika_conn(vhost)
        conns.append(consumer)
        cch = consumer.channel()
        cch.basic_qos(prefetch_count=1)
        cch.basic_consume("served", lambda *a: None, auto_ack=False)
        consumer.process_data_events(time_limit=0.5)

        def stats_ready():
            queues = {x["name"]: x for x in api("GET", f"/queues/{q(vhost)}")}
            topic = api("GET", f"/exchanges/{q(vhost)}/cdt-topic").get("message_stats") or {}
            return (queues.get("work", {}).get("messages_ready") == 4
                    and queues.get("capped", {}).get("messages_ready") == 5
                    and queues.get("held", {}).get("messages_unacknowledged") == 1
                    and queues.get("served", {}).get("consumers") == 1
                    and queues.get("work", {}).get("messages_persistent") == 3
                    and queues.get("quorum", {}).get("messages") == 1
                    and all(queues.get(n, {}).get("messages_ready") == 1 for n in ("ttl", "polttl"))
                    and topic.get("publish_in") == 1)

        wait_for(stats_ready, 25, "management API statistics")
        yield Env(vhost=vhost, url=url, mod=mod, base=str(base), app=app, user=user, password=password,
                  add_ids=add_ids)
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing in cleanup: whatever it raises, the next one is closed
                pass
        sys.path.remove(str(base))
        for path in (f"/vhosts/{q(vhost)}", f"/users/{q(user)}"):
            try:
                api("DELETE", path)
            except urllib.error.HTTPError:
                pass


def scan(env, *extra, timeout=60):
    result = run_cli("scan", "--app", env.mod, "--format", "json", *extra, cwd=env.base,
                     env={"PYTHONPATH": env.base}, timeout=timeout)
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout), result


def by_check(report, check_id):
    return [f for f in json_places(report["findings"]) if f["check"] == check_id]


def one(report, check_id, subject):
    found = [f for f in by_check(report, check_id) if f["subject"] == subject]
    assert len(found) == 1, (check_id, subject, [(f["check"], f["subject"]) for f in report["findings"]])
    return found[0]


def text(finding):
    return " | ".join(finding["evidence"])


def broker_picture(env):
    """Everything a scan must not change: queues (ready count and consumers by passive declare, unacked from
    the API), exchanges and bindings."""
    queues = api("GET", f"/queues/{q(env.vhost)}")
    conn = pika_conn(env.vhost)
    try:
        counts = {}
        for item in queues:
            ch = conn.channel()
            ok = ch.queue_declare(item["name"], passive=True)
            counts[item["name"]] = (ok.method.message_count, ok.method.consumer_count,
                                    item.get("messages_unacknowledged"), item.get("durable"), item.get("arguments"))
            ch.close()
    finally:
        conn.close()
    exchanges = sorted((e["name"], e["type"], e["durable"], e["auto_delete"], json.dumps(e["arguments"], sort_keys=True))
                       for e in api("GET", f"/exchanges/{q(env.vhost)}"))
    bindings = sorted((b["source"], b["destination"], b["destination_type"], b["routing_key"])
                      for b in api("GET", f"/bindings/{q(env.vhost)}"))
    return counts, exchanges, bindings


# --------------------------------------------------------------------------- the scan, through the CLI


def test_scan_reports_rabbitmq_findings_and_leaves_the_broker_untouched(env):
    before = broker_picture(env)
    started = time.monotonic()
    report, result = scan(env)
    elapsed = time.monotonic() - started
    after = broker_picture(env)
    assert before == after  # same queues, counts, consumers, unacked, exchanges and bindings
    assert set(after[0]) == set(before[0])  # no queue of the doctor's left behind
    assert elapsed < 30, elapsed
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert all(statuses.get(f"CD3{n:02d}") in ("passed", "failed") for n in range(1, 22)), statuses
    assert not [c for c in report["checks"] if c["status"] == "error"], report["checks"]

    work = one(report, "CD301", "queue:work")
    assert work["messages_at_risk"] == 4 and work["confidence"] == "observed"
    assert "4 ready messages, 0 consumers" in text(work) and f"{env.mod}.add" in text(work)
    assert not [f for f in by_check(report, "CD301") if f["subject"] == "queue:served"]  # it has a consumer

    missing = one(report, "CD303", "queue:nowhere")
    assert f"{env.mod}.lost" in text(missing) and "does not exist" in text(missing)

    unbound = one(report, "CD304", "exchange:cdt-topic")
    assert "no binding matching 'orders.created'" in text(unbound) and "'billing.#'" in text(unbound)
    assert unbound["messages_at_risk"] == 1
    dropped = one(report, "CD305", "exchange:cdt-topic")
    assert "publish_in=1, publish_out=0" in text(dropped) and dropped["messages_at_risk"] == 1
    assert one(report, "CD306", "exchange:cdt-topic")["impact"] == "low"

    capped = one(report, "CD307", "queue:capped")
    assert "argument x-max-length=5" in text(capped) and "'drop-head'" in text(capped)
    assert "5 ready of at most 5 (100% full)" in text(capped) and capped["messages_at_risk"] == 5

    ttl = one(report, "CD308", "queue:ttl")
    assert "argument x-message-ttl=600000" in text(ttl) and "no dead-letter-exchange" in text(ttl)
    assert ttl["messages_at_risk"] == 1
    policy_ttl = one(report, "CD308", "queue:polttl")
    assert "policy 'cdt-ttl' message-ttl=30000" in text(policy_ttl)

    quorum = one(report, "CD309", "queue:quorum")
    assert "argument x-delivery-limit=3" in text(quorum) and f"{env.mod}.slow" in text(quorum)
    assert quorum["messages_at_risk"] == 1

    ctimeout = one(report, "CD310", "queue:ctimeout")
    assert "argument x-consumer-timeout=600000" in text(ctimeout)
    assert f"acks_late task {env.mod}.longtask time_limit 1 h" in text(ctimeout)
    assert "ignores per-queue consumer timeouts" in text(ctimeout)  # the broker here is 3.10

    eta = one(report, "CD311", "queue:quorum")
    assert "countdown 2 h" in text(eta) and "direct" in text(eta) and "celery_delayed_27" in text(eta)

    drift = one(report, "CD312", "queue:drift")
    assert "x-max-priority: app 10, broker none" in text(drift)
    assert not by_check(report, "CD312") or {f["subject"] for f in by_check(report, "CD312")} == {"queue:drift"}

    assert "durable=false" in text(one(report, "CD313", "queue:transientq"))
    transient = one(report, "CD313", "queue:work")
    assert "1 of 4 messages are transient" in text(transient) and transient["messages_at_risk"] == 1

    mirrored = one(report, "CD314", "server:policy cdt-ha")
    assert "ha-mode='all'" in text(mirrored) and "applied to 1 queue of vhost" in text(mirrored)
    assert ": mirrored; 0 messages" in text(mirrored) and mirrored["impact"] == "medium"  # 3.x: still mirrored

    assert not by_check(report, "CD319") and not by_check(report, "CD321")
    assert result.returncode == 1  # high findings


def test_the_real_app_cannot_declare_the_drifted_queue(env):
    """Ground truth for CD312: the app's own declaration of 'drift' is refused by the broker."""
    from amqp.exceptions import PreconditionFailed

    with env.app.connection_for_write() as conn, pytest.raises(PreconditionFailed, match="x-max-priority"):
        env.app.amqp.queues["drift"](conn.channel()).declare()


def test_management_api_down_falls_back_to_passive_declares(env):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    before = broker_picture(env)
    report, _ = scan(env, "--management-url", f"http://127.0.0.1:{port}")
    assert broker_picture(env) == before
    note = one(report, "CD319", f"server:http://127.0.0.1:{port}")
    evidence = text(note)
    assert "connection refused" in evidence
    assert "queue 'work': 4 ready, 0 consumers (passive declare)" in evidence
    assert "queue 'nowhere': does not exist (passive declare: 404 NOT_FOUND)" in evidence
    assert "CD307" in evidence and "CD315" in evidence and "CD304 (partly)" in evidence
    # What passive declares can tell still produces findings.
    assert one(report, "CD301", "queue:work")["messages_at_risk"] == 4
    assert "passive declare" in text(one(report, "CD301", "queue:work"))
    assert one(report, "CD303", "queue:nowhere")
    # What they cannot tell does not pretend to have been checked.
    assert not by_check(report, "CD307") and not by_check(report, "CD312") and not by_check(report, "CD314")
    statuses = {c["id"]: c for c in report["checks"]}
    for cid in ("CD307", "CD312", "CD315"):
        assert statuses[cid]["status"] in ("skipped", "passed")


def test_secrets_never_printed(env):
    """A user with a real password, in the broker URL and in a --management-url that fails."""
    url = f"amqp://{env.user}:{env.password}@127.0.0.1:5672/{env.vhost}"
    report, result = scan(env, "--broker", url, "--management-url",
                          f"http://{env.user}:{env.password}@127.0.0.1:1/")
    assert env.password not in result.stdout + result.stderr
    assert one(report, "CD319", "server:http://127.0.0.1:1")
    report, result = scan(env, "--broker", url)  # the monitoring user reads the API with the broker's credentials
    assert env.password not in result.stdout + result.stderr
    assert one(report, "CD301", "queue:work")["messages_at_risk"] == 4
    assert "argument x-max-length=5" in text(one(report, "CD307", "queue:capped"))  # read through the API
    assert not by_check(report, "CD319")  # a monitoring user may read everything the checks need


def test_wrong_password_is_a_masked_one_line_reason(env):
    url = f"amqp://{env.user}:wrong-{env.password}@127.0.0.1:5672/{env.vhost}"
    report, result = scan(env, "--broker", url)
    output = result.stdout + result.stderr
    assert env.password not in output and "Traceback" not in output
    reasons = [n["reason"] for n in report["not_checked"] if n["part"] == "rabbitmq"]
    assert reasons and "401" in reasons[0] and "login refused" in reasons[0], report["not_checked"]


# --------------------------------------------------------------------------- the collector and pure checks


def collect(env, **options):
    ctx = CollectContext(app=env.app, broker=BrokerTarget.parse(env.url), config=collect_config(env.app), deadline=Deadline(10),
                         options=ScanOptions(**options))
    return collect_rabbitmq(ctx)


def run(check, snapshot):
    return list(check.run(snapshot))


def test_state_and_queue_views(env):
    part = collect(env)
    assert part.ok, part.reason
    state = part.data
    assert isinstance(state, RabbitState) and state.api_reachable and state.version
    assert dataclasses.is_dataclass(state) and type(state).__dataclass_params__.frozen
    views = state.queue_views()
    assert views["work"].messages == 4 and views["work"].consumers == 0 and views["work"].unacked == 0
    assert views["served"].consumers == 1 and views["held"].unacked == 1
    assert state.queue("quorum").type == "quorum" and state.queue("polttl").policy == "cdt-ttl"
    assert state.queue("polttl").setting("message-ttl").value == 30000
    assert set(state.missing_queues) == {"celery", "nowhere"}  # the unused default queue was never declared
    assert {"cdt-topic"} <= set(state.exchanges) and state.app_exchanges == ("cdt-topic",)
    assert any(p.name == "cdt-ha" for p in state.policies) and state.nodes and state.nodes[0].running
    from celery_doctor.parts.broker import broker_queues

    snapshot = make_snapshot(env.app, mode="scan", rabbitmq=part)
    assert broker_queues(snapshot)["work"].messages == 4


def test_long_unacked_deliveries(env):
    from checks.rabbitmq import long_unacked

    part = collect(env)
    snapshot = make_snapshot(env.app, mode="scan", rabbitmq=part)
    assert not run(long_unacked, snapshot)  # just delivered: not long yet
    later = dataclasses.replace(snapshot, now=snapshot.now + 3600)
    found = {f.subject: f for f in run(long_unacked, later)}
    assert set(found) == {"queue:held", "queue:served"}
    assert found["queue:held"].messages_at_risk == 1
    assert "1 unacknowledged deliveries, 0 consumers" in found["queue:held"].evidence[0]


def test_node_conditions(env):
    """Alarms, partitions and a node down cannot be caused on the shared broker: the real node's data, with
    those fields turned on."""
    from checks.rabbitmq import network_partition, node_down, resource_alarm

    part = collect(env)
    snapshot = make_snapshot(env.app, mode="scan", rabbitmq=part)
    assert not run(resource_alarm, snapshot) and not run(network_partition, snapshot) and not run(node_down, snapshot)
    node = part.data.nodes[0]
    sick = dataclasses.replace(node, mem_alarm=True, disk_free_alarm=True, running=False, partitions=("rabbit@other",))
    state = dataclasses.replace(part.data, nodes=(sick,))
    snapshot = make_snapshot(env.app, mode="scan", rabbitmq=Part.gathered(state))
    alarms = run(resource_alarm, snapshot)
    assert len(alarms) == 2 and "mem_alarm=true" in alarms[0].evidence[0] and "disk_free_alarm=true" in alarms[1].evidence[0]
    assert "rabbit@other" in run(network_partition, snapshot)[0].evidence[0]
    down = run(node_down, snapshot)[0]
    assert down.messages_at_risk and down.messages_at_risk >= 4  # every queue of the vhost is on that node


def test_version_dependent_rules(env):
    """Per-queue consumer timeouts apply from 3.11.15; quorum queues get delivery-limit 20 by default in 4.x."""
    from checks.rabbitmq import queue_consumer_timeout, quorum_delivery_limit

    part = collect(env)
    snapshot = make_snapshot(env.app, mode="scan", rabbitmq=part, source_dir=env.base)
    # On the real (3.10) broker, x-consumer-timeout=10 min is ignored and the server's 30 min applies.
    assert "ignores" in " ".join(run(queue_consumer_timeout, snapshot)[0].evidence)
    newer = make_snapshot(env.app, mode="scan", source_dir=env.base,
                          rabbitmq=Part.gathered(dataclasses.replace(part.data, version="3.13.7")))
    finding = run(queue_consumer_timeout, newer)[0]
    assert "effective timeout 10 min" in " ".join(finding.evidence) and "ignores" not in " ".join(finding.evidence)
    # A quorum queue without x-delivery-limit: nothing on 3.x, the 4.x default of 20 otherwise.
    quorum = dataclasses.replace(part.data.queue("quorum"), arguments={"x-queue-type": "quorum"})
    queues = dict(part.data.queues, quorum=quorum)
    old = dataclasses.replace(part.data, queues=queues)
    assert not run(quorum_delivery_limit, make_snapshot(env.app, mode="scan", rabbitmq=Part.gathered(old)))
    four = dataclasses.replace(old, version="4.0.5")
    found = run(quorum_delivery_limit, make_snapshot(env.app, mode="scan", rabbitmq=Part.gathered(four)))
    assert "delivery-limit 20 (RabbitMQ 4.0.5 default: not set)" in found[0].evidence[0]


def test_peek_reads_headers_requeues_and_warns(env):
    """Last on purpose: --peek marks the messages it read as redelivered."""
    before = broker_picture(env)
    report, _ = scan(env, "--peek")
    assert broker_picture(env) == before  # same counts: everything read was requeued
    warning = one(report, "CD321", f"server:vhost {env.vhost}")
    evidence = text(warning)
    assert "marked redelivered" in evidence and "order in the queue can change" in evidence
    assert f"{env.mod}.add (3)" in evidence  # task names from headers; the pika message has task 'x'
    assert "delivery limit" in evidence  # the quorum queue was read too
    work = one(report, "CD301", "queue:work")
    assert f"--peek sample of 4: {env.mod}.add (3), x (1)" in text(work)
    assert "1 of 4 sampled messages have delivery_mode 1" in text(one(report, "CD313", "queue:work"))
    # The messages really are back, now flagged redelivered (the side effect the warning states).
    conn = pika_conn(env.vhost)
    try:
        ch = conn.channel()
        method, _, _ = ch.basic_get("capped", auto_ack=False)
        assert method is not None and method.redelivered
        ch.close()  # unacked: back to the queue
    finally:
        conn.close()


def test_trace_finds_a_queued_task_only_with_peek(env):
    task_id = env.add_ids[1]
    base = ("trace", task_id, "--app", env.mod, "--format", "json")
    plain = run_cli(*base, cwd=env.base, env={"PYTHONPATH": env.base}, timeout=60)
    data = json.loads(plain.stdout)
    assert plain.returncode == 1 and not data["found"] and not data["locations"]
    assert any(n["where"] == "rabbitmq queues" and "only read with --peek" in n["reason"] for n in data["not_checked"])
    before = broker_picture(env)
    peeked = run_cli(*base, "--peek", cwd=env.base, env={"PYTHONPATH": env.base}, timeout=60)
    assert broker_picture(env) == before  # read and put back
    assert peeked.returncode == 0, peeked.stdout + peeked.stderr
    [location] = json.loads(peeked.stdout)["locations"]
    assert location["where"] == "rabbitmq queue" and location["name"] == "queue:work" and location["state"] == "queued"
    assert location["task"] == f"{env.mod}.add" and "nothing consumes this queue" in location["next"]
    assert any("position 2 from the head" in d for d in location["details"])


# --------------------------------------------------------------------------- bounded time


class SilentPeer:
    """A TCP server that accepts connections and never answers: a hung broker or API."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_silent_broker_and_api_are_bounded(env):
    peer = SilentPeer()
    try:
        app = env.app
        ctx = CollectContext(app=app, broker=BrokerTarget.parse(f"amqp://guest:guest@127.0.0.1:{peer.port}/{env.vhost}"),
                             config=collect_config(app), deadline=Deadline(2.0),
                             options=ScanOptions(management_url=f"http://127.0.0.1:{peer.port}"))
        started = time.monotonic()
        part = collect_rabbitmq(ctx)
        elapsed = time.monotonic() - started
        assert elapsed < 4.5, elapsed
        assert not part.ok and "did not answer within" in part.reason, part.reason
        assert "\n" not in part.reason
    finally:
        peer.close()


def test_silent_api_only_falls_back_within_the_deadline(env):
    peer = SilentPeer()
    try:
        ctx = CollectContext(app=env.app, broker=BrokerTarget.parse(env.url), config=collect_config(env.app), deadline=Deadline(6.0),
                             options=ScanOptions(management_url=f"http://127.0.0.1:{peer.port}"))
        started = time.monotonic()
        part = collect_rabbitmq(ctx)
        assert time.monotonic() - started < 7
        assert part.ok and not part.data.api_reachable and "did not answer within" in part.data.api_error
        assert part.data.queue("work").messages_ready == 4 and part.data.queue("work").source == "passive"
    finally:
        peer.close()
