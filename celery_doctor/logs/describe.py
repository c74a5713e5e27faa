"""One sentence per timeline line: what happened, in words an on-call engineer reads at a glance."""
from __future__ import annotations

from typing import Any, Callable

from ..parts import logs as P
from .ledger import OTHER_NAMES, TimelineLine


def _names(line: TimelineLine, limit: int = 4) -> str:
    items = [(n, c) for n, c in line.names.most() if n != OTHER_NAMES]
    others = sum(c for n, c in line.names.counts.items() if n == OTHER_NAMES)
    shown = [f"{name} ×{count}" if count > 1 else name for name, count in items[:limit]]
    hidden = len(items) - limit
    if hidden > 0:
        shown.append(f"{hidden} more")
    if others:
        shown.append(f"{others} others")
    return ", ".join(shown)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _times(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _restored(d: dict[str, Any]) -> str:
    return f"; {d['n_restored']} unacknowledged message(s) restored to the queue" if d.get("n_restored") else ""


def _unfinished(d: dict[str, Any]) -> str:
    return f" with {_times(d['n_open'], 'task')} received and unfinished" if d.get("n_open") else ""


def _pool_process(line: TimelineLine, d: dict[str, Any]) -> str:
    who = d.get("proc") or "a pool process"
    pid = f" (pid {d['pid']})" if d.get("pid") is not None else ""
    cause = " by the kernel's OOM killer" if d.get("oom") else ""
    text = f"pool process {who}{pid} died{cause}: {d.get('status', '?')}"
    lost = d.get("n_lost")
    if lost:
        return text + f"; lost {_times(lost, 'task')}: {_names(line)}"
    return text + ("; no received task stayed unfinished" if lost == 0 else "")


def _oom(line: TimelineLine, d: dict[str, Any]) -> str:
    text = f"kernel OOM killer killed {d.get('comm', '?')} (pid {d.get('pid', '?')})"
    return text + (f": {d['matched']}" if d.get("matched") else "")


def _ack_timeout(line: TimelineLine, d: dict[str, Any]) -> str:
    timeout = d.get("timeout_ms")
    after = f" after {timeout / 1000:g} s" if timeout else ""
    return (f"RabbitMQ closed the channel: delivery acknowledgement timed out{after}; "
            f"{_times(d.get('n_open', 0), 'task')} unacknowledged will be redelivered")


def _connection_lost(line: TimelineLine, d: dict[str, Any]) -> str:
    n = line.count
    text = "lost the broker connection" if n == 1 else f"lost the broker connection {n} times"
    text += _unfinished(d)
    if d.get("reconnected_s") is not None:
        text += f"; reconnected after {_seconds(d['reconnected_s'])}"
    return text + _restored(d)


def _drift(line: TimelineLine, d: dict[str, Any]) -> str:
    drift = d.get("drift")
    return f"clock drift{f' of {drift:g} s' if drift is not None else ''} from {_names(line)}"


# kind -> sentence (line, its details)
SENTENCES: dict[str, Callable[[TimelineLine, dict[str, Any]], str]] = {
    "worker-ready": lambda line, d: ("worker started (ready)" if line.count == 1
                                     else f"worker started {line.count} times"),
    "beat-start": lambda line, d: "beat started",
    P.POOL_PROCESS_KILLED: _pool_process,
    P.OOM_KILL: _oom,
    P.HARD_TIME_LIMIT: lambda line, d: (f"hard time limit ({d.get('limit', '?')} s) killed "
                                        f"{_times(line.count, 'task')}: {_names(line)}"),
    P.SOFT_TIME_LIMIT: lambda line, d: (f"soft time limit ({d.get('limit', '?')} s) exceeded by "
                                        f"{_times(line.count, 'task')}: {_names(line)}"),
    P.UNREGISTERED: lambda line, d: f"{_times(line.count, 'unregistered task')} discarded: {_names(line)}",
    P.REJECTED_MESSAGE: lambda line, d: (f"{_times(line.count, 'message')} rejected and dropped: "
                                         f"{d.get('reason', '?')}"),
    P.REVOKED_DISCARDED: lambda line, d: (f"{_times(line.count, 'task')} discarded as revoked or expired: "
                                          f"{_names(line)}"),
    P.ACK_TIMEOUT: _ack_timeout,
    "unrecoverable": lambda line, d: f"worker stopped on an unrecoverable error ({d.get('exc', '?')})",
    P.CONNECTION_LOST: _connection_lost,
    "restored": lambda line, d: f"{d.get('n_restored', 0)} unacknowledged message(s) restored to the queue",
    P.MISSED_HEARTBEAT: lambda line, d: f"missed heartbeats from {_names(line)}",
    P.CLOCK_DRIFT: _drift,
    "shutdown": lambda line, d: f"{d.get('how', '?')} shutdown started{_unfinished(d)}{_restored(d)}",
    P.STOPPED_WITH_TASKS: lambda line, d: (f"worker stopped ({d.get('how', '?')}) with "
                                           f"{_times(d.get('n_open', 0), 'task')} unfinished: {_names(line)}"),
    P.RETRIES_EXHAUSTED: lambda line, d: f"{_times(line.count, 'task')} gave up after retrying: {_names(line)}",
    P.BEAT_DUPLICATE: lambda line, d: (f"beat entry {d.get('entry', '?')!s} sent by {d.get('origins', 2)} "
                                       f"schedulers at once: about {d.get('n_dup', 0)} duplicate run(s)"),
    P.NEVER_FINISHED: lambda line, d: (f"log ends with {_times(d.get('n_open', 0), 'task')} received and never "
                                       f"finished: {_names(line)}"),
}


def describe(line: TimelineLine) -> str:
    sentence = SENTENCES.get(line.kind)
    return sentence(line, line.details) if sentence is not None else line.kind
