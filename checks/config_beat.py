"""Static checks on beat entries' expiry, weighed by how often each entry runs (facts.beat: periods of intervals
and crontabs alike). A missing or overlong `expires` matters in proportion to the runs an outage piles up."""
from __future__ import annotations

from celery_doctor.facts.beat import describe_period, entry_expires, runs_within
from celery_doctor.model import Category, Confidence, Impact, Runbook, Snapshot, check
from celery_doctor.pyast import periodic_task_locations
from celery_doctor.settings import as_seconds, human_seconds

from ._util import setting_location
from .config_context import impact_line

# A missing expires: entries running at least this often pile up a burst within an ordinary outage (an hour
# queues 4 runs or more); less often than DAY, an outage of a day queues at most one extra run, which is no pile-up.
FREQUENT_S = 900
DAY_S = 86400
OUTAGE_S = 3600  # the outage the evidence counts runs for
# An expires this many periods long keeps as many queued runs valid after an outage.
EXPIRES_PERIODS_LOW = 10
EXPIRES_PERIODS_MEDIUM = 100


@check(
    id="CD141",
    slug="beat-entry-without-expires",
    title="Beat entries without expires: after an outage the backlog of runs executes all at once",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="After workers were down for a while, the same periodic task runs dozens of times in a burst; or "
                "beat crashes with `TypeError: ... unexpected keyword argument 'expires'`.",
        why="Beat keeps publishing while no worker consumes (celery/beat.py, Scheduler.apply_async: it publishes "
            "whether or not anything consumes). Every queued run executes when workers come back, duplicating work "
            "and delaying everything else. `options={'expires': seconds}` (or the task's own `expires`) makes "
            "workers discard runs that are too old. How much this matters follows the entry's period: an entry "
            "running every minute queues 60 runs per hour of outage; a daily or monthly one queues at most one per "
            "day, which is not reported. The period of a crontab is the smallest gap between two consecutive runs, "
            "computed with Celery's own crontab (remaining_delta). `expires` must be inside `options`: as a "
            "top-level key of the entry beat's `ScheduleEntry(**entry)` raises TypeError and no entry runs "
            "(celery/beat.py, Scheduler.merge_inplace).",
        confirm="`redis-cli -n <db> LRANGE <queue> 0 100` or `rabbitmqctl list_queues`: many messages of one periodic "
                "task; `celery-doctor scan` counts duplicates per task.",
        fix="Give each frequent entry `'options': {'expires': <a bit less than its period>}`.",
        risk="Expired runs are discarded (logged `Discarding revoked task`): a run missed while workers were down is "
             "skipped, not caught up.",
        references=("https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#available-fields",),
    ),
)
def beat_expires(snapshot: Snapshot):
    config = snapshot.config
    in_code = {name: loc for loc, name, _ in periodic_task_locations(snapshot.source) if name}
    for entry in config.beat:
        where = in_code.get(entry.name) or setting_location(config, "beat_schedule")
        if entry.has_top_level_expires:
            yield beat_expires.finding(
                subject=f"beat:{entry.name}", impact=Impact.HIGH,
                title="Beat entry has a top-level 'expires' key: beat fails to load the schedule",
                evidence=[f"beat_schedule[{entry.name!r}] has 'expires' beside 'task'; ScheduleEntry takes it only "
                          "inside 'options'", "beat raises TypeError and publishes nothing",
                          impact_line(Impact.HIGH, "no entry of the schedule runs while beat cannot load it")],
                location=where)
            continue
        if entry.task == "celery.backend_cleanup" or entry_expires(config, entry)[0] is not None:
            continue
        graded = _missing_expires_grade(entry.interval_s)
        if graded is None:
            continue
        impact, confidence, reason = graded
        period = describe_period(entry) or f"period unknown (schedule {entry.schedule})"
        yield beat_expires.finding(
            subject=f"beat:{entry.name}", impact=impact, confidence=confidence,
            evidence=[f"beat_schedule[{entry.name!r}] task={entry.task!r} has no options.expires (nor does the task)",
                      period, "runs published while workers are down pile up and all execute on recovery",
                      impact_line(impact, reason)],
            location=where)


def _missing_expires_grade(period: float | None) -> tuple[Impact, Confidence, str] | None:
    """Impact, confidence and the reason, for an entry without expires running at `period` (None: not reported)."""
    if not period:
        return Impact.LOW, Confidence.INFERRED, "its period is not known (solar or custom schedule)"
    runs = runs_within(OUTAGE_S, period)
    if period <= FREQUENT_S:
        return Impact.MEDIUM, Confidence.CONFIGURED, f"an outage of {human_seconds(OUTAGE_S)} queues {runs} runs"
    if period < DAY_S:
        return (Impact.LOW, Confidence.CONFIGURED,
                f"runs every {human_seconds(period)}: an outage of a day queues {runs_within(DAY_S, period)} runs, "
                "a pile-up only after long outages")
    return None  # daily or rarer: an outage of a day queues at most one extra run


@check(
    id="CD150",
    slug="beat-expires-longer-than-period",
    title="A beat entry's expires is many periods long: after an outage, its whole backlog still runs",
    category=Category.BROKER,
    needs=("config",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="After workers were down, a periodic task runs hundreds of times in a row although its entry sets "
                "`expires`; the burst delays every other task.",
        why="`expires` discards a run only once it is older than the expiry (the worker compares the message's "
            "`expires` header with its clock: celery/worker/request.py, Request.revoked / maybe_expire). An entry "
            "that runs every minute with an expiry of a week keeps every run of the last week valid: after an "
            "outage, all of them execute. The expiry only helps when it is about one period long.",
        confirm="`app.conf.beat_schedule[name]['options']['expires']` against the entry's schedule; after an outage, "
                "`LLEN <queue>` (Redis) or the queue depth (RabbitMQ) counts the queued runs.",
        fix="Set `'options': {'expires': <a bit less than the period>}` (e.g. 50 s for an entry running every "
            "minute).",
        risk="A run that waited longer than one period is skipped, not caught up.",
    ),
)
def beat_expires_too_long(snapshot: Snapshot):
    config = snapshot.config
    for entry in config.beat:
        value, origin = entry_expires(config, entry)
        expires = as_seconds(value) if not hasattr(value, "tzinfo") else None
        period = entry.interval_s
        if not expires or not period or expires < EXPIRES_PERIODS_LOW * period:
            continue
        runs = runs_within(expires, period)
        impact = Impact.MEDIUM if expires >= EXPIRES_PERIODS_MEDIUM * period else Impact.LOW
        given = "options.expires" if origin == "options" else f"the task's expires ({entry.task})"
        yield beat_expires_too_long.finding(
            subject=f"beat:{entry.name}", impact=impact,
            evidence=[f"beat_schedule[{entry.name!r}] task={entry.task!r}: {given}={human_seconds(expires)}",
                      describe_period(entry),
                      f"up to {runs:,} queued runs stay valid: after an outage of {human_seconds(expires)} or more, "
                      "all of them execute",
                      impact_line(impact, f"the expiry is {expires / period:,.0f} periods long")],
            location=setting_location(config, "beat_schedule"))


CHECKS = [beat_expires, beat_expires_too_long]
