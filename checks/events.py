"""Event-stream checks: what `celery-doctor watch` saw happen to tasks and workers, live or replayed.

They read the `events` part (celery_doctor.parts.events: a ledger of task and worker events, each worker's
liveness verdict from broker evidence, queue depths read at the end) and, when the app was loaded, its
configuration (acks and time limits), to say what became of each task id and why. The checks live by
topic in events_tasks.py (what became of tasks) and events_workers.py (workers lost, silent or without
task events), helpers in events_common.py; CHECKS is in id order.
"""
from __future__ import annotations

from .events_tasks import CHECKS as TASKS
from .events_workers import CHECKS as WORKERS

CHECKS = sorted([*TASKS, *WORKERS], key=lambda check: check.id)
