"""Pure pieces of the RabbitMQ part: URL parsing and masking, setting resolution, topic matching, time parsing."""
from __future__ import annotations

import datetime as dt

import pytest

from celery_doctor.collectors.rabbitmq import parse_idle_since
from celery_doctor.masking import scrub
from celery_doctor.parts.rabbitmq import RabbitQueue, version_tuple
from celery_doctor.rabbitmq_api import RabbitError, broker_endpoint, management_location
from checks.rabbitmq_routing import _binding_matches, _topic_match


def test_broker_endpoint_follows_kombu_defaults_and_never_shows_the_password():
    ep = broker_endpoint("amqp://alice:s3cr3t-pw@rabbit.internal:5673/orders;amqp://other//")
    assert (ep.host, ep.port, ep.vhost, ep.userid, ep.password) == ("rabbit.internal", 5673, "orders", "alice", "s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(ep) and "s3cr3t-pw" not in str(ep) and "s3cr3t-pw" not in ep.display
    assert scrub("error near s3cr3t-pw") == "error near ***"  # registered as a secret
    bare = broker_endpoint("pyamqp://")
    assert (bare.host, bare.port, bare.vhost, bare.userid, bare.password) == ("localhost", 5672, "/", "guest", "guest")
    assert broker_endpoint("amqp://h//").vhost == "/" and broker_endpoint("amqp://h/a%2Fb").vhost == "a/b"
    tls = broker_endpoint("amqps://h")
    assert tls.tls and tls.port == 5671
    with pytest.raises(RabbitError, match="no broker URL"):
        broker_endpoint(None)


def test_management_location_default_and_override():
    ep = broker_endpoint("amqp://bob:pw1-secret@10.0.0.5:5672/prod")
    assert management_location(ep) == ("http://10.0.0.5:15672", "bob", "pw1-secret")
    base, user, password = management_location(ep, "https://admin:pw2-secret@mq.example:8443/rabbitmq/api/")
    assert (base, user, password) == ("https://mq.example:8443/rabbitmq", "admin", "pw2-secret")
    assert "pw2-secret" not in scrub("https://admin:pw2-secret@mq.example")
    assert management_location(ep, "mq.example:15672")[0] == "http://mq.example:15672"
    with pytest.raises(RabbitError):
        management_location(ep, "ftp://mq.example")


def test_queue_settings_resolve_like_rabbitmq():
    queue = RabbitQueue(
        name="q", source="api",
        arguments={"x-max-length": 100, "x-dead-letter-exchange": "from-arg", "x-message-ttl": 1000},
        policy="limits",
        effective_policy_definition={"max-length": 10, "dead-letter-exchange": "from-policy", "message-ttl": 5000,
                                     "overflow": "reject-publish"},
    )
    length = queue.setting("max-length")  # numeric limits: the smaller wins
    assert length.value == 10 and "policy 'limits' max-length=10" in length.source
    assert queue.setting("message-ttl").value == 1000 and queue.setting("message-ttl").source.startswith("argument")
    dlx = queue.setting("dead-letter-exchange")  # the argument overrides the policy
    assert dlx.value == "from-arg" and "overrides policy 'limits'" in dlx.source
    assert queue.setting("overflow").value == "reject-publish"
    assert queue.setting("expires") is None


@pytest.mark.parametrize("pattern,key,expected", [
    ("orders.created", "orders.created", True),
    ("orders.*", "orders.created", True),
    ("orders.*", "orders.created.eu", False),
    ("orders.#", "orders", True),
    ("#", "anything.at.all", True),
    ("#.created", "orders.eu.created", True),
    ("billing.#", "orders.created", False),
    ("*.created", "created", False),
])
def test_topic_matching(pattern, key, expected):
    assert _topic_match(pattern, key) is expected


def test_binding_rules_by_exchange_type():
    assert _binding_matches("direct", "a", "a") and not _binding_matches("direct", "a", "b")
    assert _binding_matches("fanout", "", "whatever")
    assert _binding_matches("headers", "", "x") is None  # cannot be told from the key


def test_idle_since_and_versions():
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc).timestamp()
    assert parse_idle_since("2026-01-02T03:04:05.000+00:00") == moment
    assert parse_idle_since("2026-01-02 03:04:05") == moment
    assert parse_idle_since(None) is None and parse_idle_since("yesterday") is None
    assert version_tuple("3.11.15") == (3, 11, 15) and version_tuple("4.0.0-rc.1") == (4, 0, 0)
    assert version_tuple(None) == ()
