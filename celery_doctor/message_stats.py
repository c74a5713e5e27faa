"""Streaming summaries of queued messages: many envelopes in, one bounded `MessageSummary` out (a million messages
never in memory). The envelope of each message is read as celery_doctor/envelope.py reads it; messages in the
canonical layout kombu writes take a fast path that checks their structure without a full JSON parse.
"""
from __future__ import annotations

import datetime as _dt
import json
import pickle
import struct
from collections import Counter
from itertools import accumulate, compress, repeat
from operator import add, attrgetter, eq, gt, lt, ne, sub
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
_PRINTABLE = bytes(range(0x20, 0x7F))  # printable ASCII: JSON string characters read alike as bytes and as text


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")[:300]
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")[:300]


def _dup_text(task: bytes, args_slice: bytes) -> tuple[str, Optional[str], Optional[str]]:
    """(task, argsrepr, kwargsrepr) from a duplicate key (its second part starts with `_ARGS_ANCHOR`); only called
    for the few groups reported."""
    args = kwargs = None
    try:
        parsed = json.loads(b"{" + args_slice[2:] + b"}")
        args, kwargs = str_or_none(parsed.get("argsrepr")), str_or_none(parsed.get("kwargsrepr"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        args = _decode_name(args_slice[len(_ARGS_ANCHOR):])
    return _decode_name(task), args, kwargs


def _time_values(values: list):
    """The fast path's `eta` (or `expires`) JSON values of some messages, read as `envelope.from_parts` reads them:
    None when every one is null; False when one is not a quoted string of 1 to 64 printable ASCII characters
    without escapes, or not a time a worker can parse (the slow path then judges the chunk); else (which are
    not null, their texts, their epochs). Each value is parsed once, in C-level passes when Celery wrote it."""
    present = list(map(ne, values, repeat(b"null")))
    if not any(present):
        return None
    raws = list(compress(values, present))
    joined = b"".join(raws)
    if (joined.translate(None, _PRINTABLE) or b"\\" in joined or joined.count(b'"') != 2 * len(raws)
            or min(map(len, raws)) < 3 or max(map(len, raws)) > 66
            or not all(map(bytes.startswith, raws, repeat(b'"'))) or not all(map(bytes.endswith, raws, repeat(b'"')))):
        return False
    texts = list(map(bytes.decode, map(bytes.__getitem__, raws, repeat(slice(1, -1)))))
    try:  # what Celery writes (isoformat, with a time zone) parses in one C-level pass
        moments = list(map(_dt.datetime.fromisoformat, texts))
    except ValueError:
        if None in map(parse_iso, texts):
            return False
        return present, texts, list(map(iso_to_epoch, texts))
    if None in map(attrgetter("tzinfo"), moments):
        return present, texts, list(map(iso_to_epoch, texts))
    try:
        return present, texts, list(map(_dt.datetime.timestamp, moments))
    except (OverflowError, OSError, ValueError):
        return present, texts, list(map(iso_to_epoch, texts))


def _plain_name(name: bytes) -> bool:
    """True when a fast-path task name (the raw bytes between its quotes) reads as `json.loads` reads it and is
    counted under the same text: not empty, no escape, quote or control character, valid UTF-8, at most 300
    characters (`_decode_name` keeps 300, `str_or_none` 1,000)."""
    if not name or b'"' in name or b"\\" in name or len(name) > 1200:
        return False
    if not name.translate(None, _PRINTABLE):  # printable ASCII (what kombu's json.dumps writes)
        return len(name) <= 300
    if min(name) < 0x20:  # a control character: invalid JSON
        return False
    try:
        return len(name.decode("utf-8")) <= 300
    except UnicodeDecodeError:
        return False


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
    return raw[start:end], raw[args:origin]



def _timed_fields(items: list, names: list, name_end: list, args_at: list):
    """(names, etas, expires) of the messages of a chunk that carry an eta or expires (None when none does; etas
    and expires as `_time_values` reads them), or
    False when one of them is not in the canonical layout or carries a time a worker rejects (the slow path then
    reports it). One C-level pass per step, like the rest of the fast path."""
    find, get = bytes.find, bytes.__getitem__
    untimed = list(map(find, items, repeat(_NO_ETA), name_end, args_at))
    if -1 not in untimed:
        return None
    picked = list(map(eq, untimed, repeat(-1)))
    some = list(compress(items, picked))
    stops = list(compress(args_at, picked))
    eta_at = list(map(find, some, repeat(b', "eta": '), compress(name_end, picked), stops))
    expires_at = list(map(find, some, repeat(b', "expires": '), eta_at, stops))
    group_at = list(map(find, some, repeat(b', "group": '), expires_at, stops))
    if -1 in eta_at or -1 in expires_at or -1 in group_at:
        return False
    etas = _time_values(list(map(get, some, map(slice, map(add, eta_at, repeat(9)), expires_at))))
    expires = _time_values(list(map(get, some, map(slice, map(add, expires_at, repeat(13)), group_at))))
    if etas is False or expires is False:
        return False
    return list(compress(names, picked)), etas, expires


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
        the content type is JSON, the headers start `{"lang": "py", "task": "...` (Celery protocol 2), and
        `argsrepr` and `origin` follow; checked per distinct task name of the chunk (a few, not one per
        message): it is what `json.loads` would read (`_plain_name`). Anything else takes the slow path.
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
        tasks: dict = {}
        _count_elements(tasks, names)
        if not all(map(_plain_name, tasks)):
            return False
        args_at = list(map(find, items, repeat(_ARGS_ANCHOR), name_end))
        origin_at = list(map(find, items, repeat(_ORIGIN_ANCHOR), args_at))
        if -1 in args_at or -1 in origin_at:
            return False
        timed = _timed_fields(items, names, name_end, args_at)
        if timed is False:
            return False
        # Every check passed: account the chunk.
        n = len(items)
        self.analysed += n
        self.fast_path += n
        self._merge_tasks(tasks)
        if timed is not None:
            timed_names, etas, expires = timed
            self._times(timed_names, etas, self._eta_many)
            self._times(timed_names, expires, self._expires_many)
        self._count_dups(list(zip(names, map(get, items, map(slice, args_at, origin_at)))))
        return True

    # -- accounting ----------------------------------------------------------------------------------
    def _count_tasks(self, names: list) -> None:
        _count_elements(self._tasks, names)
        self._bound_tasks()

    def _merge_tasks(self, counts: dict) -> None:
        """Add a chunk's task counts (name -> count: a few names, however many messages)."""
        tasks, get = self._tasks, self._tasks.get
        for name, count in counts.items():
            tasks[name] = get(name, 0) + count
        self._bound_tasks()

    def _bound_tasks(self) -> None:
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

    def _times(self, names: list, values: Any, account) -> None:
        """Account the non-null eta (or expires) values of fast-path messages (`_time_values`), in message order."""
        if values is not None:
            present, texts, epochs = values
            account(list(compress(names, present)), texts, epochs)

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
        """What `merge` needs of this summariser (picklable: counts, small tables, and the duplicate table as two
        arrays of 64-bit integers, hashes and counts: 16 bytes a call where the dict takes about 100)."""
        from array import array

        state = {name: value for name, value in self.__dict__.items() if name not in ("now", "vt", "_dups")}
        state["_dups"] = (array("q", self._dups.keys()).tobytes(), array("q", self._dups.values()).tobytes())
        return state

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
        self._merge_dups(*other["_dups"])
        for digest, key in other["_dup_keys"].items():
            self._dup_keys.setdefault(digest, key)
        self.duplicates_approximate = self.duplicates_approximate or other["duplicates_approximate"]

    def _merge_dups(self, digests_bytes: bytes, counts_bytes: bytes) -> None:
        """Join another duplicate table (`state`'s arrays) to this one, as adding its calls one by one and then
        bounding the table would. When the joined table is over DUPLICATE_TABLE, the calls seen once in all are
        dropped: those of the other table are then never added (the peak memory of a merge stays near one table)."""
        from array import array

        digests, counts_in = array("q"), array("q")
        digests.frombytes(digests_bytes)
        counts_in.frombytes(counts_bytes)
        counts = self._dups
        joined = len(counts) + len(digests) - sum(map(counts.__contains__, digests))
        get = counts.get
        if joined <= DUPLICATE_TABLE:
            for digest, count in zip(digests, counts_in):
                counts[digest] = get(digest, 0) + count
            return
        for digest, count in zip(digests, counts_in):
            have = get(digest)
            if have is not None:
                counts[digest] = have + count
            elif count > 1:
                counts[digest] = count
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


# -- two cores: a forked helper summarises the chunks it has room for ----------------------------------------
HELPER_MIN_MESSAGES = 20_000  # below this a helper process costs more than it saves
HELPER_SLOTS = 6  # chunks handed to the helper at once: one it works on, the rest waiting (shared memory)
HELPER_SLOT_BYTES = (4 << 20) // 2 + (64 << 10)  # one LRANGE reply of the reply budget (redis_memory), its offsets
HELPER_NICE = 19  # the lowest priority: the helper takes a CPU nothing else wants, never the reading process's or Redis'
HELPER_MAX_LOAD = 2.0  # no helper once the load average per CPU reaches this (see helper_available)
_NOTE = struct.Struct("<iiqq")  # slot, messages, bytes, offset: what the parent tells the helper of a filled slot


def helper_available() -> bool:
    """A forked helper is used on Linux (fork keeps `hash`, so duplicate tables merge) with more than one CPU while
    the load average stays below HELPER_MAX_LOAD per CPU. The helper runs at a lower priority (HELPER_NICE): where
    the CPUs are all busy it takes little from the reading process and Redis, and it only takes a chunk when it
    has a free slot, so one that gets little CPU never holds the reading process up."""
    import multiprocessing
    import os
    import sys

    cpus = os.cpu_count() or 1
    if not sys.platform.startswith("linux") or cpus < 2:
        return False
    try:
        if os.getloadavg()[0] >= HELPER_MAX_LOAD * cpus:
            return False
    except OSError:
        return False
    return "fork" in multiprocessing.get_all_start_methods()


def _helper_main(conn: Any, parent_end: Any, shared: Any, now: float, vt: Optional[float]) -> None:
    """The helper: a note per filled slot of `shared` (where each message starts and ends, then the bytes they
    lie in), answered by the slot's number once summarised, until an empty note; then its state out.
    `parent_end`, the other end of the pipe (inherited by the fork), is closed first: the helper then sees the end
    of the pipe when the parent closes it."""
    import os

    parent_end.close()
    try:
        os.nice(HELPER_NICE)
    except OSError:
        pass
    stats = EnvelopeStats(now, vt)
    try:
        while True:
            note = conn.recv_bytes()
            if not note:
                break
            slot, count, _size, offset = _NOTE.unpack(note)
            stats.add_raw_chunk(_slot_items(shared, slot * HELPER_SLOT_BYTES, count, offset))
            conn.send_bytes(bytes((slot,)))
        conn.send_bytes(pickle.dumps(stats.state(), protocol=pickle.HIGHEST_PROTOCOL))
    except (EOFError, OSError):  # the parent closed its end (it stopped, or gave up on this share): nothing to say
        pass
    finally:
        conn.close()


def _slot_items(shared: Any, base: int, count: int, offset: int) -> list:
    """The messages of a slot, sliced straight out of the shared memory: `count` starts and `count` ends (64-bit,
    `offset` where the bytes that follow them begin), then those bytes."""
    from array import array

    starts, ends = array("q"), array("q")
    starts.frombytes(shared[base:base + 8 * count])
    ends.frombytes(shared[base + 8 * count:base + 16 * count])
    shift = base + 16 * count - offset
    return list(map(shared.__getitem__, map(slice, map(add, starts, repeat(shift)), map(add, ends, repeat(shift)))))


class SplitStats:
    """Feeds an `EnvelopeStats` on two cores: a forked helper process summarises the chunks it has room for (the
    parent reads every chunk, copies it into a free slot of memory shared with the helper and goes on; with no
    free slot it summarises the chunk itself), and `finish` merges the helper's counts. The work balances itself:
    a helper that gets a whole CPU takes most chunks, one that gets little takes few, and the parent never waits
    for it.

    The helper only summarises bytes it is handed: it opens no connection and reads nothing itself. Should it
    fail or not answer in time, its share is simply not counted (`lost` says how many messages): the summary's
    `analysed` then falls short of the queue's length and the read is reported incomplete, as any cut read.
    (Its state comes back pickled over the pipe to the process that forked it: never anything a broker sent.)"""

    def __init__(self, stats: EnvelopeStats, seconds: float) -> None:
        """`seconds`: the helper is killed after this long whatever it is doing: the scan's deadline holds."""
        import mmap
        import multiprocessing
        import threading

        from dateutil import parser as _preload  # noqa: F401 - imported before the fork, never inside the child

        self.stats = stats
        self.sent = 0  # messages handed to the helper
        self.lost = 0
        self.error: Optional[str] = None
        self._free = list(range(HELPER_SLOTS))
        self._shared = mmap.mmap(-1, HELPER_SLOTS * HELPER_SLOT_BYTES)  # anonymous and shared: the fork sees it
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe(duplex=True)
        self._process = context.Process(target=_helper_main,
                                        args=(child, self._conn, self._shared, stats.now, stats.vt),
                                        name="celery-doctor-summary", daemon=True)
        self._process.start()
        child.close()
        self._watchdog = threading.Timer(max(0.1, seconds), self._process.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _collect(self) -> None:
        """Take back the slots the helper has finished (never waits)."""
        conn = self._conn
        try:
            while conn is not None and conn.poll(0):
                answer = conn.recv_bytes()
                if len(answer) != 1:
                    raise ValueError("an unexpected answer")
                self._free.append(answer[0])
        except (OSError, EOFError, ValueError) as exc:
            self._fail(f"the helper process stopped ({type(exc).__name__})")

    def add_raw_chunk(self, items: list, raw: Optional[tuple] = None) -> None:
        """Summarise `items` here or hand them to the helper. `raw`, when given: (bytes, starts, ends) where the
        items lie in order (a stream's `raw`): they are then copied to the helper in one piece."""
        if self._conn is not None and items:
            self._collect()
        if self._conn is None or not self._free or not items:
            self.stats.add_raw_chunk(items)
            return
        from array import array

        if raw is None or len(raw[1]) != len(items):
            ends = list(accumulate(map(len, items)))
            raw = (b"".join(items), [0, *ends[:-1]], ends)
        data, starts, ends = raw
        offset, size = starts[0], ends[-1] - starts[0]
        if 16 * len(items) + size > HELPER_SLOT_BYTES:  # larger than a slot (large messages): summarised here
            self.stats.add_raw_chunk(items)
            return
        slot = self._free.pop()
        base = slot * HELPER_SLOT_BYTES
        shared, count = self._shared, len(items)
        shared[base:base + 8 * count] = array("q", starts)
        shared[base + 8 * count:base + 16 * count] = array("q", ends)
        shared[base + 16 * count:base + 16 * count + size] = memoryview(data)[offset:offset + size]
        try:
            self._conn.send_bytes(_NOTE.pack(slot, count, size, offset))
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
        import time

        until = time.monotonic() + max(0.05, seconds)
        try:
            if self._conn is None:
                return self.stats
            self._conn.send_bytes(b"")
            while True:  # the slots still being summarised come back first, then the state
                if not self._conn.poll(max(0.0, until - time.monotonic())):
                    self._fail(f"the helper process did not hand in its share within {max(0.05, seconds):.1f} s")
                    return self.stats
                answer = self._conn.recv_bytes()
                if len(answer) != 1:
                    break
            state = pickle.loads(answer)  # our own forked child's counts (as Connection.recv did), never broker data
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
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
        if not self._shared.closed:
            self._shared.close()  # nothing is handed over once the connection is closed
