"""Run the celery-doctor CLI in a child process and read its own peak RSS with wait4 (the CLI ends with os._exit,
so nothing can report from inside it after the run)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def run_cli(args: list, cwd, env: dict, timeout: float) -> tuple[float, int, str, str]:
    """(wall seconds, the child's peak RSS in KB, stdout, stderr) of `python -m celery_doctor ARGS`; the child is
    killed after `timeout` seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "celery_doctor", *args], cwd=cwd, env=env, stdout=out,
                                 stderr=err)
        while True:
            pid, _, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                child.kill()
            time.sleep(0.02)
        wall = time.perf_counter() - started
        child.returncode = 0  # reaped here: keep Popen from waiting for it again
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss, out.read(), err.read()
