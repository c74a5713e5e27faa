"""Live worker checks: what the app sends where, against what the running workers consume, register, hold and are
configured with (the `workers` part: one round of control broadcasts shared by every check). One module per topic:

- workers_routing: queues without a live consumer, tasks the consumers do not register (CD401, CD402)
- workers_config: settings and versions that differ from the app's (CD403, CD404)
- workers_held: prefetch hoarding, tasks held past the visibility or consumer timeout (CD405-CD407)
- workers_presence: no worker at all, silent workers (CD409, CD410)
"""
from __future__ import annotations

from .workers_config import worker_config_drift, worker_version_skew
from .workers_held import held_past_consumer_timeout, held_past_visibility_timeout, prefetch_hoarding
from .workers_presence import no_worker, silent_worker
from .workers_routing import queue_without_live_worker, task_not_registered

CHECKS = [
    queue_without_live_worker,
    task_not_registered,
    worker_config_drift,
    worker_version_skew,
    prefetch_hoarding,
    held_past_visibility_timeout,
    held_past_consumer_timeout,
    no_worker,
    silent_worker,
]
