"""Log checks about the broker, the workers' view of each other and beat: CD608 RabbitMQ's acknowledgement timeout,
CD609 connection lost, CD610 missed heartbeats, CD611 clock drift, CD614 two beats at once."""
from __future__ import annotations

from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.parts import logs as P

from ._util import plural
from .logs_common import NEEDS, WORKERS_GUIDE, logs_of, seen, table, task_lines, worker_subject

# -- CD608 -------------------------------------------------------------------------------------------------

@check(
    id="CD608",
    slug="log-rabbitmq-ack-timeout",
    title="RabbitMQ closed a worker's channel: a delivery was not acknowledged within consumer_timeout",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="The worker log says `PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
                "Timeout value used: 1800000 ms` (in `Unrecoverable error: PreconditionFailed(406, ...)`); the "
                "worker exits or reconnects, and the same tasks run again.",
        why="RabbitMQ's `consumer_timeout` (30 min by default) bounds how long a delivery may stay unacked. An "
            "acks_late task running longer, or an ETA/countdown task held in the worker longer, makes the "
            "broker close the channel: every unacked message of that channel goes back to the queue "
            "(duplicates of running tasks) and Celery 5.7 stops the worker. The text is the broker's; it reaches "
            "the worker as amqp's PreconditionFailed (code 406, amqp/exceptions.py) and is logged by "
            "celery/worker/worker.py (`Unrecoverable error: %r`).",
        confirm="The timeout in the message; `rabbitmq-diagnostics environment | grep consumer_timeout`; the "
                "longest task runtime and ETA/countdown in the app (CD134).",
        fix="Keep every delivery shorter than consumer_timeout: shorter tasks, no long countdowns over "
            "RabbitMQ (use a scheduler), or raise `consumer_timeout` (rabbitmq.conf, or per queue with the "
            "`x-consumer-timeout` argument / policy on RabbitMQ 3.12+).",
        risk="A longer consumer_timeout delays the redelivery of tasks held by a hung worker.",
        references=("https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout",
                    "celery/worker/worker.py, amqp/exceptions.py"),
    ),
)
def log_rabbitmq_ack_timeout(snapshot: Snapshot):
    for sig in logs_of(snapshot).of(P.ACK_TIMEOUT):
        d = sig.details
        evidence = [seen(sig, f"the broker closed the channel {plural(sig.count, 'time')}")]
        if d.get("timeout_ms"):
            evidence.append(f"timeout value used: {d['timeout_ms']:,} ms ({d['timeout_ms'] / 60000:g} min)")
        if d.get("open_tasks"):
            evidence.append(f"{plural(d['open_tasks'], 'task')} received and unfinished at that moment: their "
                            "messages go back to the queue (duplicates of those already running)")
            evidence += task_lines(sig, "tasks held")
        yield log_rabbitmq_ack_timeout.finding(subject=worker_subject(sig), evidence=evidence,
                                               confidence=Confidence.OBSERVED,
                                               messages_at_risk=d.get("open_tasks") or None)

# -- CD609 -------------------------------------------------------------------------------------------------

@check(
    id="CD609",
    slug="log-broker-connection-lost",
    title="Workers lost their broker connection: held tasks are restored or redelivered (and may run twice)",
    category=Category.BROKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `consumer: Connection to broker lost. Trying to re-establish the "
                "connection...`, often with `Restoring N unacknowledged message(s)`, and later `Connected to`.",
        why="While disconnected the worker cannot ack: tasks it had prefetched are restored to the queue (Redis: "
            "`Restoring N unacknowledged message(s)`) or redelivered by the broker, and tasks running with "
            "acks_late run a second time elsewhere (CD104). A worker that exhausts "
            "`broker_connection_max_retries` exits. A broker restarted without persistence loses its queues "
            "(CD204). Message texts: celery/worker/consumer/consumer.py (CONNECTION_RETRY), "
            "kombu/transport/virtual/base.py (RESTORING_FMT), celery/worker/consumer/connection.py "
            "(`Connected to %s`).",
        confirm="The broker's own log and uptime at that time (restart, failover, network); "
                "`celery-doctor scan` for persistence (CD204) and retry settings (CD132).",
        fix="Make the broker durable (AOF/RDB on Redis, durable queues on RabbitMQ) and reachable (health checks, "
            "`broker_transport_options={'health_check_interval': ...}`); make tasks idempotent; consider "
            "`worker_cancel_long_running_tasks_on_connection_loss=True`.",
        risk="Cancelling long tasks on connection loss restarts them from the beginning.",
        references=("https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry",
                    "celery/worker/consumer/consumer.py, kombu/transport/virtual/base.py (5.7)"),
    ),
)
def log_broker_connection_lost(snapshot: Snapshot):
    for sig in logs_of(snapshot).of(P.CONNECTION_LOST):
        d = sig.details
        evidence = [seen(sig, f"the broker connection was lost {plural(sig.count, 'time')}")]
        if d.get("longest_s") is not None:
            evidence.append(f"longest time to reconnect: {d['longest_s']:.1f} s")
        if d.get("most_open"):
            evidence.append(f"up to {plural(d['most_open'], 'task')} received and unfinished when it dropped")
        if d.get("restored"):
            evidence.append(f"{d['restored']:,} unacknowledged message(s) restored to their queues")
        if d.get("received_again"):
            evidence.append(f"{plural(d['received_again'], 'task')} received again after reconnecting while "
                            "the first delivery was unfinished (they may run twice)")
            evidence += task_lines(sig, "received again")
        yield log_broker_connection_lost.finding(subject=worker_subject(sig), evidence=evidence,
                                                 confidence=Confidence.OBSERVED,
                                                 messages_at_risk=d.get("received_again") or None)

# -- CD610 -------------------------------------------------------------------------------------------------

@check(
    id="CD610",
    slug="log-missed-heartbeats",
    title="Workers stopped hearing other workers' heartbeats",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `missed heartbeat from celery@host2`.",
        why="Workers with gossip enabled watch each other's heartbeat events; a missed heartbeat means the other "
            "worker died, froze (a blocked event loop, a solo worker in a long task) or lost its broker "
            "connection, or the clocks differ (CD611). A dead worker's running tasks are lost (early ack) or, on "
            "Redis, wait for the visibility timeout. Message text: celery/worker/consumer/gossip.py "
            "(`missed heartbeat from %s`).",
        confirm="That worker's own log at the same time; `celery -A proj inspect ping`; `celery-doctor scan` "
                "(CD409, CD410).",
        fix="Find why the worker went silent (crash, OOM: CD601/CD602, blocked loop); keep clocks in sync.",
        risk="None from the diagnosis.",
        references=(f"{WORKERS_GUIDE}#gossip", "celery/worker/consumer/gossip.py (celery 5.7)"),
    ),
)
def log_missed_heartbeats(snapshot: Snapshot):
    for sig in logs_of(snapshot).of(P.MISSED_HEARTBEAT):
        evidence = [seen(sig, f"{plural(sig.count, 'missed heartbeat')} noticed by {sig.where}"),
                    f"from: {table(sig.details.get('nodes'))}"]
        yield log_missed_heartbeats.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED)

# -- CD611 -------------------------------------------------------------------------------------------------

@check(
    id="CD611",
    slug="log-clock-drift",
    title="Worker clocks drift apart: expiry and ETA times are misjudged",
    category=Category.WORKER,
    needs=NEEDS,
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="The worker log says `Substantial drift from celery@host2 may mean clocks are out of sync.  "
                "Current drift is 120 seconds.`",
        why="`expires` and `eta` are absolute times set on the producer's clock and compared with the worker's: "
            "a worker ahead discards tasks as expired (`Discarding revoked task`, CD607) or runs ETA tasks "
            "early; one behind holds them longer (on Redis past the visibility timeout: CD110). Celery warns "
            "above 16 s. Message text: celery/events/state.py (DRIFT_WARNING).",
        confirm="`chronyc tracking` / `timedatectl` on each host; the drift in the evidence.",
        fix="Run NTP (chrony, systemd-timesyncd) on every producer and worker host; use UTC everywhere.",
        risk="None.",
        references=("https://docs.celeryq.dev/en/stable/userguide/calling.html#eta-and-countdown",
                    "celery/events/state.py (celery 5.7)"),
    ),
)
def log_clock_drift(snapshot: Snapshot):
    for sig in logs_of(snapshot).of(P.CLOCK_DRIFT):
        d = sig.details
        evidence = [seen(sig, f"{plural(sig.count, 'drift warning')} on {sig.where}"),
                    f"from: {table(d.get('nodes'))}"]
        if d.get("max_drift_s") is not None:
            evidence.append(f"largest drift: {d['max_drift_s']:g} s")
        yield log_clock_drift.finding(subject=worker_subject(sig), evidence=evidence, confidence=Confidence.OBSERVED)

# -- CD614 -------------------------------------------------------------------------------------------------

@check(
    id="CD614",
    slug="log-beat-duplicate-schedulers",
    title="Two beat schedulers sent the same periodic task at the same time: every run happens twice",
    category=Category.BROKER,
    needs=NEEDS,
    runbook=Runbook(
        symptom="Periodic tasks run twice (or more) per period; two logs (hosts, containers) both say "
                "`Scheduler: Sending due task <entry> (<task>)` for the same entry over the same period.",
        why="Celery beat has no lock: every `celery beat` process (and every `worker -B`) sends every due entry. "
            "Two replicas of a beat deployment, a beat left running after a migration, or `-B` on several "
            "workers multiply every periodic task. celery-doctor counts an entry as duplicated when two places "
            "sent it during the same stretch of time (not one after the other, as in a failover). Message text: "
            "celery/beat.py Scheduler.apply_entry (`Scheduler: Sending due task %s (%s)`).",
        confirm="Where beat runs: `ps aux | grep 'celery.*beat'` on each host, replicas of the beat deployment, "
                "`-B` in worker command lines.",
        fix="Run exactly one beat (a single-replica deployment with `strategy: Recreate`, or a scheduler with a "
            "lock such as a database-backed one used by one process); never `worker -B` on more than one node.",
        risk="With one beat, its outage stops periodic tasks: monitor it.",
        references=("https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#starting-the-scheduler",
                    "celery/beat.py (celery 5.7)"),
    ),
)
def log_beat_duplicate_schedulers(snapshot: Snapshot):
    for sig in logs_of(snapshot).of(P.BEAT_DUPLICATE):
        d = sig.details
        origins = d.get("origins") or {}
        evidence = [seen(sig, f"entry {d.get('entry', '?')!s} ({d.get('task', '?')!s}) sent by "
                               f"{plural(len(origins), 'scheduler')} at once"),
                    "sends per place: " + ", ".join(f"{w} {n:,}" for w, n in origins.items()),
                    f"about {plural(sig.count, 'duplicate run')} while they overlapped"]
        if d.get("period_s"):
            evidence.append(f"the entry's period in the log: about {d['period_s']:g} s")
        yield log_beat_duplicate_schedulers.finding(subject=f"beat-entry:{d.get('entry', '?')}", evidence=evidence,
                                                    confidence=Confidence.OBSERVED, messages_at_risk=sig.count)


CHECKS = [log_rabbitmq_ack_timeout, log_broker_connection_lost, log_missed_heartbeats, log_clock_drift, log_beat_duplicate_schedulers]
