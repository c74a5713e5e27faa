"""Benchmark: how many Celery events per second `celery-doctor watch` takes into its ledger, and its peak memory.

    .venv/bin/python bench/watch_events.py replay  [--events 300000]
    .venv/bin/python bench/watch_events.py publish [--rate 2000] [--seconds 30] [--db 6]

- replay: synthetic events as kombu puts them on a Redis fanout channel (JSON envelopes, base64 bodies,
  `task.multi` batches like a worker's and single `task.sent` events like a producer's) go through the watch's
  own decoding and ledger (`decode_redis` then `Session.feed`) as fast as they can: events/s and peak RSS.
- publish: a separate process PUBLISHes those envelopes to the real event channel of Redis db N at a steady
  rate, while the real watch (`run_watch`: its PSUBSCRIBE thread, decoding, ledger, CLIENT LIST probes) listens;
  prints the events received per second over the run, those dropped, and the watch process's peak RSS.

Tasks are short-lived and unique (sent, received, started, succeeded; 1% failed, 1% left open), with
heartbeats from 20 workers, so a long run exercises the ledger's bounds (finished tasks dropped, open ones
capped). Not part of the test suite.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKERS = [f"celery@bench-worker-{i}" for i in range(20)]


def envelope(body, routing_key: str, hostname: str) -> bytes:
    raw = json.dumps(body).encode()
    return json.dumps({
        "body": base64.b64encode(raw).decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"hostname": hostname},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}}).encode()


def messages(count_events: int):
    """(payload, events in it) until count_events events were produced."""
    produced = 0
    n = 0
    while produced < count_events:
        n += 1
        task_id = f"{uuid.uuid4()}"
        worker = WORKERS[n % len(WORKERS)]
        now = time.time()
        sent = {"type": "task-sent", "uuid": task_id, "name": "bench.tasks.work", "args": "(1, 2)", "kwargs": "{}",
                "queue": "celery", "exchange": "", "routing_key": "celery", "retries": 0, "eta": None,
                "expires": None, "hostname": "gen4242@producer", "pid": 4242, "clock": n, "timestamp": now,
                "utcoffset": 0}
        yield envelope(sent, "task.sent", "gen4242@producer"), 1
        batch = [{"type": "task-received", "uuid": task_id, "name": "bench.tasks.work", "args": "(1, 2)",
                  "kwargs": "{}", "retries": 0, "hostname": worker, "pid": 100, "timestamp": now},
                 {"type": "task-started", "uuid": task_id, "hostname": worker, "pid": 100, "timestamp": now}]
        if n % 100 == 0:
            batch.append({"type": "task-failed", "uuid": task_id, "exception": "ValueError('x')",
                          "traceback": "Traceback ...", "hostname": worker, "pid": 100, "timestamp": now})
        elif n % 100 != 50:  # 1% stay open (started, never finished)
            batch.append({"type": "task-succeeded", "uuid": task_id, "result": "3", "runtime": 0.01,
                          "hostname": worker, "pid": 100, "timestamp": now})
        yield envelope(batch, "task.multi", worker), len(batch)
        produced += 1 + len(batch)
        if n % 50 == 0:
            hb = {"type": "worker-heartbeat", "hostname": worker, "pid": 100, "freq": 2.0, "active": 1,
                  "processed": n, "timestamp": now, "sw_ver": "5.7.0"}
            yield envelope(hb, "worker.heartbeat", worker), 1
            produced += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_replay(args) -> None:
    from celery_doctor.watch.decode import decode_redis
    from celery_doctor.watch.session import Session

    payloads = list(messages(args.events))  # built first: the timing covers decoding and the ledger only
    built_rss = peak_rss_mb()
    session = Session({"transport": "redis", "db": 6, "bound": 30, "started_at": time.time(),
                       "max_open": args.max_open})
    started = time.perf_counter()
    events = 0
    for payload, _ in payloads:
        decoded, _bad = decode_redis(payload)
        t = time.time()
        for event in decoded:
            session.feed(t, "event", event)
        events += len(decoded)
    elapsed = time.perf_counter() - started
    state = session.state()
    print(f"replay: {events:,} events in {elapsed:.2f} s = {events / elapsed:,.0f} events/s")
    print(f"  ledger: {len(session.ledger.open):,} open (limit {args.max_open:,}, {session.ledger.open_dropped:,} "
          f"dropped), {len(session.ledger.notable):,} notable ({session.ledger.notable_dropped:,} dropped), "
          f"{sum(session.ledger.finished.values()):,} finished and summarised; report part: {len(state.tasks):,} tasks")
    print(f"  peak RSS {peak_rss_mb():.0f} MB (of which {built_rss:.0f} MB before the ledger: the generated "
          "messages held in memory)")


PUBLISHER = r'''
import sys, time
sys.path.insert(0, sys.argv[4])
import redis
from bench.watch_events import messages
rate, seconds, channel_base = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
client = redis.Redis(db=int(sys.argv[5]))
pipe = client.pipeline(transaction=False)
sent = 0
start = time.monotonic()
for payload, count in messages(int(rate * seconds)):
    routing_key = "task.multi" if count > 1 else ("task.sent" if b"task.sent" in payload else "worker.heartbeat")
    pipe.publish(channel_base + "/" + routing_key, payload)
    sent += count
    if len(pipe) >= 50:
        pipe.execute()
        ahead = sent / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
pipe.execute()
print(sent, time.monotonic() - start, flush=True)
'''


def bench_publish(args) -> None:
    from celery import Celery

    from celery_doctor.watch.engine import WatchOptions, run_watch, target_for_app
    from celery_doctor.watch.live import View

    app = Celery("bench", broker=f"redis://127.0.0.1:6379/{args.db}", set_as_current=False)
    app.conf.event_exchange = f"celeryev-bench-{uuid.uuid4().hex[:6]}"  # its own channel: no real worker mixes in

    samples = []

    class Sampler(View):
        def update(self, frame):
            samples.append((time.monotonic(), frame.events))

        def close(self, frame):
            pass

    stop = threading.Event()
    result = {}
    options = WatchOptions(bound=30.0, max_open=args.max_open)
    thread = threading.Thread(target=lambda: result.update(
        state=run_watch(target_for_app(app), options, stop=stop, view=Sampler())))
    thread.start()
    time.sleep(1.0)
    channel = f"/{args.db}.{app.conf.event_exchange}"
    publisher = subprocess.run([sys.executable, "-c", PUBLISHER, str(args.rate), str(args.seconds), channel,
                                str(ROOT), str(args.db)], capture_output=True, text=True)
    published, took = publisher.stdout.split() if publisher.returncode == 0 else (0, 0)
    time.sleep(1.0)
    stop.set()
    thread.join(60)
    state = result["state"]
    # from the first event in to the last one in (the idle second before and after is left out)
    window = [s for s in samples if 0 < s[1] < state.events] or samples
    rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
    print(f"publish: {int(published):,} events published in {float(took):.1f} s ({args.rate:,.0f}/s asked); "
          f"the watch took {state.events:,} into its ledger, {rate:,.0f} events/s sustained")
    dropped = [n for n in state.notes if "dropped" in n]
    print(f"  dropped: {dropped[0] if dropped else 'none'}; open tasks {len(state.tasks):,} "
          f"(limit {args.max_open:,}, {state.open_dropped:,} dropped)")
    print(f"  peak RSS of the watch process {peak_rss_mb():.0f} MB")
    if publisher.returncode:
        print(publisher.stderr, file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    replay = sub.add_parser("replay")
    replay.add_argument("--events", type=int, default=300_000)
    replay.add_argument("--max-open", type=int, default=10_000)
    publish = sub.add_parser("publish")
    publish.add_argument("--rate", type=float, default=2000)
    publish.add_argument("--seconds", type=float, default=30)
    publish.add_argument("--db", type=int, default=6)
    publish.add_argument("--max-open", type=int, default=10_000)
    args = parser.parse_args()
    os.chdir(ROOT)
    (bench_replay if args.mode == "replay" else bench_publish)(args)


if __name__ == "__main__":
    main()
