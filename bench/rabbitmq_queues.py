"""Benchmark: `celery-doctor scan` of a RabbitMQ vhost holding 20,000 queues, one of them stranded.

    .venv/bin/python bench/rabbitmq_queues.py [--queues 20000] [--timeout 20] [--rounds 3]

1. A vhost of its own (management API: PUT vhost, guest's permissions). A real Celery producer sends 25 tasks
   to a queue no route of the app names (`stranded-...`): messages, no consumer, not routed.
2. `celery-doctor scan --broker amqp://.../<vhost> --timeout T` (by URL: every queue of the vhost is in scope;
   with --app only the app's own queues are read) while the vhost holds that queue only.
3. 20,000 more queues, declared in one request (POST /api/definitions/<vhost>). The floor: how long the
   management API takes to serve one page of 500 queues (as the collector asks, and with 3 columns, fullest
   first). Then the same scan, several rounds: wall time (process start included), the scan's own duration, the child's peak RSS, and whether the
   stranded queue was found (CD301) or the queue listing was cut short.
4. The vhost is deleted (with everything in it), checked.
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

from _child import run_cli  # bench/ is on sys.path when a script here runs

API = "http://127.0.0.1:15672/api"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def api(method: str, path: str, body=None, timeout: float = 120):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{API}/{path}", data=data, method=method,
                                     headers={"Authorization": AUTH, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


def make_app(directory: Path, vhost: str) -> str:
    name = f"rmqapp_{uuid.uuid4().hex[:6]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(f'''
        from celery import Celery

        app = Celery("{name}", broker="amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}")
        app.conf.task_routes = {{"bench.work": {{"queue": "work"}}}}

        @app.task(name="bench.work")
        def work():
            return 1
    ''').lstrip())
    return name


def scan(target: list, cwd: Path, timeout: float) -> tuple[float, int, dict]:
    """(wall seconds, peak RSS KB, JSON report) of one `celery-doctor scan` in a child process."""
    env = dict(os.environ, PYTHONPATH=str(cwd) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CELERY_BROKER_URL", None)
    wall, rss, stdout, stderr = run_cli(["scan", *target, "--format", "json", "--timeout", str(timeout),
                                         "--fail-on", "never"], cwd, env, timeout + 60)
    try:
        report = json.loads(stdout)
    except ValueError:
        report = {"findings": [], "not_checked": [], "error": stderr[-400:]}
    return wall, rss, report


def first_page(path: str, query: str) -> tuple[float, int, int]:
    """The floor: one page of 500 queues from the management API (the broker builds the whole listing for every
    page it serves); (seconds, queues in it, pages of the whole listing)."""
    started = time.perf_counter()
    data = api("GET", f"queues/{path}?page=1&page_size=500{query}", timeout=300)
    return time.perf_counter() - started, len(data["items"]), data["page_count"]


def found(report: dict, queue: str) -> bool:
    for finding in report.get("findings", []):
        for place in finding.get("occurrences") or [finding]:
            if finding.get("check") == "CD301" and place.get("subject") == f"queue:{queue}":
                return True
    return False


def rounds(label: str, target: list, workdir: Path, options, stranded: str) -> float:
    rows = [scan(target, workdir, options.timeout) for _ in range(options.rounds)]
    for wall, rss, report in rows:
        cut = [n["reason"] for n in report.get("not_checked", []) if "rabbitmq" in n.get("where", "")]
        print(f"  {label}: {wall:.2f} s wall, scan duration {report.get('duration_s')} s, peak RSS {rss / 1024:.0f} MB,"
              f" stranded queue found (CD301): {found(report, stranded)}" + (f"; not checked: {cut}" if cut else ""),
              flush=True)
        if not found(report, stranded):
            print(f"    findings: {[(f['check'], f['subject']) for f in report.get('findings', [])]}; "
                  f"not checked: {report.get('not_checked')} {report.get('error', '')}", flush=True)
    print(f"{label}: median {statistics.median(r[0] for r in rows):.2f} s wall, peak RSS median "
          f"{statistics.median(r[1] for r in rows) / 1024:.0f} MB, max {max(r[1] for r in rows) / 1024:.0f} MB",
          flush=True)
    return statistics.median(r[0] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    uid = uuid.uuid4().hex[:6]
    vhost = f"cd-bench-{uid}"
    stranded = f"stranded-{uid}"
    workdir = Path(tempfile.mkdtemp(prefix="cd-rmq-"))
    module = make_app(workdir, vhost)
    path = quote(vhost, safe="")
    api("PUT", f"vhosts/{path}", {})
    try:
        api("PUT", f"permissions/{path}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        sys.path.insert(0, str(workdir))
        app = __import__(module).app
        with app.producer_or_acquire() as producer:
            for _ in range(25):
                app.send_task("bench.work", queue=stranded, producer=producer)
        app.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the management API's message counts lag a few seconds
            if (api("GET", f"queues/{path}/{stranded}").get("messages") or 0) >= 25:
                break
            time.sleep(0.5)
        print(f"vhost {vhost}: {stranded} holds 25 messages, no consumer, no route (load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)", flush=True)
        # By broker URL: every queue of the vhost is in scope (with --app, only the app's own queues are read)
        target = ["--broker", f"amqp://guest:guest@127.0.0.1:5672/{path}"]
        floor = rounds("floor (1 queue)", target, workdir, options, stranded)
        started = time.perf_counter()
        api("POST", f"definitions/{path}", {"queues": [
            {"name": f"q{i:05d}-{uid}", "vhost": vhost, "durable": True, "auto_delete": False, "arguments": {}}
            for i in range(options.queues)]}, timeout=600)
        print(f"declared {options.queues:,} queues in {time.perf_counter() - started:.1f} s "
              f"(the vhost now lists {api('GET', f'queues/{path}?page=1&page_size=1&columns=name')['total_count']:,})", flush=True)
        for label, query in (("every column, as the collector asks", ""),
                             ("3 columns, fullest first", "&columns=name,messages_ready,consumers"
                                                          "&sort=messages_ready&sort_reverse=true")):
            pages = [first_page(path, query) for _ in range(options.rounds)]
            median = statistics.median(x[0] for x in pages)
            print(f"floor: one page of 500 of the {pages[0][2]} pages from the management API ({label}): median "
                  f"{median:.2f} s ({', '.join(f'{x[0]:.2f}' for x in pages)}); the whole listing would take about "
                  f"{median * pages[0][2]:.0f} s", flush=True)
        many = rounds(f"{options.queues:,} queues", target, workdir, options, stranded)
        print(f"{options.queues:,} queues / 1 queue: {many / floor:.2f}x (target: found within --timeout "
              f"{options.timeout:g}, peak RSS <= 200 MB)")
    finally:
        for _ in range(5):  # a loaded broker may drop the connection without an answer: ask again
            try:
                api("DELETE", f"vhosts/{path}", timeout=600)
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    break
                print(f"deleting {vhost} failed: {exc}")
            except OSError as exc:  # RemoteDisconnected, timeouts
                print(f"deleting {vhost} failed ({type(exc).__name__}), trying again")
            time.sleep(5)
        try:
            api("GET", f"vhosts/{path}")
            print(f"vhost {vhost} is still there!")
        except urllib.error.HTTPError as exc:
            print(f"deleted vhost {vhost} ({exc.code} now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
