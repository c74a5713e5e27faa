"""Safe decoding of Celery message envelopes: JSON envelope and headers only, never the body's payload.

Bodies are never deserialized. A pickle, yaml or msgpack body is recognised by its content type and
reported; only the envelope (a JSON document the transport wrote) and the headers are parsed.
"""
from __future__ import annotations

import binascii as _binascii
import datetime as _dt
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
    delivery_tag: Optional[str] = None
    eta_epoch: Optional[float] = None  # `eta` as epoch seconds (naive times read as UTC); None when absent/unparsable
    expires_epoch: Optional[float] = None

    @property
    def unsafe_serializer(self) -> Optional[str]:
        return UNSAFE_CONTENT_TYPES.get((self.content_type or "").lower())

    @property
    def args_key(self) -> str:
        """What two messages must share to be duplicates of the same call (task + argument reprs)."""
        return f"{self.task}|{self.argsrepr}|{self.kwargsrepr}"


def str_or_none(value: Any) -> Optional[str]:
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


def parse_iso(value: Any) -> Optional[_dt.datetime]:
    """An ISO-8601 time as a worker reads it (Celery's `maybe_iso8601`: dateutil's `isoparse`), or None."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        from dateutil.parser import isoparse  # a Celery dependency: what the worker itself calls
    except ImportError:  # pragma: no cover
        return None
    try:
        return isoparse(value.strip())
    except (ValueError, TypeError, OverflowError):
        return None


def time_header_error(value: Any) -> Optional[str]:
    """Why a worker rejects a message for this `eta`/`expires` header value, or None when it can read it.

    celery.worker.request.Request passes a non-None value to `maybe_iso8601` (falsy values mean "no time",
    datetimes pass, anything else goes to dateutil's `isoparse`); an error there raises InvalidTaskError and
    the consumer rejects the message without requeue: the task is lost.
    """
    if value is None or not value or isinstance(value, _dt.datetime):
        return None
    if not isinstance(value, str):
        return f"of type {type(value).__name__}, not an ISO 8601 string"
    if parse_iso(value) is None:
        return "not an ISO 8601 date"
    return None


def iso_to_epoch(value: Any) -> Optional[float]:
    """An ISO-8601 time (as Celery writes `eta`/`expires`) as epoch seconds; naive times are read as UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    moment = parse_iso(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
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
    values = {key: str_or_none(headers.get(key)) for key in _HEADER_STRINGS}
    protocol = 2
    if not values["task"]:
        # Protocol 1 kept task and id in the body; nothing in the headers identifies the task.
        protocol = 1
    content_type = str_or_none(content_type)
    error = None
    if not values["task"] or values["id"] is None:  # an empty id is odd, but a worker runs the task
        error = "no task name or id in the headers (protocol 1 message, or not a Celery task message)"
    for key in ("task", "id"):
        raw_value = headers.get(key)
        if raw_value is not None and not isinstance(raw_value, str):
            error = f"the {key} header is of type {type(raw_value).__name__}, not a string"
    if error is None:
        for key in ("eta", "expires"):
            problem = time_header_error(headers.get(key))
            if problem:
                error = f"the {key} header is {problem}: workers reject the message (InvalidTaskError)"
                break
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
        content_encoding=str_or_none(content_encoding),
        body_encoding=str_or_none(properties.get("body_encoding")),
        priority=_int(properties.get("priority")),
        exchange=str_or_none(delivery_info.get("exchange")),
        routing_key=str_or_none(delivery_info.get("routing_key")),
        redelivered=bool(headers.get("redelivered") or delivery_info.get("redelivered")),
        beat=headers.get("celery_beat_task") is True,
        size=size,
        protocol=protocol,
        headers={k: v for k, v in headers.items() if isinstance(k, str) and k in _HEADER_STRINGS},
        delivery_tag=str_or_none(properties.get("delivery_tag")),
        eta_epoch=iso_to_epoch(values["eta"]),
        expires_epoch=iso_to_epoch(values["expires"]),
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
    if envelope.ok:
        problem = body_encoding_error(document["body"], envelope.body_encoding)
        if problem:
            return Envelope(**{**envelope.__dict__, "ok": False, "error": problem})
    return envelope


def body_encoding_error(body: str, encoding: Optional[str]) -> Optional[str]:
    """Why kombu's virtual transport cannot even decode this body (`Channel.decode_body`), or None.

    The body is never deserialized; only its transport encoding is undone, exactly as kombu does (base64
    without validation). Kombu raises while building the message, after the message left the list: lost.
    """
    if not encoding or encoding.lower() == "utf-8":
        return None
    if encoding != "base64":
        return f"body_encoding {encoding[:40]!r} is unknown to kombu: workers cannot decode the message"
    try:
        _binascii.a2b_base64(body.encode("utf-8", "surrogatepass"))
    except (_binascii.Error, ValueError):
        return "body is not valid base64: kombu cannot decode the message"
    return None
