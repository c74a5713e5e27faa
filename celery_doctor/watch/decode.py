"""From what the broker delivers to clean events: JSON only, bounded, argument and result values dropped.

An event message is a kombu message whose body is the event (a dict) or, for buffered task events
(`task.multi`, celery/events/dispatcher.py `flush`), a list of events. On Redis it reaches a subscriber as the
kombu envelope (JSON: `body`, `content-type`, `properties.body_encoding`, base64 by default); on RabbitMQ as an
AMQP message with its content type. Bodies in any other content type (pickle, yaml, msgpack: `event_serializer`)
are counted, never loaded.

`clean` keeps only the fields the ledger reads, of the expected types, strings shortened and masked: the
argument reprs (`args`, `kwargs`), `result` and `traceback` are dropped, so neither the ledger nor a recording
holds message bodies.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Optional

from ..masking import scrub

MAX_PAYLOAD = 4 << 20  # a bigger message is not decoded (a batch is at most ~24 events of ~2 KB)
MAX_BATCH = 1000  # events taken from one message
TEXT_MAX = 300
EXCEPTION_MAX = 500

_STR_FIELDS = ("hostname", "uuid", "name", "queue", "exchange", "routing_key", "eta", "expires", "sw_ver")
_INT_FIELDS = ("pid", "retries", "active", "processed", "signum")
_FLOAT_FIELDS = ("timestamp", "runtime", "freq")
_BOOL_FIELDS = ("requeue", "terminated", "expired")


class Undecoded(Exception):
    """A message whose body is not JSON (its content type is the message)."""


def _text(value: Any, limit: int = TEXT_MAX) -> Optional[str]:
    if isinstance(value, str):
        return value[:limit]
    return None


def clean(event: Any) -> Optional[dict]:
    """The fields of one event the ledger uses (None when it is not an event)."""
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 100:
        return None
    out: dict[str, Any] = {"type": kind}
    for key in _STR_FIELDS:
        value = _text(event.get(key))
        if value is not None:
            out[key] = value
    for key in _INT_FIELDS:
        value = event.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
    for key in _FLOAT_FIELDS:
        value = event.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[key] = float(value)
    for key in _BOOL_FIELDS:
        value = event.get(key)
        if isinstance(value, bool):
            out[key] = value
    exception = event.get("exception")
    if isinstance(exception, str) and exception:
        out["exception"] = scrub(exception[: EXCEPTION_MAX * 2])[:EXCEPTION_MAX]
    return out


def events_of(body: Any) -> tuple[list[dict], int]:
    """(clean events, how many items were not events) of one decoded body: a dict or a list of dicts."""
    items = body if isinstance(body, list) else [body]
    events, bad = [], 0
    for item in items[:MAX_BATCH]:
        cleaned = clean(item)
        if cleaned is None:
            bad += 1
        else:
            events.append(cleaned)
    bad += max(0, len(items) - MAX_BATCH)
    return events, bad


def _json(data: Any, encoding: Optional[str]) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode(encoding or "utf-8", errors="replace")
    try:
        return json.loads(data)
    except (ValueError, RecursionError, TypeError):
        return None


def _is_json(content_type: Any) -> bool:
    return isinstance(content_type, str) and content_type.split(";")[0].strip().lower() == "application/json"


def decode_amqp(body: Any, content_type: Any, content_encoding: Any = None) -> tuple[list[dict], int]:
    """(events, items that were not events) of one AMQP message; Undecoded for a body that is not JSON."""
    if not _is_json(content_type):
        raise Undecoded(str(content_type or "unknown")[:80])
    if isinstance(body, (bytes, bytearray)) and len(body) > MAX_PAYLOAD:
        return [], 1
    value = _json(body, content_encoding if isinstance(content_encoding, str) else None)
    if value is None:
        return [], 1
    return events_of(value)


def decode_redis(payload: Any) -> tuple[list[dict], int]:
    """(events, items that were not events) of one kombu envelope from a Redis fanout channel."""
    if isinstance(payload, (bytes, bytearray)) and len(payload) > MAX_PAYLOAD:
        return [], 1
    envelope = _json(payload, "utf-8")
    if not isinstance(envelope, dict):
        return [], 1
    if not _is_json(envelope.get("content-type")):
        raise Undecoded(str(envelope.get("content-type") or "unknown")[:80])
    properties = envelope.get("properties") if isinstance(envelope.get("properties"), dict) else {}
    body = envelope.get("body")
    if properties.get("body_encoding") == "base64":
        if not isinstance(body, str):
            return [], 1
        try:
            body = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return [], 1
    encoding = envelope.get("content-encoding")
    value = _json(body, encoding if isinstance(encoding, str) else None) if isinstance(body, (str, bytes)) else body
    if value is None:
        return [], 1
    return events_of(value)
