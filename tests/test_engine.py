"""Engine pieces: ranking, selection, skipping, isolation, masking, deadlines."""
from __future__ import annotations

import time

import pytest

from celery_doctor.deadline import Deadline
from celery_doctor.masking import SECRETS, mask_url, scrub
from celery_doctor.model import Category, CheckStatus, Confidence, Impact, Part, Runbook, Snapshot, Target, check
from celery_doctor.ranking import at_risk_points, rank
from celery_doctor.registry import Registry, selected
from celery_doctor.runner import run_checks

RB = Runbook(symptom="s", why="w", confirm="c", fix="f", risk="r")


def make(id, category=Category.BROKER, needs=("config",), findings=(), raises=None):
    @check(id=id, slug=id.lower(), title=id, category=category, needs=needs, runbook=RB)
    def run(snapshot):
        if raises:
            raise raises
        for kwargs in findings:
            yield run.finding(**kwargs)
    return run


def snap(**parts):
    return Snapshot(target=Target("a", None, "redis"), parts={"config": Part.gathered(object()), **parts})


def test_ranking_orders_by_impact_confidence_and_messages():
    c = make("CD900")  # four conclusions (titles) of one check: four causes, four rows
    observed = c.finding("queue:a", "e", confidence=Confidence.OBSERVED, messages_at_risk=1000, title="a")
    configured = c.finding("setting:b", "e", confidence=Confidence.CONFIGURED, title="b")
    inferred = c.finding("setting:c", "e", confidence=Confidence.INFERRED, title="c")
    medium_observed = c.finding("queue:d", "e", confidence=Confidence.OBSERVED, impact=Impact.MEDIUM, title="d")
    ranked = rank([inferred, medium_observed, configured, observed])
    # an inferred high (60 x 0.5) ties with an observed medium (30 x 1.0): the higher impact goes first
    assert [r.finding.subject for r in ranked] == ["queue:a", "setting:b", "setting:c", "queue:d"]
    assert ranked[0].score == pytest.approx(60 + 5 * 3.0004, abs=0.1)
    assert "1,000 messages at risk" in ranked[0].why and ranked[0].rank == 1
    more = c.finding("queue:z", "e", confidence=Confidence.OBSERVED, messages_at_risk=50000, title="z")
    assert rank([observed, more])[0].finding.subject == "queue:z"
    assert at_risk_points(None) == 0 and at_risk_points(10**9) == 20


def test_selection_by_prefix_longest_wins():
    assert selected("CD101", [], [])
    assert not selected("CD101", ["CD2"], [])
    assert not selected("CD101", [], ["CD1"])
    assert selected("CD121", ["CD121"], ["CD12"])
    assert not selected("CD120", ["CD1"], ["CD12"])


def test_runner_skips_when_a_part_is_missing_and_isolates_crashes():
    ok = make("CD901", findings=[{"subject": "setting:x", "evidence": "redis://:hunter22@h/0 is used"}])
    needs_redis = make("CD902", needs=("redis",))
    boom = make("CD903", raises=KeyError("boom"))
    registry = Registry(checks=[ok, needs_redis, boom])
    snapshot = snap(redis=Part.unavailable("did not answer within 2 s"))
    result = run_checks(registry, snapshot, raise_errors=False)
    statuses = {r.id: (r.status, r.reason) for r in result.results}
    assert statuses["CD901"][0] is CheckStatus.FAILED
    assert statuses["CD902"] == (CheckStatus.SKIPPED, "needs redis: did not answer within 2 s")
    assert statuses["CD903"][0] is CheckStatus.ERROR and "KeyError: 'boom'" in statuses["CD903"][1]
    assert result.findings[0].evidence == ("redis://:***@h/0 is used",)
    with pytest.raises(KeyError):
        run_checks(registry, snapshot, raise_errors=True)


def test_masking_urls_and_registered_secrets():
    assert mask_url("redis://:p4ss@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("amqp://user:pw@h//;amqp://user:pw2@h2//") == "amqp://user:***@h//;amqp://user:***@h2//"
    assert mask_url("rediss://h:6380/0?ssl_cert_reqs=none&password=topsecret") == \
        "rediss://h:6380/0?ssl_cert_reqs=none&password=***"
    assert mask_url("sentinel://:sp@s1:26379;sentinel://:sp@s2:26379") == "sentinel://:***@s1:26379;sentinel://:***@s2:26379"
    SECRETS.add_url("redis://:Canary-9f8e7d@h:6379/0")
    assert "Canary-9f8e7d" not in scrub("AuthenticationError: invalid password Canary-9f8e7d for user")
    assert "Canary" not in scrub("redis://:Canary-9f8e7d@h")


def test_deadline_budget():
    deadline = Deadline(0.3)
    assert 0.2 < deadline.budget() <= 0.3
    assert deadline.budget(cap=0.1) == pytest.approx(0.1)
    time.sleep(0.35)
    assert deadline.expired() and deadline.budget() == 0.05
