"""Safe decoding of Celery message envelopes: JSON envelope and headers only, never the body's payload.

Bodies are never deserialized. A pickle, yaml or msgpack body is recognised by its content type and
reported; only the envelope (a JSON document the transport wrote) and the headers are parsed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

UNSAFE_CONTENT_TYPES = {
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
    "application/yaml": "yaml",
}
KNOWN_CONTENT_TYPES = {"application/json", "application/x-msgpack", "application/data", *UNSAFE_CONTENT_TYPES}
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024  # larger payloads are reported, not parsed
_HEADER_STRINGS = ("task", "id", "eta", "expires", "root_id", "parent_id", "origin", "group", "shadow", "lang",
                   "argsrepr", "kwargsrepr")


@dataclass(frozen=True)
class Envelope:
    ok: bool
    error: Optional[str] = None  # why it is malformed, when not ok
    task: Optional[str] = None
    id: Optional[str] = None
    eta: Optional[str] = None
    expires: Optional[str] = None
    retries: Optional[int] = None
    root_id: Optional[str] = None
    parent_id: Optional[str] = None
    origin: Optional[str] = None
    group: Optional[str] = None
    argsrepr: Optional[str] = None
    kwargsrepr: Optional[str] = None
    content_type: Optional[str] = None
    content_encoding: Optional[str] = None
    body_encoding: Optional[str] = None
    priority: Optional[int] = None
    exchange: Optional[str] = None
    routing_key: Optional[str] = None
    redelivered: bool = False
    beat: bool = False  # celery_beat_task header (Celery 5.7)
    size: int = 0
    protocol: int = 2
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unsafe_serializer(self) -> Optional[str]:
        return UNSAFE_CONTENT_TYPES.get((self.content_type or "").lower())

    @property
    def args_key(self) -> str:
        """What two messages must share to be duplicates of the same call (task + argument reprs)."""
        return f"{self.task}|{self.argsrepr}|{self.kwargsrepr}"


def _str(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:1000]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        try:
            return int(value)
        except ValueError:
            return None
    return None


def from_parts(headers: Any, properties: Any, content_type: Any = None, content_encoding: Any = None,
               size: int = 0) -> Envelope:
    """An envelope from already-separated AMQP headers and properties (RabbitMQ, or a Redis payload)."""
    if headers is None:
        headers = {}
    if properties is None:
        properties = {}
    if not isinstance(headers, Mapping):
        return Envelope(ok=False, error=f"headers are a {type(headers).__name__}, not an object", size=size)
    if not isinstance(properties, Mapping):
        properties = {}
    delivery_info = properties.get("delivery_info")
    delivery_info = delivery_info if isinstance(delivery_info, Mapping) else {}
    values = {key: _str(headers.get(key)) for key in _HEADER_STRINGS}
    protocol = 2
    if not values["task"]:
        # Protocol 1 kept task and id in the body; nothing in the headers identifies the task.
        protocol = 1
    content_type = _str(content_type)
    error = None
    if not values["task"] or not values["id"]:
        error = "no task name or id in the headers (protocol 1 message, or not a Celery task message)"
    return Envelope(
        ok=error is None,
        error=error,
        task=values["task"],
        id=values["id"],
        eta=values["eta"],
        expires=values["expires"],
        retries=_int(headers.get("retries")),
        root_id=values["root_id"],
        parent_id=values["parent_id"],
        origin=values["origin"],
        group=values["group"],
        argsrepr=values["argsrepr"],
        kwargsrepr=values["kwargsrepr"],
        content_type=content_type,
        content_encoding=_str(content_encoding),
        body_encoding=_str(properties.get("body_encoding")),
        priority=_int(properties.get("priority")),
        exchange=_str(delivery_info.get("exchange")),
        routing_key=_str(delivery_info.get("routing_key")),
        redelivered=bool(headers.get("redelivered") or delivery_info.get("redelivered")),
        beat=headers.get("celery_beat_task") is True,
        size=size,
        protocol=protocol,
        headers={k: v for k, v in headers.items() if isinstance(k, str) and k in _HEADER_STRINGS},
    )


def decode_payload(raw: Any) -> Envelope:
    """Decode one message as kombu's Redis transport stores it: a JSON envelope string."""
    if isinstance(raw, str):
        data = raw.encode("utf-8", errors="surrogatepass")
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
    else:
        return Envelope(ok=False, error=f"payload is a {type(raw).__name__}")
    size = len(data)
    if size > MAX_ENVELOPE_BYTES:
        return Envelope(ok=False, error=f"message of {size:,} bytes is larger than {MAX_ENVELOPE_BYTES:,}: not parsed", size=size)
    if data[:2] == b"\x80\x04" or data[:1] == b"\x80":
        return Envelope(ok=False, error="the envelope itself is a pickle: not loaded", size=size)
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        return Envelope(ok=False, error=f"not a JSON envelope: {str(exc)[:80]}", size=size)
    except RecursionError:
        return Envelope(ok=False, error="not a JSON envelope: nested too deeply", size=size)
    if not isinstance(document, Mapping):
        return Envelope(ok=False, error=f"envelope is a JSON {type(document).__name__}, not an object", size=size)
    if "headers" not in document and "properties" not in document:
        return Envelope(ok=False, error="JSON without headers or properties: not a kombu message", size=size)
    envelope = from_parts(document.get("headers"), document.get("properties"), document.get("content-type"),
                          document.get("content-encoding"), size)
    if envelope.ok and not isinstance(document.get("body"), str):
        return Envelope(**{**envelope.__dict__, "ok": False, "error": "body is missing or not a string"})
    return envelope
