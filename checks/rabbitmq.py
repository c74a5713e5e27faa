"""Live RabbitMQ checks (CD301-CD349): read the rabbitmq snapshot part (management API, or passive declares).

Every check is a pure function of the snapshot. A check whose data the scan could not read (the management
API was down, or the user may not read /api/nodes) does not pretend to pass: it raises `SkipCheck`,
and CD319 lists it in any case. The checks live in one module per topic:

- rabbitmq_queues: backlogs nobody consumes, long-unacked deliveries, redeliveries (CD301, CD302, CD318)
- rabbitmq_routing: missing queues and exchanges, unroutable publishes, alternate exchanges (CD303-CD306)
- rabbitmq_limits: length limits, TTLs, delivery limits, consumer timeouts (CD307-CD310)
- rabbitmq_declare: quorum queues and delayed delivery, declaration drift, durability, mirroring (CD311-CD314)
- rabbitmq_server: alarms, partitions, nodes, the management API, vhost limits, --peek (CD315-CD317, CD319-CD321)
"""
from __future__ import annotations

from .rabbitmq_declare import classic_mirroring, non_durable, queue_argument_drift, quorum_eta
from .rabbitmq_limits import max_length_overflow, queue_consumer_timeout, quorum_delivery_limit, ttl_expiry
from .rabbitmq_queues import backlog_no_consumers, long_unacked, redeliveries
from .rabbitmq_routing import no_alternate_exchange, route_to_missing_queue, route_unroutable, unroutable_drops
from .rabbitmq_server import (
          api_unavailable,
          network_partition,
          node_down,
          peek_side_effects,
          resource_alarm,
          vhost_limit,
)

CHECKS = [backlog_no_consumers, long_unacked, route_to_missing_queue, route_unroutable, unroutable_drops,
          no_alternate_exchange, max_length_overflow, ttl_expiry, quorum_delivery_limit, queue_consumer_timeout,
          quorum_eta, queue_argument_drift, non_durable, classic_mirroring, resource_alarm, network_partition,
          node_down, redeliveries, api_unavailable, vhost_limit, peek_side_effects]
