"""BrokerTarget: the broker URL read once (parsed, validated, masked, secrets registered, transport decided)."""
from __future__ import annotations

import pytest

from celery_doctor.broker_target import BrokerTarget, BrokerURLError, parse_url, transport_name
from celery_doctor.masking import scrub


@pytest.mark.parametrize("url, transport, host, port", [
    ("redis://127.0.0.1:6379/0", "redis", "127.0.0.1", 6379),
    ("rediss://:pw@cache.example:6380/1?ssl_cert_reqs=required", "redis", "cache.example", 6380),
    ("sentinel://sentinel.example:26379", "redis", "sentinel.example", 26379),
    ("redis+socket:///run/redis.sock?virtual_host=3", "redis", None, None),
    ("amqp://guest:guest@rabbit.example:5672//", "rabbitmq", "rabbit.example", 5672),
    ("amqps://user:pw@rabbit.example:5671/prod", "rabbitmq", "rabbit.example", 5671),
    ("pyamqp://", "rabbitmq", None, None),
    ("librabbitmq://user@rabbit.example//", "rabbitmq", "rabbit.example", None),
    ("memory://", "memory", None, None),
    ("sqla+postgresql://user:pw@db.example/celery", "sqla", "db.example", None),
    ("sqla+sqlite:///celery.db", "sqla", None, None),
    ("filesystem://", "filesystem", None, None),
    ("AMQP://Rabbit.Example//", "rabbitmq", "rabbit.example", None),
])
def test_known_schemes_parse_and_decide_the_transport(url, transport, host, port):
    target = BrokerTarget.parse(url)
    assert target.error is None and target.validate() is target
    assert target.transport == transport
    assert len(target.urls) == 1 and target.first.hostname == host and target.first.port == port
    assert target.raw == url


def test_the_apps_broker_transport_setting_wins_over_the_scheme():
    assert BrokerTarget.parse("redis://h/0", transport_setting="amqp").transport == "rabbitmq"
    assert BrokerTarget.parse(None, transport_setting="redis").transport == "redis"
    assert BrokerTarget.parse("redis://h/0", transport_setting="").transport == "redis"
    assert BrokerTarget.parse(None).transport is None and BrokerTarget.parse("").transport is None
    assert transport_name("sqla+mysql") == "sqla" and transport_name("redis+socket") == "redis"
    assert transport_name("SQS") == "sqs" and transport_name(None) is None


def test_a_failover_list_keeps_every_url_in_order_and_masks_each():
    raw = " redis://:pw-one-7781@r1.example:6379/0 ; redis://:pw-two-7781@r2.example:6380/0;;"
    target = BrokerTarget.parse(raw)
    assert [u.hostname for u in target.urls] == ["r1.example", "r2.example"]
    assert [u.port for u in target.urls] == [6379, 6380]
    assert [u.masked for u in target.urls] == ["redis://:***@r1.example:6379/0", "redis://:***@r2.example:6380/0"]
    assert "pw-one" not in target.masked and "pw-two" not in target.masked and "r2.example:6380" in target.masked
    assert target.schemes == ("redis", "redis") and target.transport == "redis"
    sentinels = BrokerTarget.parse("sentinel://:s3nt-pw-1@s1:26379;sentinel://:s3nt-pw-1@s2:26380")
    assert [(u.hostname, u.port) for u in sentinels.urls] == [("s1", 26379), ("s2", 26380)]
    assert sentinels.error is None


@pytest.mark.parametrize("raw, user, password, host", [
    ("redis://:p@ss@cache.example:6379/0", None, "p@ss", "cache.example"),
    ("redis://:p@ss:w0rd@cache.example:6379/0", None, "p@ss:w0rd", "cache.example"),
    ("amqp://me@corp.example:pw-4471@rabbit.example//", "me@corp.example", "pw-4471", "rabbit.example"),
    ("amqp://bob:p%40ss%3Aw%25rd@rabbit.example//", "bob", "p@ss:w%rd", "rabbit.example"),
    ("redis://:100%sure@cache.example/0", None, "100%sure", "cache.example"),
])
def test_passwords_with_at_colon_and_percent(raw, user, password, host):
    target = BrokerTarget.parse(raw)
    url = target.first
    assert (url.username, url.password, url.hostname) == (user, password, host)
    assert target.error is None
    for text in (target.masked, url.masked, repr(target), repr(url), str(target)):
        assert password not in text, text
    assert scrub(f"AUTH {password} failed") == "AUTH *** failed"  # registered with masking


def test_secrets_are_registered_as_written_and_decoded():
    target = BrokerTarget.parse("amqp://bob:Zq%2F9-secret-%40x@h//;redis://h2/0?password=Qy7-query-secret")
    assert target.first.password == "Zq/9-secret-@x"
    text = "kombu said: Zq/9-secret-@x, Zq%2F9-secret-%40x and Qy7-query-secret"
    assert scrub(text) == "kombu said: ***, *** and ***"
    assert "Qy7" not in target.masked


@pytest.mark.parametrize("raw, host, port", [
    ("redis://[::1]:6379/0", "::1", 6379),
    ("amqp://u:pw@[::ffff:10.0.0.1]:5672//", "::ffff:10.0.0.1", 5672),
    ("amqps://u:pw@[2001:db8::7]//", "2001:db8::7", None),
])
def test_ipv6_hosts(raw, host, port):
    target = BrokerTarget.parse(raw)
    assert target.error is None and (target.first.hostname, target.first.port) == (host, port)


@pytest.mark.parametrize("raw, words", [
    ("redis://h:abc/0", ("malformed broker URL", "abc")),
    ("redis://127.0.0.1:99999/0", ("malformed broker URL", "out of range")),
    ("redis://[::1/0", ("malformed broker URL", "IPv6")),
    ("amqp://u:p@[::1:5672//", ("malformed broker URL",)),
    ("redis://h:6379/0;redis://h2:port/0", ("malformed broker URL", "'port'")),
    ("foo://h", ("unknown broker scheme 'foo'",)),
    ("http://x", ("unknown broker scheme 'http'",)),
    ("socket:///tmp/r.sock", ("unknown broker scheme 'socket'",)),
    ("nosuch+postgresql://h/db", ("unknown broker scheme 'nosuch+postgresql'",)),
    ("redis", ("has no scheme", "redis://host:6379/0")),
    (" ; ;", ("the broker URL is empty",)),
])
def test_malformed_urls_are_one_masked_line(raw, words):
    target = BrokerTarget.parse(raw)
    assert target.error and "\n" not in target.error
    for word in words:
        assert word in target.error, target.error
    with pytest.raises(BrokerURLError) as caught:
        target.validate()
    assert str(caught.value) == target.error


def test_a_malformed_url_still_has_a_masked_form_and_a_transport():
    target = BrokerTarget.parse("redis://:Hunter2-malformed@h:port/0")
    assert target.error and "Hunter2" not in target.error
    assert target.masked == "redis://:***@h:port/0" and target.transport == "redis"
    assert target.first.malformed and target.first.port is None


def test_the_masked_form():
    assert BrokerTarget.parse("redis://user:pw-9@h:6379/0").masked == "redis://user:***@h:6379/0"
    assert BrokerTarget.parse("redis://h:6379/0?password=pw-9&x=1").masked == "redis://h:6379/0?password=***&x=1"
    assert BrokerTarget.parse("amqp://guest@h//").masked == "amqp://guest@h//"
    assert BrokerTarget.parse(None).masked is None and BrokerTarget.parse("").masked == ""


def test_parse_url_reads_one_url_as_kombu_and_redis_py_do():
    url = parse_url("  rediss://alice:pw@Cache.Example:6380/2?ssl_cert_reqs=none&db=5  ")
    assert (url.scheme, url.hostname, url.port) == ("rediss", "cache.example", 6380)
    assert (url.username, url.password, url.path) == ("alice", "pw", "/2")
    assert url.query == {"ssl_cert_reqs": "none", "db": "5"} and url.raw.startswith("rediss://")
    assert url.transport == "redis"


def test_of_app_reads_the_apps_url_and_transport_setting():
    from celery import Celery

    app = Celery("bt_of_app", broker="redis://:app-pw-5521@h:6379/3", set_as_current=False)
    target = BrokerTarget.of_app(app)
    assert target.raw == "redis://:app-pw-5521@h:6379/3" and target.transport == "redis"
    app.conf.broker_transport = "amqp"
    assert BrokerTarget.of_app(app).transport == "rabbitmq"
    assert BrokerTarget.of_app(Celery("bt_none", set_as_current=False)).urls == ()
    assert "app-pw-5521" not in scrub("app-pw-5521")


def test_non_strings_are_no_url():
    target = BrokerTarget.parse(["redis://h"])  # type: ignore[arg-type]
    assert target.raw is None and target.urls == () and target.error is None


def test_the_redis_address_is_derived_from_the_parsed_url():
    from celery_doctor.redisio import RedisReadError, redis_address

    socket_url, sentinel, tls, bad_db = BrokerTarget.parse(
        "redis+socket:///run/redis.sock?virtual_host=3;sentinel://:s-pw-1@s1;rediss://:pw@cache:6390/4;redis://h/x").urls
    sock = redis_address(socket_url)
    assert (sock.socket_path, sock.db, sock.host, sock.port, sock.address) == ("/run/redis.sock", 3, None, None,
                                                                              "/run/redis.sock")
    assert (redis_address(sentinel).host, redis_address(sentinel).port, redis_address(sentinel).password) == (
        "s1", 26379, "s-pw-1")
    secure = redis_address(tls)
    assert (secure.ssl, secure.port, secure.db, secure.masked) == (True, 6390, 4, "rediss://:***@cache:6390/4")
    with pytest.raises(RedisReadError, match="the database in 'redis://h/x' is not a number"):
        redis_address(bad_db)
    with pytest.raises(RedisReadError, match="malformed broker URL"):
        redis_address(BrokerTarget.parse("redis://h:port/0").first)
    plain = redis_address("redis://127.0.0.1/0")  # a string is parsed by broker_target, as the rest
    assert (plain.host, plain.port, plain.db, plain.ssl) == ("127.0.0.1", 6379, 0, False)


def test_the_amqp_endpoint_is_derived_from_the_parsed_url():
    from celery_doctor.rabbitmq_api import RabbitError, broker_endpoint

    ep = broker_endpoint(BrokerTarget.parse("amqps://alice:p%40ss@[2001:db8::7]/prod%2Feu;amqp://other//"))
    assert (ep.host, ep.port, ep.vhost, ep.userid, ep.password, ep.tls) == ("2001:db8::7", 5671, "prod/eu", "alice",
                                                                            "p@ss", True)
    assert "p@ss" not in repr(ep) and "p@ss" not in str(ep)
    bare = broker_endpoint(BrokerTarget.parse("librabbitmq://"))
    assert (bare.host, bare.port, bare.vhost, bare.userid, bare.password, bare.scheme) == (
        "localhost", 5672, "/", "guest", "guest", "librabbitmq")
    assert broker_endpoint(BrokerTarget.parse("pyamqp://h//"), use_ssl=True).port == 5671
    for empty in (BrokerTarget.parse(None), BrokerTarget.parse(""), None):
        with pytest.raises(RabbitError, match="no broker URL is configured"):
            broker_endpoint(empty)
    with pytest.raises(RabbitError, match="cannot be parsed"):
        broker_endpoint(BrokerTarget.parse("amqp://h:abc//"))
