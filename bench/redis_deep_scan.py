"""Benchmark: a deep scan of a 1,000,000-message Redis queue against the raw transfer floor.

    .venv/bin/python bench/redis_deep_scan.py [--messages 1000000] [--db 6] [--keep]

1. A real Celery producer publishes a few messages (distinct tasks, args, one ETA); those envelopes are
   replicated with fresh task ids and delivery tags (and distinct args) and LPUSHed in pipelines until the
   queue holds N messages.
2. The floor: LRANGE of the whole queue in 1,000-element chunks with redis-py, doing nothing with the data.
3. `celery-doctor scan --deep` (the CLI, in a subprocess: its peak RSS is measured alone), then a default
   sampled scan, each with `--format json`.
4. SLOWLOG (threshold 10 ms, reset before, restored after): the longest command sent by celery-doctor.
Prints the figures; deletes everything it created unless --keep. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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
    code = ("import resource, runpy, sys; sys.argv = ['celery-doctor'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('celery_doctor', run_name='__main__')\n"
            "finally:\n    sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    elapsed = time.perf_counter() - started
    rss = int(result.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0]) if "PEAK_RSS_KB=" in result.stderr else -1
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {}
    return elapsed, rss, report, result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="leave the queue in place")
    options = parser.parse_args()
    r = redis.Redis(db=options.db, socket_timeout=60)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    before = set(r.scan_iter(count=1000))
    saved = r.config_get("slowlog-*")
    workdir = Path(tempfile.mkdtemp(prefix="cd-bench-"))
    name = make_app(workdir, options.db, queue)
    sys.path.insert(0, str(workdir))
    app = __import__(name).app
    try:
        print(f"filling {queue} on db {options.db} with {options.messages:,} messages ...", flush=True)
        fill_s = fill(r, app, name, queue, options.messages)
        used = r.info("memory")["used_memory"]
        print(f"  filled in {fill_s:.1f} s; Redis used_memory {used / 1e6:,.0f} MB", flush=True)
        r.config_set("slowlog-log-slower-than", 10_000)
        r.config_set("slowlog-max-len", 10_000)
        r.slowlog_reset()

        floor_s, read, size = floor(r, queue)
        from redis.utils import HIREDIS_AVAILABLE

        parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser, no hiredis"
        print(f"floor: raw chunked LRANGE (1,000/chunk, redis-py, {parser}) of {read:,} messages ({size / 1e6:,.0f} MB): "
              f"{floor_s:.2f} s ({read / floor_s:,.0f} msg/s)", flush=True)
        deep_s, deep_rss, report, _err = run_doctor(
            ["scan", "--app", name, "--deep", "--format", "json", "--select", "CD2", "--timeout", "30"], workdir)
        findings = report.get("findings", [])
        print(f"celery-doctor scan --deep: {deep_s:.2f} s wall (process start and app import included), "
              f"peak RSS {deep_rss / 1024:.0f} MB, {len(findings)} findings", flush=True)
        # the scan's own time for the queue, without interpreter start-up: the collector, in this process
        from celery_doctor.broker_target import BrokerTarget
        from celery_doctor.collectors import CollectContext, ScanOptions
        from celery_doctor.collectors.config import collect_config
        from celery_doctor.collectors.redis import collect_redis
        from celery_doctor.deadline import Deadline

        ctx = CollectContext(app=app, broker=BrokerTarget.of_app(app), config=collect_config(app),
                             deadline=Deadline(300), options=ScanOptions(deep=True))
        started = time.perf_counter()
        part = collect_redis(ctx)
        collector_s = time.perf_counter() - started
        q = part.data.queue(queue)
        print(f"deep collector (same process as the floor): {collector_s:.2f} s for {q.sampled:,} messages "
              f"= {collector_s / floor_s:.2f}x the floor (target <= 1.5x)", flush=True)
        sampled_s, sampled_rss, _sampled_report, _ = run_doctor(
            ["scan", "--app", name, "--format", "json", "--select", "CD2"], workdir)
        ctx = CollectContext(app=app, broker=BrokerTarget.of_app(app), config=collect_config(app),
                             deadline=Deadline(30), options=ScanOptions(deep=False))
        started = time.perf_counter()
        collect_redis(ctx)
        sampled_collector = time.perf_counter() - started
        print(f"default (sampled) scan: {sampled_s:.2f} s wall via the CLI, collector {sampled_collector:.3f} s, "
              f"peak RSS {sampled_rss / 1024:.0f} MB (target < 2 s)", flush=True)
        ours = [e for e in r.slowlog_get(10_000) if e.get("client_name") == b"celery-doctor"]
        longest = max((e["duration"] for e in ours), default=0)
        print(f"SLOWLOG (>= 10 ms) entries from celery-doctor: {len(ours)}; longest {longest / 1000:.1f} ms", flush=True)
        counts = {f["check"]: f["messages_at_risk"] for f in findings if queue in f["subject"]}
        print(f"findings on the queue: {counts}")
        print(f"peak RSS of this benchmark process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        r.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        r.config_set("slowlog-max-len", saved["slowlog-max-len"])
        if not options.keep:
            created = [k for k in r.scan_iter(count=1000) if k not in before]
            for i in range(0, len(created), 500):
                r.unlink(*created[i:i + 500])  # UNLINK: the server frees the big list in the background
            print(f"cleaned up {len(created)} key(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
