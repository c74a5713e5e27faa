# acme_celery_checks/checks.py
"""ACME's own celery-doctor checks."""
from celery_doctor.facts.routing import app_queues
from celery_doctor.model import Category, Runbook, check

PREFIX = "acme-"


@check(
    id="ACME001",  # your own prefix: CD is reserved for the built-in checks
    slug="acme-queue-naming",
    title="Queues must be prefixed with the team name",
    category=Category.ROUTING,  # broker | worker | routing | task_code
    needs=("config",),  # config, source, redis, rabbitmq, workers, logs, events
    runbook=Runbook(
        symptom="Another team's workers consume our queues, or ours consume theirs.",
        why="Workers started with -Q pick queues by name; unprefixed names collide across teams sharing a broker.",
        confirm="`celery -A proj inspect active_queues` on every worker of the broker.",
        fix=f"Rename the queue with the {PREFIX!r} prefix (task_default_queue, task_routes, task_queues).",
        risk="Drain the old queue before the rename: messages left in it are no longer consumed.",
    ),
)
def queue_naming(snapshot):
    for name in app_queues(snapshot.config):  # default, routed and declared queues alike
        if not name.startswith(PREFIX):
            yield queue_naming.finding(subject=f"queue:{name}", evidence=f"queue {name!r} has no {PREFIX} prefix")


CHECKS = [queue_naming]
