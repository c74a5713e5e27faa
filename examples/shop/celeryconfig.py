"""Celery settings of the example shop (loaded with app.config_from_object)."""
import os

from kombu import Queue

broker_url = os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/15")
result_backend = os.environ.get("SHOP_RESULT_BACKEND", "redis://127.0.0.1:6379/15")

task_serializer = "json"
accept_content = ["json"]

# Payments must not be lost, so they are acknowledged late... but nothing requeues them when the
# pool child is killed (task_reject_on_worker_lost is not set).
task_acks_late = True
worker_prefetch_multiplier = 8

task_queues = [Queue("celery"), Queue("emails")]
task_routes = {
    "examples.shop.tasks.send_receipt": {"queue": "emails"},
    "examples.shop.tasks.build_sales_report": {"queue": "reports"},
    "examples.shop.tasks.sync_inventry": {"queue": "inventory"},
}

beat_schedule = {
    "sales-report-hourly": {
        "task": "examples.shop.tasks.build_sales_report",
        "schedule": 3600.0,
    },
    "abandoned-carts": {
        "task": "examples.shop.tasks.remind_abandoned_carts",
        "schedule": 900.0,
        "options": {"expires": 600},
    },
}
