"""Source checks about retries: unbounded retries, retrying every exception, retries at a fixed interval."""
from __future__ import annotations

import ast
from typing import Optional

from celery_doctor.model import Category, Confidence, Location, Runbook, Snapshot, check
from celery_doctor.pyast import MISSING, Project, Task, dotted_name, keyword, names_in, walk_scope
from celery_doctor.settings import human_seconds

from .source_common import (
    CELERY_DEFAULT_MAX_RETRIES,
    CELERY_DEFAULT_RETRY_DELAY,
    code,
    config_task,
    loc,
    option_truthy,
    option_value,
    project_of,
    task_subject,
)


def retry_calls(task: Task) -> list[ast.Call]:
    """`self.retry(...)` (or `<task>.retry(...)`, `current_task.retry(...)`) calls in the task's own body."""
    owners = {"self", "current_task", task.node.name}
    params = [a.arg for a in task.node.args.posonlyargs + task.node.args.args]
    if task.bound and params:
        owners.add(params[0])
    found = []
    for node in walk_scope(task.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "retry" \
                and dotted_name(node.func.value).split(".")[-1] in owners:
            found.append(node)
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def autoretry_names(task: Task) -> list[str]:
    node = task.option("autoretry_for")
    if node is None:
        return []
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [dotted_name(i).split(".")[-1] or "?" for i in items]


def _option_location(task: Task, name: str) -> Location:
    node = task.option(name)
    if node is not None and task.option_origin.get(name) == "decorator":
        return loc(task.module, node)
    return task.location


def max_retries(snapshot: Snapshot, proj: Project, task: Task) -> tuple[object, str]:
    """(value, where): value is an int, None (unbounded), or MISSING when not a literal."""
    value = option_value(proj, task, "max_retries", default=MISSING)
    if task.option("max_retries") is not None:
        return value, task.option_origin.get("max_retries", "decorator")
    info = config_task(snapshot, task)
    if info is not None:
        return info.max_retries, "the app's task settings"
    return CELERY_DEFAULT_MAX_RETRIES, "Celery's default"


def retry_delay(snapshot: Snapshot, proj: Project, task: Task) -> tuple[float, str]:
    seconds = proj.seconds(task.module, task.option("default_retry_delay")) if task.option("default_retry_delay") is not None else None
    if seconds is not None:
        return seconds, "default_retry_delay"
    info = config_task(snapshot, task)
    if info is not None and info.default_retry_delay is not None:
        return float(info.default_retry_delay), "default_retry_delay"
    return CELERY_DEFAULT_RETRY_DELAY, "default_retry_delay, Celery's default"


def _bounds_itself(node: Optional[ast.AST]) -> bool:
    """A `self.retry(...)` call, or an autoretry `retry_kwargs={...}`, that sets its own max_retries (or may: `**kw`,
    a retry_kwargs that is not a literal dict). Task.retry uses the task's max_retries only when the call's is None
    (celery/app/task.py Task.retry), and autoretry passes retry_kwargs to it (celery/app/autoretry.py)."""
    if node is None:
        return False
    if isinstance(node, ast.Call):
        given = keyword(node, "max_retries")
        return any(k.arg is None for k in node.keywords) or (
            given is not None and not (isinstance(given, ast.Constant) and given.value is None))
    if isinstance(node, ast.Dict):
        return any(key is None or (isinstance(key, ast.Constant) and key.value == "max_retries"
                                   and not (isinstance(value, ast.Constant) and value.value is None))
                   for key, value in zip(node.keys, node.values))
    return True  # retry_kwargs built elsewhere: not known to be unbounded


def _retry_ways(task: Task, calls: list[ast.Call], auto: bool = True) -> str:
    ways = []
    if calls:
        ways.append(f"self.retry() at line {calls[0].lineno}")
    auto = auto and autoretry_names(task)
    if auto:
        ways.append(f"autoretry_for=({', '.join(auto)})")
    return " and ".join(ways)


@check(
    id="CD520",
    slug="unbounded-retries",
    title="A task retries with max_retries=None: a permanent error retries forever",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="The same task id keeps coming back in the worker logs (`Retry in 180s`) for days; queues fill with "
                "retries of a few poisoned tasks; the task never ends FAILURE, so no alert fires.",
        why="With `max_retries=None` Celery never raises MaxRetriesExceededError (celery/app/task.py Task.retry: "
            "`if max_retries is not None and retries > max_retries`; a call's own `max_retries=N` bounds it, and is "
            "not reported). A permanent error (bad input, a "
            "deleted row, revoked credentials) is retried for ever: each attempt publishes a new message and re-runs "
            "the task's side effects, and the work never reaches a final state anyone looks at.",
        confirm="`celery -A proj inspect scheduled` shows the same task names again and again with growing "
                "`retries`; grep worker logs for `Retry in` with one task id.",
        fix="Bound the retries (`max_retries=5` to 10) with exponential backoff (`retry_backoff=True`, "
            "`retry_backoff_max=600`), and record the final failure (an `on_failure` handler or a dead-letter table).",
        risk="After the last retry the task ends FAILURE: work that used to wait out a long outage now fails and "
             "must be replayed from the failure record.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.max_retries",),
    ),
)
def unbounded_retries(snapshot: Snapshot):
    proj = project_of(snapshot)
    for task in proj.tasks:
        calls = [c for c in retry_calls(task) if not _bounds_itself(c)]
        auto = autoretry_names(task) and not _bounds_itself(task.option("retry_kwargs"))
        if not calls and not auto:
            continue
        value, where = max_retries(snapshot, proj, task)
        if value is not None:
            continue
        yield unbounded_retries.finding(
            subject=task_subject(snapshot, task),
            evidence=[f"max_retries=None ({where}) and the task retries ({_retry_ways(task, calls, bool(auto))})",
                      "a permanent error is retried forever: the task never ends FAILURE and each attempt re-runs "
                      "its side effects"],
            fix="Set `max_retries=` to a bound (5 to 10) with `retry_backoff=True`, and record the final failure.",
            location=_option_location(task, "max_retries"))


@check(
    id="CD521",
    slug="autoretry-for-exception",
    title="autoretry_for=(Exception,) retries permanent errors too",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="A task with a bug or bad input fails only after minutes (all retries spent), with its side effects "
                "(emails, charges, API calls) repeated on every attempt.",
        why="`autoretry_for=(Exception,)` retries every error (celery/app/autoretry.py: `except autoretry_for` "
            "around the task's run, then task.retry), including permanent ones (ValueError from bad input, "
            "IntegrityError, a bug) that can never succeed. Each attempt re-runs everything the task did before "
            "failing, and the real failure surfaces only after all retries, while the queue carries the retries.",
        confirm="Grep worker logs for `Retry in` followed by the same exception type for one task id; "
                "`celery-doctor lint --select CD521`.",
        fix="List only transient errors (`autoretry_for=(ConnectionError, TimeoutError, OperationalError)`), or "
            "exclude the permanent ones with `dont_autoretry_for=(ValueError, ...)`.",
        risk="Errors you did not list now fail at once: make sure every transient error of the task's dependencies "
             "is listed.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#automatic-retry-for-known-exceptions",),
    ),
)
def autoretry_for_exception(snapshot: Snapshot):
    proj = project_of(snapshot)
    for task in proj.tasks:
        names = autoretry_names(task)
        broad = [n for n in names if n in ("Exception", "BaseException")]
        if not broad or task.option("dont_autoretry_for") is not None:
            continue
        value, _where = max_retries(snapshot, proj, task)
        bound = "forever" if value is None else (f"{value} times" if isinstance(value, int) else "max_retries times")
        yield autoretry_for_exception.finding(
            subject=task_subject(snapshot, task),
            evidence=[f"autoretry_for=({', '.join(names)}) ({task.option_origin.get('autoretry_for', 'decorator')}) "
                      "and no dont_autoretry_for",
                      f"permanent errors (bad input, a bug, IntegrityError) are retried {bound}: every attempt "
                      "repeats the task's side effects, and the failure shows only at the end"],
            location=_option_location(task, "autoretry_for"))


def _fixed_countdown(proj: Project, task: Task, call: ast.Call) -> Optional[float]:
    """The retry's delay when it is fixed; None when it depends on the attempt (backoff) or is not literal."""
    if keyword(call, "eta") is not None:
        return None
    countdown = keyword(call, "countdown")
    if countdown is None:
        return -1.0  # default_retry_delay
    if "retries" in names_in(countdown):
        return None
    return proj.seconds(task.module, countdown)


@check(
    id="CD522",
    slug="retry-without-backoff",
    title="Retries at a fixed interval: a longer outage exhausts them and the task is lost as FAILURE",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="After a 10 to 15 minute outage of the broker, database or an API, tasks that failed during it "
                "end FAILURE with `MaxRetriesExceededError` (or the original error); while it lasts, retries arrive "
                "in synchronized waves.",
        why="Without backoff every retry waits the same delay (`default_retry_delay`, 180 s unless set), so the "
            "retries are spent within max_retries x delay (9 minutes by default: celery/app/task.py Task "
            "`max_retries = 3`, `default_retry_delay = 3 * 60`). An outage longer than that turns "
            "every task that failed in it into a final FAILURE; and tasks that failed together all retry at the same "
            "moment, hitting the recovering service at once.",
        confirm="Worker logs: `Retry in 180s` lines for many task ids at the same second, followed by "
                "`MaxRetriesExceededError`.",
        fix="Back off exponentially with jitter: `retry_backoff=True, retry_backoff_max=600, retry_jitter=True` for "
            "autoretry_for, or `self.retry(exc=exc, countdown=min(600, 2 ** self.request.retries * 10))`.",
        risk="Later retries wait longer, so a task can finish much later than before; keep `retry_backoff_max` below "
             "the Redis visibility_timeout / RabbitMQ consumer_timeout.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#Task.retry_backoff",),
    ),
)
def retry_without_backoff(snapshot: Snapshot):
    proj = project_of(snapshot)
    for task in proj.tasks:
        value, _ = max_retries(snapshot, proj, task)
        bounded = isinstance(value, int) and value > 0
        delays = retry_delay(snapshot, proj, task)
        finding = (_autoretry_fixed(proj, task, delays) if bounded else None) or _retry_call_fixed(proj, task, delays,
                                                                                                     value)
        if finding is None:
            continue
        text, delay, where, bound = finding
        bound = value if bound is None else bound
        yield retry_without_backoff.finding(
            subject=task_subject(snapshot, task),
            evidence=[text, f"max_retries={bound}: all retries are spent within {human_seconds(bound * delay)}; an "
                            "outage longer than that ends the task in FAILURE, and tasks that failed together "
                            "retry together"],
            confidence=Confidence.CONFIGURED, location=where)


def _autoretry_fixed(proj: Project, task: Task, delays: tuple[float, str]):
    """(text, delay, location, None) when autoretry_for retries at a fixed delay (no retry_backoff)."""
    if not autoretry_names(task) or option_truthy(proj, task, "retry_backoff"):
        return None
    delay, source = delays
    kwargs = task.option("retry_kwargs")
    if isinstance(kwargs, ast.Dict):
        for key, val in zip(kwargs.keys, kwargs.values):
            if isinstance(key, ast.Constant) and key.value == "countdown":
                seconds = proj.seconds(task.module, val)
                if seconds is None:
                    return None
                delay, source = seconds, "retry_kwargs countdown"
    return (f"autoretry_for=({', '.join(autoretry_names(task))}) without retry_backoff: every retry waits "
            f"{human_seconds(delay)} ({source})", delay, _option_location(task, "autoretry_for"), None)


def _retry_call_fixed(proj: Project, task: Task, delays: tuple[float, str], task_bound: object):
    """(text, delay, location, bound) for the first self.retry() at a fixed delay with a bound: its own
    max_retries=N (celery/app/task.py Task.retry prefers it) or the task's."""
    for call in retry_calls(task):
        own = proj.constant(task.module, keyword(call, "max_retries")) if keyword(call, "max_retries") is not None \
            else None
        bound = own if own is not None else task_bound
        countdown = _fixed_countdown(proj, task, call)
        if countdown is None or not isinstance(bound, int) or isinstance(bound, bool) or bound <= 0:
            continue
        delay, source = delays if countdown < 0 else (countdown, "countdown")
        return (f"`{code(task.module, call, 60)}` at line {call.lineno} retries after a fixed "
                f"{human_seconds(delay)} ({source})", delay, loc(task.module, call), bound)
    return None


CHECKS = [unbounded_retries, autoretry_for_exception, retry_without_backoff]
