"""Benchmark: `celery-doctor logs` throughput (lines per second) and peak memory on generated, realistic logs.

    .venv/bin/python bench/logs_throughput.py [--lines 2000000] [--formats celery,json,cri,journald,gz] [--keep]

Each format gets its own file of about --lines lines, written like a busy prefork worker writes them:
`Task x[id] received` / `succeeded in` pairs (80 %), lines the tasks log themselves in Celery's task format,
retries, failures with 8-line tracebacks, unregistered tasks with their message-contents block, soft and
hard time limits, a pool process killed by SIGKILL now and then, a broker connection lost and restored,
and beat's sends. Formats: Celery's default format (`celery`), python-json-logger lines (`json`), CRI
container lines (`cri`), `journalctl -o json` (`journald`), and the `celery` file gzipped (`gz`).

Each measurement runs the real CLI in a child process (`celery-doctor logs FILE --format json`) and reads that
child's own peak RSS with wait4; the same run on a 10x smaller file shows that memory does not grow with the
input. The CLI's start-up (an empty log) is subtracted from the time. Prints one line per format: lines, size,
seconds, lines/s, peak RSS, findings.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCTOR = [sys.executable, "-m", "celery_doctor"]
TASKS = ["shop.tasks.charge_card", "shop.tasks.send_receipt", "shop.tasks.update_stock", "reports.build_daily",
         "shop.tasks.sync_inventory", "mail.tasks.deliver", "search.tasks.reindex_product"]
T0 = 1714557600.0

TRACEBACK = """Traceback (most recent call last):
  File "/app/venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
  File "/app/venv/lib/python3.11/site-packages/celery/app/trace.py", line 736, in __protected_call__
    return self.run(*args, **kwargs)
  File "/app/shop/tasks.py", line 88, in charge_card
    raise PaymentError(order_id)
shop.errors.PaymentError: 4211"""


def _stamp(t: float) -> str:
    ms = int((t % 1) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f",{ms:03d}"


def records(n_lines: int, seed: int = 7):
    """(time, level, process, message) records of one busy worker, until about n_lines lines."""
    rnd = random.Random(seed)
    t = T0
    lines = 0
    yield t, "INFO", "MainProcess", "Connected to redis://:**@redis:6379/0"
    yield t, "INFO", "MainProcess", "celery@worker-1 ready."
    open_tasks: list[tuple[str, str]] = []
    while lines < n_lines:
        t += rnd.random() * 0.004
        roll = rnd.random()
        if roll < 0.42 or not open_tasks:
            name, task_id = rnd.choice(TASKS), str(uuid.UUID(int=rnd.getrandbits(128)))
            open_tasks.append((name, task_id))
            yield t, "INFO", "MainProcess", f"Task {name}[{task_id}] received"
            lines += 1
            continue
        proc = f"ForkPoolWorker-{rnd.randint(1, 8)}"
        name, task_id = open_tasks.pop(rnd.randrange(len(open_tasks)))
        if roll < 0.80:
            yield t, "INFO", proc, f"Task {name}[{task_id}] succeeded in {rnd.random():.6f}s: None"
            lines += 1
        elif roll < 0.90:
            yield t, "WARNING", proc, f"{name}[{task_id}]: processing order {rnd.randint(1, 10**6)}"
            yield t, "INFO", proc, f"Task {name}[{task_id}] succeeded in {rnd.random():.6f}s: {{'ok': True}}"
            lines += 2
        elif roll < 0.95:
            yield t, "INFO", proc, f"Task {name}[{task_id}] retry: Retry in 10s: ConnectionError()"
            lines += 1
        elif roll < 0.985:
            yield t, "ERROR", proc, f"Task {name}[{task_id}] raised unexpected: PaymentError(4211)\n{TRACEBACK}"
            lines += 9
        elif roll < 0.99:
            yield t, "WARNING", "MainProcess", f"Soft time limit (300s) exceeded for {name}[{task_id}]"
            yield t, "INFO", proc, f"Task {name}[{task_id}] succeeded in 301.2s: None"
            lines += 2
        elif roll < 0.9925:
            yield t, "ERROR", "MainProcess", f"Hard time limit (600s) exceeded for {name}[{task_id}]"
            yield t + 0.1, "ERROR", "MainProcess", f"Process '{proc}' pid:{rnd.randint(1000, 60000)} exited with 'signal 9 (SIGKILL)'"
            lines += 2
        elif roll < 0.995:
            yield t, "ERROR", "MainProcess", f"Process '{proc}' pid:{rnd.randint(1000, 60000)} exited with 'signal 9 (SIGKILL)'"
            yield t, "ERROR", "MainProcess", ("Task handler raised error: WorkerLostError('Worker exited prematurely: "
                                              "signal 9 (SIGKILL) Job: 12.')")
            lines += 2
        elif roll < 0.997:
            bogus = str(uuid.UUID(int=rnd.getrandbits(128)))
            yield t, "ERROR", "MainProcess", (
                "Received unregistered task of type 'shop.tasks.old_name'.\nThe message has been ignored and "
                "discarded.\n\nThe full contents of the message body was:\nb'[[4211], {\"card\": \"4111...\"}, {}]' "
                f"(40b)\n\nThe full contents of the message headers:\n{{'lang': 'py', 'task': "
                f"'shop.tasks.old_name', 'id': '{bogus}', 'argsrepr': '(4211,)'}}\n\nThe delivery info for this "
                "task is:\n{'exchange': '', 'routing_key': 'celery'}")
            open_tasks.append((name, task_id))
            lines += 12
        elif roll < 0.998:
            yield t, "WARNING", "MainProcess", ("consumer: Connection to broker lost. Trying to re-establish the "
                                                "connection... (ConnectionError('Connection closed by server.'))")
            yield t + 0.01, "INFO", "MainProcess", f"Restoring {rnd.randint(1, 20)} unacknowledged message(s)"
            yield t + 2, "INFO", "MainProcess", "Connected to redis://:**@redis:6379/0"
            open_tasks.append((name, task_id))
            lines += 3
        else:
            yield t, "INFO", "Beat", f"Scheduler: Sending due task nightly-report ({TASKS[3]})"
            open_tasks.append((name, task_id))
            lines += 1


def write_celery(path: Path, n: int) -> int:
    count = 0
    with open(path, "w") as out:
        for t, level, proc, message in records(n):
            text = f"[{_stamp(t)}: {level}/{proc}] {message}\n"
            out.write(text)
            count += text.count("\n")
    return count


def write_json(path: Path, n: int) -> int:
    count = 0
    with open(path, "w") as out:
        for t, level, proc, message in records(n):
            head, _, tb = message.partition("\nTraceback")
            record = {"asctime": _stamp(t), "levelname": level, "name": "celery.app.trace", "processName": proc,
                      "message": head}
            if tb:
                record["exc_info"] = "Traceback" + tb
            out.write(json.dumps(record) + "\n")
            count += 1
    return count


def write_cri(path: Path, n: int) -> int:
    count = 0
    with open(path, "w") as out:
        for t, level, proc, message in records(n):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"
            for line in f"[{_stamp(t)}: {level}/{proc}] {message}".split("\n"):
                out.write(f"{stamp} stderr F {line}\n")
                count += 1
    return count


def write_journald(path: Path, n: int) -> int:
    count = 0
    with open(path, "w") as out:
        for t, level, proc, message in records(n):
            record = {"__REALTIME_TIMESTAMP": str(int(t * 1e6)), "_HOSTNAME": "worker-1", "SYSLOG_IDENTIFIER": "celery",
                      "_SYSTEMD_UNIT": "celery-worker.service", "_PID": "812", "PRIORITY": "6",
                      "MESSAGE": f"[{_stamp(t)}: {level}/{proc}] {message}"}
            out.write("{ " + json.dumps(record, separators=(", ", " : "))[1:-1] + " }\n")  # as journalctl writes
            count += 1
    return count


WRITERS = {"celery": write_celery, "json": write_json, "cri": write_cri, "journald": write_journald}


def measure(path: Path, work: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB, findings) of `celery-doctor logs PATH --format json`, run as a
    child process whose own resource usage is read with wait4 (its peak RSS alone, not the generator's; its CPU
    time, which other processes on a busy machine do not inflate)."""
    out_path = work / "report.json"
    started = time.perf_counter()
    with open(out_path, "w") as out, open(work / "stderr.txt", "w") as err:
        child = subprocess.Popen([*DOCTOR, "logs", str(path), "--format", "json", "--fail-on", "never"], cwd=ROOT,
                                 stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"celery-doctor logs failed: {(work / 'stderr.txt').read_text()[-2000:]}")
    findings = len(json.loads(out_path.read_text())["findings"])
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, findings


def startup(work: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the CLI on an empty log: the start-up every measurement includes."""
    empty = work / "empty.log"
    empty.write_text("")
    runs = [measure(empty, work) for _ in range(3)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--formats", default="celery,json,cri,journald,gz")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cd-logs-bench-"))
    try:
        base, base_cpu = startup(work)
        print(f"start-up of the CLI on an empty log: {base:.2f} s, {base_cpu:.2f} s CPU (subtracted below); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for fmt in args.formats.split(","):
            source = "celery" if fmt == "gz" else fmt
            path = work / f"worker-{fmt}.log"
            lines = WRITERS[source](path, args.lines)
            if fmt == "gz":
                with open(path, "rb") as raw, gzip.open(work / "worker-gz.log.gz", "wb", compresslevel=6) as packed:
                    shutil.copyfileobj(raw, packed)
                path.unlink()
                path = work / "worker-gz.log.gz"
            small = work / f"small-{fmt}.log"
            small_lines = WRITERS[source](small, args.lines // 10)
            _, _, small_peak, _ = measure(small, work)
            small.unlink()
            seconds, cpu, peak, findings = measure(path, work)
            rate = lines / max(seconds - base, 1e-6)
            cpu_rate = lines / max(cpu - base_cpu, 1e-6)
            size = path.stat().st_size / 1e6
            print(f"{fmt:9} {lines:>10,} lines {size:7.1f} MB  {seconds:6.2f} s: {rate:>9,.0f} lines/s "
                  f"({cpu_rate:,.0f} per CPU second)  peak RSS {peak:5.1f} MiB ({small_lines:,} lines: "
                  f"{small_peak:.1f} MiB)  {findings} findings", flush=True)
            path.unlink()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
