"""`--enable-events`: celery's `enable_events` control command at the start, `disable_events` at the end.

Only with the explicit flag: it changes the workers. The message is the one `celery control enable_events`
sends (kombu/pidbox.py `Mailbox._publish`: method, arguments, destination, pattern, matcher; headers clock and
expires), published to the control exchange `<namespace>.pidbox` (fanout), without a reply:

- Redis: the fanout exchange is declared in kombu's channel memory only, so the publish is a PUBLISH on the
  mailbox channel and writes no key (a direct publish would LPUSH to lists nobody reads);
- RabbitMQ: the exchange is checked with a passive declare (it exists while a worker runs) and never declared.

What the workers do with it (celery/worker/control.py): `enable_events` adds the `task` group to a worker
whose dispatcher sends worker events only; `disable_events` removes it. A worker started with `-E` (or
`worker_send_task_events = True`) has no group filter: both commands leave it as it is. A worker whose task
events another tool turned on remotely (Flower does so periodically) is turned off by the undo.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from ..masking import scrub


def broadcast(app: Any, url: str, transport: str, command: str, namespace: str = "celery",
              destination: Optional[Sequence[str]] = None, timeout: float = 3.0) -> Optional[str]:
    """Send one control command to the workers; None when sent, else why not (one masked line)."""
    from kombu import Producer

    exchange = f"{namespace}.pidbox"
    options = {"max_retries": 0}
    if transport == "redis":
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    else:
        options.update(read_timeout=timeout, write_timeout=timeout)
    conn = app.connection_for_write(url=url, connect_timeout=timeout, transport_options=options)
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        chan = conn.channel()
        if transport == "redis":
            chan.exchange_declare(exchange=exchange, type="fanout", durable=False, auto_delete=True)  # memory only
        else:
            try:
                chan.exchange_declare(exchange=exchange, type="fanout", passive=True)
            except conn.channel_errors as exc:
                if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
                    return f"no control exchange {exchange!r} on the broker: no worker is running"
                raise
        Producer(chan, auto_declare=False).publish(
            {"method": command, "arguments": {}, "destination": list(destination) if destination else None,
             "pattern": None, "matcher": None},
            exchange=exchange, routing_key="", serializer="json", retry=False, declare=[],
            headers={"clock": 0, "expires": time.time() + 30})
        return None
    except Exception as exc:  # noqa: BLE001 - a failed broadcast is a reason in the report
        return scrub(f"{command} failed: {type(exc).__name__}: {' '.join(str(exc).split())}")[:300]
    finally:
        try:
            conn.release()
        except Exception:  # noqa: BLE001
            pass
