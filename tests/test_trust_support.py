"""Shared helpers for the trust tests (no tests here): canaries, CLI runs that capture everything a run can
write (stdout, stderr, --output files, crash logs), blackholed ports, a Redis ACL user and a RabbitMQ user
that exist only for one test.

Redis databases 11-14 belong to the trust tests.
"""
from __future__ import annotations

import base64
import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
API = "http://127.0.0.1:15672/api"
GUEST = "Basic " + base64.b64encode(b"guest:guest").decode()


def canary(tag: str = "") -> str:
    """A password nobody else uses: any appearance of it in output is a leak."""
    return f"Canary{tag}-{uuid.uuid4().hex}"


def uid() -> str:
    return uuid.uuid4().hex[:10]


# ------------------------------------------------------------------------------------------- redis

def redis_client(db: int = 11):
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=10)


def redis_available() -> bool:
    try:
        return bool(redis_client().ping())
    except Exception:  # noqa: BLE001
        return False


class AclUser:
    """A Redis ACL user created for one test (several passwords allowed), deleted at the end."""

    def __init__(self, passwords: list[str], rules: tuple[str, ...] = ("~*", "&*", "+@all")) -> None:
        self.name = f"cd-trust-{uid()}"
        self.passwords = passwords
        args = ["ACL", "SETUSER", self.name, "on", *[f">{p}" for p in passwords], *rules]
        redis_client().execute_command(*args)

    def url(self, db: int, password: Optional[str] = None, scheme: str = "redis", port: int = REDIS_PORT) -> str:
        return f"{scheme}://{self.name}:{password or self.passwords[0]}@{REDIS_HOST}:{port}/{db}"

    def delete(self) -> None:
        try:
            redis_client().execute_command("ACL", "DELUSER", self.name)
        except Exception:  # noqa: BLE001
            pass


def delete_new_keys(db: int, before: set) -> None:
    r = redis_client(db)
    created = [k for k in r.scan_iter(count=1000) if k not in before]
    for i in range(0, len(created), 500):
        r.delete(*created[i:i + 500])


# ---------------------------------------------------------------------------------------- rabbitmq

def api(method: str, path: str, body=None, auth: str = GUEST, timeout: float = 5):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, data=data, method=method,
                                     headers={"Authorization": auth, "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
        return json.loads(text) if text else None


def rabbit_available() -> bool:
    try:
        api("GET", "/overview", timeout=2)
        return True
    except Exception:  # noqa: BLE001
        return False


class RabbitUser:
    """A RabbitMQ user (monitoring tag, full rights on one vhost) that exists only for one test."""

    def __init__(self, password: str, vhost: str = "/", tags: str = "monitoring") -> None:
        self.name = f"cd-trust-{uid()}"
        self.password = password
        self.vhost = vhost
        api("PUT", f"/users/{self.name}", {"password": password, "tags": tags})
        api("PUT", f"/permissions/{quote(vhost, safe='')}/{self.name}",
            {"configure": ".*", "write": ".*", "read": ".*"})

    def url(self, password: Optional[str] = None, scheme: str = "amqp", port: int = 5672) -> str:
        return f"{scheme}://{self.name}:{password or self.password}@127.0.0.1:{port}/{quote(self.vhost, safe='')}"

    def delete(self) -> None:
        try:
            api("DELETE", f"/users/{self.name}")
        except urllib.error.HTTPError:
            pass


def make_vhost(prefix: str = "cd-trust") -> str:
    name = f"{prefix}-{uid()}"
    api("PUT", f"/vhosts/{quote(name, safe='')}", {})
    api("PUT", f"/permissions/{quote(name, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return name


def drop_vhost(name: str) -> None:
    try:
        api("DELETE", f"/vhosts/{quote(name, safe='')}")
    except urllib.error.HTTPError:
        pass


def vhost_names(kind: str, vhost: str) -> list[str]:
    return sorted(item["name"] for item in api("GET", f"/{kind}/{quote(vhost, safe='')}?columns=name"))


def vhost_bindings(vhost: str) -> list[tuple]:
    return sorted((b["source"], b["destination"], b["routing_key"])
                  for b in api("GET", f"/bindings/{quote(vhost, safe='')}"))


# ------------------------------------------------------------------------------------- blackholes

class Blackholes:
    """Two local ports that never answer.

    `silent`: a listener whose kernel completes the TCP handshake but which never reads or writes (an
    overloaded or hung peer). `unconnectable`: a listener with a full accept queue, so a connect() never
    completes (a firewall that drops SYNs). Both are closed at the end.
    """

    def __init__(self) -> None:
        self._socks: list[socket.socket] = []
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(128)
        self._socks.append(silent)
        self.silent = silent.getsockname()[1]
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        self._socks.append(full)
        self.unconnectable = full.getsockname()[1]
        for _ in range(4):  # fill the accept queue (and the SYN backlog) with connections never accepted
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", self.unconnectable))
            except (BlockingIOError, OSError):
                pass
            self._socks.append(filler)
        time.sleep(0.1)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.unconnectable))
            self.connect_hangs = False
        except (socket.timeout, TimeoutError):
            self.connect_hangs = True
        except OSError:
            self.connect_hangs = False
        finally:
            probe.close()

    def close(self) -> None:
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


def refused_port() -> int:
    """A local port nothing listens on (bound then closed: connect is refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------- CLI

@dataclass
class Run:
    args: tuple
    code: int
    stdout: str
    stderr: str
    seconds: float
    files: dict = field(default_factory=dict)  # --output path -> text
    crash_logs: dict = field(default_factory=dict)  # crash log path -> text

    def everything(self) -> str:
        return "\n".join([self.stdout, self.stderr, *self.files.values(), *self.crash_logs.values()])

    def json(self):
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"celery-doctor {' '.join(map(str, self.args))} -> exit {self.code} in {self.seconds:.2f} s\n"
                f"--- stderr ---\n{self.stderr[-3000:]}\n--- stdout ---\n{self.stdout[-3000:]}")


def cli(*args, cwd=None, env=None, outputs=(), timeout: float = 90, tmpdir=None) -> Run:
    """Run `python -m celery_doctor ARGS` as a user would, in a private temp dir (so its crash logs are ours)."""
    full_env = dict(os.environ)
    full_env.pop("CELERY_BROKER_URL", None)
    full_env["COLUMNS"] = "200"
    paths = [str(cwd)] if cwd else []
    paths.append(str(ROOT))
    if env and env.get("PYTHONPATH"):
        paths.insert(0, env["PYTHONPATH"])
    private_tmp = Path(tmpdir or (Path(cwd or "/tmp") / f"tmp-{uid()}"))
    private_tmp.mkdir(parents=True, exist_ok=True)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    full_env["TMPDIR"] = str(private_tmp)
    argv = [sys.executable, "-m", "celery_doctor", *map(str, args)]
    for path in outputs:
        argv += ["--output", str(path)]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    files = {str(p): Path(p).read_text() for p in outputs if Path(p).exists()}
    crashes = {p: Path(p).read_text() for p in glob.glob(str(private_tmp / "celery-doctor-crash-*.log"))}
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr, seconds, files, crashes)


def write_module(directory: Path, name: str, text: str) -> str:
    (Path(directory) / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    return name


def assert_clean(run: Run, *secrets: str) -> None:
    """No secret anywhere the run wrote; no traceback; no internal error."""
    text = run.everything()
    for secret in secrets:
        assert secret not in text, f"secret {secret[:12]}... leaked:\n{run}\n{list(run.files)}{list(run.crash_logs)}"
        # a secret cut by line wrapping still leaks: look for its second half on its own too
        half = secret[len(secret) // 2:]
        assert half not in text, f"half of secret {secret[:12]}... leaked:\n{run}"
    assert "Traceback (most recent call last)" not in run.stdout + run.stderr, str(run)
