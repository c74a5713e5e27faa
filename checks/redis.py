"""Live checks of a Redis broker (CD201-CD249): server settings that drop data, queues nobody consumes,
unacked messages nobody restores, and what the queued messages themselves say. One module per topic:

- redis_server: eviction, memory, persistence, failover URLs, cluster mode (CD201-CD205, CD217)
- redis_queues: wrong key types, backlogs, keys in other databases or prefixes, binding sets (CD206, CD215, CD216, CD218)
- redis_messages: ETAs, expiries, unregistered tasks, duplicates, malformed and unsafe messages (CD209-CD214)
- redis_unacked: unacked messages nobody restores (CD207, CD208)
"""
from __future__ import annotations

from .redis_messages import (
    redis_duplicate_messages,
    redis_expired_messages,
    redis_malformed_messages,
    redis_queued_eta_beyond_vt,
    redis_unregistered_messages,
    redis_unsafe_serializer_messages,
)
from .redis_queues import (
    redis_backlog_no_consumer,
    redis_binding_missing,
    redis_keys_elsewhere,
    redis_queue_key_wrong_type,
)
from .redis_server import (
    redis_cluster_mode,
    redis_evicted_keys,
    redis_eviction_policy,
    redis_failover_urls,
    redis_memory_near_limit,
    redis_no_persistence,
)
from .redis_unacked import redis_unacked_not_restored, redis_unacked_workers_gone

CHECKS = [
    redis_eviction_policy, redis_memory_near_limit, redis_evicted_keys, redis_no_persistence, redis_failover_urls,
    redis_backlog_no_consumer, redis_unacked_not_restored, redis_unacked_workers_gone, redis_queued_eta_beyond_vt,
    redis_expired_messages, redis_unregistered_messages, redis_duplicate_messages, redis_malformed_messages,
    redis_unsafe_serializer_messages, redis_keys_elsewhere, redis_binding_missing, redis_cluster_mode,
    redis_queue_key_wrong_type,
]
