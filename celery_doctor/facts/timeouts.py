"""How long a broker lets a delivery stay unacknowledged: Redis' visibility timeout, RabbitMQ's consumer_timeout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..settings import RABBITMQ_DEFAULT_CONSUMER_TIMEOUT, REDIS_DEFAULT_VISIBILITY_TIMEOUT, as_seconds, human_seconds

if TYPE_CHECKING:
    from ..options import SnapshotOptions
    from ..parts.config import AppConfig
    from ..parts.workers import WorkerInfo


def transport_visibility_timeout(transport_options: Optional[Mapping[str, Any]]) -> tuple[float, bool]:
    """The visibility timeout kombu's Redis channel runs with under these `broker_transport_options`, in seconds, and
    whether they set it (else kombu's default, 3600 s).

    kombu's Redis channel copies `visibility_timeout` from the transport options (Channel.from_transport_options)
    and otherwise keeps its class default."""
    value = as_seconds((transport_options or {}).get("visibility_timeout"))
    if value is None:
        return float(REDIS_DEFAULT_VISIBILITY_TIMEOUT), False
    return value, True


def redis_visibility_timeout(config: Optional["AppConfig"]) -> tuple[float, bool]:
    """Redis' visibility timeout in seconds, and whether the app set it (else kombu's default, 3600 s; also when
    there is no app configuration)."""
    return transport_visibility_timeout(config.transport_options if config is not None else None)


def worker_visibility_timeout(worker: "WorkerInfo") -> Optional[tuple[float, bool]]:
    """The visibility timeout a running worker uses, from what it reported (`inspect stats` transport options, else
    `inspect conf` broker_transport_options), and whether it set one (else kombu's default). None when it reported
    neither its broker transport nor a visibility timeout: then only the app's is known."""
    value = worker.visibility_timeout
    if value is not None:
        return value, True
    if worker.broker_transport is not None:
        return transport_visibility_timeout(None)
    return None


def describe_visibility_timeout(config: "AppConfig") -> str:
    value, explicit = redis_visibility_timeout(config)
    if not explicit:
        return f"visibility_timeout={value:g} s (kombu default)"
    return f"visibility_timeout={value:g} s ({human_seconds(value)}, set in broker_transport_options)"


@dataclass(frozen=True)
class ConsumerTimeout:
    """RabbitMQ's server consumer_timeout as far as celery-doctor knows it: given with --consumer-timeout, or the
    server default (the management API does not expose it)."""

    seconds: float
    given: bool

    def describe(self) -> str:
        if self.given:
            return f"consumer_timeout={human_seconds(self.seconds)} (given with --consumer-timeout)"
        return f"consumer_timeout assumed {human_seconds(self.seconds)} (RabbitMQ default; pass --consumer-timeout)"


def rabbitmq_consumer_timeout(options: Optional[SnapshotOptions]) -> ConsumerTimeout:
    """From the run's options (`--consumer-timeout SECONDS`); RabbitMQ's default (30 min since 3.8.17) otherwise.
    A value of 0 counts as not given."""
    given = as_seconds(options.consumer_timeout if options is not None else None)
    if given:
        return ConsumerTimeout(given, True)
    return ConsumerTimeout(float(RABBITMQ_DEFAULT_CONSUMER_TIMEOUT), False)
