"""Keep our own reads from becoming Redis' memory pressure.

Redis builds a whole reply in the client's output buffer before sending it, and that buffer counts toward
`used_memory`, which is what `maxmemory` is enforced against. One LRANGE of 1,000 messages of 1 MB each is
a 1 GB buffer: under an `allkeys-*` policy Redis then evicts keys, the very queue being read included
(reproduced: 600 queued tasks gone, `evicted_keys` 0 -> 1); under `noeviction` the producers' LPUSH is
refused with OOM while the reply waits. So every reply a read asks for is bounded in bytes as well as
elements, from what is known of the server's free memory and the sizes of the elements:

- `MemoryGuard` holds the server's `maxmemory`/`used_memory` (INFO memory, read again every few MB read or
  fraction of a second) and answers how big one reply may be (a small share of the free memory, at most
  `DEFAULT_REPLY_BYTES`) and whether reading may go on at all;
- `ElementSizes` learns a list's element sizes as chunks come back (and from `MEMORY USAGE` / `LLEN`
  before the first one) and says how many elements the next LRANGE may ask for.

The bound is soft in one case only: a single element far larger than its neighbours, which nothing short of
reading it reveals. Such an element is not kept by the client (`MAX_ELEMENT_BYTES`), and the chunk
shrinks to one element after it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional

DEFAULT_REPLY_BYTES = 4 << 20  # one reply at most (two may be in flight per stream: one read, one asked ahead)
MIN_REPLY_BYTES = 64 << 10  # below this share of free memory, reading messages stops
HEADROOM_SHARE = 20  # one reply takes at most 1/20 of the free memory below maxmemory
MAX_ELEMENT_BYTES = 64 << 20  # an element larger than this is skipped (drained, not kept) with a note
RECHECK_BYTES = 32 << 20  # INFO memory again after this many bytes read...
RECHECK_SECONDS = 0.5  # ...or this long, whichever comes first
MAX_CHUNK = 1000


class MemoryPressure(Exception):
    """Reading further would add to the memory pressure of the server; the message says why."""


def _mb(value: float) -> str:
    return f"{value / (1 << 20):,.1f} MB"


@dataclass
class GuardFigures:
    """What the guard saw, for the report and the benchmarks."""

    bytes_read: int = 0
    replies: int = 0
    largest_reply: int = 0
    largest_element: int = 0
    skipped_elements: int = 0
    memory_checks: int = 0


class MemoryGuard:
    """Shared by every connection of one run to one Redis server (thread-safe)."""

    def __init__(self, reply_bytes: int = DEFAULT_REPLY_BYTES, element_bytes: int = MAX_ELEMENT_BYTES) -> None:
        self._lock = threading.Lock()
        self.default_reply = reply_bytes
        self.element_cap = element_bytes
        self.maxmemory: Optional[int] = None
        self.used_memory: Optional[int] = None
        self.policy: Optional[str] = None
        self.unknown_reason: Optional[str] = None  # why the server's memory could not be read (ACL ...)
        self.stopped: Optional[str] = None  # why reading messages stopped (set once)
        self.held_back = 0  # lists or values not read because even one element would press on the memory
        self.figures = GuardFigures()
        self._since_check = 0
        self._checked_at = 0.0
        self._ever_checked = False

    # -- the server's memory ---------------------------------------------------------------------------
    def update(self, info: Optional[dict], refused: Optional[str] = None) -> None:
        with self._lock:
            self._since_check = 0
            self._checked_at = time.monotonic()
            self._ever_checked = True
            self.figures.memory_checks += 1
            if info is None:
                self.unknown_reason = refused or "INFO memory not readable"
                return
            self.unknown_reason = None
            self.maxmemory = _int(info.get("maxmemory"))
            self.used_memory = _int(info.get("used_memory"))
            policy = info.get("maxmemory_policy")
            self.policy = str(policy) if policy is not None else self.policy
            headroom = self.headroom
            if headroom is not None and headroom // HEADROOM_SHARE < MIN_REPLY_BYTES and self.stopped is None:
                self.stopped = (f"Redis is close to maxmemory (used_memory {_mb(self.used_memory or 0)} of "
                                f"{_mb(self.maxmemory or 0)}, policy {self.policy or 'unknown'}): reading messages "
                                f"would add reply buffers to that memory, so celery-doctor stopped reading them")

    def recheck_due(self) -> bool:
        with self._lock:
            if not self._ever_checked:
                return True
            if self.unknown_reason is not None:
                return False  # refused once: asking again every chunk only adds refused commands
            return (self._since_check >= RECHECK_BYTES
                    or time.monotonic() - self._checked_at >= RECHECK_SECONDS)

    @property
    def headroom(self) -> Optional[int]:
        """Bytes left below maxmemory; None when there is no limit or it is unknown."""
        if not self.maxmemory or self.used_memory is None:
            return None
        return max(0, self.maxmemory - self.used_memory)

    def reply_budget(self) -> int:
        """Bytes one reply may take in the server's output buffer now."""
        headroom = self.headroom
        if headroom is None:
            return self.default_reply
        return max(1, min(self.default_reply, headroom // HEADROOM_SHARE))

    def ensure_readable(self) -> None:
        if self.stopped:
            raise MemoryPressure(self.stopped)

    def may_read_element(self, estimate: int) -> Optional[str]:
        """None when one element of about `estimate` bytes may be read alone; else why not."""
        headroom = self.headroom
        if estimate > self.element_cap:
            return f"its messages average {_mb(estimate)}, over the {_mb(self.element_cap)} read cap"
        if headroom is not None and estimate * 4 > headroom:
            self.held_back += 1
            return (f"its messages average {_mb(estimate)} and Redis has {_mb(headroom)} left below maxmemory: "
                    f"reading even one would add to that memory")
        return None

    @property
    def pressure(self) -> Optional[str]:
        """Why reads were stopped or held back for the server's memory, if they were."""
        if self.stopped:
            return self.stopped
        if self.held_back:
            return (f"Redis is close to maxmemory (used_memory {_mb(self.used_memory or 0)} of "
                    f"{_mb(self.maxmemory or 0)}): {self.held_back} read(s) of large messages were held back")
        return None

    # -- what was read ---------------------------------------------------------------------------------
    def observe(self, reply_bytes: int, largest_element: int = 0, skipped: int = 0) -> None:
        with self._lock:
            figures = self.figures
            figures.bytes_read += reply_bytes
            figures.replies += 1
            figures.largest_reply = max(figures.largest_reply, reply_bytes)
            figures.largest_element = max(figures.largest_element, largest_element)
            figures.skipped_elements += skipped
            self._since_check += reply_bytes


class ElementSizes:
    """Element sizes of one list as learned so far, and how many elements the next LRANGE may ask for."""

    def __init__(self, guard: MemoryGuard, estimate: Optional[int] = None, limit: int = MAX_CHUNK,
                 in_flight: int = 1) -> None:
        self.guard = guard
        self.limit = max(1, limit)
        self.in_flight = max(1, in_flight)  # replies that may sit in the server's buffers at once
        self.estimate = estimate  # bytes per element, pessimistic; None: nothing known yet
        self.last = 0

    def next_count(self) -> int:
        budget = max(1, self.guard.reply_budget() // self.in_flight)
        if self.estimate is None:
            count = 1  # nothing known: one element, then grow as sizes come back
        else:
            count = max(1, budget // max(1, self.estimate))
        if self.last:
            count = min(count, self.last * 4)  # grow gradually after a shrink (an outlier may have passed)
        count = min(count, self.limit)
        self.last = count
        return count

    def learn(self, sizes: list[int]) -> None:
        if not sizes:
            return
        largest = max(sizes)
        average = sum(sizes) / len(sizes)
        # pessimistic: the largest recent element, or twice the average when elements are alike
        seen = int(max(largest, average * 2)) + 16
        if self.estimate is None or seen > self.estimate:
            self.estimate = seen
        else:  # decay towards what the recent chunk shows
            self.estimate = max(seen, (self.estimate + seen) // 2)


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
