"""Benchmark: a deep scan of a 1,000,000-message Redis queue against the raw transfer floor.

    .venv/bin/python bench/redis_deep_scan.py [--messages 1000000] [--db 6] [--rounds 3] [--keep | --reuse QUEUE]

1. A real Celery producer publishes a few messages (distinct tasks, args, one ETA); those envelopes are
   replicated with fresh task ids and delivery tags (and distinct args) and LPUSHed in pipelines until the
   queue holds N messages.
2. Each round, back to back: the floor (LRANGE of the whole queue in 1,000-element chunks with redis-py,
   doing nothing with the data), the deep collector in this process (a forked helper process summarising the
   chunks it has room for on the second core, when `message_stats.helper_available` allows one), and the deep
   collector without that helper. Each round says what the helper did: the share of messages it took, or that
   none was started (and the load average that refused it). The machine is shared: only ratios measured in the
   same round mean something; the medians are printed.
3. `celery-doctor scan --deep` (the CLI, in a subprocess: its peak RSS is measured alone, and its helper
   process's apart), then a default sampled scan, each with `--format json`.
4. SLOWLOG (threshold 10 ms, reset before, restored after): every command celery-doctor sent that took 10 ms+.
Prints the figures; deletes everything it created (checked: "left behind") unless --keep. Not part of the
test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
DOCTOR = [sys.executable, "-m", "celery_doctor"]
HELPER_RSS: list[int] = []  # peak RSS (KB) of the CLI's summary helper process, per CLI run (0: none was started)


def make_app(directory: Path, db: int, queue: str) -> str:
    name = f"benchapp_{uuid.uuid4().hex[:6]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(f'''
        from celery import Celery
        app = Celery("{name}", broker="redis://127.0.0.1:6379/{db}")
        app.conf.task_default_queue = "{queue}"

        @app.task
        def add(x, y):
            return x + y

        @app.task
        def resize(image_id, sizes=None):
            return image_id

        @app.task
        def send_email(to, subject, body=""):
            return to
    ''').lstrip())
    return name


def fill(r: redis.Redis, app, name: str, queue: str, total: int) -> float:
    started = time.perf_counter()
    tasks = app.tasks
    with app.producer_or_acquire() as producer:
        tasks[f"{name}.add"].apply_async((1, 2), producer=producer)
        tasks[f"{name}.resize"].apply_async((42,), {"sizes": [64, 128, 256]}, producer=producer)
        tasks[f"{name}.send_email"].apply_async(("a@example.com", "hello", "x" * 200), producer=producer)
        tasks[f"{name}.add"].apply_async((3, 4), countdown=600, producer=producer)
    templates = [t.decode() for t in r.lrange(queue, 0, -1)]
    pipe = r.pipeline(transaction=False)
    made = len(templates)
    i = 0
    while made < total:
        template = templates[i % len(templates)]
        head = json.loads(template)["headers"]
        task_id = head["id"]
        new_id = str(uuid.uuid4())
        text = template.replace(task_id, new_id)
        args = head["argsrepr"]
        text = text.replace(f'"argsrepr": {json.dumps(args)}', f'"argsrepr": {json.dumps(args[:-1] + f", {i})")}', 1)
        tag = json.loads(template)["properties"]["delivery_tag"]
        text = text.replace(tag, str(uuid.uuid4()))
        pipe.lpush(queue, text)
        made += 1
        i += 1
        if made % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def floor(r: redis.Redis, queue: str, chunk: int = 1000) -> tuple[float, int, int]:
    started = time.perf_counter()
    index = read = size = 0
    while True:
        items = r.lrange(queue, index, index + chunk - 1)
        if not items:
            break
        read += len(items)
        size += sum(map(len, items))
        index += chunk
    return time.perf_counter() - started, read, size


def run_doctor(args: list[str], cwd: Path) -> tuple[float, int, dict, str]:
    env = dict(os.environ, PYTHONPATH=str(cwd) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CELERY_BROKER_URL", None)
    # The CLI ends with os._exit (no interpreter teardown): its peak RSS is written from there, and so is its
    # forked summary helper's (which inherits the patched os._exit), each tagged.
    code = ("import os, resource, runpy, sys; sys.argv = ['celery-doctor'] + sys.argv[1:]\n"
            "_exit, _pid = os._exit, os.getpid()\n"
            "def _report(code):\n"
            "    who = 'cli' if os.getpid() == _pid else 'helper'\n"
            "    sys.stderr.write('\\nPEAK_RSS_KB=%d %s\\n' % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, who))\n"
            "    sys.stderr.flush()\n"
            "    _exit(code)\n"
            "os._exit = _report\n"
            "try:\n    runpy.run_module('celery_doctor', run_name='__main__')\n"
            "finally:\n    sys.stderr.write('\\nPEAK_RSS_KB=%d cli\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    elapsed = time.perf_counter() - started
    peaks = dict(reversed(line.split("=", 1)[1].split()) for line in result.stderr.splitlines()
                 if line.startswith("PEAK_RSS_KB=") and len(line.split()) == 2)
    rss = int(peaks.get("cli", -1))
    HELPER_RSS.append(int(peaks.get("helper", 0)))
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {}
    return elapsed, rss, report, result.stderr


def collector_seconds(app, queue: str, helper: bool) -> tuple[float, int, str]:
    """The deep collector's time for the queue in this process (no interpreter start-up), with or without the
    forked helper that summarises the chunks it has room for on the second core; (seconds, messages analysed,
    what the helper did: the share of messages it took, or why there was none)."""
    import celery_doctor.collectors.redis as collector
    from celery_doctor.broker_target import BrokerTarget
    from celery_doctor.collectors import CollectContext, ScanOptions
    from celery_doctor.collectors.config import collect_config
    from celery_doctor.deadline import Deadline

    saved, split = collector.HELPER_MIN_MESSAGES, collector.SplitStats
    collector.HELPER_MIN_MESSAGES = saved if helper else 1 << 62
    helpers: list = []

    def counted(*args, **kwargs):  # the helper the collector starts, kept to read its share afterwards
        helpers.append(split(*args, **kwargs))
        return helpers[-1]

    collector.SplitStats = counted
    try:
        ctx = CollectContext(app=app, broker=BrokerTarget.of_app(app), config=collect_config(app),
                             deadline=Deadline(300), options=ScanOptions(deep=True))
        load = os.getloadavg()[0]
        started = time.perf_counter()
        part = collector.collect_redis(ctx)
        elapsed, analysed = time.perf_counter() - started, part.data.queue(queue).sampled
        if not helper:
            return elapsed, analysed, "none asked for"
        if not helpers:
            return elapsed, analysed, f"none: load average {load:.1f} at the start"
        return elapsed, analysed, f"the helper took {helpers[0].sent / max(1, analysed):.0%}"
    finally:
        collector.HELPER_MIN_MESSAGES, collector.SplitStats = saved, split


def slow_commands(r: redis.Redis, client: bytes) -> list[tuple[str, float]]:
    """(command, ms) of one client name's SLOWLOG entries (the threshold is set to 10 ms by this benchmark)."""
    out = []
    for entry in r.slowlog_get(10_000):
        if entry.get("client_name") == client:
            command = entry.get("command") or b""
            out.append((command.decode("utf-8", "replace")[:60] if isinstance(command, bytes) else str(command)[:60],
                        entry["duration"] / 1000))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="floor / collector rounds (medians are printed)")
    parser.add_argument("--keep", action="store_true", help="leave the queue in place")
    parser.add_argument("--reuse", metavar="QUEUE", help="read this already filled queue (not deleted)")
    options = parser.parse_args()
    # named: its own LRANGEs in SLOWLOG tell how long the same command takes on this machine now
    r = redis.Redis(db=options.db, socket_timeout=60, client_name="bench-floor")
    queue = options.reuse or f"bench-{uuid.uuid4().hex[:8]}"
    before = set(r.scan_iter(count=1000))
    saved = r.config_get("slowlog-*")
    workdir = Path(tempfile.mkdtemp(prefix="cd-bench-"))
    name = make_app(workdir, options.db, queue)
    sys.path.insert(0, str(workdir))
    app = __import__(name).app
    try:
        if options.reuse:
            print(f"reusing {queue} on db {options.db}: {r.llen(queue):,} messages", flush=True)
        else:
            print(f"filling {queue} on db {options.db} with {options.messages:,} messages ...", flush=True)
            fill_s = fill(r, app, name, queue, options.messages)
            print(f"  filled in {fill_s:.1f} s", flush=True)
        print(f"  Redis used_memory {r.info('memory')['used_memory'] / 1e6:,.0f} MB; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        r.config_set("slowlog-log-slower-than", 10_000)
        r.config_set("slowlog-max-len", 10_000)
        r.slowlog_reset()
        from redis.utils import HIREDIS_AVAILABLE

        parser_name = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser, no hiredis"
        rows = []
        for number in range(options.rounds):
            floor_s, read, size = floor(r, queue)
            helper_s, analysed, share = collector_seconds(app, queue, helper=True)
            alone_s, _, _ = collector_seconds(app, queue, helper=False)
            rows.append((floor_s, helper_s, alone_s))
            print(f"round {number + 1}: floor {floor_s:.2f} s ({read:,} messages, {size / 1e6:,.0f} MB); deep collector "
                  f"{helper_s:.2f} s = {helper_s / floor_s:.2f}x ({analysed:,} analysed; {share}); without the "
                  f"helper process {alone_s:.2f} s = {alone_s / floor_s:.2f}x", flush=True)
        ratios = sorted(h / f for f, h, _ in rows)
        alone = sorted(a / f for f, _, a in rows)
        floor_median = statistics.median(f for f, _, _ in rows)
        print(f"floor: raw chunked LRANGE (1,000/chunk, redis-py, {parser_name}): median {floor_median:.2f} s "
              f"({options.messages / floor_median:,.0f} msg/s)")
        print(f"deep collector / floor, same round: median {statistics.median(ratios):.2f}x (rounds "
              f"{', '.join(f'{x:.2f}' for x in ratios)}); without the helper process median "
              f"{statistics.median(alone):.2f}x (target <= 1.25x)", flush=True)
        deep_s, deep_rss, report, _err = run_doctor(
            ["scan", "--app", name, "--deep", "--format", "json", "--select", "CD2", "--timeout", "60"], workdir)
        findings = report.get("findings", [])
        print(f"celery-doctor scan --deep (CLI): {deep_s:.2f} s wall (process start and app import included), "
              f"peak RSS {deep_rss / 1024:.0f} MB (its summary helper process: {HELPER_RSS[-1] / 1024:.0f} MB; "
              f"the largest process it waited for: {helper_rss() / 1024:.0f} MB), "
              f"{len(findings)} findings (target RSS <= 150 MB)", flush=True)
        sampled_s, sampled_rss, _sampled_report, _ = run_doctor(
            ["scan", "--app", name, "--format", "json", "--select", "CD2"], workdir)
        print(f"default (sampled) scan (CLI): {sampled_s:.2f} s wall, peak RSS {sampled_rss / 1024:.0f} MB", flush=True)
        for who, entries in (("celery-doctor", slow_commands(r, b"celery-doctor")),
                             ("the floor's redis-py client", slow_commands(r, b"bench-floor"))):
            longest = max(entries, key=lambda c: c[1], default=("-", 0.0))
            print(f"SLOWLOG (>= 10 ms) entries from {who} over every round: {len(entries)}"
                  + (f"; longest {longest[1]:.1f} ms ({longest[0]})" if entries else ""), flush=True)
        counts = {f["check"]: f["messages_at_risk"] for f in findings if queue in f["subject"]}
        print(f"findings on the queue: {counts}")
    finally:
        r.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        r.config_set("slowlog-max-len", saved["slowlog-max-len"])
        cleanup(r, app, before, keep=options.keep or bool(options.reuse), queue=queue)
    return 0


def helper_rss() -> int:
    """Peak RSS (KB) of the children this process waited for (run_doctor's CLI and, in it, the helper)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def cleanup(r: redis.Redis, app, before: set, keep: bool, queue: str) -> None:
    """Delete every key this run created (the queue unless kept), after the app's own connections are closed:
    kombu's `_kombu.binding_deadlines` and binding sets are written by the producer, so they are new keys too."""
    try:
        app.close()  # the producer pool: nothing of the app writes after this
    except Exception:  # noqa: BLE001 - a benchmark's cleanup goes on regardless
        pass
    time.sleep(0.2)
    created = [k for k in r.scan_iter(count=1000) if k not in before and not (keep and k == queue.encode())]
    for i in range(0, len(created), 500):
        r.unlink(*created[i:i + 500])  # UNLINK: the server frees the big list in the background
    left = [k for k in r.scan_iter(count=1000) if k not in before and not (keep and k == queue.encode())]
    print(f"cleaned up {len(created)} key(s); left behind: {left or 'nothing'}")


if __name__ == "__main__":
    sys.exit(main())
