"""One sentence per timeline line: what happened, in words an on-call engineer reads at a glance."""
from __future__ import annotations

from typing import Any

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


def describe(line: TimelineLine) -> str:
    d: dict[str, Any] = line.details
    kind, n = line.kind, line.count
    if kind == "worker-ready":
        return "worker started (ready)" if n == 1 else f"worker started {n} times"
    if kind == "beat-start":
        return "beat started"
    if kind == P.POOL_PROCESS_KILLED:
        who = d.get("proc") or "a pool process"
        pid = f" (pid {d['pid']})" if d.get("pid") is not None else ""
        cause = " by the kernel's OOM killer" if d.get("oom") else ""
        text = f"pool process {who}{pid} died{cause}: {d.get('status', '?')}"
        lost = d.get("n_lost")
        if lost:
            text += f"; lost {_times(lost, 'task')}: {_names(line)}"
        elif lost == 0:
            text += "; no received task stayed unfinished"
        return text
    if kind == P.OOM_KILL:
        text = f"kernel OOM killer killed {d.get('comm', '?')} (pid {d.get('pid', '?')})"
        if d.get("matched"):
            text += f": {d['matched']}"
        return text
    if kind == P.HARD_TIME_LIMIT:
        return (f"hard time limit ({d.get('limit', '?')} s) killed {_times(n, 'task')}: {_names(line)}")
    if kind == P.SOFT_TIME_LIMIT:
        return f"soft time limit ({d.get('limit', '?')} s) exceeded by {_times(n, 'task')}: {_names(line)}"
    if kind == P.UNREGISTERED:
        return f"{_times(n, 'unregistered task')} discarded: {_names(line)}"
    if kind == P.REJECTED_MESSAGE:
        return f"{_times(n, 'message')} rejected and dropped: {d.get('reason', '?')}"
    if kind == P.REVOKED_DISCARDED:
        return f"{_times(n, 'task')} discarded as revoked or expired: {_names(line)}"
    if kind == P.ACK_TIMEOUT:
        timeout = d.get("timeout_ms")
        after = f" after {timeout / 1000:g} s" if timeout else ""
        return (f"RabbitMQ closed the channel: delivery acknowledgement timed out{after}; "
                f"{_times(d.get('n_open', 0), 'task')} unacknowledged will be redelivered")
    if kind == "unrecoverable":
        return f"worker stopped on an unrecoverable error ({d.get('exc', '?')})"
    if kind == P.CONNECTION_LOST:
        text = "lost the broker connection" if n == 1 else f"lost the broker connection {n} times"
        if d.get("n_open"):
            text += f" with {_times(d['n_open'], 'task')} received and unfinished"
        if d.get("reconnected_s") is not None:
            text += f"; reconnected after {_seconds(d['reconnected_s'])}"
        if d.get("n_restored"):
            text += f"; {d['n_restored']} unacknowledged message(s) restored to the queue"
        return text
    if kind == "restored":
        return f"{d.get('n_restored', 0)} unacknowledged message(s) restored to the queue"
    if kind == P.MISSED_HEARTBEAT:
        return f"missed heartbeats from {_names(line)}"
    if kind == P.CLOCK_DRIFT:
        drift = d.get("drift")
        return f"clock drift{f' of {drift:g} s' if drift is not None else ''} from {_names(line)}"
    if kind == "shutdown":
        text = f"{d.get('how', '?')} shutdown started"
        if d.get("n_open"):
            text += f" with {_times(d['n_open'], 'task')} received and unfinished"
        if d.get("n_restored"):
            text += f"; {d['n_restored']} unacknowledged message(s) restored to the queue"
        return text
    if kind == P.STOPPED_WITH_TASKS:
        return (f"worker stopped ({d.get('how', '?')}) with {_times(d.get('n_open', 0), 'task')} unfinished: "
                f"{_names(line)}")
    if kind == P.RETRIES_EXHAUSTED:
        return f"{_times(n, 'task')} gave up after retrying: {_names(line)}"
    if kind == P.BEAT_DUPLICATE:
        return (f"beat entry {d.get('entry', '?')!s} sent by {d.get('origins', 2)} schedulers at once: "
                f"about {d.get('n_dup', 0)} duplicate run(s)")
    if kind == P.NEVER_FINISHED:
        return f"log ends with {_times(d.get('n_open', 0), 'task')} received and never finished: {_names(line)}"
    return kind
