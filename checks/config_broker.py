"""Static checks on the broker connection itself: transports that cannot carry tasks between processes or hosts,
and a connection timeout too short for ordinary latency."""
from __future__ import annotations

import os
from urllib.parse import urlsplit

from celery_doctor.facts.context import not_production_reason
from celery_doctor.model import Category, Impact, Runbook, Snapshot, check
from celery_doctor.settings import as_seconds

from ._util import setting_line, setting_location
from .config_context import impact_line

SQLA_TRANSPORTS = ("sqla", "sqlalchemy")
# Below this, a connection (TCP and, on RabbitMQ, the AMQP handshake) does not complete under ordinary latency.
MIN_CONNECT_S = 0.5
# With broker_pool_limit=0 every publish connects anew: this is still too short then.
MIN_CONNECT_NO_POOL_S = 1.0


@check(
    id="CD151",
    slug="broker-not-shared",
    title="The broker transport cannot carry tasks between processes or hosts: published tasks never reach a worker",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="`.delay()` returns, nothing ever runs, and no error is logged anywhere; or it works on one machine "
                "and not in production.",
        why="Some kombu transports only work inside one process or one host. `memory://` keeps its queues in the "
            "process that publishes (kombu/transport/memory.py: Channel.queues and Transport.global_state are "
            "class attributes), so a worker process never sees a web process's tasks. `filesystem://` writes to "
            "`data_folder_out` and reads from `data_folder_in` (kombu/transport/filesystem.py, Channel._put and "
            "Channel._get: by default 'data_out' and 'data_in', relative to each process's working directory), so "
            "producers and workers must share one directory, and a message leaves the folder when a worker reads "
            "it, before the task runs. `sqla+sqlite://` without a file is an in-memory database per process; with "
            "a file it serves one host only, and every poll takes the database's write lock "
            "(kombu/transport/sqlalchemy, Channel._get: `BEGIN IMMEDIATE`), so busy workers and producers see "
            "`database is locked`. Such settings are fine in tests: the check stays silent for test settings and "
            "with task_always_eager.",
        confirm="`python -c 'from proj.celery import app; print(app.conf.broker_url)'` in the production environment.",
        fix="Use a broker server: Redis (`redis://host:6379/0`) or RabbitMQ (`amqp://user:pass@host//`); keep "
            "`memory://` and friends in test settings only.",
        risk="Moving brokers needs the workers and producers switched together; tasks queued in the old transport "
             "(files, SQLite rows) are not carried over.",
        references=("https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/index.html",),
    ),
)
def broker_not_shared(snapshot: Snapshot):
    config = snapshot.config
    if not_production_reason(config):
        return
    found = _unshared(config)
    if found is None:
        return
    impact, problem = found
    yield broker_not_shared.finding(
        subject="setting:broker_url", impact=impact,
        evidence=[f"broker {config.broker_url} (transport {config.transport})", problem,
                  impact_line(impact, "every task crossing a process boundary is affected"
                              if impact is Impact.HIGH else "it works on one host only, and loses what a killed "
                              "worker had read")],
        location=setting_location(config, "broker_url", "broker_transport"))


def _unshared(config) -> tuple[Impact, str] | None:
    transport = config.transport
    if transport == "memory":
        return Impact.HIGH, ("kombu's memory transport keeps queues inside one process: a worker never receives what "
                             "another process published")
    if transport == "filesystem":
        return _filesystem(config.transport_options)
    if transport in SQLA_TRANSPORTS:
        return _sqlite(config.broker_url or "")
    return None


def _filesystem(options) -> tuple[Impact, str]:
    folder_in = str(options.get("data_folder_in", "data_in"))
    folder_out = str(options.get("data_folder_out", "data_out"))
    if os.path.normpath(folder_in) != os.path.normpath(folder_out):
        return Impact.HIGH, (f"producers write to data_folder_out={folder_out!r} and workers read "
                             f"data_folder_in={folder_in!r}: with the same settings on both sides no task arrives")
    relative = "" if os.path.isabs(folder_in) else ", relative to each process's working directory"
    return Impact.MEDIUM, (f"messages are files in {folder_in!r}{relative}: only processes sharing that directory "
                           "see them, and a message is removed when a worker reads it, before the task runs")


def _sqlite(url: str) -> tuple[Impact, str] | None:
    database_url = url.split("+", 1)[1] if "+" in url.split("://", 1)[0] else url
    if not database_url.lower().startswith("sqlite"):
        return None
    path = urlsplit(database_url).path.lstrip("/") if "://" in database_url else ""
    if not path or path == ":memory:":
        return Impact.HIGH, "an in-memory SQLite database exists per process: no other process sees its tasks"
    return Impact.MEDIUM, (f"SQLite file {path!r}: one host only, and every worker's poll takes the write lock "
                           "(`database is locked` under load)")


@check(
    id="CD152",
    slug="broker-connection-timeout-too-short",
    title="broker_connection_timeout is too short for ordinary latency: publishes fail with OperationalError",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="`.delay()` raises `kombu.exceptions.OperationalError: timed out` now and then, more under load or "
                "across zones; workers log reconnect failures after a broker blip.",
        why="Celery passes `broker_connection_timeout` to kombu as the connection's `connect_timeout` "
            "(celery/app/base.py, Celery._connection). kombu uses it as the total time allowed for (re)connecting, "
            "all retries included (kombu/connection.py, Connection._extract_failover_opts -> _ensure_connection's "
            "`timeout`), and py-amqp as the limit for the TCP connect and the whole AMQP handshake "
            "(amqp/connection.py, Connection.connect). A tenth of a second does not cover a TLS handshake or a "
            "latency spike. With `broker_pool_limit=0` there is no connection pool: a connection is closed on "
            "release (kombu/resource.py, Resource.release) and every publish connects anew, so every publish needs "
            "the whole connection within that time. A publish that fails raises OperationalError; the task is lost "
            "wherever the caller swallows it. Measured against RabbitMQ through a link adding 50 ms per hop: with "
            "0.1 s every publish raised `OperationalError: timed out` after about 0.1 s (the publish retry policy "
            "cannot help: the reconnect budget is the same 0.1 s); with 1 s and 4 s each went through in about 1 s.",
        confirm="`app.conf.broker_connection_timeout`, `app.conf.broker_pool_limit`; grep producer logs for "
                "`OperationalError` and `timed out`.",
        fix="Keep `broker_connection_timeout` at its default (4 s) or a few seconds, and keep the connection pool "
            "(`broker_pool_limit` at its default, 10).",
        risk="A longer timeout makes a caller wait longer before failing when the broker is really down.",
    ),
)
def connection_timeout(snapshot: Snapshot):
    config = snapshot.config
    timeout = as_seconds(config.value("broker_connection_timeout"))
    if timeout is None or timeout <= 0 or not config.setting("broker_connection_timeout").explicit:
        return
    pool_limit = config.value("broker_pool_limit")
    no_pool = pool_limit == 0 and not isinstance(pool_limit, bool)
    too_short = timeout <= MIN_CONNECT_NO_POOL_S if no_pool else timeout < MIN_CONNECT_S
    if not too_short:
        return
    evidence = [setting_line(config, "broker_connection_timeout")]
    if no_pool:
        evidence.append(setting_line(config, "broker_pool_limit") + ": no pool, every publish opens a new connection "
                                                                     "within that time")
    else:
        evidence.append("every connect and reconnect (all retries included) must complete within that time")
    evidence.append("a publish that cannot connect in time raises OperationalError: lost if the caller swallows it")
    evidence.append(impact_line(Impact.MEDIUM, "publishes fail loudly (an exception), as with publish retries off "
                                               "(CD131)"))
    yield connection_timeout.finding(subject="setting:broker_connection_timeout", evidence=evidence,
                                     location=setting_location(config, "broker_connection_timeout",
                                                               "broker_pool_limit"))


CHECKS = [broker_not_shared, connection_timeout]
