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
    values = {key: _str(headers.get(key)) for key in _HEADER_STRINGS}
    protocol = 2
    if not values["task"]:
        # Protocol 1 kept task and id in the body; nothing in the headers identifies the task.
        protocol = 1
    content_type = _str(content_type)
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
        delivery_tag=_str(properties.get("delivery_tag")),
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


# ---------------------------------------------------------------------------------------------------
# Streaming summaries: many envelopes in, one bounded summary out (a million messages never in memory).
# ---------------------------------------------------------------------------------------------------
from collections import Counter  # noqa: E402
from itertools import compress, repeat  # noqa: E402
from operator import add, attrgetter, gt, lt, sub  # noqa: E402

try:  # the C helper behind Counter.update: counts an iterable into a plain dict without a Python loop
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Python implementations
    def _count_elements(mapping, iterable):  # type: ignore[no-redef]
        get = mapping.get
        for item in iterable:
            mapping[item] = get(item, 0) + 1

MAX_TASK_NAMES = 1000  # distinct task names remembered per queue; the rest count under OTHER_TASKS
OTHER_TASKS = "<other task names>"
DUPLICATE_TABLE = 400_000  # distinct (task, args) calls counted exactly per queue before singletons are dropped
TOP_DUPLICATES = 20
EXAMPLES = 5

# Anchors of the canonical layout kombu's JSON writes for Celery protocol 2 (key order is Celery's).
_START = b'{"body": "'
_TASK_ANCHOR = b'"content-type": "application/json", "headers": {"lang": "py", "task": "'
_ARGS_ANCHOR = b', "argsrepr": '
_ORIGIN_ANCHOR = b', "origin": '
_NO_ETA = b'"eta": null, "expires": null, '
_ID_ANCHOR = b'", "id": "'  # what follows the task name: the id is a JSON string


@dataclass(frozen=True)
class DuplicateGroup:
    task: str
    argsrepr: Optional[str]
    kwargsrepr: Optional[str]
    count: int  # messages of this call in what was analysed (a lower bound when `approximate`)


@dataclass(frozen=True)
class MessageSummary:
    """What the analysed messages of one queue say, in bounded space."""

    analysed: int = 0
    fast_path: int = 0  # of those, read through the canonical-layout fast path (structure checked, not fully parsed)
    malformed: int = 0
    malformed_reasons: tuple[tuple[str, int], ...] = ()
    unsafe: tuple[tuple[str, int], ...] = ()  # serializer -> messages (pickle, yaml)
    content_types: tuple[tuple[str, int], ...] = ()  # only the non-JSON ones
    task_counts: Mapping[str, int] = field(default_factory=dict)
    eta_count: int = 0
    eta_beyond_vt: int = 0  # ETA further than the visibility timeout from the scan time
    eta_max: Optional[float] = None
    eta_examples: tuple[tuple[str, str], ...] = ()  # (task, eta) of messages beyond the visibility timeout
    expires_count: int = 0
    expired: int = 0  # `expires` already in the past at scan time
    expired_examples: tuple[tuple[str, str], ...] = ()
    protocol1: int = 0
    duplicate_copies: int = 0  # messages beyond the first of each (task, args, kwargs) call
    duplicate_calls: int = 0  # distinct calls present more than once
    duplicates: tuple[DuplicateGroup, ...] = ()  # the largest groups
    duplicates_approximate: bool = False
    vt: Optional[float] = None  # the visibility timeout `eta_beyond_vt` was measured against
    now: Optional[float] = None

    def unknown_tasks(self, registered) -> dict[str, int]:
        return {name: count for name, count in self.task_counts.items()
                if name != OTHER_TASKS and name not in registered}


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")[:300]
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")[:300]


def _dup_text(task: bytes, args_slice: bytes) -> tuple[str, Optional[str], Optional[str]]:
    """(task, argsrepr, kwargsrepr) from a duplicate key; only called for the few groups reported."""
    args = kwargs = None
    try:
        parsed = json.loads(b'{"argsrepr": ' + args_slice + b"}")
        args, kwargs = _str(parsed.get("argsrepr")), _str(parsed.get("kwargsrepr"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        args = _decode_name(args_slice)
    return _decode_name(task), args, kwargs


def _readable_times(values: list) -> bool:
    """True when every fast-path `eta`/`expires` JSON value is null or a non-empty string a worker can parse."""
    present = [value for value in values if value != b"null"]
    if not present:
        return True
    if not (all(map(bytes.startswith, present, repeat(b'"'))) and all(map(bytes.endswith, present, repeat(b'"')))):
        return False
    inner = [value[1:-1] for value in present]
    if b"" in inner or b"\\" in b"".join(inner) or max(map(len, inner)) > 64:
        return False
    try:  # what Celery writes (isoformat) parses in one C-level pass
        list(map(_dt.datetime.fromisoformat, map(bytes.decode, inner)))
        return True
    except (ValueError, UnicodeDecodeError):
        pass
    return all(parse_iso(value.decode("utf-8", "replace")) is not None for value in inner)


def _raw_key(raw: bytes) -> Optional[tuple[bytes, bytes]]:
    """The fast path's duplicate key of one canonical message, or None when it is not canonical."""
    start = raw.find(_TASK_ANCHOR)
    if start < 0:
        return None
    start += len(_TASK_ANCHOR)
    end = raw.find(b'"', start)
    args = raw.find(_ARGS_ANCHOR, end)
    origin = raw.find(_ORIGIN_ANCHOR, args)
    if end < 0 or args < 0 or origin < 0 or b"\\" in raw[start:end]:
        return None
    return raw[start:end], raw[args + len(_ARGS_ANCHOR):origin]


class EnvelopeStats:
    """Summarise envelopes while streaming: bounded memory whatever the number of messages.

    `add_raw_chunk(items)` takes kombu Redis payloads (JSON strings). Chunks whose every message has the
    canonical layout Celery/kombu write go through a vectorised fast path (a few C-level splits and counts
    per chunk, no per-message JSON parse); any other chunk is decoded message by message with
    `decode_payload`. Both paths produce the same summary for the same messages.
    """

    def __init__(self, now: float, vt: Optional[float] = None) -> None:
        self.now = now
        self.vt = vt
        self.analysed = 0
        self.fast_path = 0
        self.malformed = 0
        self.malformed_reasons: Counter = Counter()
        self.unsafe: Counter = Counter()
        self.content_types: Counter = Counter()
        self._tasks: dict = {}  # bytes or str -> count
        self.eta_count = 0
        self.eta_beyond_vt = 0
        self.eta_max: Optional[float] = None
        self.eta_examples: list[tuple[str, str]] = []
        self.expires_count = 0
        self.expired = 0
        self.expired_examples: list[tuple[str, str]] = []
        self.protocol1 = 0
        self._dups: dict = {}  # hash(key) -> count
        self._dup_keys: dict = {}  # hash(key) -> key, only for calls seen more than once
        self.duplicates_approximate = False

    # -- the two paths -------------------------------------------------------------------------------
    def add_raw_chunk(self, items: list) -> None:
        if not items:
            return
        if not self._fast_chunk(items):
            for raw in items:
                self.add_raw(raw)

    def add_raw(self, raw: Any) -> None:
        envelope = decode_payload(raw)
        key = None
        if envelope.ok and isinstance(raw, (bytes, bytearray)):
            key = _raw_key(bytes(raw))
        self.add(envelope, key)

    def add(self, envelope: Envelope, key: Optional[tuple] = None) -> None:
        """One decoded envelope (any broker). `key` overrides the duplicate key (the fast path's form)."""
        self.analysed += 1
        if envelope.protocol == 1 and not envelope.task:
            self.protocol1 += 1
        unsafe = envelope.unsafe_serializer
        if unsafe:
            self.unsafe[unsafe] += 1
        content_type = (envelope.content_type or "").lower()
        if content_type and content_type != "application/json":
            if len(self.content_types) < 20 or content_type in self.content_types:
                self.content_types[content_type] += 1
        if not envelope.ok:
            self.malformed += 1
            reason = (envelope.error or "malformed")[:120]
            if len(self.malformed_reasons) < 20 or reason in self.malformed_reasons:
                self.malformed_reasons[reason] += 1
            return
        task = envelope.task or ""
        self._count_tasks([task])
        if envelope.eta:
            self._eta(task, envelope.eta, envelope.eta_epoch)
        if envelope.expires:
            self._expires(task, envelope.expires, envelope.expires_epoch)
        if key is None:
            key = ("\x00decoded", task, envelope.argsrepr, envelope.kwargsrepr)
        self._count_dups([key])

    def _fast_chunk(self, items: list) -> bool:
        """Account a chunk of canonical kombu/Celery JSON payloads without parsing each one; False if any is not.

        Every step is a C-level `map` over the chunk (a handful of `bytes.find` calls per message), so the cost
        per message stays near a microsecond. Checked per message: the envelope starts and ends like kombu's,
        the content type is JSON, the headers start `{"lang": "py", "task": "...` (Celery protocol 2), the
        task name has no escapes, and `argsrepr` and `origin` follow. Anything else takes the slow path.
        """
        find, get = bytes.find, bytes.__getitem__
        try:
            if not all(map(bytes.endswith, items, repeat(b"}}"))):
                return False
        except TypeError:  # not bytes
            return False
        anchors = list(map(find, items, repeat(_TASK_ANCHOR)))
        if -1 in anchors or not all(map(bytes.startswith, items, repeat(_START))):
            return False
        name_start = list(map(add, anchors, repeat(len(_TASK_ANCHOR))))
        name_end = list(map(find, items, repeat(b'"'), name_start))
        names = list(map(get, items, map(slice, name_start, name_end)))
        if b"\\" in b"".join(names):
            return False
        args_at = list(map(find, items, repeat(_ARGS_ANCHOR), name_end))
        origin_at = list(map(find, items, repeat(_ORIGIN_ANCHOR), args_at))
        if -1 in args_at or -1 in origin_at or -1 in name_end:
            return False
        if not all(map(bytes.startswith, items, repeat(_ID_ANCHOR), name_end)):
            return False  # the id is not a JSON string right after the task name: the slow path judges it
        args = list(map(get, items, map(slice, map(add, args_at, repeat(len(_ARGS_ANCHOR))), origin_at)))
        untimed = list(map(find, items, repeat(_NO_ETA), name_end, args_at))
        timed = None
        if -1 in untimed:
            # Messages with an eta or expires: find both values, still one C-level pass per step.
            picked = [i for i, position in enumerate(untimed) if position == -1]
            some = [items[i] for i in picked]
            stops = [args_at[i] for i in picked]
            eta_at = list(map(find, some, repeat(b', "eta": '), [name_end[i] for i in picked], stops))
            expires_at = list(map(find, some, repeat(b', "expires": '), eta_at, stops))
            group_at = list(map(find, some, repeat(b', "group": '), expires_at, stops))
            if -1 in eta_at or -1 in expires_at or -1 in group_at:
                return False
            timed = ([names[i] for i in picked],
                     list(map(get, some, map(slice, map(add, eta_at, repeat(9)), expires_at))),
                     list(map(get, some, map(slice, map(add, expires_at, repeat(13)), group_at))))
            if not (_readable_times(timed[1]) and _readable_times(timed[2])):
                return False  # an eta/expires a worker rejects (or an empty one): the slow path reports it
        # Every check passed: account the chunk.
        n = len(items)
        self.analysed += n
        self.fast_path += n
        self._count_tasks(names)
        if timed is not None:
            timed_names, etas, expires = timed
            self._times(timed_names, etas, self._eta_many)
            self._times(timed_names, expires, self._expires_many)
        self._count_dups(list(zip(names, args)))
        return True

    # -- accounting ----------------------------------------------------------------------------------
    def _count_tasks(self, names: list) -> None:
        _count_elements(self._tasks, names)
        if len(self._tasks) > 4 * MAX_TASK_NAMES:
            self._tasks = dict(Counter(self._normalised_tasks()).most_common())

    def _normalised_tasks(self) -> dict[str, int]:
        merged: Counter = Counter()
        for name, count in self._tasks.items():
            merged[_decode_name(name) if isinstance(name, bytes) else name] += count
        if len(merged) <= MAX_TASK_NAMES:
            return dict(merged)
        kept = dict(merged.most_common(MAX_TASK_NAMES))
        kept[OTHER_TASKS] = sum(merged.values()) - sum(kept.values())
        return kept

    def _times(self, names: list, values: list, account) -> None:
        """Account the non-null eta (or expires) JSON values of fast-path messages, in message order: parsed
        all at once when every one is a plain ISO-8601 string with a time zone (what Celery writes), else one
        by one exactly as `iso_to_epoch` does."""
        present = list(map(bytes.__ne__, values, repeat(b"null")))
        if not any(present):
            return
        names = list(compress(names, present))
        raws = [value.strip(b'"') for value in compress(values, present)]
        epochs = None
        if max(map(len, raws)) <= 64:
            try:
                texts = list(map(bytes.decode, raws))
                moments = list(map(_dt.datetime.fromisoformat, texts))
                if None not in map(attrgetter("tzinfo"), moments):
                    epochs = list(map(_dt.datetime.timestamp, moments))
            except (ValueError, TypeError, OverflowError, OSError, UnicodeDecodeError):
                epochs = None
        if epochs is None:
            texts = list(map(_decode_name, raws))
            epochs = list(map(iso_to_epoch, texts))
        account(names, texts, epochs)

    def _eta_many(self, names: list, texts: list, epochs: list) -> None:
        self.eta_count += len(texts)
        known = [e for e in epochs if e is not None] if None in epochs else epochs
        if not known:
            return
        top = max(known)
        if self.eta_max is None or top > self.eta_max:
            self.eta_max = top
        if self.vt is None:
            return
        beyond = [e is not None and e - self.now > self.vt for e in epochs] if known is not epochs else \
            list(map(gt, map(sub, epochs, repeat(self.now)), repeat(self.vt)))
        count = sum(beyond)
        self.eta_beyond_vt += count
        if count and len(self.eta_examples) < EXAMPLES:
            for name, text in compress(zip(names, texts), beyond):
                if len(self.eta_examples) >= EXAMPLES:
                    break
                self.eta_examples.append((_decode_name(name), text))

    def _expires_many(self, names: list, texts: list, epochs: list) -> None:
        self.expires_count += len(texts)
        if None in epochs:
            past = [e is not None and e < self.now for e in epochs]
        else:
            past = list(map(lt, epochs, repeat(self.now)))
        count = sum(past)
        self.expired += count
        if count and len(self.expired_examples) < EXAMPLES:
            for name, text in compress(zip(names, texts), past):
                if len(self.expired_examples) >= EXAMPLES:
                    break
                self.expired_examples.append((_decode_name(name), text))

    def _eta(self, task: str, text: str, epoch: Optional[float]) -> None:
        self.eta_count += 1
        if epoch is None:
            return
        if self.eta_max is None or epoch > self.eta_max:
            self.eta_max = epoch
        if self.vt is not None and epoch - self.now > self.vt:
            self.eta_beyond_vt += 1
            if len(self.eta_examples) < EXAMPLES:
                self.eta_examples.append((task, text))

    def _expires(self, task: str, text: str, epoch: Optional[float]) -> None:
        self.expires_count += 1
        if epoch is not None and epoch < self.now:
            self.expired += 1
            if len(self.expired_examples) < EXAMPLES:
                self.expired_examples.append((task, text))

    def _count_dups(self, keys: list) -> None:
        hashes = list(map(hash, keys))
        counts = self._dups
        size = len(counts)
        _count_elements(counts, hashes)
        if len(counts) - size != len(hashes):  # some call of this chunk was seen before
            known = self._dup_keys
            for i in [i for i, h in enumerate(hashes) if counts[h] > 1]:
                if hashes[i] not in known:
                    known[hashes[i]] = keys[i]
        if len(counts) > DUPLICATE_TABLE:
            # Forget calls seen only once so far: memory stays bounded; a call whose copies lie further apart
            # than the table can hold may then be undercounted (by one) or missed.
            self._dups = {h: c for h, c in counts.items() if c > 1}
            self.duplicates_approximate = True

    # -- result --------------------------------------------------------------------------------------
    def summary(self) -> MessageSummary:
        groups = []
        copies = calls = 0
        for digest, count in self._dups.items():
            if count > 1:
                copies += count - 1
                calls += 1
                groups.append((count, digest))
        groups.sort(key=lambda g: -g[0])
        top = []
        for count, digest in groups[:TOP_DUPLICATES]:
            key = self._dup_keys.get(digest)
            if key is None:
                continue
            if len(key) == 4:  # decoded form
                top.append(DuplicateGroup(key[1], key[2], key[3], count))
            else:
                task, args, kwargs = _dup_text(*key)
                top.append(DuplicateGroup(task, args, kwargs, count))
        return MessageSummary(
            analysed=self.analysed,
            fast_path=self.fast_path,
            malformed=self.malformed,
            malformed_reasons=tuple(self.malformed_reasons.most_common()),
            unsafe=tuple(sorted(self.unsafe.items())),
            content_types=tuple(self.content_types.most_common()),
            task_counts=dict(sorted(self._normalised_tasks().items())),
            eta_count=self.eta_count,
            eta_beyond_vt=self.eta_beyond_vt,
            eta_max=self.eta_max,
            eta_examples=tuple(self.eta_examples),
            expires_count=self.expires_count,
            expired=self.expired,
            expired_examples=tuple(self.expired_examples),
            protocol1=self.protocol1,
            duplicate_copies=copies,
            duplicate_calls=calls,
            duplicates=tuple(top),
            duplicates_approximate=self.duplicates_approximate,
            vt=self.vt,
            now=self.now,
        )
