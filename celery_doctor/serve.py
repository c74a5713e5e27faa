"""`celery-doctor serve`: a Prometheus exporter. It scans the broker every --interval seconds (each scan the same
read-only, --timeout-bounded `scan` as the command line's) and serves what the last scan found on /metrics, in
the OpenMetrics or Prometheus text format the scraper asks for (prometheus_client's WSGI app negotiates it).

Scans run in the main thread (the app import's timeout is a SIGALRM, which only the main thread gets); the
HTTP server answers from a thread of its own with the last scan's metrics, so a slow broker never makes a scrape
wait. A scan that fails (the app does not import, a bad broker URL) exposes `celery_doctor_scan_success 0` and
no stale findings; the exporter keeps running. SIGTERM stops it cleanly (exit 0), Ctrl-C too (exit 130).
"""
from __future__ import annotations

import logging
import signal
import socketserver
import threading
import time
from typing import Any, Callable, Iterator, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .masking import scrub
from .reporters.openmetrics import PREFIX, families

log = logging.getLogger(__name__)


class Stopped(KeyboardInterrupt):
    """SIGTERM: leave the loop (a KeyboardInterrupt, so that code catching Exception around user code lets it by)."""


class Exporter(Collector):
    """The last scan's metric families, and the exporter's own: scans done, failed, the last one's outcome."""

    def __init__(self, scan: Callable[[], tuple[Any, Optional[Any]]]) -> None:
        self._scan = scan
        self._lock = threading.Lock()
        self._families: list[Metric] = []
        self.scans = self.failures = 0
        self.success = 0
        self.last_end: Optional[float] = None

    def scan_once(self) -> bool:
        started = time.time()
        try:
            report, snapshot = self._scan()
            found, ok = families(report, snapshot), 1
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - an exporter reports a failed scan and keeps serving
            log.warning("scan failed: %s", scrub(f"{type(exc).__name__}: {exc}"))
            found, ok = [], 0
        with self._lock:
            self._families = found
            self.scans += 1
            self.failures += 1 - ok
            self.success = ok
            self.last_end = time.time()
        log.info("scan %d %s in %.2f s", self.scans, "done" if ok else "failed", time.time() - started)
        return bool(ok)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            found, scans, failures, success, last_end = (list(self._families), self.scans, self.failures,
                                                         self.success, self.last_end)
        yield from found
        yield GaugeMetricFamily(f"{PREFIX}_scan_success", "Whether the last scan produced a report (0: it failed; "
                                                          "the reason is on the exporter's stderr).", value=success)
        yield CounterMetricFamily(f"{PREFIX}_scans", "Scans run since the exporter started.", value=scans)
        yield CounterMetricFamily(f"{PREFIX}_scan_failures", "Scans that failed since the exporter started.",
                                  value=failures)
        if last_end is not None:
            yield GaugeMetricFamily(f"{PREFIX}_last_scan_timestamp_seconds", "When the last scan ended (Unix time).",
                                    value=last_end)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


def start_server(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    server = make_server(host, port, make_wsgi_app(registry), _Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="celery-doctor-http", daemon=True)
    thread.start()
    return server, thread


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped()


def run(options: Any, host: str, port: int, interval: float, say: Callable[[str], None]) -> int:
    """Serve until SIGTERM (exit 0) or Ctrl-C (exit 130)."""
    from .diagnose import diagnose
    from .registry import load_registry

    checks = load_registry()

    def scan() -> tuple[Any, Optional[Any]]:
        snapshots: list = []
        report, _ = diagnose(options, registry=checks, snapshots=snapshots)
        return report, (snapshots[0] if snapshots else None)

    exporter = Exporter(scan)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    try:
        server, thread = start_server(registry, host, port)
    except OSError as exc:
        from .options import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    say(f"serving http://{host}:{server.server_port}/metrics: a scan every {interval:g} s, each within "
        f"{options.timeout:g} s (SIGTERM or Ctrl-C stops)")
    code = 0
    try:
        while True:
            exporter.scan_once()
            time.sleep(interval)
    except Stopped:
        code = 0
    except KeyboardInterrupt:
        code = 130
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    say(f"stopped after {exporter.scans} scan(s)")
    return code
