"""The log engine on the formats users really have: Celery's default and task formats, a custom
worker_log_format, JSON lines (python-json-logger, structlog), `journalctl -o json` (with the kernel's OOM
killer), CRI and docker json-file container logs, kubectl/compose prefixes, syslog and dmesg; rotated and
gzipped files, standard input, cut lines. Fixtures are the lines Celery 5.7 writes (see tests/test_logs_workers.py
for the same signatures from real workers)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from celery_doctor.logs import InputError, expand, scan_paths
from celery_doctor.logs.formats import parse_time
from celery_doctor.logs.readers import MAX_LINE
from celery_doctor.parts import logs as P

T0 = 1714557600.0  # 2024-05-01 10:00:00 UTC
ID = ["3f2c9a4e-0000-4000-8000-%012d" % i for i in range(40)]


def stamp(seconds: float = 0.0) -> str:
    t = T0 + seconds
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f",{int(t % 1 * 1000):03d}"


def line(seconds, level, process, message):
    return f"[{stamp(seconds)}: {level}/{process}] {message}"


def kill_story(node="celery@w1", pid=4321):
    """A prefork worker: two tasks received, one logs from ForkPoolWorker-3 and dies with it, one finishes."""
    return [
        line(0, "INFO", "MainProcess", f"{node} ready."),
        line(1, "INFO", "MainProcess", f"Task shop.charge[{ID[0]}] received"),
        line(1.1, "INFO", "MainProcess", f"Task shop.mail[{ID[1]}] received"),
        line(1.2, "WARNING", "ForkPoolWorker-3", f"shop.charge[{ID[0]}]: charging card"),
        line(1.5, "INFO", "ForkPoolWorker-1", f"Task shop.mail[{ID[1]}] succeeded in 0.3s: None"),
        line(3, "ERROR", "MainProcess", f"Process 'ForkPoolWorker-3' pid:{pid} exited with 'signal 9 (SIGKILL)'"),
        line(3.1, "ERROR", "MainProcess", "Task handler raised error: WorkerLostError('Worker exited prematurely: "
                                          "signal 9 (SIGKILL) Job: 0.')"),
        "Traceback (most recent call last):",
        '  File "/venv/lib/python3.11/site-packages/billiard/pool.py", line 1367, in mark_as_worker_lost',
        "billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 0.",
        line(4, "INFO", "MainProcess", f"Task shop.mail[{ID[2]}] received"),
        line(4.2, "INFO", "ForkPoolWorker-4", f"Task shop.mail[{ID[2]}] succeeded in 0.2s: None"),
    ]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sig(state, kind, where=None):
    found = [s for s in state.signatures if s.kind == kind and (where is None or s.where == where)]
    assert len(found) == 1, [(s.kind, s.where) for s in state.signatures]
    return found[0]


def kinds(state):
    return sorted({s.kind for s in state.signatures})


def test_default_format_names_the_task_a_killed_process_ran(tmp_path):
    state = scan_paths([write(tmp_path / "worker.log", kill_story())])
    killed = sig(state, P.POOL_PROCESS_KILLED, "celery@w1")
    assert killed.tasks == (("shop.charge", ID[0]),) and killed.details["identified"] == 1
    assert killed.details["signals"] == {"signal 9 (SIGKILL)": 1} and killed.details["pids"] == (4321,)
    assert killed.details["worker_lost_errors"] == 1 and killed.first == pytest.approx(T0 + 3, abs=0.01)
    assert kinds(state) == [P.POOL_PROCESS_KILLED]  # the traceback lines are not records of their own
    assert state.sources[0].formats == ("celery",) and state.sources[0].records == 9
    assert state.tasks_received == 3 and state.tasks_finished == 2 and state.naive_times
    assert [e.kind for e in state.timeline] == ["worker-ready", P.POOL_PROCESS_KILLED]
    assert "lost 1 task: shop.charge[3f2c9a4e…]" in state.timeline[1].what


def test_without_a_task_format_line_the_unfinished_tasks_of_that_moment_are_named(tmp_path):
    story = [text for text in kill_story() if "charging card" not in text]
    state = scan_paths([write(tmp_path / "worker.log", story)])
    killed = sig(state, P.POOL_PROCESS_KILLED)
    # both were open when the process died; shop.mail finished later, so only shop.charge is attributed
    assert killed.tasks == (("shop.charge", ID[0]),) and killed.details["candidates"] == 1
    assert "identified" not in killed.details


def test_a_hard_time_limit_kill_is_not_an_unexplained_kill(tmp_path):
    story = [
        line(0, "INFO", "MainProcess", f"Task shop.report[{ID[5]}] received"),
        line(0.5, "WARNING", "MainProcess", f"Soft time limit (0.5s) exceeded for shop.report[{ID[5]}]"),
        line(1, "ERROR", "MainProcess", "Task handler raised error: TimeLimitExceeded(1)"),
        line(1, "ERROR", "MainProcess", f"Hard time limit (1s) exceeded for shop.report[{ID[5]}]"),
        line(1.1, "ERROR", "MainProcess", "Process 'ForkPoolWorker-1' pid:77 exited with 'signal 9 (SIGKILL)'"),
    ]
    state = scan_paths([write(tmp_path / "w.log", story)])
    assert kinds(state) == [P.HARD_TIME_LIMIT, P.SOFT_TIME_LIMIT]
    hard = sig(state, P.HARD_TIME_LIMIT)
    assert hard.tasks == (("shop.report", ID[5]),) and hard.details == {"limits": {"1 s": 1}, "process_exits": 1}
    assert sig(state, P.SOFT_TIME_LIMIT).details["outcomes"] == {"hard": 1}


def test_custom_worker_log_format(tmp_path):
    fmt = "%(asctime)s %(levelname)-8s %(processName)s %(name)s: %(message)s"  # worker_log_format
    rows = [("0.0", "INFO", "MainProcess", "celery.apps.worker", "celery@custom ready."),
            ("1.0", "INFO", "MainProcess", "celery.worker.strategy", f"Task shop.charge[{ID[0]}] received"),
            ("2.0", "ERROR", "MainProcess", "celery.worker.consumer.consumer",
             "Received unregistered task of type 'shop.old_name'."),
            (None, None, None, None, "The message has been ignored and discarded."),
            (None, None, None, None, "The full contents of the message body was:"),
            (None, None, None, None, "b'[[\"Task shop.fake[x] received\"], {}, {}]' (40b)"),
            (None, None, None, None, "The full contents of the message headers:"),
            (None, None, None, None, f"{{'lang': 'py', 'task': 'shop.old_name', 'id': '{ID[9]}', 'argsrepr': \"('s3cr3t',)\"}}"),
            ("3.0", "ERROR", "MainProcess", "celery.worker.request",
             "Hard time limit (30s) exceeded for shop.charge[" + ID[0] + "]")]
    lines = []
    for seconds, level, process, logger, message in rows:
        if seconds is None:
            lines.append(message)
        else:
            lines.append(fmt % {"asctime": stamp(float(seconds)), "levelname": level, "processName": process,
                                "name": logger, "message": message})
    state = scan_paths([write(tmp_path / "custom.log", lines)])
    assert state.sources[0].formats == ("celery-custom",)
    assert sig(state, P.UNREGISTERED).tasks == (("shop.old_name", ID[9]),)
    assert sig(state, P.HARD_TIME_LIMIT, "celery@custom").first == pytest.approx(T0 + 3, abs=0.01)
    assert state.tasks_received == 1  # the body's "Task shop.fake[x] received" is not a record
    assert "s3cr3t" not in repr(state)


def test_json_lines_python_json_logger_and_structlog(tmp_path):
    pjl = [json.dumps({"asctime": stamp(0), "levelname": "INFO", "processName": "MainProcess",
                       "name": "celery.worker.strategy", "message": f"Task shop.charge[{ID[0]}] received",
                       "data": {"id": ID[0], "args": "('4111-1111',)"}}),
           json.dumps({"asctime": stamp(1), "levelname": "INFO", "processName": "MainProcess",
                       "message": f"Discarding revoked task: shop.charge[{ID[0]}]"}),
           json.dumps({"asctime": stamp(2), "levelname": "ERROR", "processName": "ForkPoolWorker-2",
                       "message": f"Task shop.retry[{ID[3]}] raised unexpected: MaxRetriesExceededError(\"Can't "
                                  f"retry shop.retry[{ID[3]}] args:('4111-1111',) kwargs:{{}}\")",
                       "exc_info": "Traceback (most recent call last):\n  File \"x.py\"\ncelery.exceptions."
                                   "MaxRetriesExceededError: Can't retry"})]
    structlog = [json.dumps({"event": "missed heartbeat from celery@w2", "level": "info",
                             "timestamp": "2024-05-01T10:00:05.000000Z", "logger": "celery.worker.consumer.gossip"}),
                 json.dumps({"event": "Substantial drift from celery@w2 may mean clocks are out of sync.  Current "
                                      "drift is 120 seconds.  [orig: 2024-05-01 10:02:05 recv: 2024-05-01 10:00:05]",
                             "level": "warning", "timestamp": T0 + 6})]
    state = scan_paths([write(tmp_path / "app.json", pjl), write(tmp_path / "other.json", structlog)])
    assert [s.formats for s in state.sources] == [("json",), ("json",)]
    assert sig(state, P.REVOKED_DISCARDED).tasks == (("shop.charge", ID[0]),)
    retries = sig(state, P.RETRIES_EXHAUSTED)
    assert retries.tasks == (("shop.retry", ID[3]),) and retries.first == pytest.approx(T0 + 2, abs=0.01)
    assert sig(state, P.MISSED_HEARTBEAT).details["nodes"] == {"celery@w2": 1}
    drift = sig(state, P.CLOCK_DRIFT)
    assert drift.details["max_drift_s"] == 120 and drift.first == pytest.approx(T0 + 6)
    assert "4111" not in repr(state)


def journald(message, seconds, unit="celery-worker.service", ident="celery", pid="812", host="worker-1",
             transport="stdout"):
    fields = {"__CURSOR": "s=1;i=2", "__REALTIME_TIMESTAMP": str(int((T0 + seconds) * 1e6)), "_TRANSPORT": transport,
              "PRIORITY": "6", "SYSLOG_IDENTIFIER": ident, "_PID": pid, "_HOSTNAME": host, "MESSAGE": message}
    if unit:
        fields["_SYSTEMD_UNIT"] = unit
    return "{ " + json.dumps(fields, separators=(", ", " : "))[1:-1] + " }"  # as journalctl -o json writes


def test_journald_json_joins_the_oom_killer_to_the_pool_process_it_killed(tmp_path):
    records = [journald(text, i * 0.1) for i, text in enumerate(kill_story(pid=4321)[:7])]
    records.insert(4, journald("Out of memory: Killed process 4321 (celery) total-vm:2097152kB, anon-rss:1048576kB, "
                               "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4096kB oom_score_adj:0", 2.9, unit=None,
                               ident="kernel", pid=None, transport="kernel"))
    records.insert(4, journald("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
                               "global_oom,task_memcg=/system.slice/celery-worker.service,task=celery,pid=4321,uid=1000",
                               2.9, unit=None, ident="kernel", pid=None, transport="kernel"))
    records.append(journald("Out of memory: Killed process 999 (postgres) total-vm:1kB", 9, unit=None, ident="kernel",
                            pid=None, transport="kernel"))
    state = scan_paths([write(tmp_path / "journal.json", records)])
    assert state.sources[0].formats[0] == "journald"
    oom = sig(state, P.OOM_KILL, "worker-1/kernel")
    assert oom.count == 1 and oom.details["pids"] == (4321,)  # the oom-kill: line and the Killed line are one kill
    assert oom.details["matched"] == ("ForkPoolWorker-3 of celery@w1",) and oom.tasks == (("shop.charge", ID[0]),)
    killed = sig(state, P.POOL_PROCESS_KILLED, "celery@w1")
    assert killed.details["oom"] == 1
    assert oom.details["other_processes"] == 1  # postgres: counted, not reported as a Celery process
    assert any("OOM killer" in e.what for e in state.timeline if e.kind == P.POOL_PROCESS_KILLED)


def test_cri_lines_with_partial_lines_and_docker_json_file(tmp_path):
    pods = tmp_path / "var/log/pods/shop_worker-7d9f_1234/worker"
    pods.mkdir(parents=True)
    cri = []
    for i, text in enumerate(kill_story()[:7]):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i)) + ".123456789Z"
        if "exited with" in text:
            cri.append(f"{ts} stderr P {text[:30]}")
            cri.append(f"{ts} stderr F {text[30:]}")
        else:
            cri.append(f"{ts} stderr F {text}")
    docker_dir = tmp_path / "var/lib/docker/containers" / ("ab12cd34ef56" + "0" * 52)
    docker_dir.mkdir(parents=True)
    docker = [json.dumps({"log": text + "\n", "stream": "stderr",
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + i)) + ".5Z"})
              for i, text in enumerate(kill_story(node="celery@docker")[:7])]
    state = scan_paths([write(pods / "0.log", cri), write(docker_dir / ("ab12cd34ef56" + "0" * 52 + "-json.log"), docker)])
    assert [s.formats for s in state.sources] == [("cri", "celery"), ("docker", "celery")]
    # the envelope's time (with a zone) is used: exited-with was the 6th line, logged at T0 + 5 by the runtime
    assert sig(state, P.POOL_PROCESS_KILLED, "celery@w1").first == pytest.approx(T0 + 5.123, abs=0.01)
    assert sig(state, P.POOL_PROCESS_KILLED, "celery@docker").tasks == (("shop.charge", ID[0]),)


def test_pod_and_container_names_label_streams_before_a_worker_names_itself(tmp_path):
    pods = tmp_path / "var/log/pods/shop_worker-7d9f_1234/worker"
    pods.mkdir(parents=True)
    story = [text for text in kill_story() if "ready." not in text]
    cri = [f"2024-05-01T10:00:0{i % 10}.000000000Z stdout F {text}" for i, text in enumerate(story)]
    state = scan_paths([write(pods / "0.log", cri)])
    assert sig(state, P.POOL_PROCESS_KILLED).where == "worker-7d9f/worker"


def test_two_beats_sending_the_same_entry_at_once_but_not_a_failover(tmp_path):
    def beat(offset, count, entry="nightly-sync"):
        return [line(offset + i * 10, "INFO", "MainProcess", f"Scheduler: Sending due task {entry} (shop.sync)")
                for i in range(count)]

    compose = []
    for a, b in zip(beat(0, 30), beat(3, 30)):
        compose += [f"beat-1  | {a}", f"beat-2  | {b}"]
    compose += [f"beat-1  | {text}" for text in beat(0, 3, "failover-entry")]
    compose += [f"beat-2  | {text}" for text in beat(100, 3, "failover-entry")]  # took over after beat-1 stopped
    state = scan_paths([write(tmp_path / "compose.log", compose)])
    dup = sig(state, P.BEAT_DUPLICATE)
    assert dup.details["entry"] == "nightly-sync" and dup.details["origins"] == {"beat-1": 30, "beat-2": 30}
    assert 28 <= dup.count <= 30 and dup.details["period_s"] == 10


def test_kubectl_prefix_separates_pods(tmp_path):
    lines = [f"[pod/worker-a/worker] {text}" for text in kill_story(node="celery@a")]
    lines += [f"[pod/worker-b/worker] {text}" for text in kill_story(node="celery@b", pid=5555)[:4]]
    state = scan_paths([write(tmp_path / "kubectl.log", lines)])
    assert sig(state, P.POOL_PROCESS_KILLED, "celery@a").tasks == (("shop.charge", ID[0]),)
    never = sig(state, P.NEVER_FINISHED, "celery@b")  # its log ends with both tasks open
    assert never.tasks_total == 2


def test_syslog_and_dmesg_oom_lines(tmp_path):
    kern = ["May  1 10:00:03 worker-1 kernel: [12345.678901] Memory cgroup out of memory: Killed process 4321 "
            "(celery) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
            "May  1 10:00:04 worker-1 systemd[1]: celery.service: A process of this unit has been killed by the OOM killer."]
    dmesg = ["[12346.000000] python3 invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0",
             "[12346.100000] Out of memory: Killed process 6000 (python3) total-vm:1kB, anon-rss:1kB"]
    kern_path = write(tmp_path / "kern.log", kern)
    os.utime(kern_path, (T0 + 100, T0 + 100))
    state = scan_paths([kern_path, write(tmp_path / "dmesg.txt", dmesg)])
    syslog_oom = sig(state, P.OOM_KILL, "worker-1/kernel")
    assert syslog_oom.details["cgroup"] == 1 and syslog_oom.first == pytest.approx(T0 + 3)  # year from the file
    assert sig(state, P.OOM_KILL, "dmesg.txt").details["processes"] == {"python3": 1}


def test_rotated_and_gzipped_files_are_one_stream_oldest_first(tmp_path):
    story = kill_story()
    older, newer = story[:3], story[3:]
    (tmp_path / "worker.log.1.gz").write_bytes(gzip.compress(("\n".join(older) + "\n").encode()))
    write(tmp_path / "worker.log", newer)
    given = [str(tmp_path / "worker.log*")]
    assert [os.path.basename(i.name) for i in expand(given)] == ["worker.log.1.gz", "worker.log"]
    state = scan_paths(given)
    assert sig(state, P.POOL_PROCESS_KILLED).tasks == (("shop.charge", ID[0]),)
    assert P.NEVER_FINISHED not in kinds(state)  # shop.mail, received before the rotation, finished after it


def test_standard_input_and_bad_paths(tmp_path):
    script = ("import sys, json; from celery_doctor.logs import scan_paths; s = scan_paths(['-']); "
              "print(json.dumps([[g.kind, g.where] for g in s.signatures]))")
    done = subprocess.run([sys.executable, "-c", script], input="\n".join(kill_story()) + "\n", capture_output=True,
                          text=True, timeout=60)
    assert json.loads(done.stdout) == [[P.POOL_PROCESS_KILLED, "celery@w1"]], done.stderr
    with pytest.raises(InputError, match="not found"):
        expand([str(tmp_path / "nope.log")])
    with pytest.raises(InputError, match="no log file matches"):
        expand([str(tmp_path / "*.nothing")])
    with pytest.raises(InputError, match="is a directory"):
        expand([str(tmp_path)])


def test_a_line_without_end_is_cut_and_memory_stays_bounded(tmp_path):
    path = tmp_path / "huge.log"
    with open(path, "w") as out:
        out.write(line(0, "INFO", "MainProcess", f"Task shop.charge[{ID[0]}] received") + "\n")
        out.write(line(1, "ERROR", "MainProcess", "Received unregistered task of type 'x'.") + "\n")
        out.write("b'" + "A" * (8 * MAX_LINE) + "'\n")  # a body dump on one line
        out.write(line(2, "INFO", "ForkPoolWorker-1", f"Task shop.charge[{ID[0]}] succeeded in 1s: None") + "\n")
    state = scan_paths([str(path)])
    assert state.sources[0].cut_lines == 1 and any("64 KiB" in n for n in state.notes)
    assert kinds(state) == [P.UNREGISTERED] and state.tasks_finished == 1


def test_times():
    assert parse_time("2024-05-01 10:00:00,250") == (T0 + 0.25, True)
    assert parse_time("2024-05-01T12:00:00.5+02:00") == (T0 + 0.5, False)
    assert parse_time("2024-05-01T10:00:00.123456789Z")[0] == pytest.approx(T0 + 0.123456789)
    assert parse_time("1714557600123456") == (T0 + 0.123456, False)  # journald, microseconds
    assert parse_time(T0) == (T0, False)
    assert parse_time("May  1 10:00:00", year=2024) == (T0, True)
    assert parse_time("Wed May  1 10:00:00 2024") == (T0, True)
    assert parse_time("yesterday") == (None, False)


def test_a_bracketed_custom_format_with_more_fields(tmp_path):
    fmt = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
    messages = [("celery.apps.worker", "celery@extra ready."),
                ("celery.worker.strategy", f"Task shop.charge[{ID[0]}] received"),
                ("celery.worker.request", f"Hard time limit (30s) exceeded for shop.charge[{ID[0]}]")]
    lines = [fmt % {"asctime": stamp(i), "levelname": "INFO", "processName": "MainProcess", "name": name,
                    "message": message} for i, (name, message) in enumerate(messages)]
    state = scan_paths([write(tmp_path / "w.log", lines)])
    assert sig(state, P.HARD_TIME_LIMIT, "celery@extra").tasks == (("shop.charge", ID[0]),)
    assert state.sources[0].formats == ("celery-custom",)


def test_ledgers_and_samples_stay_bounded(tmp_path):
    from celery_doctor.logs.ledger import OPEN_TASKS, SAMPLE

    path = tmp_path / "flood.log"
    with open(path, "w") as out:
        out.write(line(0, "INFO", "MainProcess", "celery@flood ready.") + "\n")
        for i in range(OPEN_TASKS + 5000):  # received, never finished
            out.write(line(1, "INFO", "MainProcess", f"Task shop.t{i % 50}[id-{i}] received") + "\n")
        for i in range(3000):
            out.write(line(2, "INFO", "MainProcess", f"Discarding revoked task: shop.t{i}[rv-{i}]") + "\n")
    state = scan_paths([str(path)])
    never = sig(state, P.NEVER_FINISHED)
    assert never.tasks_total == OPEN_TASKS and len(never.tasks) == SAMPLE
    assert any("5,000 received tasks were forgotten" in note for note in state.notes)
    revoked = sig(state, P.REVOKED_DISCARDED)
    assert revoked.count == 3000 and len(revoked.tasks) == SAMPLE and len(revoked.names) <= 31


@pytest.mark.parametrize("seed", range(int(os.environ.get("CD_FUZZ_SEEDS", "3"))))
def test_garbage_never_crashes_the_engine(tmp_path, seed):
    import random

    rnd = random.Random(seed)
    pieces = ["[", "]", "{", "}", '"', "Task ", "x[", "] received", "Process '", " pid:", " exited with ",
              "Hard time limit (", "s) exceeded for ", "Received unregistered task of type ", "\x1b[31m", "\u202e",
              "Restoring ", "missed heartbeat from ", "Scheduler: Sending due task ", "2024-05-01", "T10:00:00Z",
              " stdout F ", "MESSAGE", ": ", "\\", "é", "\t", " ", "9" * 30, "Killed process ", "oom-kill:"]
    lines = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12))) for _ in range(3000)]
    journal = [journald(text, i) for i, text in enumerate(lines[:500])] + lines[500:1000]
    journal += [journald(text, 0)[:-5] for text in lines[1000:1100]]  # cut records
    cri = [f"2024-05-01T10:00:00.{i:09d}Z stdout {rnd.choice('PF')} {text}" for i, text in enumerate(lines[:1000])]
    docker = [json.dumps({"log": text + "\n", "stream": "stdout", "time": "2024-05-01T10:00:00Z"}) for text in lines[:500]]
    paths = [write(tmp_path / "garbage.log", lines), write(tmp_path / "journal.json", journal),
             write(tmp_path / "cri.log", cri), write(tmp_path / "docker.log", docker + lines[:100])]
    state = scan_paths(paths)
    assert state.lines >= 3000 + 1100 + 1000 + 600
    assert [s.formats[:1] for s in state.sources][1:] == [("journald",), ("cri",), ("docker",)]
    from celery_doctor.logs.run import diagnose_logs
    from celery_doctor.reporters.json import format_json
    from celery_doctor.reporters.markdown import format_markdown
    from celery_doctor.reporters.text import format_text

    report, _ = diagnose_logs(paths)  # the checks raise here (CELERY_DOCTOR_RAISE_CHECK_ERRORS=1)
    for width in (40, 120):
        assert all(len(out) <= width for out in format_text(report, width=width).split("\n"))
    assert json.loads(format_json(report))["mode"] == "logs" and format_markdown(report)


def test_rabbitmq_ack_timeout_in_both_shapes_and_a_restart_without_shutdown(tmp_path):
    text = ("PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. "
            "This timeout value can be configured, see consumers doc guide to learn more")
    celery57 = [  # Celery 5.7: the worker stops (celery/worker/worker.py `Unrecoverable error: %r`)
        line(0, "INFO", "MainProcess", "celery@rmq ready."),
        line(1, "INFO", "MainProcess", f"Task shop.export[{ID[0]}] received"),
        line(1900, "CRITICAL", "MainProcess", f"Unrecoverable error: PreconditionFailed(406, '{text}', (60, 80), "
                                              "'Basic.ack')"),
        "Traceback (most recent call last):",
        f"amqp.exceptions.PreconditionFailed: Basic.ack: (406) {text}",
        line(1905, "INFO", "MainProcess", "celery@rmq ready."),  # restarted by its supervisor
        line(1906, "INFO", "MainProcess", f"Task shop.export[{ID[0]}] received"),  # the redelivery
        line(1907, "INFO", "MainProcess", f"Task shop.mail[{ID[1]}] received"),
        line(1999, "INFO", "MainProcess", "celery@rmq ready."),  # killed (no shutdown line), restarted
    ]
    older = [  # earlier versions: a connection error with the broker's text in the traceback
        line(0, "INFO", "MainProcess", "celery@old ready."),
        line(5, "ERROR", "MainProcess", "consumer: Connection to broker lost. Trying to re-establish the connection..."),
        "Traceback (most recent call last):",
        '  File "/venv/lib/python3.10/site-packages/amqp/connection.py", line 514, in channel',
        f"amqp.exceptions.PreconditionFailed: (0, 0): (406) {text}",
    ]
    state = scan_paths([write(tmp_path / "rmq.log", celery57), write(tmp_path / "old.log", older)])
    ack = sig(state, P.ACK_TIMEOUT, "celery@rmq")
    assert ack.details["timeout_ms"] == 1800000 and ack.tasks == (("shop.export", ID[0]),)
    assert sig(state, P.ACK_TIMEOUT, "celery@old").count == 1
    stopped = sig(state, P.STOPPED_WITH_TASKS, "celery@rmq")
    assert stopped.details["how"] == {"unrecoverable error (PreconditionFailed)": 1,
                                      "restarted without a logged shutdown (killed?)": 1}
    assert stopped.tasks == (("shop.export", ID[0]), ("shop.mail", ID[1]))


def test_kernel_oom_lines_shipped_as_json_records(tmp_path):
    records = [json.dumps({"timestamp": "2024-05-01T10:00:03Z", "host": "node-7", "message": text}) for text in (
        "Memory cgroup out of memory: Killed process 4321 (celery) total-vm:1kB, anon-rss:1kB, file-rss:0kB",
        "oom_reaper: reaped process 4321 (celery), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB")]
    state = scan_paths([write(tmp_path / "shipped.json", records)])
    oom = sig(state, P.OOM_KILL)
    assert oom.count == 1 and oom.details["pids"] == (4321,) and oom.first == pytest.approx(T0 + 3)


def test_one_journald_unit_over_two_exports_is_one_stream_with_both_sources(tmp_path):
    story = kill_story()
    first = write(tmp_path / "part1.json", [journald(text, i) for i, text in enumerate(story[:3])])
    second = write(tmp_path / "part2.json", [journald(text, 10 + i) for i, text in enumerate(story[3:])])
    state = scan_paths([first, second])
    killed = sig(state, P.POOL_PROCESS_KILLED, "celery@w1")
    assert killed.tasks == (("shop.charge", ID[0]),) and set(killed.sources) == {first, second}
    assert [s.records for s in state.sources] == [3, 6] and P.NEVER_FINISHED not in kinds(state)


def test_lines_across_chunks_and_a_line_longer_than_the_limit(tmp_path, monkeypatch):
    from celery_doctor.logs import readers

    monkeypatch.setattr(readers, "MAX_LINE", 50)
    path = tmp_path / "w.log"
    path.write_bytes(b"first line\r\n" + b"x" * 500 + b"\nthird \xff line\nno newline at the end\r")
    stats = readers.LineStats()
    batches = list(readers.read_batches(expand([str(path)])[0], stats, chunk=7))
    lines = [text for batch in batches for text in batch]
    assert lines == ["first line", "x" * 50, "third \ufffd line", "no newline at the end"]
    assert stats.cut == 1 and stats.lines == 4
