"""The Redis collector and checks against the real Redis: real Celery producers (and a real worker where the
check needs one) in databases 2 and 3; findings through the checks and through the CLI."""
from __future__ import annotations

import json
import time

import pytest

from celery_doctor.model import PartStatus
from tests.conftest import json_places, run_cli
from tests.test_redis_fixtures import (  # noqa: F401
    REDIS_URL,
    client,
    collect,
    env_with_path,
    import_app,
    janitor,
    redis_available,
    run_checks,
    snapshot_with,
    uid,
    wait_for,
    write_app,
)
from tests.workerproc import worker_factory  # noqa: F401 (fixture)

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not redis_available(), reason="no Redis on 127.0.0.1:6379")]

DB, OTHER_DB = 2, 3


@pytest.fixture
def shop(tmp_path, janitor):
    """An app on db 2 with a routed queue nobody consumes, an exchange-only route, and messages of every kind."""
    janitor(DB)
    janitor(OTHER_DB)
    tag = uid()
    queue, exchange = f"orders-{tag}", f"ex-{tag}"
    name = write_app(tmp_path, f"shop_{tag}", DB, conf=f'''
app.conf.task_default_queue = "default-{tag}"
app.conf.task_routes = {{
    "shop_{tag}.add": {{"queue": "{queue}"}},
    "shop_{tag}.record": {{"exchange": "{exchange}", "routing_key": "rk-{tag}"}},
}}
''')
    app = import_app(tmp_path, name)
    add = app.tasks[f"{name}.add"]
    with app.producer_or_acquire() as producer:
        for i in range(30):
            add.apply_async((1, 1), producer=producer)  # 30 copies of one call: a duplicate pile
        for i in range(20):
            add.apply_async((i, 2), priority=9, producer=producer)
        for i in range(4):
            add.apply_async((i, 3), countdown=3 * 3600, producer=producer)
        app.send_task("renamed.long.ago", (), queue=queue, producer=producer)
    # Another producer with a different global_keyprefix on the same db, and one on another db.
    other = write_app(tmp_path, f"stray_{tag}", DB, conf=f'''
app.conf.broker_transport_options = {{"global_keyprefix": "stray{tag}:"}}
app.conf.task_default_queue = "{queue}"
''')
    stray = import_app(tmp_path, other)
    for i in range(7):
        stray.tasks[f"{other}.add"].delay(i, i)
    elsewhere = write_app(tmp_path, f"lost_{tag}", OTHER_DB, conf=f'app.conf.task_default_queue = "{queue}"')
    lost = import_app(tmp_path, elsewhere)
    for i in range(5):
        lost.tasks[f"{elsewhere}.add"].delay(i, i)
    return dict(app=app, name=name, tag=tag, queue=queue, exchange=exchange, dir=tmp_path)


def test_collector_sees_queues_bindings_and_messages(shop):
    app, tag, queue = shop["app"], shop["tag"], shop["queue"]
    part = collect(app, max_messages=10)
    assert part.status is PartStatus.GATHERED, part.reason
    state = part.data
    assert state.db == DB and state.prefix == ""
    assert state.server.version and state.server.settings_source == "CONFIG GET"
    q = state.queue(queue)
    assert q is not None and q.depth == 55 and "routed" in q.origins and "bound" in q.origins
    by_priority = {s.priority: s.depth for s in q.subqueues}
    assert by_priority == {0: 35, 3: 0, 6: 0, 9: 20}
    assert q.sampled == 10 and not q.complete  # --max-messages 10: a sample, said as such
    assert state.queue(f"default-{tag}") is not None and state.queue(f"default-{tag}").depth == 0
    assert any(b.exchange == queue and b.queue == queue for b in state.bindings)
    assert state.missing_bindings == (shop["exchange"],)
    view = state.queue_views()[queue]
    assert view.messages == 55 and view.sampled == 10 and view.consumers == 0
    # the app's prefix and db are not the stray ones
    stray = [f for f in state.foreign if f.prefix == f"stray{tag}:" and f.db == DB]
    assert stray and stray[0].queues == {queue: 7}
    lost = [f for f in state.foreign if f.db == OTHER_DB and queue in f.queues]
    assert lost and lost[0].queues[queue] == 5

    deep = collect(app, deep=True).data.queue(queue)
    assert deep.complete and deep.sampled == 55
    summary = deep.summary
    assert summary.task_counts == {f"{shop['name']}.add": 54, "renamed.long.ago": 1}
    assert summary.eta_beyond_vt == 4
    assert summary.duplicates[0].count == 30


def test_checks_report_what_the_queues_hold(shop):
    app, tag, queue = shop["app"], shop["tag"], shop["queue"]
    snapshot = snapshot_with(app, collect(app, deep=True))
    findings = run_checks(snapshot)
    mine = {(f.check, f.subject): f for f in findings if tag in f.subject or f.check in ("CD204",)}
    backlog = mine[("CD206", f"queue:{queue}")]
    assert backlog.messages_at_risk == 55 and "no client on db 2 is blocked in BRPOP" in " ".join(backlog.evidence)
    assert mine[("CD209", f"queue:{queue}")].messages_at_risk == 4
    assert mine[("CD211", f"queue:{queue}")].messages_at_risk == 1
    assert "renamed.long.ago" in mine[("CD211", f"queue:{queue}")].evidence[0]
    dup = mine[("CD212", f"queue:{queue}")]
    assert dup.messages_at_risk == 29 and "30 copies" in " ".join(dup.evidence)
    assert mine[("CD216", f"exchange:{shop['exchange']}")].evidence[0].startswith(f"no key _kombu.binding.ex-{tag}")
    stray = [f for f in findings if f.check == "CD215" and f"stray{tag}:" in f.subject]
    assert stray and stray[0].messages_at_risk == 7
    elsewhere = [f for f in findings if f.check == "CD215" and f"db {OTHER_DB}" in f.subject
                 and queue in " ".join(f.evidence)]
    assert elsewhere and elsewhere[0].messages_at_risk >= 5


def test_scan_cli_json_shows_the_findings(shop):
    tag, queue = shop["tag"], shop["queue"]
    result = run_cli("scan", "--app", shop["name"], "--format", "json", "--select", "CD2", "--timeout", "30",
                     "--deep", cwd=shop["dir"], env={**env_with_path(shop["dir"]), "CELERY_DOCTOR_RAISE_CHECK_ERRORS": "1"})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    found = {(f["check"], f["subject"]): f for f in json_places(report["findings"])}
    assert found[("CD206", f"queue:{queue}")]["messages_at_risk"] == 55
    assert found[("CD212", f"queue:{queue}")]["confidence"] == "observed"
    assert ("CD216", f"exchange:ex-{tag}") in found
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["CD206"] == "failed" and statuses["CD217"] == "passed"
    assert "Traceback" not in result.stderr


def test_killed_worker_leaves_unacked_that_nobody_restores(tmp_path, janitor, worker_factory):
    janitor(OTHER_DB)
    tag = uid()
    queue = f"work-{tag}"
    name = write_app(tmp_path, f"crash_{tag}", OTHER_DB, conf=f'''
app.conf.task_default_queue = "{queue}"
app.conf.worker_prefetch_multiplier = 4
''')
    app = import_app(tmp_path, name)
    # The worker keeps kombu's default visibility timeout (it must not restore them itself before it dies);
    # the app as scanned says 1 s, so the entries are "older than the visibility timeout" after a moment.
    app.conf.broker_transport_options = {"visibility_timeout": 1, "unacked_mutex_expire": 1}
    worker = worker_factory(name, cwd=tmp_path, queues=[queue], pool="prefork", concurrency=1)
    for _ in range(3):
        app.tasks[f"{name}.slow"].delay(30)
    r = client(OTHER_DB)
    assert wait_for(lambda: r.hlen("unacked") >= 3 and r.llen(queue) == 0, timeout=20), worker.tail()
    worker.kill()  # SIGKILL: nothing is restored
    time.sleep(2.5)  # older than visibility_timeout (1 s) plus the mutex time (1 s)
    state = collect(app).data
    assert state.consumers == 0
    assert state.unacked.entries >= 3 and state.unacked.older_than_vt_slack >= 3
    assert state.unacked.by_queue.get(queue, 0) >= 3
    assert any(worker.name in node for node in state.pidbox_nodes)  # bound, but gone
    findings = {f.check: f for f in run_checks(snapshot_with(app, collect(app))) if f.subject == "queue:unacked"}
    assert findings["CD208"].messages_at_risk >= 3
    assert findings["CD207"].messages_at_risk >= 3
    assert f"{queue} (" in " ".join(findings["CD207"].evidence)


def test_config_forbidden_falls_back_to_info(shop):
    app = shop["app"]
    admin = client(DB)
    user, password = f"doctor-{uid()}", f"pw-{uid()}"
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-config")
    try:
        part = collect(app, url=f"redis://{user}:{password}@127.0.0.1:6379/{DB}")
        assert part.status is PartStatus.GATHERED, part.reason
        server = part.data.server
        assert server.settings_source == "INFO"
        assert "NOPERM" in (server.config_refused or "") or "permission" in (server.config_refused or "").lower()
        assert server.maxmemory_policy == admin.info("memory")["maxmemory_policy"]
        assert server.rdb_save is None
        assert any("CONFIG GET is not available" in note for note in part.data.notes)
        assert password not in repr(part.data)
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_failover_urls_each_checked(shop):
    app = shop["app"]
    url = f"redis://127.0.0.1:1/{DB};redis://:s3cr3t-{uid()}@127.0.0.1:6379/{DB}"
    part = collect(app, url=url, timeout=10)
    # the second URL has a password the server does not need: redis answers with an error, and says so
    state = part.data if part.ok else None
    if state is None:
        assert "127.0.0.1" in part.reason
        return
    assert next(f.reachable for f in state.failover) is False
    findings = [f for f in run_checks(snapshot_with(app, part)) if f.check == "CD205"]
    assert findings and "did not answer" in findings[0].evidence[0]
    assert "s3cr3t" not in " ".join(findings[0].evidence)


def test_silent_broker_is_a_reason_not_a_hang(shop):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the TCP connection (backlog) and never answers
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        part = collect(shop["app"], url=f"redis://127.0.0.1:{port}/0", timeout=2)
        assert part.status is PartStatus.UNAVAILABLE
        assert time.monotonic() - started < 3.5
        assert f"127.0.0.1:{port}" in part.reason and "did not answer" in part.reason
    finally:
        silent.close()


def test_server_checks_on_a_real_state_with_risky_settings(shop):
    """The server-level checks read the state as gathered; the risky settings are applied to a real state
    (changing them on the shared test Redis would disturb everyone else's tests)."""
    from dataclasses import replace

    app = shop["app"]
    part = collect(app)
    state = part.data
    risky = replace(state, server=replace(state.server, maxmemory=100 * 2**20, maxmemory_policy="allkeys-lru",
                                          used_memory=95 * 2**20, evicted_keys=12, cluster_enabled=True))
    found = {f.check: f for f in run_checks(snapshot_with(app, replace(part, data=risky)))
             if f.subject.startswith("server:")}
    assert found["CD201"].messages_at_risk == state.at_risk and found["CD201"].impact.value == "high"
    assert "allkeys-lru" in found["CD201"].evidence[0]
    assert "95%" in found["CD202"].evidence[0]
    assert "evicted_keys=12" in found["CD203"].evidence[0]
    assert "cluster_enabled=1" in found["CD217"].evidence[0]
    calm = replace(state, server=replace(state.server, maxmemory_policy="noeviction", aof_enabled=True))
    quiet = {f.check for f in run_checks(snapshot_with(app, replace(part, data=calm))) if f.subject.startswith("server:")}
    assert not quiet & {"CD201", "CD202", "CD203", "CD204", "CD217"}


def test_another_apps_queues_elsewhere_are_only_a_low_inferred_note(shop, tmp_path):
    """Queues under another prefix that are none of the app's: maybe another application sharing the server."""
    from celery_doctor.model import Confidence, Impact

    tag = shop["tag"]
    neighbour = write_app(tmp_path, f"neighbour_{tag}", DB, conf=f'''
app.conf.broker_transport_options = {{"global_keyprefix": "neighbour{tag}:"}}
app.conf.task_default_queue = "billing-{tag}"
''')
    other_app = import_app(tmp_path, neighbour)
    for i in range(3):
        other_app.tasks[f"{neighbour}.add"].delay(i, i)
    findings = run_checks(snapshot_with(shop["app"], collect(shop["app"])))
    found = [f for f in findings if f.check == "CD215" and f"neighbour{tag}:" in f.subject]
    assert len(found) == 1, [f.subject for f in findings if f.check == "CD215"]
    assert found[0].confidence is Confidence.INFERRED and found[0].impact is Impact.LOW
    assert found[0].messages_at_risk is None
    assert any("another application may use" in e for e in found[0].evidence)
    # the app's own queue name under the stray prefix stays an observed, high finding
    stray = [f for f in findings if f.check == "CD215" and f"stray{tag}:" in f.subject]
    assert stray[0].confidence is Confidence.OBSERVED and stray[0].impact is Impact.HIGH
