"""The log engine: one pass over worker, beat and kernel logs, in constant memory, into a LogsState.

Layers, per input:

1. readers: bytes -> lines (files, globs, gzip, stdin; long lines cut).
2. envelopes (formats.py): a collector's wrapping (journald JSON, docker json-file, CRI, kubectl/compose
   prefixes, syslog, dmesg) is taken off; what is left is a line of one *stream* (a worker's own log: one file
   family, one container, one journald unit on one host), with the envelope's time when it has one.
3. records (Stream): a stream learns its layout from its first line (Celery's default
   `[%(asctime)s: %(levelname)s/%(processName)s] %(message)s`, a custom format starting with the time, JSON
   records, or anything else) and groups lines into records: the lines a record continues on (tracebacks, the
   "full contents of the message" blocks Celery logs for unregistered and invalid tasks, raw stdout lines)
   belong to the record before them and are never parsed as records of their own. Message bodies are never
   kept: only the headers line of an unregistered task is read, for its id.
4. signatures (Stream.message): plain string tests (`startswith`, `in`, `find`) on the record's message, no
   regular expression on the hot path; a per-stream ledger of tasks received and not finished names the
   tasks a killed process or a stopped worker took with it.

Each stream is a sequence of *incarnations* (a worker's run, from `<node> ready.` to the next start or the end
of the log). When one ends, the tasks it received and never finished are attributed: to a pool process that
died while they were open, to a shutdown or an unrecoverable error, to a restart without a logged shutdown,
or (at the end of the log) to "never finished".

Message texts (celery 5.7 / kombu 5.7 / billiard 4.3, as installed):
- `Task %(name)s[%(id)s] received`, `... succeeded in ...`, `... raised unexpected: ...`, `... retry: ...`
  (celery/app/trace.py LOG_RECEIVED, LOG_SUCCESS, LOG_FAILURE, LOG_RETRY; logged from worker/strategy.py);
- `Process %r pid:%r exited with %r` (billiard/pool.py Pool._join_exited_workers; status from
  billiard/common.py human_status: `signal 9 (SIGKILL)`, `exitcode 1`);
- `Task handler raised error: %r` with `WorkerLostError('Worker exited prematurely: ...')`
  (celery/worker/request.py Request.on_failure; billiard/pool.py mark_as_worker_lost);
- `Hard time limit (%ss) exceeded for %s[%s]`, `Soft time limit (%ss) exceeded for %s[%s]`
  (celery/worker/request.py Request.on_timeout);
- `Received unregistered task of type %s.`, `Received invalid task message: %s`,
  `Can't decode message body: %r [type:%r encoding:%r headers:%s]`, `Received and deleted unknown message.`,
  `consumer: Connection to broker lost. ...` (celery/worker/consumer/consumer.py);
- `Discarding revoked task: %s[%s]` (celery/worker/request.py Request.revoked);
  `Tasks flagged as revoked: %s` (celery/worker/control.py);
- `Restoring %r unacknowledged message(s)` (kombu/transport/virtual/base.py RESTORING_FMT);
- `missed heartbeat from %s` (celery/worker/consumer/gossip.py); `Substantial drift from %s may mean clocks
  are out of sync.  Current drift is %s seconds.` (celery/events/state.py DRIFT_WARNING);
- `Scheduler: Sending due task %s (%s)`, `beat: Starting...` (celery/beat.py);
- `Unrecoverable error: %r` (celery/worker/worker.py); `worker: Warm shutdown (MainProcess)`,
  `worker: Cold shutdown (MainProcess)` (celery/apps/worker.py, printed to stdout without a log prefix);
  `Initiating Soft Shutdown, terminating in %s seconds` (celery/worker/worker.py); `%s ready.`
  (celery/apps/worker.py);
- `MaxRetriesExceededError` (celery/exceptions.py; raised by celery/app/task.py Task.retry);
- RabbitMQ's `PRECONDITION_FAILED - delivery acknowledgement on channel N timed out` reaches the worker as
  amqp's PreconditionFailed (code 406, amqp/exceptions.py); the text itself is the broker's.
- The kernel's OOM killer: `Out of memory: Killed process N (comm) ...`, `Memory cgroup out of memory:
  Killed process N (comm)`, `oom-kill:...,task=comm,pid=N,...` (Linux mm/oom_kill.c; not in the venv).
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict
from itertools import islice
from typing import Any, Callable, Iterable, Optional

from ..model import TimelineEvent
from ..parts import logs as P
from .formats import (
    EXCEPTION_FIELDS,
    MAX_PARTIAL,
    MESSAGE_FIELDS,
    PROCESS_FIELDS,
    TIME_FIELDS,
    as_text,
    fast_scalar,
    fast_string,
    field,
    key_pattern,
    looks_cri,
    parse_time,
    split_compose,
    split_cri,
    split_dmesg,
    split_kubectl_prefix,
    split_syslog,
)
from .ledger import EVENTS_PER_INCARNATION, SAMPLE, OpenTasks, Summary, Timeline, clip
from .readers import Input, LineStats, read_batches

# stream layouts
DEFAULT, CUSTOM, JSONL, OTHER = "celery", "celery-custom", "json", "other"
MAX_STREAMS = 2000
MAX_BEAT_ENTRIES = 2000
MAX_OOM = 5000
MAX_RETRIED = 20000  # ids remembered as retried (the oldest forgotten)
SNIFF_LINES = 200  # lines that may come before a stream's first record (a start-up warning, the banner)
MAX_CONTINUATION = 400  # continuation lines of one record that are looked at (the rest are only counted)
HARD_LIMIT_EXIT_WINDOW = 30.0  # a pool process exiting this soon after a hard time limit is the limit's doing
TIMELINE_KEPT = 400  # timeline lines in the part (and the JSON report)

_EXC_CLASS = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Disallowed|Exceeded|Failed|Lost))(?::|$)")
_HEADER_ID = re.compile(r"""['"]id['"]: ['"]([^'"\s]{1,128})['"]""")
_HEADER_TASK = re.compile(r"""['"]task['"]: ['"]([^'"]{1,200})['"]""")
_TIMEOUT_MS = re.compile(r"Timeout value used: (\d+) ms")
_KILLED = re.compile(r"Killed process (\d+) \(([^)]{0,64})\)")
_OOM_KILL = re.compile(r"oom-kill:.*?task=([^,\s]{0,64}),pid=(\d+)")
_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{12})[0-9a-f]{52}/")
_POD_DIR = re.compile(r"/pods/([^/_]+)_([^/_]+)_[^/]+/([^/]+)/[^/]*$")
_CONTAINERS_LOG = re.compile(r"/containers/([^/_]+)_([^/_]+)_(.+)-[0-9a-f]{64}\.log")

CELERY_PROCESS_NAMES = ("celery", "python", "python3")


PENDING = object()  # a JSON record's time or process name, not read from its line yet


def _short(task_id: str) -> str:
    return task_id if len(task_id) <= 12 else task_id[:8] + "…"


class Stream:
    """One worker's (or beat's, or a kernel's) log as records: layout, open tasks, the current incarnation."""

    def __init__(self, scanner: "Scanner", key: Any, label: str, kernel: bool = False) -> None:
        self.scanner = scanner
        self.key = key
        self.label = clip(label)
        self.node: Optional[str] = None
        self.kernel = kernel
        self.layout: Optional[str] = None
        self.json_keys: Optional[tuple] = None  # (message pattern, time pattern, process pattern, len)
        self.json_line = ""  # the current JSON record, while its time or process is PENDING
        self.outer_key: tuple = ("", 0)  # the envelope's time key and its length, while outer is PENDING
        self.verified = False  # a Celery message was seen where the layout puts messages
        self.misses = 0
        self.undecided = 0
        self.feed = self._sniff
        self.open = OpenTasks()
        self.proc_task: dict[str, str] = {}
        self.stamp: Any = None  # raw time of the current record (a Celery header, a JSON value, a line's start)
        self.outer: Any = None  # the envelope's time of the current line, when it has one
        self._now_raw: Any = object()
        self._now: Optional[float] = None
        self.proc_hint: Optional[str] = None
        self.expect: Optional[str] = None
        self.cont_seen = 0
        self.pending: Optional[dict] = None
        self.records = 0
        self.received = 0
        self.finished = 0
        self.want_first = True
        self.first_at: Optional[float] = None
        self.year: Optional[int] = None
        self.pids: set[int] = set()
        self.flagged: OrderedDict = OrderedDict()  # ids flagged as revoked (bounded)
        self.sources: set[str] = set()
        self.layouts: set[str] = set()
        self._new_incarnation()

    # -- incarnations ----------------------------------------------------------------------------------
    def _new_incarnation(self) -> None:
        self.active = False  # anything happened since the start (a task, an event)
        self.kills: list[dict] = []
        self.kills_dropped = 0
        self.losses: list[dict] = []
        self.shutdown: Optional[dict] = None
        self.unrecoverable: Optional[dict] = None
        self.hard_pending: list[tuple[Optional[float], str]] = []
        self.hard_ids: dict[str, Optional[float]] = {}
        self.soft_open: dict[str, tuple[str, Summary]] = {}
        self.lost_errors = 0

    @property
    def where(self) -> str:
        return self.node or self.label

    def now(self) -> Optional[float]:
        raw = self.outer if self.outer is not None else self.stamp
        if raw is PENDING:
            raw = self._pending_stamp()
        if raw is self._now_raw:
            return self._now
        value, naive = parse_time(raw, self.year)
        if naive and value is not None:
            self.scanner.naive = True
        self._now_raw, self._now = raw, value
        return value

    def _sum(self, kind: str) -> Summary:
        return self.scanner.summary(kind, self)

    # -- layouts -----------------------------------------------------------------------------------------
    def _sniff(self, line: str) -> None:
        """Learn the layout from the first line that starts a record; lines before it (a warning printed at
        start-up, the banner) are continuation lines of nothing."""
        if not line.strip():
            return
        if self.kernel:
            layout, feed = OTHER, self._feed_other
        elif line[:1] == "[" and line[1:5].isdigit():
            layout, feed = DEFAULT, self._feed_default
        elif line[:1] == "{":
            layout, feed = JSONL, self._feed_json
        elif line[:4].isdigit() and line[4:5] == "-":
            layout, feed = CUSTOM, self._feed_custom
        else:
            self.undecided += 1
            if self.undecided <= SNIFF_LINES:  # not decided yet: read like a line of an unknown layout
                self._feed_other(line)
                return
            layout, feed = OTHER, self._feed_other
        self.layout, self.feed = layout, feed
        self.layouts.add(layout)
        feed(line)

    def _head(self) -> None:
        """A new record starts: close the previous one."""
        if self.pending is not None:
            self._flush_pending()
        self.expect = None
        self.records += 1
        if self.want_first:
            first = self.now()
            if first is not None:
                self.want_first = False
                self.first_at = first if self.first_at is None else min(first, self.first_at)

    def _feed_default(self, line: str) -> None:
        if line[:1] == "[" and line[1:2].isdigit():
            close = line.find("] ", 20)
            if close > 0:
                if self.pending is not None or self.expect is not None or self.want_first:
                    self.stamp = line[1:close]
                    self._head()
                else:
                    self.records += 1
                    self.stamp = line[1:close]
                self.message(line[close + 2:])
                return
        self.continuation(line)

    def _feed_custom(self, line: str) -> None:
        if line[:4].isdigit() and line[4:5] == "-":
            self.stamp = line[:40]
            self._head()
            self.anchored(line)
            return
        self.continuation(line)

    def _feed_other(self, line: str) -> None:
        if not line or line[0] in " \t" or line.startswith("Traceback"):
            self.continuation(line)
            return
        self.stamp = None
        self._head()
        if (self.kernel or "Killed process " in line or "oom-kill:" in line) and self.kernel_line(line):
            return
        self.anchored(line)

    def _feed_json(self, line: str) -> None:
        if line[:1] != "{":
            if line[:1] in " \t" or not line.strip():
                self.continuation(line)
            else:
                self.stamp = None
                self._head()
                self.anchored(line)
            return
        fast = self.json_keys
        if fast is not None:  # the keys this writer uses, read with find: no full parse for plain records
            at = line.find(fast[0])
            if at >= 0:
                start = at + fast[3]
                end = line.find('"', start)
                text = line[start:end]
                if end > 0 and "\\" not in text:  # no escape: the next quote closes it
                    self.json_line = line  # its time and process are read from it only when needed
                    self.stamp = PENDING if fast[1] else None
                    self._json_record(text, PENDING if fast[2] else None, None, line)
                    return
        try:
            record = json.loads(line)
        except ValueError:
            self.scanner.bad_json += 1
            return
        if not isinstance(record, dict):
            return
        if fast is None:
            self.json_keys = self._learn_keys(line, record)
        self.stamp = field(record, TIME_FIELDS)
        proc = field(record, PROCESS_FIELDS)
        self._json_record(as_text(field(record, MESSAGE_FIELDS)), proc if isinstance(proc, str) else None,
                          record, line)

    @staticmethod
    def _learn_keys(line: str, record: dict) -> Optional[tuple]:
        def first(names):
            for name in names:
                if record.get(name) not in (None, ""):
                    return name
            return None

        message, stamp, proc = first(MESSAGE_FIELDS), first(TIME_FIELDS), first(PROCESS_FIELDS)
        if message is None or not isinstance(record.get(message), str):
            return None
        patterns = [key_pattern(line, name) if name else None for name in (message, stamp, proc)]
        if patterns[0] is None:
            return None
        message_pattern = patterns[0] + '"'  # a string: read up to its closing quote
        return (message_pattern, patterns[1], patterns[2], len(message_pattern))

    def _pending_stamp(self) -> Any:
        if self.outer is PENDING:  # an envelope's time (journald)
            line, (pattern, length) = self.json_line, self.outer_key
            at = line.find(pattern)
            self.outer = line[at + length:line.find('"', at + length)] if at >= 0 else None
            return self.outer
        self.stamp = fast_scalar(self.json_line, self.json_keys[1])
        return self.stamp

    def _pending_process(self) -> Optional[str]:
        self.proc_hint = fast_string(self.json_line, self.json_keys[2])
        return self.proc_hint

    def _json_record(self, text: Optional[str], proc: Optional[str], record: Optional[dict], line: str) -> None:
        if self.pending is not None or self.expect is not None or self.want_first:
            self._head()
        else:
            self.records += 1
        if text is None:
            return
        self.proc_hint = proc
        lines = text.split("\n") if "\n" in text else None
        head = lines[0] if lines else text
        if (self.kernel or (head[:1] in ("O", "M", "o") and ("Killed process " in head or "oom-kill:" in head))) \
                and self.kernel_line(head):  # kernel lines shipped as JSON (Out of memory, Memory cgroup, oom-kill:)
            return
        if head[:1] == "[" and head[1:5].isdigit():  # a Celery-format line inside a JSON record
            head = self._celery_header(head)
        self.message(head)
        if proc is not None and '"task_id"' in line:
            self._json_task_id(proc, record, line)
        if lines or self.expect is not None:
            self._json_continuation(lines, record, line)
        self.proc_hint = None

    def _celery_header(self, head: str) -> str:
        """`[time: LEVEL/process] message` inside a JSON record: the message (the time, if the record had none)."""
        close = head.find("] ", 20)
        if close < 0:
            return head
        if self.stamp is None:
            self.stamp = head[1:close]
        return head[close + 2:]

    def _json_task_id(self, proc: Any, record: Optional[dict], line: str) -> None:
        """A JSON record with a task_id, logged by a pool process: that process runs that task."""
        proc = self._pending_process() if proc is PENDING else proc
        if proc and proc.startswith("ForkPoolWorker"):
            record = record if record is not None else json.loads(line)
            task_id = record.get("task_id")
            if isinstance(task_id, str):
                self._map_process(proc, task_id)

    def _json_continuation(self, lines: Optional[list[str]], record: Optional[dict], line: str) -> None:
        """The rest of a multi-line message, and (when the record's head asked for it) its traceback field."""
        for rest in (lines or ())[1:MAX_CONTINUATION]:
            self.continuation(rest)
        if self.expect is not None:
            record = record if record is not None else json.loads(line)
            exc = field(record, EXCEPTION_FIELDS)
            if isinstance(exc, str):
                for rest in exc.split("\n")[-50:]:
                    self.continuation(rest)

    ANCHORS = ("Task ", "Discarding revoked task: ", "Hard time limit (", "Soft time limit (", "Process '",
               "Received unregistered task of type ", "Received invalid task message: ",
               "Can't decode message body: ", "Received and deleted unknown message", "consumer: Connection to",
               "Restoring ", "missed heartbeat from ", "Substantial drift from ", "Scheduler: Sending due task ",
               "Unrecoverable error: ", "Connected to ", "Tasks flagged as revoked: ", "beat: Starting",
               "Initiating Soft Shutdown", "worker: Warm shutdown", "worker: Cold shutdown")

    def anchored(self, line: str) -> None:
        """A record of an unknown layout: its message starts at the first known message text in it."""
        for anchor in self.ANCHORS:
            at = line.find(anchor)
            if at >= 0 and (at == 0 or line[at - 1] in " :]-|\t\"'"):
                self.message(line[at:])
                return
        if line.endswith(" ready."):
            start = line.rfind(" ", 0, len(line) - 7) + 1
            self.message(line[start:])

    # -- records -----------------------------------------------------------------------------------------
    def continuation(self, line: str) -> None:
        """A line continuing the current record (or raw stdout: the shutdown lines, the banner)."""
        expect = self.expect
        if expect is None:
            if line[:8] == "worker: ":
                self._shutdown_line(line)
            elif line[:15] == " -------------- " and "@" in line:
                self._banner(line)
            elif line[:10] == "Restoring ":
                self.message(line)
            return
        self.cont_seen += 1
        if self.cont_seen > MAX_CONTINUATION:
            return
        if expect == "unregistered":
            if line.startswith("The full contents of the message headers"):
                self.expect = "unregistered-headers"
        elif expect == "unregistered-headers":
            self.expect = "unregistered"
            if self.pending is not None and line.startswith("{"):
                found = _HEADER_ID.search(line)
                if found:
                    self.pending["id"] = found.group(1)
                self.expect = None
        elif expect == "exception":
            if "PRECONDITION_FAILED" in line and "delivery acknowledgement" in line:
                self._ack_timeout(line)
            found = _EXC_CLASS.match(line)
            if found and self.pending is not None:
                self.pending["exc"] = found.group(1).rsplit(".", 1)[-1]

    def _flush_pending(self) -> None:
        pending, self.pending = self.pending, None
        kind = pending.pop("kind")
        if kind == "unregistered":
            self._record_unregistered(pending)
        elif kind == "invalid":
            self._record_rejected(pending)
        elif kind in ("connection-lost", "unrecoverable"):
            pass  # recorded at once; the pending dict only collected the exception

    def message(self, m: str) -> None:
        """One record's message (its first line)."""
        if m[:5] == "Task ":
            e = m.find("] ", 6)  # an id holds no "] ": the last bracket before it opens the id
            if e < 0 and m[-1:] == "]":
                e = len(m) - 1
            b = m.rfind("[", 5, e) if e > 0 else -1
            if b > 5 and " " not in m[5:b]:
                if m[e + 1:] == " received":
                    self._received(m[b + 1:e], m[5:b])
                else:
                    self._ended(m[b + 1:e], m[5:b], m[e + 1:])
            elif m.startswith("Task handler raised error: "):
                self._handler_error(m)
            return
        handlers = _DISPATCH.get(m[:1])
        if handlers is not None:
            for prefix, method in handlers:
                if m.startswith(prefix):
                    method(self, m)
                    return
        self._other_message(m)

    def _received(self, task_id: str, name: str) -> None:
        """`Task name[id] received` (celery/app/trace.py LOG_RECEIVED): the task is open on this worker."""
        self.received += 1
        self.active = True
        self.verified = True
        stamp = self.outer if self.outer is not None else self.stamp
        if stamp is PENDING:
            stamp = self._pending_stamp()
        if self.open.opened(task_id, name, stamp):
            self._received_again(task_id, name)

    def _ended(self, task_id: str, name: str, rest: str) -> None:
        """Any other `Task name[id] ...` line (succeeded, raised, retry, ignored, rejected): the task is closed."""
        self.finished += 1
        self.open.pop(task_id, None)
        retries = self.scanner.retries
        if self.soft_open and task_id in self.soft_open:
            self._soft_outcome(task_id, "failed" if rest.startswith(" raised") else
                               "finished" if rest.startswith(" succeeded") else "ended")
        if rest[:7] == " retry:":
            self.scanner.retried(task_id)
        elif rest[:7] == " raised":
            tries = retries.pop(task_id, 0) if retries else 0
            if tries or "MaxRetriesExceededError" in rest:
                self._retries_exhausted(name, task_id, tries)
        elif retries and rest[:10] == " succeeded":
            retries.pop(task_id, None)

    def _other_message(self, m: str) -> None:
        """A message no handler claimed: a worker's ready line, a task's own log line, or (not yet sure of the
        layout) a Celery message further into the line."""
        if m.endswith(" ready.") and "@" in m and " " not in m[:-7]:
            self._ready(m[:-7])
        elif "]: " in m:
            self._task_log_line(m)
        elif not self.verified and self.layout == DEFAULT:
            self._unverified(m)

    def _unverified(self, m: str) -> None:
        """A bracketed time first, but more fields before the message than Celery's default format has
        (`[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s`): find messages by their text."""
        self.misses += 1
        if self.misses > SNIFF_LINES * 5:
            self.verified = True  # no Celery message in sight: stop looking
            return
        found = -1
        if m.endswith(" ready."):
            start = m.rfind(" ", 0, len(m) - 7) + 1
            found = start if start > 0 and "@" in m[start:] else -1
        for anchor in self.ANCHORS if found < 0 else ():
            at = m.find(anchor)
            if at > 0 and m[at - 1] in " :]-|\t\"'":
                found = at
                break
        if found > 0:
            self.verified = True
            self.layout, self.feed = CUSTOM, self._feed_default_anchored
            self.layouts.discard(DEFAULT)
            self.layouts.add(CUSTOM)
            self.message(m[found:])

    def _feed_default_anchored(self, line: str) -> None:
        if line[:1] == "[" and line[1:2].isdigit():
            close = line.find("] ", 20)
            if close > 0:
                self.stamp = line[1:close]
                self._head()
                self.anchored(line[close + 2:])
                return
        self.continuation(line)

    # -- the task ledger -----------------------------------------------------------------------------------
    def _process_name(self) -> Optional[str]:
        if self.proc_hint is PENDING:
            return self._pending_process()
        if self.proc_hint:
            return self.proc_hint
        stamp = self.stamp
        if self.layout == DEFAULT and isinstance(stamp, str):
            slash = stamp.rfind("/")
            if slash > 0:
                return stamp[slash + 1:]
        return None

    def _task_log_line(self, m: str) -> None:
        """`name[id]: message` from a pool process (the task format): that process runs that task."""
        e = m.find("]: ")
        b = m.rfind("[", 0, e) if e > 0 else -1
        if b <= 0 or " " in m[:b]:
            return
        proc = self._process_name()
        if proc and proc != "MainProcess":
            self._map_process(proc, m[b + 1:e])

    def _map_process(self, proc: str, task_id: str) -> None:
        if len(self.proc_task) > 256:
            self.proc_task.clear()
        self.proc_task[proc] = task_id

    def _received_again(self, task_id: str, name: str) -> None:
        if self.losses:
            loss = self.losses[-1]
            if task_id in loss["open"]:
                loss["again"] += 1
                summary = self._sum(P.CONNECTION_LOST)
                summary.bump("received_again")
                summary.task(name, task_id)

    # -- signatures --------------------------------------------------------------------------------------
    @staticmethod
    def _parse_exit(m: str) -> tuple[str, Optional[int], str]:
        """`Process 'ForkPoolWorker-2' pid:6100 exited with 'signal 9 (SIGKILL)'` -> (process, pid, status)."""
        quote = m.find("'", 9)
        proc = m[9:quote] if quote > 9 else "?"
        pid = None
        at_pid = m.find(" pid:", quote)
        if at_pid > 0:
            end = m.find(" ", at_pid + 5)
            digits = m[at_pid + 5:end if end > 0 else None]
            pid = int(digits) if digits.isdigit() else None
        status = m[m.find(" exited with ") + 13:].strip().strip("'\"") if " exited with " in m else "?"
        return proc, pid, status

    def _exit_cause(self, proc: str, at: Optional[float]) -> tuple[Optional[str], bool]:
        """(the open task that process ran, when it logged from it; whether the exit is a hard time limit's)."""
        precise = self.proc_task.pop(proc, None)
        if precise is not None and precise in self.hard_ids:
            self.hard_pending = [p for p in self.hard_pending if p[1] != precise]
            return None, True
        if precise is not None and precise in self.open:
            return precise, False
        if self.hard_pending:  # the first exit soon after a hard time limit is that limit's kill
            limit_at = self.hard_pending[0][0]
            if at is None or limit_at is None or at - limit_at <= HARD_LIMIT_EXIT_WINDOW:
                self.hard_pending.pop(0)
                return None, True
        return None, False

    def _process_exit(self, m: str) -> None:
        proc, pid, status = self._parse_exit(m)
        at = self.now()
        self.active = True
        precise, after_limit = self._exit_cause(proc, at)
        kept = len(self.kills) < EVENTS_PER_INCARNATION  # beyond that, a death is counted, its tasks not named
        kill = dict(at=at, proc=clip(proc), pid=pid, status=clip(status), precise=precise,
                    open=self.open.snapshot() if kept and not (after_limit or precise) else (),
                    after_limit=after_limit, worker_lost=0, oom=False, where=self.where, line=None, lost=[])
        if precise is not None:  # the task that process was running (it logged from it): lost now
            name, _ = self.open.pop(precise)
            kill["lost"] = [(name, precise)]
        if after_limit:
            self._sum(P.HARD_TIME_LIMIT).bump("process_exits")
        else:
            kill["line"] = self.scanner.timeline.add(at, self.where, P.POOL_PROCESS_KILLED, important=True,
                                                      merge=False, proc=kill["proc"], pid=pid,
                                                      status=kill["status"])
        if kept:
            self.kills.append(kill)
        else:
            self.kills_dropped += 1
            if not after_limit:
                summary = self._sum(P.POOL_PROCESS_KILLED)
                summary.seen(at)
                summary.tally("signals", kill["status"])
        if pid is not None:
            self.scanner.note_exit(pid, kill, self)

    def _handler_error(self, m: str) -> None:
        # Task handler raised error: WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL) Job: 3.')
        if "WorkerLostError" not in m:
            return
        self.active = True
        for kill in reversed(self.kills):
            if not kill["after_limit"]:
                kill["worker_lost"] += 1
                return
        status = "?"
        start = m.find("exited prematurely: ")
        if start > 0:
            status = m[start + 20:].split(" Job:")[0].rstrip(".')\"")
        at = self.now()
        kill = dict(at=at, proc="?", pid=None, status=clip(status), precise=None, open=self.open.snapshot(),
                    after_limit=False, worker_lost=1, oom=False, where=self.where, lost=[],
                    line=self.scanner.timeline.add(at, self.where, P.POOL_PROCESS_KILLED, important=True,
                                                   merge=False, proc="a pool process", status=clip(status)))
        if len(self.kills) < EVENTS_PER_INCARNATION:
            self.kills.append(kill)

    def _limit(self, m: str) -> tuple[str, str, str]:
        # Hard time limit (1s) exceeded for exp.slow[a3ff...]
        close = m.find("s) exceeded for ", 16)
        seconds = m[17:close] if close > 0 else "?"
        target = m[close + 16:] if close > 0 else ""
        b = target.rfind("[")
        name, task_id = (target[:b], target[b + 1:].rstrip("]")) if b > 0 else (target, "")
        return clip(seconds), clip(name), clip(task_id)

    def _hard_limit(self, m: str) -> None:
        seconds, name, task_id = self._limit(m)
        at = self.now()
        self.active = True
        self.open.pop(task_id, None)
        summary = self._sum(P.HARD_TIME_LIMIT)
        summary.seen(at)
        summary.task(name, task_id or None)
        summary.tally("limits", f"{seconds} s")
        self.hard_pending.append((at, task_id))
        if len(self.hard_pending) > 64:
            self.hard_pending.pop(0)
        if len(self.hard_ids) > 1000:
            self.hard_ids.clear()
        self.hard_ids[task_id] = at
        if task_id in self.soft_open:
            self._soft_outcome(task_id, "hard")
        self.scanner.timeline.add(at, self.where, P.HARD_TIME_LIMIT, important=True, names=(name,),
                                  limit=seconds)

    def _soft_limit(self, m: str) -> None:
        seconds, name, task_id = self._limit(m)
        at = self.now()
        self.active = True
        summary = self._sum(P.SOFT_TIME_LIMIT)
        summary.seen(at)
        summary.task(name, task_id or None)
        summary.tally("limits", f"{seconds} s")
        if task_id and len(self.soft_open) < 5000:
            self.soft_open[task_id] = (name, summary)
        self.scanner.timeline.add(at, self.where, P.SOFT_TIME_LIMIT, names=(name,), limit=seconds)

    def _soft_outcome(self, task_id: str, outcome: str) -> None:
        _, summary = self.soft_open.pop(task_id)
        summary.tally("outcomes", outcome)

    def _unregistered(self, m: str) -> None:
        # Received unregistered task of type 'exp.nosuch'.
        raw = m[35:].rstrip()
        if raw.endswith("."):
            raw = raw[:-1]
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            raw = raw[1:-1]
        self.active = True
        self.pending = dict(kind="unregistered", name=clip(raw), id=None, at=self.now())
        self.expect = "unregistered"
        self.cont_seen = 0

    def _record_unregistered(self, pending: dict) -> None:
        summary = self._sum(P.UNREGISTERED)
        summary.seen(pending["at"])
        summary.task(pending["name"], pending["id"])
        self.scanner.timeline.add(pending["at"], self.where, P.UNREGISTERED, important=True,
                                  names=(pending["name"],))

    def _invalid(self, m: str) -> None:
        # Received invalid task message: Refusing to deserialize untrusted content of type pickle (...)
        reason = "invalid task message"
        refused = m.find("untrusted content of type ")
        if refused > 0:
            reason = "content type not accepted: " + clip(m[refused + 26:].strip()[:80])
        elif "Refusing to deserialize" in m:
            reason = "content type not accepted"
        self.active = True
        self.pending = dict(kind="invalid", reason=reason, at=self.now(), exc=None, task=None, id=None)
        self.expect = "exception"
        self.cont_seen = 0

    def _decode_error(self, m: str) -> None:
        # Can't decode message body: %r [type:%r encoding:%r headers:%s]
        content = "?"
        at_type = m.rfind("[type:")
        if at_type > 0:
            end = m.find(" encoding:", at_type)
            content = m[at_type + 6:end if end > 0 else at_type + 60].strip("'\"")
        task = _HEADER_TASK.search(m, at_type if at_type > 0 else 0)
        task_id = _HEADER_ID.search(m, at_type if at_type > 0 else 0)
        self.active = True
        self._record_rejected(dict(reason=f"body could not be decoded (content type {clip(content[:80])})",
                                   at=self.now(), exc=None, task=task.group(1) if task else None,
                                   id=task_id.group(1) if task_id else None))

    def _unknown_message(self, m: str) -> None:
        self.active = True
        self._record_rejected(dict(reason="not a task message (no task name: wrong destination)", at=self.now(),
                                   exc=None, task=None, id=None))

    def _record_rejected(self, pending: dict) -> None:
        summary = self._sum(P.REJECTED_MESSAGE)
        summary.seen(pending["at"])
        reason = pending["reason"]
        if pending.get("exc") and reason == "invalid task message":
            reason = f"invalid task message ({pending['exc']})"
        summary.tally("reasons", reason)
        if pending.get("task") or pending.get("id"):
            summary.task(pending.get("task"), pending.get("id"))
        self.scanner.timeline.add(pending["at"], self.where, P.REJECTED_MESSAGE, important=True, reason=reason)

    def _revoked(self, m: str) -> None:
        # Discarding revoked task: exp.ok[ef0f...]  ( + " (revoked by header: {...})")
        target = m[25:]
        extra = target.find("] (revoked by header")
        if extra > 0:
            target = target[:extra + 1]
        b = target.rfind("[")
        name, task_id = (target[:b], target[b + 1:].rstrip("]")) if b > 0 else (target, "")
        name, task_id = clip(name), clip(task_id)
        at = self.now()
        self.active = True
        self.open.pop(task_id, None)
        self.finished += 1
        summary = self._sum(P.REVOKED_DISCARDED)
        summary.seen(at)
        summary.task(name, task_id or None)
        how = "revoked (revoke seen in this log)" if task_id in self.flagged else \
            "revoked by header" if extra > 0 else "revoked elsewhere or expired"
        summary.tally("how", how)
        self.scanner.timeline.add(at, self.where, P.REVOKED_DISCARDED, names=(name,))

    def _flagged(self, m: str) -> None:
        for task_id in m[26:].split(","):
            task_id = task_id.strip()
            if task_id:
                self.flagged[task_id] = True
                if len(self.flagged) > 5000:
                    self.flagged.popitem(last=False)

    def _connection_lost(self, m: str) -> None:
        if not m.startswith("consumer: Connection to broker lost"):
            return
        at = self.now()
        self.active = True
        loss = dict(at=at, open=set(self.open.snapshot()), restored=0, reconnected=None, again=0, again_names=[])
        if len(self.losses) >= EVENTS_PER_INCARNATION:
            self.losses.pop(0)
        self.losses.append(loss)
        summary = self._sum(P.CONNECTION_LOST)
        summary.seen(at)
        summary.most("most_open", len(self.open))
        summary.bump("open_at_loss", len(self.open))
        line = self.scanner.timeline.add(at, self.where, P.CONNECTION_LOST, important=True, n_open=len(self.open))
        loss["line"] = line
        if "PRECONDITION_FAILED" in m and "delivery acknowledgement" in m:
            self._ack_timeout(m)
        self.pending = dict(kind="connection-lost", exc=None)
        self.expect = "exception"
        self.cont_seen = 0

    def _connected(self, m: str) -> None:
        if self.losses and self.losses[-1]["reconnected"] is None:
            loss = self.losses[-1]
            loss["reconnected"] = at = self.now()
            if at is not None and loss["at"] is not None:
                summary = self._sum(P.CONNECTION_LOST)
                summary.most("longest_s", at - loss["at"])
                if loss.get("line") is not None:
                    loss["line"].details.setdefault("reconnected_s", at - loss["at"])

    def _restoring(self, m: str) -> None:
        # Restoring 3 unacknowledged message(s)
        digits = m[10:m.find(" ", 10)] if m.find(" ", 10) > 0 else ""
        count = int(digits) if digits.isdigit() else 0
        if not count:
            return
        at = self.now()
        self.active = True
        if self.shutdown is not None:
            self.shutdown["restored"] += count
            if self.shutdown.get("line") is not None:
                self.shutdown["line"].details["n_restored"] = self.shutdown["line"].details.get("n_restored", 0) + count
        elif self.losses:
            self.losses[-1]["restored"] += count
            self._sum(P.CONNECTION_LOST).bump("restored", count)
            if self.losses[-1].get("line") is not None:
                details = self.losses[-1]["line"].details
                details["n_restored"] = details.get("n_restored", 0) + count
        else:
            self.scanner.timeline.add(at, self.where, "restored", n_restored=count)

    def _unrecoverable(self, m: str) -> None:
        # Unrecoverable error: PreconditionFailed(406, 'PRECONDITION_FAILED - delivery acknowledgement ...')
        at = self.now()
        self.active = True
        detail = m[21:]
        paren = detail.find("(")
        exc = clip(detail[:paren] if paren > 0 else detail[:60])
        self.unrecoverable = dict(at=at, exc=exc)
        if "PRECONDITION_FAILED" in m and "delivery acknowledgement" in m:
            self._ack_timeout(m)
        else:
            self.scanner.timeline.add(at, self.where, "unrecoverable", important=True, exc=exc)
        self.pending = dict(kind="unrecoverable", exc=None)
        self.expect = "exception"
        self.cont_seen = 0

    def _ack_timeout(self, text: str) -> None:
        if self.pending is not None and self.pending.get("acked"):
            return
        if self.pending is not None:
            self.pending["acked"] = True
        at = self.now()
        summary = self._sum(P.ACK_TIMEOUT)
        summary.seen(at)
        found = _TIMEOUT_MS.search(text)
        if found:
            summary.most("timeout_ms", int(found.group(1)))
        summary.bump("open_tasks", len(self.open))
        for task_id in self.open.snapshot()[-SAMPLE:]:
            name, _ = self.open[task_id]
            summary.task(name, task_id)
        self.scanner.timeline.add(at, self.where, P.ACK_TIMEOUT, important=True,
                                  timeout_ms=int(found.group(1)) if found else None, n_open=len(self.open))

    def _missed_heartbeat(self, m: str) -> None:
        node = clip(m[21:].strip())
        at = self.now()
        summary = self._sum(P.MISSED_HEARTBEAT)
        summary.seen(at)
        summary.tally("nodes", node)
        self.scanner.timeline.add(at, self.where, P.MISSED_HEARTBEAT, names=(node,))

    def _drift(self, m: str) -> None:
        # Substantial drift from celery@w2 may mean clocks are out of sync.  Current drift is 120 seconds.  [...]
        end = m.find(" may mean", 23)
        node = clip(m[23:end] if end > 0 else m[23:80])
        drift = None
        at_drift = m.find("Current drift is ")
        if at_drift > 0:
            digits = m[at_drift + 17:].split(" ", 1)[0]
            try:
                drift = float(digits)
            except ValueError:
                drift = None
        at = self.now()
        summary = self._sum(P.CLOCK_DRIFT)
        summary.seen(at)
        summary.tally("nodes", node)
        if drift is not None:
            summary.most("max_drift_s", drift)
        self.scanner.timeline.add(at, self.where, P.CLOCK_DRIFT, names=(node,), drift=drift)

    def _beat_send(self, m: str) -> None:
        # Scheduler: Sending due task tick (exp.ok)
        body = m[28:]
        paren = body.rfind(" (")
        entry, task = (body[:paren], body[paren + 2:].rstrip(")")) if paren > 0 else (body, "?")
        self.scanner.beat_send(clip(entry), clip(task), self, self.now())

    def _beat_start(self, m: str) -> None:
        self.scanner.timeline.add(self.now(), self.where, "beat-start")

    def _shutdown_line(self, line: str) -> None:
        if line.startswith("worker: Warm shutdown"):
            self._shutdown("warm")
        elif line.startswith("worker: Cold shutdown"):
            self._shutdown("cold")

    def _soft_shutdown(self, m: str) -> None:
        self._shutdown("soft")

    def _shutdown(self, how: str) -> None:
        at = self.now()
        self.active = True
        if self.shutdown is None:
            line = self.scanner.timeline.add(at, self.where, "shutdown", important=bool(self.open), merge=False,
                                             how=how, n_open=len(self.open))
            self.shutdown = dict(at=at, how=how, open=len(self.open), restored=0, line=line)
        elif how == "cold" and self.shutdown["how"] != "cold":
            self.shutdown["how"] = "warm, then cold"
            if self.shutdown.get("line") is not None:
                self.shutdown["line"].details["how"] = "warm, then cold"

    def _banner(self, line: str) -> None:
        # " -------------- celery@host v5.7.0 (collider)"
        node = line[16:].split(" ", 1)[0]
        if "@" in node and self.node is None and not self.active:
            self.node = clip(node)

    def _ready(self, node: str) -> None:
        if self.active:
            self.end_incarnation("restart")
            self._new_incarnation()
        self.node = clip(node)
        self.scanner.workers.setdefault(self.node, None)
        self.scanner.timeline.add(self.now(), self.where, "worker-ready")

    def _retries_exhausted(self, name: str, task_id: str, tries: int) -> None:
        at = self.now()
        summary = self._sum(P.RETRIES_EXHAUSTED)
        summary.seen(at)
        summary.task(name, task_id)
        summary.tally("how", "MaxRetriesExceededError" if not tries else "failed after retrying")
        if tries:
            summary.most("most_retries", tries)
        self.scanner.timeline.add(at, self.where, P.RETRIES_EXHAUSTED, names=(clip(name),))

    def kernel_line(self, line: str) -> bool:
        """OOM-killer lines: `Killed process N (comm)` and `oom-kill:...,task=comm,pid=N`."""
        found = _KILLED.search(line)
        if found:
            pid, comm = int(found.group(1)), found.group(2)
        else:
            found = _OOM_KILL.search(line)
            if not found:
                return False
            comm, pid = found.group(1), int(found.group(2))
        self.scanner.oom_kill(pid, clip(comm), self, self.now(), cgroup="cgroup" in line or "CONSTRAINT_MEMCG" in line)
        return True

    # -- the end of an incarnation ---------------------------------------------------------------------------
    def end_incarnation(self, reason: str) -> None:
        """Attribute the tasks still open: to dead pool processes, a shutdown, a restart, or the end of the log."""
        if self.pending is not None:
            self._flush_pending()
        at_end = self.now()
        self._attribute_kills()
        for task_id in list(self.soft_open):
            self._soft_outcome(task_id, "unfinished")
        if self.open and (self.shutdown or self.unrecoverable or reason == "restart"):
            self._stopped_with_tasks(at_end)
        elif self.open and reason != "cut":
            self._never_finished(at_end)
        if self.open.forgotten:
            self.scanner.forgotten += self.open.forgotten
        self.scanner.received += self.received
        self.scanner.finished += self.finished
        self.received = self.finished = 0
        self.open = OpenTasks()
        self.proc_task.clear()

    def _attribute_kills(self) -> None:
        """Each dead pool process takes the tasks open when it died that never finished afterwards."""
        open_ = self.open
        for kill in self.kills:
            if kill["after_limit"]:
                continue
            lost: list[tuple[str, str]] = list(kill["lost"])
            if kill["precise"] is None:
                for task_id in kill["open"]:
                    if task_id in open_:
                        name, _ = open_.pop(task_id)
                        lost.append((name, task_id))
            kill["lost"] = lost
            kill["candidates"] = len(kill["open"]) if kill["precise"] is None else 1
            kill["open"] = ()  # attributed: the ids are no longer needed (the kill stays, for the OOM join)
            self.scanner.record_kill(kill, self)

    def _stopped_with_tasks(self, at_end: Optional[float]) -> None:
        open_, shutdown, unrecoverable = self.open, self.shutdown, self.unrecoverable
        if shutdown:
            how, at = f"{shutdown['how']} shutdown", shutdown["at"]
        elif unrecoverable:
            how, at = f"unrecoverable error ({unrecoverable['exc']})", unrecoverable["at"]
        else:
            how, at = "restarted without a logged shutdown (killed?)", at_end
        summary = self._sum(P.STOPPED_WITH_TASKS)
        summary.seen(at)
        summary.tally("how", how)
        if shutdown:
            summary.bump("restored", shutdown["restored"])
        for task_id, (name, _) in open_.items():
            summary.task(name, task_id)
        self.scanner.timeline.add(at_end, self.where, P.STOPPED_WITH_TASKS, important=True, merge=False,
                                  names=[name for name, _ in islice(open_.values(), 50)], how=how,
                                  n_open=len(open_))

    def _never_finished(self, at_end: Optional[float]) -> None:
        open_ = self.open
        summary = self._sum(P.NEVER_FINISHED)
        summary.seen(at_end)
        for task_id, (name, stamp) in open_.items():
            summary.task(name, task_id)
            received, _ = parse_time(stamp, self.year)
            if received is not None and at_end is not None:
                summary.most("oldest_s", at_end - received)
                if at_end - received <= 60:
                    summary.bump("last_minute")
        self.scanner.timeline.add(at_end, self.where, P.NEVER_FINISHED, important=True, merge=False,
                                  names=[name for name, _ in islice(open_.values(), 50)], n_open=len(open_))


def _m(name: str):
    return getattr(Stream, name)


_DISPATCH: dict[str, list] = {}
for _prefix, _method in (
        ("Discarding revoked task: ", "_revoked"),
        ("Hard time limit (", "_hard_limit"),
        ("Soft time limit (", "_soft_limit"),
        ("Process '", "_process_exit"),
        ("Received unregistered task of type ", "_unregistered"),
        ("Received invalid task message: ", "_invalid"),
        ("Received and deleted unknown message", "_unknown_message"),
        ("Can't decode message body: ", "_decode_error"),
        ("consumer: Connection to broker lost", "_connection_lost"),
        ("Connected to ", "_connected"),
        ("Restoring ", "_restoring"),
        ("Unrecoverable error: ", "_unrecoverable"),
        ("missed heartbeat from ", "_missed_heartbeat"),
        ("Substantial drift from ", "_drift"),
        ("Scheduler: Sending due task ", "_beat_send"),
        ("beat: Starting", "_beat_start"),
        ("Tasks flagged as revoked: ", "_flagged"),
        ("Initiating Soft Shutdown", "_soft_shutdown"),
        ("worker: Warm shutdown", "_shutdown_line"),
        ("worker: Cold shutdown", "_shutdown_line")):
    _DISPATCH.setdefault(_prefix[0], []).append((_prefix, _m(_method)))


class Scanner:
    """Reads inputs into streams; collects summaries, the timeline, beat sends and OOM kills; builds the state."""

    def __init__(self, stop: Optional[Callable[[], bool]] = None) -> None:
        self.stop = stop  # asked between batches of lines: True stops the reading (a deadline)
        self.cut_short: Optional[str] = None  # the input the reading stopped in
        self.streams: dict[Any, Stream] = {}
        self.summaries: dict[tuple[str, str], Summary] = {}
        self.timeline = Timeline()
        self.beat: dict[str, dict] = {}
        self.beat_dropped = 0
        self.oom: dict[int, dict] = {}
        self.exits: dict[int, tuple[dict, Stream]] = {}
        self.workers: dict[str, None] = {}
        self.naive = False
        self.bad_json = 0
        self.forgotten = 0
        self.received = 0
        self.finished = 0
        self.sources: list[P.LogSource] = []
        self.notes: list[str] = []
        self.lines = 0
        self.journald_keys: Optional[tuple] = None
        self.journald_last: tuple = (None, None, None)  # (host, unit, stream) of the last journald record
        self.retries: OrderedDict = OrderedDict()  # ids that logged `retry:` and have not ended since
        self.started = time.monotonic()

    # -- bookkeeping used by streams -----------------------------------------------------------------------
    def summary(self, kind: str, stream: Stream) -> Summary:
        key = (kind, stream.where)
        found = self.summaries.get(key)
        if found is None:
            if len(self.summaries) > 5000:
                key = (kind, "(other places)")
                found = self.summaries.get(key)
            if found is None:
                found = self.summaries[key] = Summary(kind, key[1])
        found.sources.update(list(stream.sources)[:5])
        return found

    def retried(self, task_id: str) -> None:
        """A task logged `retry:` (its next delivery carries the same id, on any worker)."""
        retries = self.retries
        retries[task_id] = retries.pop(task_id, 0) + 1
        if len(retries) > MAX_RETRIED:
            retries.popitem(last=False)  # O(1): a dict's first key after many deletions is not

    def record_kill(self, kill: dict, stream: Stream) -> None:
        summary = self.summaries.get((P.POOL_PROCESS_KILLED, kill["where"]))
        if summary is None:
            summary = self.summaries[(P.POOL_PROCESS_KILLED, kill["where"])] = Summary(P.POOL_PROCESS_KILLED,
                                                                                        kill["where"])
        summary.sources.update(list(stream.sources)[:5])
        summary.seen(kill["at"])
        summary.tally("signals", kill["status"])
        summary.keep("processes", kill["proc"])
        if kill["pid"] is not None:
            summary.keep("pids", kill["pid"])
        summary.bump("worker_lost_errors", kill["worker_lost"])
        summary.bump("candidates", kill["candidates"])
        if kill["precise"] is not None:
            summary.bump("identified")
        for name, task_id in kill["lost"]:
            summary.task(name, task_id)
        kill["summary"] = summary
        line = kill.get("line")
        if line is not None:
            for name, task_id in kill["lost"]:
                line.names.add(f"{name}[{_short(task_id)}]")
            line.details["n_lost"] = len(kill["lost"])

    def note_exit(self, pid: int, kill: dict, stream: Stream) -> None:
        if len(self.exits) > 10000:
            self.exits.clear()
        self.exits[pid] = (kill, stream)

    def oom_kill(self, pid: int, comm: str, stream: Stream, at: Optional[float], cgroup: bool) -> None:
        found = self.oom.get(pid)
        if found is not None and (at is None or found["at"] is None or abs(at - found["at"]) < 120):
            return  # the same kill, said twice (oom-kill: and Killed process)
        if len(self.oom) >= MAX_OOM:
            return
        self.oom[pid] = dict(pid=pid, comm=comm, at=at, where=stream.where, cgroup=cgroup, sources=set(stream.sources))

    def beat_send(self, entry: str, task: str, stream: Stream, at: Optional[float]) -> None:
        origins = self.beat.get(entry)
        if origins is None:
            if len(self.beat) >= MAX_BEAT_ENTRIES:
                self.beat_dropped += 1
                return
            origins = self.beat[entry] = {}
        key = stream.where
        stats = origins.get(key)
        if stats is None:
            if len(origins) > 20:
                return
            stats = origins[key] = dict(count=0, first=at, last=at, gap=None, task=task, sources=set())
        stats["count"] += 1
        stats["sources"].update(list(stream.sources)[:3])
        if at is not None:
            if stats["last"] is not None and at >= stats["last"]:
                gap = at - stats["last"]
                if gap > 0 and (stats["gap"] is None or gap < stats["gap"]):
                    stats["gap"] = gap
            if stats["first"] is None or at < stats["first"]:
                stats["first"] = at
            if stats["last"] is None or at > stats["last"]:
                stats["last"] = at

    # -- inputs --------------------------------------------------------------------------------------------
    def stream(self, key: Any, label: str, source: str, kernel: bool = False, year: Optional[int] = None) -> Stream:
        found = self.streams.get(key)
        if found is None:
            if len(self.streams) >= MAX_STREAMS:
                key, label = ("(other)",), "(other streams)"
                found = self.streams.get(key)
            if found is None:
                found = self.streams[key] = Stream(self, key, label, kernel)
        if source not in found.sources and len(found.sources) < 50:
            found.sources.add(source)
        if year and not found.year:
            found.year = year
        return found

    def read(self, item: Input) -> None:
        stats = LineStats()
        year = time.gmtime(item.mtime).tm_year if item.mtime else None
        base = self.stream(("file", item.family), _label_for(item), item.name, year=year)
        self.journald_last = (None, None, None)  # a new input: its streams record it as their source
        records_before = {id(s): s.records for s in self.streams.values()}
        base.want_first = True
        reading = _Reading(item, base, year)
        error = None
        try:
            self._read_batches(reading, stats)
        except (OSError, EOFError, ValueError) as exc:  # gzip's BadGzipFile is an OSError
            error = f"read stopped: {type(exc).__name__}: {exc}"
        self.lines += stats.lines
        touched = [s for s in self.streams.values() if s.records != records_before.get(id(s), 0)]
        self.sources.append(self._source(item, reading.mode, stats, touched, records_before, error))
        for s in touched:
            s.want_first = True

    def _read_batches(self, reading: "_Reading", stats: LineStats) -> None:
        base = reading.base
        for batch in read_batches(reading.item, stats):
            if self.stop is not None and self.stop():
                self.cut_short = reading.item.name
                return
            if reading.mode is None:
                reading.mode = _sniff_mode(batch)
                base.kernel = base.kernel or reading.mode == "dmesg"
            if reading.mode == "plain":
                feed = base.feed
                for line in batch:
                    feed(line)
                    feed = base.feed  # the first line decides the stream's layout (and its feed)
            else:
                handle = ENVELOPES[reading.mode]
                for line in batch:
                    if line and not handle(self, line, reading):
                        base.feed(line)  # not in the envelope's shape: a line of the file's own stream

    @staticmethod
    def _source(item: Input, mode: Optional[str], stats: LineStats, touched: list[Stream],
                records_before: dict[int, int], error: Optional[str]) -> P.LogSource:
        formats: list[str] = [mode] if mode and mode != "plain" else []
        for stream in touched:
            formats.extend(sorted(stream.layouts - set(formats)))
        firsts = [s.first_at for s in touched if s.first_at is not None]
        lasts = [t for t in (s.now() for s in touched) if t is not None]
        return P.LogSource(
            name=item.name, formats=tuple(dict.fromkeys(formats)), lines=stats.lines,
            records=sum(s.records - records_before.get(id(s), 0) for s in touched),
            first=min(firsts) if firsts else None, last=max(lasts) if lasts else None, error=error,
            cut_lines=stats.cut)

    # -- envelopes: one handler per mode; True when the line was the envelope's (and fed to its stream) ------
    def _cri_line(self, line: str, reading: "_Reading") -> bool:
        if not looks_cri(line):
            return False
        parts = split_cri(line)
        if parts is None:
            return True
        stamp, tag, text = parts
        base = reading.base
        if tag == "P":  # a partial line: the next ones continue it, up to an F
            reading.partial = (reading.partial + text)[:MAX_PARTIAL]
            return True
        if reading.partial:
            text, reading.partial = reading.partial + text, ""
        base.outer = stamp
        base.feed(text)
        base.outer = None
        return True

    def _journald_line(self, line: str, reading: "_Reading") -> bool:
        if line[:1] != "{":
            return False
        if not self._journald_fast(line, reading.item):
            record = self._json_line(line)
            if record is not None:
                self._envelope_json(record, reading.item, reading.base, line)
        return True

    def _docker_line(self, line: str, reading: "_Reading") -> bool:
        if line[:1] != "{":
            return False
        keys, base = reading.docker_keys, reading.base
        if keys:
            text = fast_string(line, keys[0])
            if text is not None:
                base.outer = fast_string(line, keys[1]) if keys[1] else None
                base.feed(text)
                base.outer = None
                return True
        record = self._json_line(line)
        if record is None:
            return True
        if keys is None and isinstance(record.get("log"), str):  # learn how this file spells its keys
            log_key = key_pattern(line, "log")
            reading.docker_keys = (log_key, key_pattern(line, "time") if "time" in record else None) if log_key else ()
        self._envelope_json(record, reading.item, base, line)
        return True

    def _json_line(self, line: str) -> Optional[dict]:
        try:
            record = json.loads(line)
        except ValueError:
            self.bad_json += 1
            return None
        return record if isinstance(record, dict) else None

    def _kubectl_line(self, line: str, reading: "_Reading") -> bool:
        parts = split_kubectl_prefix(line)
        if not parts:
            return False
        self.stream(("kubectl", parts[0]), parts[0], reading.item.name).feed(parts[1])
        return True

    def _compose_line(self, line: str, reading: "_Reading") -> bool:
        parts = split_compose(line)
        if not parts:
            return False
        self.stream(("compose", reading.item.family, parts[0]), parts[0], reading.item.name).feed(parts[1])
        return True

    def _syslog_line(self, line: str, reading: "_Reading") -> bool:
        parts = split_syslog(line)
        if not parts:
            return False
        stamp, host, program, text = parts
        bracket = program.find("[")
        name = program[:bracket] if bracket > 0 else program.rstrip(":")
        stream = self.stream(("syslog", host, name), f"{host}/{name}", reading.item.name, kernel=name == "kernel",
                             year=reading.year)
        if bracket > 0 and program[bracket + 1:-1].isdigit() and len(stream.pids) < 64:
            stream.pids.add(int(program[bracket + 1:-1]))
        stream.outer = stamp
        stream.feed(text)
        stream.outer = None
        return True

    def _dmesg_line(self, line: str, reading: "_Reading") -> bool:
        parts = split_dmesg(line)
        if not parts:
            return False
        base = reading.base
        base.outer = parts[0] or None
        base.feed(parts[1])
        base.outer = None
        return True

    JOURNALD_KEYS = ("MESSAGE", "__REALTIME_TIMESTAMP", "_HOSTNAME", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER",
                     "_TRANSPORT", "_PID")

    def _journald_fast(self, line: str, item: Input) -> bool:
        """A journald record read with find (its fields as journalctl writes them); False: parse it."""
        keys = self.journald_keys
        if keys is None:
            return False
        (p_text, n_text), stamp_key, (p_host, n_host), (p_unit, n_unit) = keys[:4]
        find = line.find
        at = find(p_text)
        if at < 0:
            return False
        at += n_text
        end = find('"', at)
        text = line[at:end]
        if end < 0 or "\\" in text:
            return False
        at = find(p_host)
        host = line[at + n_host:find('"', at + n_host)] if at >= 0 else "?"
        at = find(p_unit)
        unit = line[at + n_unit:find('"', at + n_unit)] if at >= 0 else None
        last = self.journald_last
        if unit and last[0] == host and last[1] == unit:  # the same stream as the record before
            stream = last[2]
        else:
            stream = self._journald_stream(line, host, unit, item)
        if not stream.pids or text.endswith(" ready."):  # the main process's pid: at the start, at each restart
            p_pid, n_pid = keys[6]
            at = find(p_pid)
            pid = line[at + n_pid:find('"', at + n_pid)] if at >= 0 else None
            if pid and len(stream.pids) < 64 and pid.isdigit():
                stream.pids.add(int(pid))
        stream.json_line = line  # its time is read from it only when needed
        stream.outer_key = stamp_key
        stream.outer = PENDING
        stream.feed(text)
        stream.outer = None
        return True

    def _journald_stream(self, line: str, host: str, unit: Optional[str], item: Input) -> Stream:
        """The stream of a journald record: its unit's on its host; without a unit, its identifier's, or the
        host's kernel."""
        kernel = False
        if not unit:
            (p_ident, n_ident), (p_transport, n_transport) = self.journald_keys[4:6]
            at = line.find(p_ident)
            ident = line[at + n_ident:line.find('"', at + n_ident)] if at >= 0 else None
            at = line.find(p_transport)
            transport = line[at + n_transport:line.find('"', at + n_transport)] if at >= 0 else None
            kernel = transport == "kernel" or ident == "kernel"
            unit = ident
        name = "kernel" if kernel else (unit or "?")
        key = ("journald", host, name)
        stream = self.streams.get(key)
        if stream is None or item.name not in stream.sources:
            stream = self.stream(key, f"{host}/{name}", item.name, kernel=kernel)
        self.journald_last = (host, None if kernel else unit, stream)
        return stream

    def _envelope_json(self, record: dict, item: Input, base: Stream, line: str = "") -> None:
        if "MESSAGE" in record:
            self._journald_record(record, item, line)
            return
        log = record.get("log")
        if isinstance(log, str):  # docker json-file
            base.outer = record.get("time")
            base.feed(log[:-1] if log.endswith("\n") else log)
            base.outer = None
            return
        base.feed(json.dumps(record))  # a JSON log record where an envelope was expected

    def _journald_record(self, record: dict, item: Input, line: str) -> None:
        """A journald record read with json.loads (the first one, or one the fast path cannot read)."""
        if self.journald_keys is None and isinstance(record.get("MESSAGE"), str):
            pattern = key_pattern(line, "MESSAGE")
            if pattern is not None:  # the separator journalctl uses (`"KEY" : "`), for every key
                separator = pattern[len('"MESSAGE"'):]
                self.journald_keys = tuple((f'"{key}"{separator}"', len(key) + len(separator) + 3)
                                           for key in self.JOURNALD_KEYS)
        text = as_text(record.get("MESSAGE"))
        if text is None:
            return
        host = str(record.get("_HOSTNAME") or "?")
        ident = record.get("SYSLOG_IDENTIFIER") or record.get("_COMM") or "?"
        kernel = record.get("_TRANSPORT") == "kernel" or ident == "kernel"
        name = "kernel" if kernel else str(record.get("_SYSTEMD_UNIT") or ident)
        stream = self.stream(("journald", host, name), f"{host}/{name}", item.name, kernel=kernel)
        pid = record.get("_PID")
        if isinstance(pid, str) and pid.isdigit() and len(stream.pids) < 64:
            stream.pids.add(int(pid))
        stream.outer = record.get("__REALTIME_TIMESTAMP") or record.get("_SOURCE_REALTIME_TIMESTAMP")
        for part in text.split("\n")[:MAX_CONTINUATION] if "\n" in text else (text,):
            stream.feed(part)
        stream.outer = None

    # -- the result ----------------------------------------------------------------------------------------
    def finish(self) -> P.LogsState:
        for stream in list(self.streams.values()):
            stream.end_incarnation("cut" if self.cut_short else "end")
        if self.cut_short:
            self.notes.insert(0, f"reading stopped at the deadline in {self.cut_short} (the rest of it and any "
                                 "later log were not read): tasks still open there are not reported as lost")
        self._oom_signatures()
        self._beat_signatures()
        signatures = [self._signature(s) for s in self.summaries.values() if s.count or s.tasks_total]
        signatures.sort(key=lambda s: (P.KINDS.index(s.kind) if s.kind in P.KINDS else 99, s.where))
        timeline, omitted = self._timeline()
        notes = list(self.notes)
        if self.forgotten:
            notes.append(f"{self.forgotten:,} received tasks were forgotten before they finished (each worker's "
                         f"ledger keeps the latest 20,000): their loss, if any, is not counted")
        cut = sum(s.cut_lines for s in self.sources)
        if cut:
            notes.append(f"{cut:,} line(s) longer than 64 KiB were cut (the rest of each was not read)")
        if self.bad_json:
            notes.append(f"{self.bad_json:,} line(s) looked like JSON but did not parse")
        if self.beat_dropped:
            notes.append(f"{self.beat_dropped:,} beat sends of further entries were not tracked (2,000 entries kept)")
        for source in self.sources:
            if source.error:
                notes.append(f"{source.name}: {source.error}")
        return P.LogsState(
            sources=tuple(self.sources), signatures=tuple(signatures), timeline=timeline, timeline_omitted=omitted,
            lines=self.lines, records=sum(s.records for s in self.sources), tasks_received=self.received,
            tasks_finished=self.finished, workers=tuple(self.workers), naive_times=self.naive,
            notes=tuple(notes), elapsed_s=round(time.monotonic() - self.started, 3))

    def _signature(self, s: Summary) -> P.Signature:
        details = {}
        for key, value in s.details.items():
            if isinstance(value, dict):
                value = dict(sorted(value.items(), key=lambda kv: (-kv[1], kv[0])))
            elif isinstance(value, list):
                value = tuple(value)
            details[key] = value
        return P.Signature(kind=s.kind, where=s.stream, count=s.count, first=s.first, last=s.last,
                           tasks=tuple(s.tasks), tasks_total=s.tasks_total, names=s.names.most(), details=details,
                           sources=tuple(sorted(s.sources))[:10])

    def _oom_signatures(self) -> None:
        pids_by_stream = {pid: stream for stream in self.streams.values() for pid in stream.pids
                          if not stream.kernel}
        for kill in sorted(self.oom.values(), key=lambda k: (k["at"] is None, k["at"] or 0)):
            exited = self.exits.get(kill["pid"])
            main = pids_by_stream.get(kill["pid"])
            celery_like = kill["comm"].startswith(CELERY_PROCESS_NAMES) or exited is not None or main is not None
            key = (P.OOM_KILL, kill["where"])
            summary = self.summaries.get(key)
            if summary is None:
                summary = self.summaries[key] = Summary(P.OOM_KILL, kill["where"])
            summary.sources.update(kill["sources"])
            if not celery_like:
                summary.bump("other_processes")
                continue
            summary.seen(kill["at"])
            summary.keep("pids", kill["pid"])
            summary.tally("processes", kill["comm"])
            if kill["cgroup"]:
                summary.bump("cgroup")
            label = None
            if exited is not None:
                pool_kill = exited[0]
                pool_kill["oom"] = True
                label = f"{pool_kill['proc']} of {pool_kill['where']}"
                summary.keep("matched", label)
                for name, task_id in pool_kill.get("lost", ()):
                    summary.task(name, task_id)
                if pool_kill.get("summary") is not None:
                    pool_kill["summary"].bump("oom")
                if pool_kill.get("line") is not None:
                    pool_kill["line"].details["oom"] = True
            elif main is not None:
                label = f"the main process of {main.where}"
                summary.keep("matched", label)
            self.timeline.add(kill["at"], kill["where"], P.OOM_KILL, important=True, merge=False, pid=kill["pid"],
                              comm=kill["comm"], matched=label)
        for key in [k for k, s in self.summaries.items() if k[0] == P.OOM_KILL and not s.count]:
            other = self.summaries.pop(key)
            self.notes.append(f"the kernel's OOM killer killed {other.details.get('other_processes', 0)} other "
                              f"process(es) on {other.stream} (not celery)")

    def _beat_signatures(self) -> None:
        for entry, origins in self.beat.items():
            if len(origins) < 2:
                continue
            ranked = sorted(origins.items(), key=lambda kv: -kv[1]["count"])
            duplicates, overlap_first = _beat_overlap(ranked)
            if duplicates:
                self._beat_duplicate(entry, ranked, duplicates, overlap_first)

    def _beat_duplicate(self, entry: str, ranked: list, duplicates: int, overlap_first: Optional[float]) -> None:
        main = ranked[0][1]
        where = " + ".join(w for w, _ in ranked[:4]) + (f" + {len(ranked) - 4} more" if len(ranked) > 4 else "")
        summary = self.summaries[(P.BEAT_DUPLICATE, entry)] = Summary(P.BEAT_DUPLICATE, where)
        summary.count = duplicates
        firsts = [s["first"] for _, s in ranked if s["first"] is not None]
        lasts = [s["last"] for _, s in ranked if s["last"] is not None]
        summary.first = max(overlap_first, min(firsts)) if firsts else overlap_first
        summary.last = max(lasts) if lasts else None
        summary.details.update(entry=entry, task=main["task"], origins={w: s["count"] for w, s in ranked},
                               period_s=min((s["gap"] for _, s in ranked if s["gap"]), default=None))
        for _, stats in ranked:
            summary.sources.update(stats["sources"])
        summary.names.add(main["task"], duplicates)
        summary.tasks_total = duplicates
        self.timeline.add(summary.first, where, P.BEAT_DUPLICATE, important=True, merge=False,
                          entry=entry, n_dup=duplicates, origins=len(ranked))

    def _timeline(self) -> tuple[tuple[TimelineEvent, ...], int]:
        from .describe import describe

        lines = sorted(self.timeline.lines, key=lambda entry: (entry.at is None, entry.at or 0.0))
        omitted = self.timeline.omitted
        if len(lines) > TIMELINE_KEPT:
            important = [entry for entry in lines if entry.important]
            if len(important) >= TIMELINE_KEPT:
                keep = set(map(id, important[:TIMELINE_KEPT // 2] + important[-TIMELINE_KEPT // 2:]))
            else:
                rest = [entry for entry in lines if not entry.important]
                room = TIMELINE_KEPT - len(important)
                keep = set(map(id, important + rest[:room // 2] + rest[len(rest) - (room - room // 2):]))
            omitted += len(lines) - len(keep)
            lines = [entry for entry in lines if id(entry) in keep]
        events = tuple(TimelineEvent(at=entry.at, where=str(entry.where), what=describe(entry), kind=entry.kind,
                                     count=entry.count, until=entry.until if entry.until != entry.at else None,
                                     important=entry.important)
                       for entry in lines)
        return events, omitted


class _Reading:
    """One input being read: its file stream, the year its syslog times lack, its envelope's state."""

    __slots__ = ("base", "docker_keys", "item", "mode", "partial", "year")

    def __init__(self, item: Input, base: Stream, year: Optional[int]) -> None:
        self.item = item
        self.base = base
        self.year = year
        self.mode: Optional[str] = None  # plain, or the envelope every line of it has (sniffed from the first)
        self.partial = ""  # a CRI line's partial pieces
        self.docker_keys: Optional[tuple] = None  # how this docker json-file spells `"log": ` and `"time": `


ENVELOPES = {"cri": Scanner._cri_line, "journald": Scanner._journald_line, "docker": Scanner._docker_line,
             "kubectl": Scanner._kubectl_line, "compose": Scanner._compose_line, "syslog": Scanner._syslog_line,
             "dmesg": Scanner._dmesg_line}


def _label_for(item: Input) -> str:
    if item.path is None:
        return "stdin"
    path = os.path.abspath(item.path)
    pod = _POD_DIR.search(path)
    if pod:
        return f"{pod.group(2)}/{pod.group(3)}"
    containers = _CONTAINERS_LOG.search(path)
    if containers:
        return f"{containers.group(1)}/{containers.group(3)}"
    docker = _CONTAINER_ID.search(path)
    if docker:
        return f"container {docker.group(1)}"
    return os.path.basename(item.family)


def _beat_overlap(ranked: list) -> tuple[int, Optional[float]]:
    """(about how many sends of the other places fell while the busiest one was sending the same entry, when the
    overlap starts). Two places overlapping by at most half a period are one taking over from the other."""
    main = ranked[0][1]
    duplicates, overlap_first = 0, None
    for _, stats in ranked[1:]:
        if None in (main["first"], main["last"], stats["first"], stats["last"]):
            continue
        period = min(g for g in (main["gap"], stats["gap"], 3600.0) if g)
        start = max(main["first"], stats["first"]) - period / 2
        end = min(main["last"], stats["last"]) + period / 2
        if end < start:
            continue  # one took over from the other (a failover, not two at once)
        span = max(stats["last"] - stats["first"], 0.0)
        share = 1.0 if span == 0 else min(1.0, (end - start) / (span + period))
        duplicates += max(1, round(stats["count"] * share))
        overlap_first = start if overlap_first is None else min(overlap_first, start)
    return duplicates, overlap_first


def _sniff_json(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return "plain"
    if not isinstance(record, dict):
        return "plain"
    if "MESSAGE" in record and ("__REALTIME_TIMESTAMP" in record or "_HOSTNAME" in record
                                or "SYSLOG_IDENTIFIER" in record):
        return "journald"
    if isinstance(record.get("log"), str) and ("stream" in record or "time" in record):
        return "docker"
    return "plain"


def _sniff_line(line: str) -> str:
    """The envelope a file's first line has (plain: none, the worker's own lines)."""
    if line[:1] == "{":
        return _sniff_json(line)
    if looks_cri(line):
        return "cri"
    if split_kubectl_prefix(line):
        return "kubectl"
    if line[:1] == "[":
        return "dmesg" if split_dmesg(line) else "plain"
    parts = split_syslog(line)
    if parts and (line[:3].isalpha() or "[" in parts[2] or parts[2] == "kernel"):
        return "syslog"
    if not line[:1].isdigit() and split_compose(line):
        return "compose"
    return "plain"


def _sniff_mode(batch: list[str]) -> str:
    first = next((line for line in batch[:50] if line.strip()), None)
    return "plain" if first is None else _sniff_line(first)


def scan(inputs: Iterable[Input], stop: Optional[Callable[[], bool]] = None) -> P.LogsState:
    """Read every input once, in order; the logs part's data. `stop()` is asked between batches of lines."""
    scanner = Scanner(stop)
    for item in inputs:
        if scanner.cut_short:
            break
        scanner.read(item)
    return scanner.finish()
