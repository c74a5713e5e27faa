"""Real `celery worker` subprocesses for tests: start one, wait until it is ready, always stop it.

Usage in a test module::

    from tests.workerproc import WorkerProcess, worker_factory, module_worker_factory  # noqa: F401 (fixtures)

    def test_x(worker_factory, tmp_path):
        w = worker_factory("myapp", cwd=tmp_path, broker="redis://127.0.0.1:6379/7",
                           queues=["q-" + uid], pool="solo")
        assert w.nodename in ...

`worker_factory` stops its workers at the end of the test, `module_worker_factory` at the end of the
module (start workers once per module: a worker takes about a second to start). Each worker gets a
unique node name (`<name>@<host>`, name defaults to a uuid-based one) and runs in its own process
group, so stopping it also stops its prefork children: SIGTERM (warm shutdown), then SIGKILL after
`term_timeout` seconds. Its log (stdout+stderr) is kept in a file: `worker.log_text()`.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import pytest

CELERY_BIN = str(Path(sys.executable).with_name("celery"))
FAST_START = ("--without-gossip", "--without-mingle", "--without-heartbeat")
PathLike = Union[str, os.PathLike]


class WorkerStartError(RuntimeError):
    pass


def unique_name(prefix: str = "w") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class WorkerProcess:
    """One `celery worker` subprocess."""

    def __init__(
        self,
        app: str,
        *,
        cwd: Optional[PathLike] = None,
        pythonpath: Iterable[PathLike] = (),
        broker: Optional[str] = None,
        queues: Optional[Sequence[str]] = None,
        pool: str = "solo",
        concurrency: int = 1,
        name: Optional[str] = None,
        extra_args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        loglevel: str = "info",
        fast_start: bool = True,
        log_dir: Optional[PathLike] = None,
        term_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.cwd = str(cwd) if cwd is not None else None
        self.pythonpath = [str(p) for p in pythonpath]
        self.broker = broker
        self.queues = list(queues) if queues else None
        self.pool = pool
        self.concurrency = concurrency
        self.name = name or unique_name()
        self.nodename = f"{self.name}@{socket.gethostname()}"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.loglevel = loglevel
        self.fast_start = fast_start
        self.term_timeout = term_timeout
        log_dir = Path(log_dir or self.cwd or ".")
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self._log_handle = None

    # -- lifecycle -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [CELERY_BIN, "--app", self.app]
        if self.broker:
            cmd += ["--broker", self.broker]
        cmd += ["worker", "--loglevel", self.loglevel, "--pool", self.pool,
                "--concurrency", str(self.concurrency), "--hostname", f"{self.name}@%h"]
        if self.queues:
            cmd += ["--queues", ",".join(self.queues)]
        if self.fast_start:
            cmd += list(FAST_START)
        return cmd + self.extra_args

    def start(self) -> "WorkerProcess":
        env = dict(os.environ)
        paths = self.pythonpath + ([self.cwd] if self.cwd else [])
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.log_path, "wb")  # noqa: SIM115 - the worker writes to it until stop() closes it
        self.proc = subprocess.Popen(self.command(), cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> "WorkerProcess":
        """Block until the worker logs `<nodename> ready.` (it then consumes and answers control)."""
        marker = f"{self.nodename} ready."
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if marker in self.log_text():
                return self
            if not self.alive():
                raise WorkerStartError(f"worker {self.nodename} exited with {self.proc.returncode}:\n{self.tail()}")
            time.sleep(0.05)
        raise WorkerStartError(f"worker {self.nodename} not ready within {timeout:g} s:\n{self.tail()}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log_text():
                return True
            time.sleep(0.05)
        return False

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the group this worker leads (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, term_timeout: Optional[float] = None) -> Optional[int]:
        """SIGTERM (warm shutdown), then SIGKILL the whole process group. Always safe to call again."""
        if self.proc is None:
            return None
        timeout = self.term_timeout if term_timeout is None else term_timeout
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children of a prefork pool may outlive the parent for a moment: always sweep the group.
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log_handle:
            self._log_handle.close()
            self._log_handle = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL at once (a crash: nothing is restored, the pidbox binding stays on Redis)."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WorkerProcess({self.nodename}, pid={self.pid}, pool={self.pool}, queues={self.queues})"


def start_worker(app: str, *, ready_timeout: float = 30.0, **kwargs) -> WorkerProcess:
    """Start a worker and wait until it is ready; stop it yourself (or use the fixtures)."""
    worker = WorkerProcess(app, **kwargs).start()
    try:
        worker.wait_ready(ready_timeout)
    except BaseException:
        worker.stop(term_timeout=1.0)
        raise
    return worker


class WorkerFactory:
    """Starts workers and remembers them, so that `stop_all` (a fixture finalizer) stops every one."""

    def __init__(self) -> None:
        self.workers: list[WorkerProcess] = []

    def __call__(self, app: str, *, wait: bool = True, ready_timeout: float = 30.0, **kwargs) -> WorkerProcess:
        worker = WorkerProcess(app, **kwargs)
        self.workers.append(worker)  # before start: a failed start is still stopped
        worker.start()
        if wait:
            worker.wait_ready(ready_timeout)
        return worker

    def start_many(self, specs: Sequence[Mapping], ready_timeout: float = 30.0) -> list[WorkerProcess]:
        """Start several workers at once (in parallel), then wait for all: faster than one by one."""
        started = []
        for spec in specs:
            spec = dict(spec)
            app = spec.pop("app")
            started.append(self(app, wait=False, **spec))
        for worker in started:
            worker.wait_ready(ready_timeout)
        return started

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker._signal_group(signal.SIGTERM)  # let them all shut down together
        for worker in reversed(self.workers):
            worker.stop()
        self.workers.clear()


def workers_fixture(scope: str = "function"):
    """A pytest fixture (of that scope) yielding a WorkerFactory whose workers are stopped at teardown."""

    @pytest.fixture(scope=scope)
    def _factory():
        factory = WorkerFactory()
        try:
            yield factory
        finally:
            factory.stop_all()

    return _factory


worker_factory = workers_fixture("function")
module_worker_factory = workers_fixture("module")
