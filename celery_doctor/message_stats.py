"""Streaming summaries of queued messages: many envelopes in, one bounded `MessageSummary` out (a million messages
never in memory). The envelope of each message is read as celery_doctor/envelope.py reads it; messages in the
canonical layout kombu writes take a fast path that checks their structure without a full JSON parse.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from itertools import compress, repeat
from operator import add, attrgetter, gt, lt, sub
from typing import Any, Optional

from .envelope import Envelope, decode_payload, iso_to_epoch, parse_iso, str_or_none
from .parts.messages import OTHER_TASKS, DuplicateGroup, MessageSummary

try:  # the C helper behind Counter.update: counts an iterable into a plain dict without a Python loop
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Python implementations
    def _count_elements(mapping, iterable):  # type: ignore[no-redef]
        get = mapping.get
        for item in iterable:
            mapping[item] = get(item, 0) + 1

MAX_TASK_NAMES = 1000  # distinct task names remembered per queue; the rest count under OTHER_TASKS
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
        args, kwargs = str_or_none(parsed.get("argsrepr")), str_or_none(parsed.get("kwargsrepr"))
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



def _timed_fields(items: list, names: list, name_end: list, args_at: list):
    """(names, etas, expires) of the messages of a chunk that carry an eta or expires (None when none does), or
    False when one of them is not in the canonical layout or carries a time a worker rejects (the slow path then
    reports it). One C-level pass per step, like the rest of the fast path."""
    find, get = bytes.find, bytes.__getitem__
    untimed = list(map(find, items, repeat(_NO_ETA), name_end, args_at))
    if -1 not in untimed:
        return None
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
        return False
    return timed


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
        if content_type and content_type != "application/json" and (
                len(self.content_types) < 20 or content_type in self.content_types):
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
        # The name ends where `", "id": "` follows it: no quote may come before (the id is then a JSON string right
        # after the task name, else the slow path judges it), nor an escape in it.
        name_end = list(map(find, items, repeat(_ID_ANCHOR), name_start))
        if -1 in name_end:
            return False
        names = list(map(get, items, map(slice, name_start, name_end)))
        joined = b"".join(names)
        if b"\\" in joined or b'"' in joined:
            return False
        args_at = list(map(find, items, repeat(_ARGS_ANCHOR), name_end))
        origin_at = list(map(find, items, repeat(_ORIGIN_ANCHOR), args_at))
        if -1 in args_at or -1 in origin_at:
            return False
        args = list(map(get, items, map(slice, map(add, args_at, repeat(len(_ARGS_ANCHOR))), origin_at)))
        timed = _timed_fields(items, names, name_end, args_at)
        if timed is False:
            return False
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

    # -- merging (the helper process's share, see SplitStats) -----------------------------------------------
    _SUMS = ("analysed", "fast_path", "malformed", "eta_count", "eta_beyond_vt", "expires_count", "expired",
             "protocol1")

    def state(self) -> dict:
        """What `merge` needs of this summariser (picklable: counts, small tables, the duplicate table)."""
        return {name: value for name, value in self.__dict__.items() if name not in ("now", "vt")}

    def merge(self, other: dict) -> None:
        """Add another summariser's `state()` (the same `now` and `vt`, and the same process's `hash`: a forked
        child) to this one: counts add up, the duplicate tables join (and are bounded as while streaming). A call
        seen once on each side counts as duplicated, but neither side kept its text (only repeated calls' are
        kept): it can be missing from the listed `duplicates` examples, never from the counts."""
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + other[name])
        for reason, count in other["malformed_reasons"].items():
            if len(self.malformed_reasons) < 20 or reason in self.malformed_reasons:
                self.malformed_reasons[reason] += count
        self.unsafe.update(other["unsafe"])
        for content_type, count in other["content_types"].items():
            if len(self.content_types) < 20 or content_type in self.content_types:
                self.content_types[content_type] += count
        for name, count in other["_tasks"].items():
            self._tasks[name] = self._tasks.get(name, 0) + count
        self._count_tasks([])
        if other["eta_max"] is not None and (self.eta_max is None or other["eta_max"] > self.eta_max):
            self.eta_max = other["eta_max"]
        self.eta_examples = (self.eta_examples + other["eta_examples"])[:EXAMPLES]
        self.expired_examples = (self.expired_examples + other["expired_examples"])[:EXAMPLES]
        counts = self._dups
        for digest, count in other["_dups"].items():
            counts[digest] = counts.get(digest, 0) + count
        for digest, key in other["_dup_keys"].items():
            self._dup_keys.setdefault(digest, key)
        self.duplicates_approximate = self.duplicates_approximate or other["duplicates_approximate"]
        if len(counts) > DUPLICATE_TABLE:
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


# -- two cores: a forked helper summarises every other chunk ------------------------------------------------
HELPER_MIN_MESSAGES = 20_000  # below this a helper process costs more than it saves


def helper_available() -> bool:
    """A forked helper is used on Linux (fork keeps `hash`, so duplicate tables merge) when a CPU is idle: more
    than one, and a load average that leaves one free. On a saturated machine a second process only competes
    with the first (measured: 2.19x the floor with it, 1.86x without, at a load of 8 on 2 CPUs)."""
    import multiprocessing
    import os
    import sys

    cpus = os.cpu_count() or 1
    if not sys.platform.startswith("linux") or cpus < 2:
        return False
    try:
        if os.getloadavg()[0] > cpus - 1:
            return False
    except OSError:
        return False
    return "fork" in multiprocessing.get_all_start_methods()


def _helper_main(conn: Any, now: float, vt: Optional[float]) -> None:
    """The helper: chunks in (lengths, then the joined bytes) until an empty one, then its state out."""
    from array import array
    from itertools import accumulate

    stats = EnvelopeStats(now, vt)
    while True:
        lengths = array("Q")
        lengths.frombytes(conn.recv_bytes())
        if not lengths:
            break
        blob = conn.recv_bytes()
        ends = list(accumulate(lengths))
        stats.add_raw_chunk(list(map(blob.__getitem__, map(slice, [0, *ends[:-1]], ends))))
    conn.send(stats.state())
    conn.close()


class SplitStats:
    """Feeds an `EnvelopeStats` on two cores: every other chunk is summarised by a forked helper process (the
    parent reads, summarises its half and sends the other), and `finish` merges the helper's counts.

    The helper only summarises bytes it is sent: it opens no connection and reads nothing itself. Should it
    fail or not answer in time, its share is simply not counted (`lost` says how many messages): the summary's
    `analysed` then falls short of the queue's length and the read is reported incomplete, as any cut read."""

    def __init__(self, stats: EnvelopeStats, seconds: float) -> None:
        """`seconds`: the helper is killed after this long whatever it is doing (a write to a helper that stopped
        reading would otherwise block): the scan's deadline holds."""
        import multiprocessing
        import threading

        from dateutil import parser as _preload  # noqa: F401 - imported before the fork, never inside the child

        self.stats = stats
        self.sent = 0  # messages handed to the helper
        self.lost = 0
        self.error: Optional[str] = None
        self._turn = False
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe(duplex=True)
        self._process = context.Process(target=_helper_main, args=(child, stats.now, stats.vt),
                                        name="celery-doctor-summary", daemon=True)
        self._process.start()
        child.close()
        self._watchdog = threading.Timer(max(0.1, seconds), self._process.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def add_raw_chunk(self, items: list) -> None:
        self._turn = not self._turn
        if not self._turn or self._conn is None or not items:
            self.stats.add_raw_chunk(items)
            return
        from array import array

        try:
            self._conn.send_bytes(array("Q", map(len, items)).tobytes())
            self._conn.send_bytes(b"".join(items))
            self.sent += len(items)
        except (OSError, ValueError) as exc:
            self._fail(f"the helper process stopped ({type(exc).__name__})")
            self.stats.add_raw_chunk(items)

    def _fail(self, reason: str) -> None:
        self.error = self.error or reason
        self.lost = self.sent
        self.close()

    def finish(self, seconds: float) -> EnvelopeStats:
        """Merge the helper's share (waiting at most `seconds` for it) and stop it."""
        conn = self._conn
        if conn is None:
            return self.stats
        try:
            conn.send_bytes(b"")
            if not conn.poll(max(0.05, seconds)):
                self._fail(f"the helper process did not hand in its share within {max(0.05, seconds):.1f} s")
                return self.stats
            state = conn.recv()
        except (OSError, EOFError, ValueError) as exc:
            self._fail(f"the helper process stopped ({type(exc).__name__})")
            return self.stats
        self.stats.merge(state)
        self.close()
        return self.stats

    def close(self) -> None:
        self._watchdog.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        process = self._process
        process.join(0.5)
        if process.is_alive():
            process.kill()  # our own child, by its handle
            process.join(0.5)
