"""Static checks on publishing and broker connections: confirms, retries, durability, consumer_timeout."""
from __future__ import annotations

from celery_doctor.facts.acks import all_task_acks
from celery_doctor.facts.limits import task_time_limits
from celery_doctor.facts.timeouts import rabbitmq_consumer_timeout
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.pyast import literal_delays
from celery_doctor.settings import human_seconds

from ._util import plural, preview, setting_line, setting_location
from .config_context import impact_line


def _is_rabbitmq(snapshot: Snapshot) -> bool:
    return snapshot.config.transport == "rabbitmq"


@check(
    id="CD130",
    slug="rabbitmq-no-publisher-confirms",
    title="RabbitMQ publisher confirms are off: a publish the broker rejects is lost without an error",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="`.delay()` returned a task id, but the task never reached a queue; RabbitMQ logs a channel error "
                "(e.g. message larger than max_message_size) or a node failed over at that moment.",
        why="`basic.publish` is asynchronous. Without publisher confirms, a message the broker refuses (channel "
            "closed, size limit, node lost before the write) is never reported to the producer. With "
            "`confirm_publish=True` the publish waits for the broker's ack and raises on a nack. Confirms do not "
            "catch unroutable messages (Celery does not publish as mandatory; see the routing checks). Source: "
            "amqp/channel.py, Channel.__init__ (`basic_publish` becomes `basic_publish_confirm` only when the "
            "connection has confirm_publish) and Channel._basic_publish (writes the frame and returns). How much "
            "this matters depends on the project: queues that refuse publishes when full (`x-overflow: "
            "reject-publish`) lose every refused task silently (high); quorum queues or a failover list mean a "
            "cluster where node losses happen (medium); otherwise it is kombu's default (low).",
        confirm="`celery -A proj shell -c 'print(app.conf.broker_transport_options)'`; RabbitMQ management UI: "
                "channel details show `confirm` mode off; `rabbitmqctl list_channels name confirm`.",
        fix="`broker_transport_options = {'confirm_publish': True}` on every producer.",
        risk="Each publish waits for a broker round trip: lower publishing throughput, and a publish now raises "
             "where it used to vanish, so callers must handle the error (retry or an outbox).",
        references=("https://github.com/celery/celery/issues/5410", "https://www.rabbitmq.com/docs/confirms"),
    ),
)
def no_confirms(snapshot: Snapshot):
    if not _is_rabbitmq(snapshot):
        return
    config = snapshot.config
    value = config.transport_options.get("confirm_publish")
    if value:
        return
    impact, reason = _confirms_exposure(config)
    yield no_confirms.finding(
        subject="setting:broker_transport_options.confirm_publish",
        evidence=[f"broker_transport_options.confirm_publish={value!r} ({'set' if 'confirm_publish' in config.transport_options else 'py-amqp default: off'})",
                  "a publish the broker refuses or loses is never reported to the producer",
                  impact_line(impact, reason)],
        impact=impact,
        confidence=Confidence.CONFIGURED if impact is not Impact.LOW else Confidence.INFERRED,
        location=setting_location(config, "broker_transport_options", "broker_url"),
    )


REJECTING_OVERFLOW = ("reject-publish", "reject-publish-dlx")


def _confirms_exposure(config) -> tuple[Impact, str]:
    """How much unconfirmed publishes expose this project: queues that refuse publishes when full lose every
    refused message silently; a quorum queue or a failover list means a cluster, where a publish during a node loss
    or leader change can vanish (celery#9149); otherwise it is kombu's default and a rare broker-side refusal."""
    refusing = [q.name for q in config.queues if str(q.arguments.get("x-overflow", "")) in REJECTING_OVERFLOW]
    if refusing:
        return Impact.HIGH, (f"queue(s) {preview(refusing, 3)} refuse publishes when full (x-overflow reject-publish): "
                             "without confirms every refused task vanishes")
    quorum = [q.name for q in config.queues if q.queue_type == "quorum"]
    if quorum or config.value("task_default_queue_type") == "quorum":
        return Impact.MEDIUM, "quorum queues run on a cluster: a publish during a node loss or leader change can vanish"
    if len(config.broker_urls) > 1:
        return Impact.MEDIUM, (f"{len(config.broker_urls)} broker URLs (a cluster with failover): a publish during a "
                               "node loss can vanish")
    return Impact.LOW, ("kombu's default; nothing in the configuration (full queues refusing publishes, quorum "
                        "queues, a cluster) makes broker-side refusals likely")


@check(
    id="CD131",
    slug="publish-retry-disabled",
    title="Publishing does not retry: a broker blip makes .delay() raise at once",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="`kombu.exceptions.OperationalError` from `.delay()`/`.apply_async()` during short broker restarts or "
                "failovers; tasks missing for exactly those moments.",
        why="With `task_publish_retry=False` (or a retry policy of 0 retries) a connection error during publish is "
            "raised immediately. Wherever the caller catches and logs it (or a framework swallows it), the task is "
            "lost. The default policy retries 3 times over about 0.7 s.",
        confirm="`app.conf.task_publish_retry`, `app.conf.task_publish_retry_policy`; grep producer logs for "
                "`OperationalError`.",
        fix="Keep `task_publish_retry = True` with a policy that covers a failover, e.g. "
            "`{'max_retries': 10, 'interval_start': 0, 'interval_step': 0.5, 'interval_max': 3}`, and handle the final "
            "error (retry later from an outbox table).",
        risk="Longer retry policies make the caller block longer while the broker is down (request latency).",
    ),
)
def publish_retry(snapshot: Snapshot):
    config = snapshot.config
    policy = config.value("task_publish_retry_policy") or {}
    retries = policy.get("max_retries") if isinstance(policy, dict) else None
    if not config.value("task_publish_retry"):
        evidence = [setting_line(config, "task_publish_retry")]
    elif retries == 0:
        evidence = [setting_line(config, "task_publish_retry_policy") + ": max_retries=0"]
    else:
        return
    evidence.append("a connection error while publishing raises at once: the task is lost if the caller swallows it")
    yield publish_retry.finding(subject="setting:task_publish_retry", evidence=evidence,
                                location=setting_location(config, "task_publish_retry", "task_publish_retry_policy"))


@check(
    id="CD132",
    slug="connection-retry-disabled",
    title="Workers give up on the broker: connection retries are off or bounded low",
    category=Category.WORKER,
    needs=("config",),
    runbook=Runbook(
        symptom="After a broker restart or failover, workers exit (`consumer: Cannot connect ... giving up`) or never "
                "start; queues grow while no worker consumes.",
        why="`broker_connection_retry=False`, `broker_connection_retry_on_startup=False` or a small "
            "`broker_connection_max_retries` make a worker stop instead of waiting for the broker. Until someone "
            "restarts it, nothing consumes. (`broker_connection_retry_on_startup` defaults to None, which follows "
            "`broker_connection_retry`, whatever the docs say.) On Redis Sentinel failover, `READONLY` errors are "
            "channel errors, retried only with `broker_channel_error_retry=True`. Source: "
            "celery/worker/consumer/consumer.py, Consumer.ensure_connected (`max_retries="
            "broker_connection_max_retries`) and Consumer._get_connection_retry_type (the startup setting falls back "
            "to broker_connection_retry).",
        confirm="`celery -A proj inspect conf | grep broker_connection`; worker logs around a broker restart.",
        fix="Keep `broker_connection_retry = True`, `broker_connection_retry_on_startup = True`, and "
            "`broker_connection_max_retries = None` (retry forever) or a large number, and run workers under a "
            "supervisor that restarts them.",
        risk="A worker that retries forever hides a broker that is permanently gone; alert on the queue depth and on "
             "the worker's connection state instead.",
    ),
)
def connection_retry(snapshot: Snapshot):
    config = snapshot.config
    evidence = []
    if config.value("broker_connection_retry") is False:
        evidence.append(setting_line(config, "broker_connection_retry"))
    if config.value("broker_connection_retry_on_startup") is False:
        evidence.append(setting_line(config, "broker_connection_retry_on_startup") + ": a worker started while the broker is down exits")
    retries = config.value("broker_connection_max_retries")
    if isinstance(retries, int) and not isinstance(retries, bool) and 0 < retries <= 10:
        evidence.append(setting_line(config, "broker_connection_max_retries") + ": the worker exits after that many failed reconnects")
    if config.broker_url and config.broker_url.startswith("sentinel") and not config.value("broker_channel_error_retry"):
        evidence.append(setting_line(config, "broker_channel_error_retry") + ": READONLY errors after a Sentinel failover are not retried")
    if evidence:
        yield connection_retry.finding(subject="setting:broker_connection_retry", evidence=evidence,
                                       location=setting_location(config, "broker_connection_retry",
                                                                 "broker_connection_retry_on_startup",
                                                                 "broker_connection_max_retries"))


@check(
    id="CD133",
    slug="transient-or-non-durable",
    title="Transient messages or non-durable/auto-delete queues: a RabbitMQ restart drops the tasks",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Every queued task disappeared after a RabbitMQ restart or node failure.",
        why="RabbitMQ keeps only persistent messages in durable queues across a restart. "
            "`task_default_delivery_mode='transient'` (or 1), a queue declared `durable=False`, or an `auto_delete` "
            "queue (deleted when its last consumer goes) lose their messages. Source: kombu/entity.py, Queue "
            "(durable=True, auto_delete=False by default) and the message's delivery_mode (celery/app/amqp.py, "
            "AMQP._create_task_sender: task_default_delivery_mode).",
        confirm="`rabbitmqctl list_queues name durable auto_delete messages`; `app.conf.task_default_delivery_mode`.",
        fix="Keep `task_default_delivery_mode = 'persistent'` and declare task queues with `durable=True, "
            "auto_delete=False` (kombu's defaults).",
        risk="Persistent messages are written to disk: somewhat lower throughput. Changing a queue's durability "
             "requires deleting and re-declaring it (drain it first).",
    ),
)
def transient(snapshot: Snapshot):
    config = snapshot.config
    if config.transport not in ("rabbitmq", None):
        return
    mode = config.value("task_default_delivery_mode")
    if mode in ("transient", 1):
        yield transient.finding(subject="setting:task_default_delivery_mode",
                                evidence=[setting_line(config, "task_default_delivery_mode"),
                                          "messages are not written to disk: a broker restart drops every queued task"],
                                location=setting_location(config, "task_default_delivery_mode"))
    for queue in config.queues:
        problems = []
        if not queue.durable:
            problems.append("durable=False")
        if queue.auto_delete:
            problems.append("auto_delete=True")
        if problems:
            yield transient.finding(subject=f"queue:{queue.name}",
                                    evidence=[f"task_queues declares {queue.name!r} with {', '.join(problems)}",
                                              "the queue and its messages do not survive a restart (or the last consumer leaving)"],
                                    location=setting_location(config, "task_queues"))


@check(
    id="CD134",
    slug="rabbitmq-consumer-timeout",
    title="Tasks may hold a RabbitMQ delivery longer than consumer_timeout: the channel is closed, the worker exits",
    category=Category.BROKER,
    needs=("config",),
    runbook=Runbook(
        symptom="Workers crash with `PreconditionFailed(406, 'PRECONDITION_FAILED - delivery acknowledgement on "
                "channel 1 timed out. Timeout value used: 1800000 ms')`, restart, and the same tasks run again.",
        why="RabbitMQ closes a channel whose delivery stays unacknowledged longer than `consumer_timeout` (30 min "
            "by default since 3.8.17). Celery holds a delivery unacked while an acks_late task runs, and for every "
            "ETA/countdown task until it is due. The channel close kills the worker's consumer; every unacked "
            "message goes back to the queue: duplicates and a crash loop. Reproduced with Celery 5.7 and "
            "RabbitMQ 3.10: `Unrecoverable error: PreconditionFailed(406 ... delivery acknowledgement on channel 1 "
            "timed out)` and the worker exited; the running acks_late task and an unstarted ETA task both went back "
            "to `messages_ready`. The worker holds ETA messages unacked until due (celery/worker/strategy.py, "
            "default: an `eta` task waits on the timer, and is acked only when a pool process starts it).",
        confirm="`rabbitmq-diagnostics environment | grep consumer_timeout`; queue argument `x-consumer-timeout` or "
                "policy `consumer-timeout`; worker logs for `delivery acknowledgement on channel`.",
        fix="Raise `consumer_timeout` in rabbitmq.conf (or per queue with the `consumer-timeout` policy on RabbitMQ "
            "3.12+) above the longest task run and ETA; give acks_late tasks a `time_limit` below it; schedule "
            "far-future work with beat instead of long countdowns.",
        risk="A long consumer_timeout lets a truly stuck consumer hold its messages longer before RabbitMQ reclaims them.",
        references=("https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout",
                    "https://github.com/celery/celery/issues/6760"),
    ),
)
def consumer_timeout(snapshot: Snapshot):
    if not _is_rabbitmq(snapshot):
        return
    config = snapshot.config
    known = rabbitmq_consumer_timeout(snapshot.options)
    timeout = known.seconds
    too_long = []
    for acks in all_task_acks(config):
        limit = task_time_limits(config, config.tasks[acks.task]).hard
        if acks.acks_late and limit and limit > timeout:
            too_long.append(f"{acks.task} (time_limit {human_seconds(limit)})")
    delays = [d for d in literal_delays(snapshot.source) if d.seconds > timeout]
    if not too_long and not delays:
        return
    evidence = [known.describe()]
    if too_long:
        evidence.append(f"{plural(len(too_long), 'acks_late task')} may run longer: {preview(too_long)}")
    for delay in delays[:6]:
        evidence.append(f"{delay.kind} {human_seconds(delay.seconds)} at {delay.location}: {delay.code}")
    evidence.append("the delivery stays unacked that long: RabbitMQ closes the channel, the worker exits, the messages are redelivered")
    yield consumer_timeout.finding(subject="server:consumer_timeout", evidence=evidence,
                                   confidence=Confidence.CONFIGURED if known.given else Confidence.INFERRED,
                                   location=delays[0].location if delays else setting_location(config, "task_time_limit"))


CHECKS = [no_confirms, publish_retry, connection_retry, transient, consumer_timeout]
