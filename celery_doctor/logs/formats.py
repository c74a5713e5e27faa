"""Log line formats: times, the envelopes log collectors wrap lines in, and JSON log records.

Envelopes (the outer layer; what is inside is a line of the worker's own log, itself plain or JSON):

- `journalctl -o json`: one object a line; MESSAGE (a string, or a list of bytes when not UTF-8),
  __REALTIME_TIMESTAMP (microseconds since the epoch), _HOSTNAME, SYSLOG_IDENTIFIER, _SYSTEMD_UNIT, _PID,
  _TRANSPORT ("kernel" for the kernel's ring buffer).
- docker's json-file driver: `{"log": "...\\n", "stream": "stdout", "time": "2024-05-01T10:00:00.123456789Z"}`.
- CRI (containerd, CRI-O; /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log):
  `2024-05-01T10:00:00.123456789Z stdout F <line>`; `P` marks a partial line continued by the next ones.
- `kubectl logs --prefix`: `[pod/<pod>/<container>] <line>`; `docker compose logs`: `<service>  | <line>`.
- syslog files (kern.log, syslog, `journalctl` short output): `May  1 10:00:00 host prog[pid]: <line>`, or
  with an RFC 3339 time first.
- dmesg: `[12345.678901] <line>` (seconds since boot: no wall-clock time) or `dmesg -T`'s
  `[Wed May  1 10:00:00 2024] <line>`.

JSON log records (python-json-logger, structlog, ECS...): the message is the first of MESSAGE_FIELDS present,
the time the first of TIME_FIELDS; an exception or stack field holds a record's traceback.
"""
from __future__ import annotations

import calendar
import time
from typing import Any, Optional

MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                      "Nov", "Dec"), 1)}
MESSAGE_FIELDS = ("message", "msg", "event", "MESSAGE", "log", "@message", "textPayload", "body")
TIME_FIELDS = ("__REALTIME_TIMESTAMP", "timestamp", "@timestamp", "time", "asctime", "ts", "t", "created",
               "datetime", "date")
HOST_FIELDS = ("_HOSTNAME", "hostname", "host", "host.name", "nodename")
PROCESS_FIELDS = ("processName", "process_name", "processname")
LEVEL_FIELDS = ("levelname", "level", "severity", "log.level", "PRIORITY")
EXCEPTION_FIELDS = ("exc_info", "exception", "exc_text", "stack_info", "stack_trace", "stack", "traceback",
                    "error.stack_trace")
MAX_PARTIAL = 64 * 1024  # a CRI partial line is joined up to this many characters

_hour_cache: dict[str, int] = {}


def _iso(raw: str) -> tuple[Optional[float], bool]:
    """`YYYY-MM-DD[T ]HH:MM:SS[,.]frac[Z|±HH[:]MM]` -> (epoch, naive)."""
    if len(raw) < 19 or raw[4] != "-" or raw[7] != "-" or raw[13] != ":" or raw[16] != ":":
        return None, False
    key = raw[:13]
    base = _hour_cache.get(key)
    try:
        if base is None:
            base = calendar.timegm((int(raw[0:4]), int(raw[5:7]), int(raw[8:10]), int(raw[11:13]), 0, 0, 0, 0, 0))
            if len(_hour_cache) > 4096:
                _hour_cache.clear()
            _hour_cache[key] = base
        seconds = base + int(raw[14:16]) * 60 + int(raw[17:19])
    except ValueError:
        return None, False
    fraction, after = _fraction(raw, 19)
    offset = _zone(raw[after:].strip())
    if offset is None:
        return seconds + fraction, True
    return seconds + fraction - offset, False


def _fraction(raw: str, i: int) -> tuple[float, int]:
    """The fraction of a second at raw[i] (`,123` or `.123456789`) and where it ends."""
    n = len(raw)
    if i >= n or raw[i] not in ",.":
        return 0.0, i
    j = i + 1
    while j < n and raw[j].isdigit():
        j += 1
    digits = raw[i + 1:j][:9]
    return (int(digits) / 10 ** len(digits) if digits else 0.0), j


def _zone(rest: str) -> Optional[int]:
    """The UTC offset in seconds of what follows a time (`Z`, `UTC`, `+02:00`, `-0500`), None when naive."""
    if not rest:
        return None
    if rest[0] in "Zz" or rest[:3].upper() in ("UTC", "GMT"):
        return 0
    if rest[0] not in "+-":
        return None
    zone = rest[1:].replace(":", "")
    if len(zone) >= 4 and zone[:4].isdigit():
        offset = int(zone[:2]) * 3600 + int(zone[2:4]) * 60
    elif len(zone) >= 2 and zone[:2].isdigit():
        offset = int(zone[:2]) * 3600
    else:
        return None
    return offset if rest[0] == "+" else -offset


def _epoch_number(value: float) -> Optional[float]:
    if value > 1e17:  # nanoseconds
        return value / 1e9
    if value > 1e14:  # microseconds (journald)
        return value / 1e6
    if value > 1e11:  # milliseconds
        return value / 1e3
    if value > 1e8:
        return value
    return None


def _syslog(raw: str, year: int) -> Optional[float]:
    """`May  1 10:00:00` (no year: the hint's)."""
    month = MONTHS.get(raw[:3])
    if month is None or len(raw) < 15:
        return None
    try:
        day = int(raw[4:6])
        hour, minute, second = int(raw[7:9]), int(raw[10:12]), int(raw[13:15])
    except ValueError:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_time(raw: Any, year: Optional[int] = None) -> tuple[Optional[float], bool]:
    """A log time as (epoch seconds, naive). Understood: ISO 8601 / RFC 3339 and Python's asctime
    (`2024-05-01 10:00:00,123`), epoch numbers in s/ms/us/ns (JSON, journald), syslog's `May  1 10:00:00`
    (year from the hint), dmesg -T's `Wed May  1 10:00:00 2024`. Naive times are read as UTC."""
    if raw is None or isinstance(raw, bool):
        return None, False
    if isinstance(raw, (int, float)):
        return _epoch_number(float(raw)), False
    if not isinstance(raw, str):
        return None, False
    raw = raw.strip()
    if not raw:
        return None, False
    first = raw[0]
    if first.isdigit():
        if raw.isdigit() or (raw.replace(".", "", 1).isdigit() and raw.count(".") == 1):
            try:
                return _epoch_number(float(raw)), False
            except ValueError:
                return None, False
        return _iso(raw)
    if raw[:3] in MONTHS:
        return _syslog(raw, year or time.gmtime().tm_year), True
    if len(raw) >= 24 and raw[4:7] in MONTHS:  # dmesg -T / ctime: "Wed May  1 10:00:00 2024"
        try:
            return _syslog(raw[4:19], int(raw[20:24])), True
        except ValueError:
            return None, False
    return None, False


def format_time(epoch: Optional[float]) -> str:
    if epoch is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


# ------------------------------------------------------------------------------------------ envelopes

def looks_cri(line: str) -> bool:
    """`2024-05-01T10:00:00.123456789Z stdout F ...`"""
    if len(line) < 30 or line[4] != "-" or line[10] != "T":
        return False
    space = line.find(" ", 19, 40)
    return space > 0 and (line.startswith(" stdout ", space) or line.startswith(" stderr ", space))


def split_cri(line: str) -> Optional[tuple[str, str, str]]:
    """(time, tag P/F, text) of a CRI line, or None."""
    space = line.find(" ", 19, 40)
    if space < 0:
        return None
    tag_at = space + 8
    if len(line) < tag_at + 1:
        return None
    tag = line[tag_at]
    text = line[tag_at + 2:] if len(line) > tag_at + 1 else ""
    return line[:space], tag, text


def split_compose(line: str) -> Optional[tuple[str, str]]:
    """(service, text) of a `docker compose logs` line: `worker-1  | text`."""
    bar = line.find(" | ", 1, 80)
    if bar < 0:
        return None
    service = line[:bar].strip()
    if not service or " " in service:
        return None
    return service, line[bar + 3:]


def split_kubectl_prefix(line: str) -> Optional[tuple[str, str]]:
    """(pod/container, text) of a `kubectl logs --prefix` line: `[pod/web-1/worker] text`."""
    if not line.startswith("[pod/"):
        return None
    end = line.find("] ", 5)
    if end < 0:
        return None
    return line[5:end], line[end + 2:]


def split_syslog(line: str) -> Optional[tuple[str, str, str, str]]:
    """(time, host, program, text) of a syslog line: `May  1 10:00:00 host prog[pid]: text` or
    `2024-05-01T10:00:00.123+00:00 host prog[pid]: text`."""
    if line[:3] in MONTHS and len(line) > 16 and line[15] == " ":
        stamp, rest = line[:15], line[16:]
    elif len(line) > 20 and line[4:5] == "-" and line[10:11] == "T":
        space = line.find(" ", 19)
        if space < 0:
            return None
        stamp, rest = line[:space], line[space + 1:]
    else:
        return None
    host_end = rest.find(" ")
    if host_end <= 0:
        return None
    colon = rest.find(": ", host_end + 1)
    if colon < 0:
        return None
    program = rest[host_end + 1:colon]
    if not program or " " in program or len(program) > 80:
        return None
    return stamp, rest[:host_end], program, rest[colon + 2:]


def split_dmesg(line: str) -> Optional[tuple[str, str]]:
    """(time, text) of a dmesg line: `[12345.678901] text` (time '' when relative) or `[Wed May  1 ...] text`."""
    if not line.startswith("["):
        return None
    end = line.find("] ", 1, 40)
    if end < 0:
        return None
    stamp = line[1:end].strip()
    if stamp.replace(".", "", 1).isdigit():
        return "", line[end + 2:]
    if stamp[4:7] in MONTHS:
        return stamp, line[end + 2:]
    return None


def field(record: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        value = record.get(name)
        if value not in (None, ""):
            return value
        if "." in name:  # ECS-style nested keys: {"log": {"level": ...}}
            head, _, tail = name.partition(".")
            inner = record.get(head)
            if isinstance(inner, dict) and inner.get(tail) not in (None, ""):
                return inner[tail]
    return None


def as_text(value: Any) -> Optional[str]:
    """A JSON value as text: strings as they are, journald's byte arrays decoded, other scalars str()'d."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, int) for v in value[:64]):
        try:
            return bytes(v & 0xFF for v in value[:MAX_PARTIAL]).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if isinstance(value, (int, float)):
        return str(value)
    return None


# ------------------------------------------------------------------------------------------ fast JSON fields

def key_pattern(line: str, key: str) -> Optional[str]:
    """How `key` and its separator appear in this JSON line (`"k": `, `"k":`, `"k" : ` as journalctl writes),
    so that the next lines of the same writer can be read with `find` instead of a full parse."""
    quoted = f'"{key}"'
    at = line.find(quoted)
    if at < 0:
        return None
    end = at + len(quoted)
    n = len(line)
    while end < n and line[end] == " ":
        end += 1
    if end >= n or line[end] != ":":
        return None
    end += 1
    while end < n and line[end] == " ":
        end += 1
    return line[at:end]


def fast_string(line: str, pattern: str) -> Optional[str]:
    """The string value after `pattern` when it holds no escape (then its closing quote is the next `"`), a
    docker `log` value ending in one escaped newline, or None (read the line with json.loads instead)."""
    at = line.find(pattern)
    if at < 0:
        return None
    start = at + len(pattern)
    if line[start:start + 1] != '"':
        return None
    start += 1
    end = line.find('"', start)
    if end < 0:
        return None
    value = line[start:end]
    if "\\" in value:
        if value.endswith("\\n") and "\\" not in value[:-2] and line[end - 1] == "n":
            return value[:-2]
        return None
    return value


def fast_scalar(line: str, pattern: str) -> Any:
    """A string or number value after `pattern` (a time field may be either), or None."""
    at = line.find(pattern)
    if at < 0:
        return None
    start = at + len(pattern)
    if line[start:start + 1] == '"':
        return fast_string(line, pattern)
    end = start
    n = len(line)
    while end < n and line[end] not in ",}":
        end += 1
    raw = line[start:end].strip()
    try:
        return float(raw)
    except ValueError:
        return None
