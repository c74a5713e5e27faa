"""Benchmark: `celery-doctor scan` over 40 live workers on one Redis broker, one busy in a long task, one SIGKILLed.

    .venv/bin/python bench/many_workers.py [--workers 40] [--db 0] [--timeout 10] [--rounds 3] [--pool solo]

1. N real `celery worker` processes (--pool: solo by default, or prefork, Celery's default; concurrency 1,
   --without-gossip --without-mingle --without-heartbeat: small and quick to start) on Redis db 0, all consuming
   one queue; the first one also consumes a queue of its own.
2. The floor, measured in the same run: `celery-doctor scan --timeout T` while every worker answers (the scan
   ends as soon as all have answered).
3. A long task is sent to the first worker's own queue and the second worker is SIGKILLed (its mailbox binding
   stays on Redis). A busy solo worker cannot answer (its only loop runs the task); a busy prefork worker does
   (its main process is free). `celery-doctor scan --timeout T` again, several rounds: its wall time (process
   start included), peak RSS, how it classified each silent worker (CD410: killed / connected, busy or blocked /
   cannot tell which), and what it says of the busy worker when that one answered.
4. Every worker is stopped and every key the run created in the database is deleted (checked).
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import redis
from _child import run_cli  # bench/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.workerproc import WorkerFactory  # noqa: E402 - the tests' worker processes, after the path

KILLED = "killed, not busy"
CONNECTED = "still connected"


def make_app(directory: Path, db: int, queue: str) -> str:
    name = f"manyapp_{uuid.uuid4().hex[:6]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(f'''
        import time
        from celery import Celery

        app = Celery("{name}", broker="redis://127.0.0.1:6379/{db}")
        app.conf.task_default_queue = "{queue}"

        @app.task(name="bench.long")
        def long(seconds):
            time.sleep(seconds)
    ''').lstrip())
    return name


def scan(module: str, cwd: Path, timeout: float) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS KB, JSON report) of one `celery-doctor scan` in a child process."""
    env = dict(os.environ, PYTHONPATH=str(cwd) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CELERY_BROKER_URL", None)
    wall, rss, stdout, stderr = run_cli(["scan", "--app", module, "--format", "json", "--timeout", str(timeout),
                                         "--fail-on", "never"], cwd, env, timeout + 60)
    try:
        report = json.loads(stdout)
    except ValueError:
        report = {"findings": [], "error": stderr[-400:]}
    return wall, rss, report


def silent_workers(report: dict) -> dict[str, str]:
    """worker name -> how CD410 classified it (one finding per worker, or one row whose occurrences are them)."""
    out = {}
    for finding in report.get("findings", []):
        if finding.get("check") != "CD410":
            continue
        for place in finding.get("occurrences") or [finding]:
            title = place.get("title") or finding.get("title", "")
            kind = ("dead (killed)" if KILLED in title else "busy or blocked (connected)" if CONNECTED in title
                    else "busy, blocked or killed (the broker cannot say which)")
            out[place["subject"].split(":", 1)[1]] = kind
    return out


def about(report: dict, name: str) -> list[str]:
    """`CHECK: evidence` for each evidence line that names the worker, but for the list of the workers that
    answered (CD410 names the busy ones apart)."""
    out = []
    for finding in report.get("findings", []):
        for place in finding.get("occurrences") or [finding]:
            out += [f"{finding['check']}: {line}" for line in place.get("evidence") or ()
                    if name in line and "answered: " not in line]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--db", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", default="solo", choices=["solo", "prefork", "threads"],
                        help="solo: a busy worker's only loop runs the task (it cannot answer); prefork (Celery's "
                             "default) and threads: the main loop stays free and answers while the task runs")
    options = parser.parse_args()
    r = redis.Redis(db=options.db)
    before = set(r.scan_iter(count=1000))
    uid = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="cd-many-"))
    shared, own = f"many-{uid}", f"busy-{uid}"
    module = make_app(workdir, options.db, shared)
    factory = WorkerFactory()
    try:
        started = time.perf_counter()
        specs = [dict(app=module, cwd=workdir, pool=options.pool, concurrency=1, name=f"w{i:02d}-{uid}",
                      queues=[shared, own] if i == 0 else [shared]) for i in range(options.workers)]
        workers = factory.start_many(specs, ready_timeout=300)
        print(f"{len(workers)} workers ready in {time.perf_counter() - started:.0f} s (load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
        floor = [scan(module, workdir, options.timeout) for _ in range(options.rounds)]
        floor_s = statistics.median(f[0] for f in floor)
        print(f"floor: every worker answering: median {floor_s:.2f} s wall ({', '.join(f'{f[0]:.2f}' for f in floor)});"
              f" silent workers reported: {[len(silent_workers(f[2])) for f in floor]}", flush=True)
        busy, doomed = workers[0], workers[1]
        sys.path.insert(0, str(workdir))
        app = __import__(module).app
        app.send_task("bench.long", args=(600,), queue=own)
        deadline = time.monotonic() + 60
        while "bench.long[" not in busy.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        doomed.kill()
        time.sleep(0.5)
        rows = [scan(module, workdir, options.timeout) for _ in range(options.rounds)]
        for number, (wall, rss, report) in enumerate(rows, 1):
            seen = silent_workers(report)
            print(f"round {number}: {wall:.2f} s wall (--timeout {options.timeout:g}, process start included), "
                  f"peak RSS {rss / 1024:.0f} MB; report duration {report.get('duration_s')} s", flush=True)
            for name, kind in sorted(seen.items()):
                role = "busy" if name == busy.nodename else "SIGKILLed" if name == doomed.nodename else "idle?!"
                print(f"    {name} ({role}): {kind}")
            if busy.nodename not in seen:
                print(f"    {busy.nodename} (busy) answered; what the report says of it: {about(report, busy.nodename)}")
        walls = [row[0] for row in rows]
        print(f"with one busy and one killed: median {statistics.median(walls):.2f} s wall = "
              f"{statistics.median(walls) / floor_s:.2f}x the all-answering floor; every round within --timeout "
              f"{options.timeout:g} + start-up: {all(row[2].get('duration_s', 99) <= options.timeout for row in rows)};"
              f" peak RSS median {statistics.median(row[1] for row in rows) / 1024:.0f} MB", flush=True)
        app.close()
    finally:
        factory.stop_all()
        time.sleep(0.5)
        created = [k for k in r.scan_iter(count=1000) if k not in before]
        if created:
            r.delete(*created)
        left = [k for k in r.scan_iter(count=1000) if k not in before]
        print(f"stopped the workers; deleted {len(created)} key(s) from db {options.db}; left behind: "
              f"{left or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
