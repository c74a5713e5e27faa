"""Helpers shared by the live RabbitMQ checks (checks/rabbitmq_*.py): the data a check needs, the app's
routes and literal delays, wording."""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional

from celery_doctor.facts.routing import task_queue
from celery_doctor.facts.timeouts import rabbitmq_consumer_timeout
from celery_doctor.model import Location, SkipCheck, Snapshot
from celery_doctor.parts.rabbitmq import RabbitState
from celery_doctor.pyast import Delay, literal_delays
from celery_doctor.settings import as_seconds, human_seconds

from ._util import preview

MGMT = "curl -s -u USER:PASS http://HOST:15672/api"
REF_CELERY_AMQP = "https://docs.celeryq.dev/en/stable/userguide/routing.html"


def require(state: RabbitState, *data: str) -> bool:
    """True when the data is there; otherwise the check is skipped with the reason."""
    if state.has(*data):
        return True
    raise SkipCheck(state.why_missing(*data))


def routed_tasks(snapshot: Snapshot) -> dict[str, list[str]]:
    config = snapshot.config
    if config is None:
        return {}
    try:
        return config.routed_queues()
    except Exception:  # noqa: BLE001
        return {}


def tasks_text(tasks: Iterable[str]) -> str:
    tasks = list(tasks)
    return f"tasks routed here: {preview(tasks)}" if tasks else "no task of the app is routed here"


def ms_text(value: Any) -> str:
    seconds = as_seconds(value)
    if seconds is None:
        return repr(value)
    return f"{value} ms ({human_seconds(seconds / 1000)})"


def count_text(value: Optional[int]) -> str:
    return "unknown" if value is None else f"{value:,}"


def anchor(snapshot: Snapshot, setting: str = "task_queues") -> Optional[Location]:
    config = snapshot.config
    return config.located(setting) if config is not None else None


def confirms_on(snapshot: Snapshot) -> bool:
    config = snapshot.config
    return bool(config and config.transport_options.get("confirm_publish"))


def version_text(state: RabbitState) -> str:
    return f"RabbitMQ {state.version}" if state.version else "RabbitMQ (version unknown)"


def sample_text(state: RabbitState, queue: str) -> Optional[str]:
    sample = state.peek.get(queue)
    if not sample or not sample.read:
        return None
    tasks = ", ".join(f"{name} ({count})" for name, count in list(sample.task_counts.items())[:6]) or "no Celery task headers"
    return f"--peek sample of {sample.read}: {tasks}"


def _delay_task(delay: Delay, config: Any, by_short: Mapping[str, str]) -> Optional[str]:
    """Which registered task a literal delay is for, when the code says so."""
    if delay.kind in ("retry countdown", "default_retry_delay"):
        best = None
        for task in config.tasks.values():
            loc = task.location
            if (loc and loc.path == delay.location.path and (loc.line or 0) <= (delay.location.line or 0)
                    and (best is None or (loc.line or 0) > (best.location.line or 0))):
                best = task
        return best.name if best else None
    match = re.search(r"send_task\(\s*['\"]([^'\"]+)['\"]", delay.code)
    if match:
        return match.group(1)
    match = re.match(r"^([\w.]+?)\.(apply_async|apply_async_on_commit|s|si|signature|set|retry)\(", delay.code)
    if match:
        return by_short.get(match.group(1).split(".")[-1])
    return None


def delays_by_queue(snapshot: Snapshot) -> dict[str, list[tuple[Delay, str]]]:
    """queue -> [(delay, task)] for the literal countdowns/ETAs whose task (and so queue) is known."""
    config = snapshot.config
    if config is None or snapshot.source is None:
        return {}
    shorts: dict[str, list[str]] = {}
    for name in config.tasks:
        shorts.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    by_short = {short: names[0] for short, names in shorts.items() if len(names) == 1}
    out: dict[str, list[tuple[Delay, str]]] = {}
    for delay in literal_delays(snapshot.source):
        task = _delay_task(delay, config, by_short)
        queue = task_queue(config, task) if task else None
        if queue:
            out.setdefault(queue, []).append((delay, task))
    return out


def server_consumer_timeout(snapshot: Snapshot) -> tuple[float, str]:
    """RabbitMQ's server consumer_timeout (facts.timeouts) in seconds, and how it is known."""
    known = rabbitmq_consumer_timeout(snapshot.options)
    if known.given:
        return known.seconds, f"server consumer_timeout={human_seconds(known.seconds)} (given with --consumer-timeout)"
    return known.seconds, (f"server consumer_timeout assumed {human_seconds(known.seconds)} (RabbitMQ's default; the "
                           "API does not show it, pass --consumer-timeout SECONDS)")
