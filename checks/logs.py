"""Log checks: what worker, beat and kernel logs say happened to tasks (the `logs` part; `celery-doctor logs`
and `scan --logs`). One check per signature kind; one finding per place (a worker, a host, a beat entry).

Every message text a check relies on was read in the installed celery 5.7 / kombu 5.7 / billiard 4.3 source;
each runbook names the file. The log engine (celery_doctor.logs) keeps no message body and no argument: the
evidence holds task names and ids, worker and process names, counts and times. The checks live by topic in
logs_processes.py, logs_messages.py and logs_broker.py (helpers in logs_common.py); CHECKS is in id order.
"""
from __future__ import annotations

from .logs_broker import CHECKS as BROKER
from .logs_messages import CHECKS as MESSAGES
from .logs_processes import CHECKS as PROCESSES

CHECKS = sorted([*PROCESSES, *MESSAGES, *BROKER], key=lambda check: check.id)
