"""Celery's event stream on RabbitMQ: an exclusive, server-named, auto-delete queue bound to `celeryev` with `#`.

Celery publishes events to the topic exchange `celeryev` (`event_exchange`; celery/events/event.py) with routing
keys like `worker.heartbeat` and `task.multi`. Workers declare it when they publish; celery-doctor never declares
it: it checks that it exists with a passive declare (on a throwaway channel: a 404 closes the channel), and waits
for it when it does not exist yet. It then declares one queue with an empty name (the server names it
`amq.gen-...`), `exclusive` (only this connection can use it, and RabbitMQ deletes it, with its binding, when the
connection closes, even when celery-doctor is killed), `auto_delete`, with a length cap (x-max-length, oldest
dropped) and a message TTL so that a watch that falls behind cannot grow it without bound, and binds it with `#`.
Messages are consumed with automatic acknowledgement (as celery's EventReceiver does: no_ack=True).

Probes (GET only, on the management API): each silent worker's mailbox queue `<hostname>.<namespace>.pidbox`
(exclusive to its connection), and the queues of tasks sent and never received (messages, consumers).
"""
from __future__ import annotations

import queue as _queue
import threading
import time
from typing import Any, Optional
from urllib.parse import quote

from ..deadline import Deadline
from ..masking import scrub

QUEUE_ARGUMENTS = {"x-max-length": 100000, "x-message-ttl": 600000}
CONNECTION_NAME = "celery-doctor watch (events, read-only)"


class AmqpEvents:
    transport = "rabbitmq"

    def __init__(self, url: str, exchange: str = "celeryev", use_ssl: Any = None, management_url: Optional[str] = None,
                 namespace: str = "celery", connect_timeout: float = 5.0) -> None:
        from ..rabbitmq_api import broker_endpoint

        self.endpoint = broker_endpoint(url, use_ssl)
        self.exchange = exchange
        self.namespace = namespace
        self.management_url = management_url
        self.connect_timeout = connect_timeout
        self.queue_name: Optional[str] = None
        self.dropped = 0
        self.gaps: list[tuple[float, float, str]] = []
        self.error: Optional[str] = None
        self.exchange_missing_since: Optional[float] = None
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._api = None
        self._check_connect()

    @property
    def source(self) -> str:
        queue = self.queue_name or "(not declared yet)"
        return (f"rabbitmq: exclusive auto-delete queue {queue} bound to topic exchange {self.exchange!r} with '#' "
                f"on vhost {self.endpoint.vhost!r} (gone with the connection)")

    def _params(self):
        import pika

        params = dict(host=self.endpoint.host, port=self.endpoint.port, virtual_host=self.endpoint.vhost,
                      credentials=pika.PlainCredentials(self.endpoint.userid, self.endpoint.password),
                      connection_attempts=1, retry_delay=0, socket_timeout=self.connect_timeout,
                      stack_timeout=self.connect_timeout, blocked_connection_timeout=30, heartbeat=30,
                      client_properties={"connection_name": CONNECTION_NAME})
        if self.endpoint.tls:
            import ssl

            params["ssl_options"] = pika.SSLOptions(ssl.create_default_context(), self.endpoint.host)
        return pika.ConnectionParameters(**params)

    def _check_connect(self) -> None:
        """Fail at once (a usage error) when the broker cannot be reached or refuses the login."""
        import pika

        try:
            conn = pika.BlockingConnection(self._params())
        except Exception as exc:  # noqa: BLE001 - every failure is one masked line
            raise ConnectionError(scrub(f"cannot connect to RabbitMQ at {self.endpoint.display}: "
                                        f"{type(exc).__name__}: {' '.join(str(exc).split())}")) from None
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass

    def start(self, out: "_queue.Queue") -> None:
        self._thread = threading.Thread(target=self._run, args=(out,), name="celery-doctor-watch-amqp", daemon=True)
        self._thread.start()

    def _exchange_exists(self, conn) -> bool:
        import pika.exceptions as pex

        probe = conn.channel()
        try:
            probe.exchange_declare(exchange=self.exchange, passive=True)
            return True
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise
        finally:
            if probe.is_open:
                try:
                    probe.close()
                except Exception:  # noqa: BLE001
                    pass

    def _run(self, out: "_queue.Queue") -> None:
        import pika

        down_since: Optional[float] = None
        reason = ""
        while not self._stop.is_set():
            conn = None
            try:
                conn = pika.BlockingConnection(self._params())
                while not self._exchange_exists(conn):
                    if self.exchange_missing_since is None:
                        self.exchange_missing_since = time.time()
                    if self._stop.wait(2.0):
                        return
                    conn.process_data_events(time_limit=0)
                channel = conn.channel()
                declared = channel.queue_declare(queue="", exclusive=True, auto_delete=True, durable=False,
                                                 arguments=dict(QUEUE_ARGUMENTS))
                self.queue_name = declared.method.queue
                channel.queue_bind(queue=self.queue_name, exchange=self.exchange, routing_key="#")

                def on_message(ch, method, properties, body):
                    try:
                        out.put_nowait((time.time(), "amqp", (body, properties.content_type,
                                                              properties.content_encoding)))
                    except _queue.Full:
                        self.dropped += 1

                channel.basic_consume(queue=self.queue_name, on_message_callback=on_message, auto_ack=True)
                if down_since is not None:
                    self.gaps.append((down_since, time.time(), reason))
                    down_since = None
                self.subscribed.set()
                while not self._stop.is_set():
                    conn.process_data_events(time_limit=0.2)
            except Exception as exc:  # noqa: BLE001 - a lost connection is a gap in the record, then a retry
                reason = scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:200]
                self.error = reason
                if down_since is None:
                    down_since = time.time()
                self._stop.wait(1.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()  # the exclusive queue and its binding go with it
                    except Exception:  # noqa: BLE001
                        pass
        if down_since is not None:
            self.gaps.append((down_since, time.time(), reason))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- probes (management API, GET only) -------------------------------------------------------------
    def _client(self):
        from ..rabbitmq_api import ManagementClient

        if self._api is None:
            self._api = ManagementClient.for_broker(self.endpoint, Deadline(10 * 365 * 86400), self.management_url,
                                                    cap=2.0)
        return self._api

    def _queue(self, name: str) -> tuple[Optional[dict], Optional[str], bool]:
        """(queue document, error, answered)."""
        from ..rabbitmq_api import RabbitError

        try:
            client = self._client()
            doc = client.get(f"queues/{quote(self.endpoint.vhost, safe='')}/{quote(name, safe='')}", missing_ok=True)
        except RabbitError as exc:
            return None, exc.reason, False
        return (doc if isinstance(doc, dict) else None), None, True

    def mailbox(self, hostname: str) -> dict:
        name = f"{hostname}.{self.namespace}.pidbox"
        doc, error, answered = self._queue(name)
        if not answered:
            return {"hostname": hostname, "queue": name, "exists": None, "error": error}
        if doc is None:
            return {"hostname": hostname, "queue": name, "exists": False}
        consumers = doc.get("consumers")
        return {"hostname": hostname, "queue": name, "exists": True,
                "consumers": consumers if isinstance(consumers, int) else None}

    def queue_depth(self, name: str) -> tuple[Optional[int], Optional[int], Optional[str]]:
        """(ready messages, consumers, error) of one queue, from a passive declare (exact at once, unlike the
        management API's counters); (0, 0, None) when the queue does not exist."""
        from ..rabbitmq_api import AmqpProbe, RabbitError

        try:
            with AmqpProbe(self.endpoint, Deadline(5.0), cap=2.0) as probe:
                result = probe.queue_passive(name)
        except RabbitError as exc:
            return None, None, exc.reason
        if result.error:
            return None, None, result.error
        if not result.exists:
            return 0, 0, None
        return result.messages, result.consumers, None

    depth_how = "AMQP passive declare: ready messages"
