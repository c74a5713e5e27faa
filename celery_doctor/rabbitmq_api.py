"""Read-only access to RabbitMQ: the management HTTP API (GET only) and passive AMQP probes with pika.

Both are bounded by a Deadline and never raise anything but `RabbitError`, whose `reason` is a masked,
one-line sentence fit for a report. Nothing here declares (other than passively), publishes, consumes,
acks, purges or deletes; `AmqpProbe.peek` is the single exception that reads messages, and it must only be
called when the user asked for it (`--peek`): it requeues what it read, which marks those messages
redelivered and can change their order.

Used by the `rabbitmq` collector and by `trace` (looking for one task id).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from .deadline import Deadline
from .envelope import Envelope, from_parts
from .masking import SECRETS, mask_url, scrub

if TYPE_CHECKING:
    from .broker_target import BrokerTarget

DEFAULT_MANAGEMENT_PORT = 15672
DEFAULT_MANAGEMENT_TLS_PORT = 15671
HTTP_CAP = 5.0  # seconds: the most one HTTP request may take (less when the deadline is closer)
AMQP_CAP = 5.0  # seconds: the most one AMQP operation may take
PAGE_SIZE = 500
MAX_PAGES = 20  # at most PAGE_SIZE * MAX_PAGES queues/exchanges are read per vhost
FULL_PAGES = 2  # a listing sorted by messages is read whole up to this many pages; beyond, its empty tail is not
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # the most read from one API answer (a page of 500 queues is ~1 MiB)
READ_CHUNK = 256 * 1024
QUEUE_COLUMNS = ("name", "vhost", "type", "durable", "auto_delete", "exclusive", "arguments", "policy",
                 "operator_policy", "effective_policy_definition", "messages", "messages_ready",
                 "messages_unacknowledged", "messages_persistent", "message_bytes_ready", "consumers",
                 "consumer_utilisation", "consumer_capacity", "idle_since", "message_stats", "state", "node",
                 "head_message_timestamp")
EXCHANGE_COLUMNS = ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments", "policy",
                    "message_stats")


def _reached_empty(items: list, column: str) -> bool:
    """Whether a listing sorted by `column`, largest first, has reached its empty tail. Only a real 0 says so, and
    only when every item read had the column: the broker lists a queue it has no statistics for yet (created in
    the last few seconds) without it, and sorts those among the empty ones in no reliable order."""
    return bool(items) and items[-1].get(column) == 0 and all(column in i for i in items)


@dataclass(frozen=True)
class Listing:
    """A paginated listing as read: its items, the server's total, whether items are missing and why."""

    items: list
    total: int
    truncated: bool
    note: str = ""


# pika logs every failed connection attempt at ERROR with a traceback; the probe turns failures into one
# masked reason instead, so pika's own log records are not wanted on the doctor's stderr.
logging.getLogger("pika").setLevel(logging.CRITICAL + 1)


class RabbitError(Exception):
    """A failed call, with a masked one-line reason. `kind`: refused, timeout, auth, forbidden, not_found,
    tls, http, protocol, closed."""

    def __init__(self, reason: str, kind: str = "error", status: Optional[int] = None) -> None:
        self.reason = scrub(" ".join(str(reason).split()))
        self.kind = kind
        self.status = status
        super().__init__(self.reason)


# --------------------------------------------------------------------------- where the broker is


@dataclass(frozen=True)
class BrokerEndpoint:
    """The AMQP broker as the app's URL names it. The password never appears in repr or str."""

    host: str
    port: int
    vhost: str
    userid: str
    password: str = field(repr=False)
    tls: bool = False
    scheme: str = "amqp"

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{self.userid}@{host}:{self.port}/{quote(self.vhost, safe='')}"

    def __str__(self) -> str:  # never the password
        return self.display


def broker_endpoint(broker: "BrokerTarget | str | None", use_ssl: Any = None) -> BrokerEndpoint:
    """The first URL of the broker target (a string is read by celery_doctor.broker_target) as kombu's AMQP
    transports read it: defaults guest/guest, localhost, vhost /, port 5672 (5671 with TLS)."""
    from .broker_target import BrokerTarget

    if isinstance(broker, str):
        broker = BrokerTarget.parse(broker)
    first = broker.first if broker is not None else None
    if first is None:
        raise RabbitError("no broker URL is configured", kind="config")
    if first.malformed:
        raise RabbitError(f"the broker URL {first.masked} cannot be parsed: ValueError", kind="config")
    scheme = first.scheme or "amqp"
    tls = scheme == "amqps" or bool(use_ssl)
    userid = first.username
    password = first.password or ("guest" if not userid else "")
    vhost = unquote(first.path[1:] if first.path.startswith("/") else first.path)
    return BrokerEndpoint(
        host=unquote(first.hostname or "") or "localhost",
        port=int(first.port or (5671 if tls else 5672)),
        vhost=vhost or "/",
        userid=userid or "guest",
        password=password,
        tls=tls,
        scheme=scheme,
    )


def _default_management(endpoint: BrokerEndpoint) -> tuple[str, int]:
    """(scheme, port) of the management API by RabbitMQ's conventions: 5672 -> http 15672, 5671 (TLS) -> https 15671."""
    return ("https", DEFAULT_MANAGEMENT_TLS_PORT) if endpoint.tls else ("http", DEFAULT_MANAGEMENT_PORT)


def management_guess(endpoint: BrokerEndpoint, override: Optional[str] = None) -> Optional[str]:
    """A sentence when the management API's address is a guess (no --management-url and an AMQP port that is
    not the default one, so the API's port cannot be derived from it); None when it follows the conventions."""
    if override:
        return None
    if endpoint.port == (5671 if endpoint.tls else 5672):
        return None
    base = management_location(endpoint)[0]
    return (f"{base} is a guess: the broker's AMQP port {endpoint.port} is not the default "
            f"{5671 if endpoint.tls else 5672}, so the management API's port cannot be derived from it "
            "(name it with --management-url)")


def management_location(endpoint: BrokerEndpoint, override: Optional[str] = None) -> tuple[str, str, str]:
    """(base URL without credentials, user, password) of the management API.

    Default, by RabbitMQ's conventions: http://<broker host>:15672 for amqp (port 5672), https://<broker
    host>:15671 for amqps (port 5671), with the broker's credentials; for any other AMQP port the same address
    is only a guess (see `management_guess`). An override may carry its own credentials
    (http://user:pass@host:port/prefix); a trailing /api is accepted and dropped.
    """
    if not override:
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        scheme, port = _default_management(endpoint)
        return f"{scheme}://{host}:{port}", endpoint.userid, endpoint.password
    text = override.strip()
    if "://" not in text:
        text = "http://" + text
    SECRETS.add_url(text)
    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise RabbitError(f"--management-url {mask_url(override)} is not an http(s) URL", kind="config")
    user = unquote(split.username) if split.username else endpoint.userid
    password = unquote(split.password) if split.password is not None else endpoint.password
    host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
    netloc = f"{host}:{split.port}" if split.port else host
    path = split.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    return urlunsplit((split.scheme, netloc, path, "", "")), user, password


# --------------------------------------------------------------------------- the management API


class ManagementClient:
    """GET-only client of the RabbitMQ management API for one vhost.

    Each request is bounded as a whole, not per socket operation: a watchdog shuts the socket when the
    request's budget is spent, so a peer that trickles bytes cannot hold the scan. A body is read up to
    MAX_RESPONSE_BYTES, JSON nested too deeply is refused, and a peer that does not speak HTTP is said so;
    every failure is a RabbitError. Redirects are not followed (the credentials stay with the named host).
    """

    def __init__(self, base_url: str, user: str, password: str, vhost: str, deadline: Deadline,
                 cap: float = HTTP_CAP, context: Optional[ssl.SSLContext] = None, hint: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.vhost = vhost
        self.user = user
        self.deadline = deadline
        self.cap = cap
        self.hint = hint  # appended to "did not answer HTTP": where the API usually is
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        self._context = context
        SECRETS.add(password if password != "guest" else None)
        split = urlsplit(self.base_url)
        self._tls = split.scheme == "https"
        self._host = split.hostname or ""
        self._port = split.port or (443 if self._tls else 80)
        self._prefix = split.path.rstrip("/")

    @classmethod
    def for_broker(cls, endpoint: BrokerEndpoint, deadline: Deadline, override: Optional[str] = None,
                   cap: float = HTTP_CAP) -> "ManagementClient":
        base, user, password = management_location(endpoint, override)
        # A silent API must leave time for the passive-declare fallback: at most 40% of the scan's deadline.
        cap = min(cap, max(1.0, deadline.seconds * 0.4))
        split = urlsplit(base)
        if (split.hostname or "").lower() == endpoint.host.lower() and split.port == endpoint.port:
            hint = (f": port {endpoint.port} is the broker's AMQP port, not the management API "
                    f"(by default {DEFAULT_MANAGEMENT_PORT}, or {DEFAULT_MANAGEMENT_TLS_PORT} with TLS)")
        else:
            hint = (f" (is this the management API? It listens on {DEFAULT_MANAGEMENT_PORT} by default, "
                    f"{DEFAULT_MANAGEMENT_TLS_PORT} with TLS)")
        return cls(base, user, password, endpoint.vhost, deadline, cap, hint=hint)

    @property
    def display(self) -> str:
        return mask_url(self.base_url) or ""

    def _vpath(self, *names: str) -> str:
        return "/".join(quote(n, safe="") for n in names)

    def get(self, path: str, params: Optional[Mapping[str, Any]] = None, missing_ok: bool = False,
            cap: Optional[float] = None) -> Any:
        """GET /api/<path> as JSON. 404 gives None when missing_ok, else a RabbitError. `cap`: this request may take
        longer than the usual per-request cap (still within the deadline)."""
        where = f"management API at {self.display}"
        try:
            return self._get(path, params, missing_ok, where, cap)
        except RabbitError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a peer makes the HTTP stack do is a reason, not a crash
            raise RabbitError(f"{where}: /api/{_shorten(path)} could not be read: {type(exc).__name__}",
                              kind="protocol") from None

    def _get(self, path: str, params: Optional[Mapping[str, Any]], missing_ok: bool, where: str,
             cap: Optional[float] = None) -> Any:
        if self.deadline.expired():
            raise RabbitError(f"{where}: no time left (scan timeout {self.deadline.seconds:g} s)", kind="timeout")
        target = f"{self._prefix}/api/{path}"
        if params:
            target += "?" + urlencode(params)
        budget = self.deadline.budget(max(self.cap, cap or 0.0))
        status, raw = self._fetch(target, budget, where, path)
        if 200 <= status < 300:
            return _parse_json(raw, f"{where}: /api/{_shorten(path)}", self.hint)
        if status == 404 and missing_ok:
            return None
        if status in (401, 403):
            raise _refusal(where, status, _api_reason(raw), path, self.user, self.vhost)
        if status == 404:
            raise RabbitError(f"{where}: /api/{_shorten(path)} not found (404){_vhost_hint(path, self.vhost)}",
                              kind="not_found", status=404)
        if 300 <= status < 400:
            raise RabbitError(f"{where} answered HTTP {status} (a redirect, not followed) for /api/{_shorten(path)}: "
                              "point --management-url at the API itself", kind="http", status=status)
        raise RabbitError(f"{where} answered HTTP {status} for /api/{_shorten(path)}", kind="http", status=status)

    def _fetch(self, target: str, budget: float, where: str, path: str) -> tuple[int, bytes]:
        """(status, body) of one GET, the whole exchange within `budget` seconds and the body within the cap."""
        if self._tls:
            context = self._context or ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(self._host, self._port, timeout=budget,
                                                                           context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=budget)
        watchdog = _Watchdog(conn, budget)
        try:
            conn.request("GET", target, headers={"Authorization": self._auth, "Accept": "application/json",
                                                 "User-Agent": "celery-doctor"})
            response = conn.getresponse()
            announced = response.getheader("Content-Length")
            if announced and announced.strip().isdigit() and int(announced) > MAX_RESPONSE_BYTES:
                raise _too_big(where, path)
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = response.read(min(READ_CHUNK, MAX_RESPONSE_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _too_big(where, path)
            if watchdog.fired:  # the socket was shut: what looked like the end of the body was the cut
                raise _cut_off(where, budget)
            return response.status, b"".join(chunks)
        except RabbitError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into one reason below
            if watchdog.fired:
                raise _cut_off(where, budget) from None
            raise _http_error(where, exc, budget, self.hint) from None
        finally:
            watchdog.cancel()
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def paged(self, path: str, columns: tuple[str, ...] = (), sort: Optional[str] = None) -> Listing:
        """Every item of a paginated listing (queues, exchanges), page by page.

        With `sort` (a numeric column, largest first) the listing stops at the first page that ends on an item whose
        value is 0 once more than FULL_PAGES pages exist: every item after it is 0 too (on a vhost of 20,000 queues the
        API takes seconds per page, as it builds the whole listing for each one). A page that fails after the first
        ends the listing where it is (truncated, with the reason) instead of losing the pages already read."""
        items: list = []
        total = 0
        for page in range(1, MAX_PAGES + 1):
            params: dict[str, Any] = {"page": page, "page_size": PAGE_SIZE}
            if columns:
                params["columns"] = ",".join(columns)
            if sort:
                params.update(sort=sort, sort_reverse="true")
            try:
                # A big vhost's listing is slow (the broker builds all of it for every page) and it is what the scan
                # most needs: a page may use up to half of the time left, not only the usual per-request cap.
                data = self.get(path, params, cap=self.deadline.remaining() / 2)
            except RabbitError as exc:
                if page == 1:
                    raise
                return Listing(items, total, True, f"cut short after {len(items):,} of {total:,}: {exc.reason}")
            if isinstance(data, list):  # a server without pagination support
                found = [i for i in data if isinstance(i, Mapping)]
                return Listing(found, len(found), False)
            items.extend(self._page_items(data, path))
            total = _count(data.get("filtered_count")) or _count(data.get("total_count")) or len(items)
            pages = _count(data.get("page_count")) or 1
            if page >= pages:
                return Listing(items, total, False)
            if sort and pages > FULL_PAGES and _reached_empty(items, sort):
                return Listing(items, total, True, f"the {total - len(items):,} queues after the {len(items):,} "
                                                   f"fullest were not read: listed by {sort}, largest first, the "
                                                   "listing had reached empty queues (a queue created in the last "
                                                   "few seconds has no count yet and may be among them)")
        return Listing(items, total, True, f"only the first {len(items):,} of {total:,} were listed "
                                           f"({MAX_PAGES} pages of {PAGE_SIZE})")

    def _page_items(self, data: Any, path: str) -> list:
        if not isinstance(data, Mapping):
            raise RabbitError(f"management API at {self.display}: unexpected answer for /api/{_shorten(path)}",
                              kind="protocol")
        found = data.get("items")
        if not isinstance(found, list):
            raise RabbitError(f"management API at {self.display}: unexpected answer for /api/{_shorten(path)} "
                              "(no list of items)", kind="protocol")
        return [i for i in found if isinstance(i, Mapping)]

    # Convenience accessors for one vhost.
    def overview(self) -> Mapping:
        return _mapping(self.get("overview"))

    def whoami(self) -> Mapping:
        return _mapping(self.get("whoami"))

    def vhost_info(self) -> Optional[Mapping]:
        found = self.get(f"vhosts/{self._vpath(self.vhost)}", missing_ok=True)
        return _mapping(found) if found is not None else None

    def nodes(self) -> list:
        return _list(self.get("nodes"))

    def queues(self) -> Listing:
        return self.paged(f"queues/{self._vpath(self.vhost)}", QUEUE_COLUMNS, sort="messages")

    def queue(self, name: str) -> Optional[Mapping]:
        found = self.get(f"queues/{self._vpath(self.vhost, name)}", {"disable_stats": "false"}, missing_ok=True)
        return _mapping(found) if found is not None else None

    def exchanges(self) -> Listing:
        return self.paged(f"exchanges/{self._vpath(self.vhost)}", EXCHANGE_COLUMNS)

    def bindings(self) -> list:
        return _list(self.get(f"bindings/{self._vpath(self.vhost)}"))

    def policies(self) -> list:
        return _list(self.get(f"policies/{self._vpath(self.vhost)}"))

    def operator_policies(self) -> list:
        return _list(self.get(f"operator-policies/{self._vpath(self.vhost)}"))

    def vhost_limits(self) -> Mapping:
        data = self.get(f"vhost-limits/{self._vpath(self.vhost)}", missing_ok=True)
        # [{"vhost": "/", "value": {"max-queues": 10}}] or []
        if isinstance(data, list):
            for item in data:
                if isinstance(item, Mapping) and isinstance(item.get("value"), Mapping):
                    return dict(item["value"])
            return {}
        return _mapping(data) if data else {}


def _count(value: Any) -> int:
    """A non-negative count from a document (0 for anything else: a peer may send any type)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _shorten(path: str) -> str:
    path = path.split("?")[0]
    return path if len(path) <= 80 else path[:77] + "..."


def _vhost_hint(path: str, vhost: str) -> str:
    if path.startswith(("queues/", "exchanges/", "bindings/", "policies/", "vhosts/", "operator-policies/")):
        return f" (does the vhost {vhost!r} exist?)"
    return ""


class _Watchdog:
    """Shuts a connection's socket when its request has used up its budget (a trickling peer never trips a
    per-read socket timeout). `fired` tells the reader that what it saw last was the cut, not the peer."""

    def __init__(self, conn: http.client.HTTPConnection, budget: float) -> None:
        self.fired = False
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        # A little after the socket's own timeout: a silent peer is reported by that timeout.
        self._timer = threading.Timer(budget + 0.05, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sock = self._conn.sock
            if sock is not None:
                try:
                    # the plain socket's shutdown (also under TLS): wakes a reader blocked in recv
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _parse_json(raw: bytes, what: str, hint: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        # The C decoder gives up at the interpreter's recursion limit, at once; no document of the API is nested
        # more than a few levels.
        raise RabbitError(f"{what} answered JSON nested too deeply to read: not an answer of the management API",
                          kind="protocol") from None
    except ValueError:
        raise RabbitError(f"{what} did not answer JSON{hint}", kind="protocol") from None


def _api_reason(raw: bytes) -> Optional[str]:
    """The management API's own reason in an error body: {"error": "not_authorised", "reason": "..."}."""
    try:
        data = json.loads(raw[:4096])
    except (ValueError, RecursionError):
        return None
    reason = data.get("reason") if isinstance(data, Mapping) else None
    if not isinstance(reason, str) or not reason.strip():
        return None
    text = "".join(ch if ch.isprintable() else " " for ch in reason)
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def _refusal(where: str, status: int, reason: Optional[str], path: str, user: str, vhost: str) -> RabbitError:
    """A 401/403, told with the API's own reason (RabbitMQ 3.x answers 401 for each of these)."""
    said = f'HTTP {status} "{reason}"' if reason else f"HTTP {status}"
    lowered = (reason or "").lower()
    endpoint = f"/api/{_shorten(path)}"
    if "login failed" in lowered:
        return RabbitError(f"{where} refused the login of {user!r} ({said}): wrong user name or password",
                           kind="auth", status=status)
    if "not management user" in lowered:
        return RabbitError(f"{where}: the user {user!r} has no management or monitoring tag ({said}); "
                           f"`rabbitmqctl set_user_tags {user} monitoring` lets it read the API", kind="forbidden",
                           status=status)
    if "not monitor user" in lowered:
        return RabbitError(f"{where}: the user {user!r} lacks the monitoring tag that {endpoint} needs ({said})",
                           kind="forbidden", status=status)
    if "not administrator user" in lowered:
        return RabbitError(f"{where}: {endpoint} is for administrators, which {user!r} is not ({said})",
                           kind="forbidden", status=status)
    if "virtual host" in lowered or "vhost" in lowered:
        return RabbitError(f"{where}: the user {user!r} may not use the vhost {vhost!r} ({said}); "
                           "`rabbitmqctl set_permissions -p VHOST USER ...` grants it", kind="forbidden", status=status)
    if reason:
        return RabbitError(f"{where} denied {endpoint} ({said})", kind="auth" if status == 401 else "forbidden",
                           status=status)
    if status == 401:
        return RabbitError(f"{where} refused the credentials of {user!r} (HTTP 401): the user needs the management "
                           "or monitoring tag, or the password is wrong", kind="auth", status=401)
    return RabbitError(f"{where} denied {endpoint} (HTTP 403): the user lacks the permission or tag",
                       kind="forbidden", status=403)


def _too_big(where: str, path: str) -> RabbitError:
    return RabbitError(f"{where}: /api/{_shorten(path)} answered more than {MAX_RESPONSE_BYTES // 2**20} MiB, "
                       "the most celery-doctor reads from one request", kind="protocol")


def _cut_off(where: str, budget: float) -> RabbitError:
    return RabbitError(f"{where} did not answer within {budget:.1f} s (its answer was still incomplete when it "
                       "was cut off)", kind="timeout")


def _http_error(where: str, exc: Any, budget: float, hint: str = "") -> RabbitError:
    if isinstance(exc, http.client.BadStatusLine) and not isinstance(exc, http.client.RemoteDisconnected):
        line = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        if line.startswith("AMQP"):
            return RabbitError(f"{where} answered with the AMQP protocol header, not HTTP{hint}", kind="protocol")
        return RabbitError(f"{where} did not answer HTTP (it sent {_preview(line)}){hint}", kind="protocol")
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError,
                        BrokenPipeError)):
        return RabbitError(f"{where} did not answer HTTP (it closed the connection without an answer){hint}",
                           kind="protocol")
    if isinstance(exc, http.client.HTTPException):
        return RabbitError(f"{where} did not answer HTTP ({type(exc).__name__}){hint}", kind="protocol")
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in str(exc):
        return RabbitError(f"{where} did not answer within {budget:.1f} s", kind="timeout")
    if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
        return RabbitError(f"{where}: connection refused (is the management plugin enabled? "
                           "`rabbitmq-plugins enable rabbitmq_management`)", kind="refused")
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)) or "ssl" in type(exc).__name__.lower():
        return RabbitError(f"{where}: TLS error: {exc}", kind="tls")
    if isinstance(exc, socket.gaierror):
        return RabbitError(f"{where}: host name does not resolve ({exc})", kind="refused")
    return RabbitError(f"{where}: {type(exc).__name__}: {exc}", kind="error")


def _preview(text: str, limit: int = 24) -> str:
    """The first bytes a peer sent, printable and short (it may be anything)."""
    shown = ascii(text[:limit])
    return shown + (" ..." if len(text) > limit else "")


# --------------------------------------------------------------------------- AMQP with pika


@dataclass(frozen=True)
class PassiveResult:
    name: str
    exists: bool
    messages: Optional[int] = None  # ready messages only (queue.declare-ok message_count)
    consumers: Optional[int] = None
    error: Optional[str] = None  # a reason other than "does not exist" (e.g. exclusive to another connection)


@dataclass(frozen=True)
class PeekedMessage:
    envelope: Envelope
    delivery_mode: Optional[int]
    redelivered: bool  # as the broker reported it, before this read


class _Timeout(Exception):
    pass


class AmqpProbe:
    """One AMQP connection (pika) used only for passive declares and, under --peek, basic.get + requeue.

    Every blocking call is bounded: a timer on pika's I/O loop aborts an operation that outlives the
    deadline's budget, and the connection is then abandoned.
    """

    def __init__(self, endpoint: BrokerEndpoint, deadline: Deadline, cap: float = AMQP_CAP) -> None:
        self.endpoint = endpoint
        self.deadline = deadline
        self.cap = cap
        self.server_version: Optional[str] = None
        self.server_product: Optional[str] = None
        self.server_cluster_name: Optional[str] = None
        self._conn = None
        self._broken = False

    # -- connection
    def __enter__(self) -> "AmqpProbe":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        import pika

        budget = self.deadline.budget(self.cap)
        params = dict(
            host=self.endpoint.host, port=self.endpoint.port, virtual_host=self.endpoint.vhost,
            credentials=pika.PlainCredentials(self.endpoint.userid, self.endpoint.password, erase_on_connect=True),
            connection_attempts=1, retry_delay=0, socket_timeout=budget, stack_timeout=budget,
            blocked_connection_timeout=budget, heartbeat=0,
            client_properties={"connection_name": "celery-doctor (read-only)"},
        )
        if self.endpoint.tls:
            params["ssl_options"] = pika.SSLOptions(ssl.create_default_context(), self.endpoint.host)
        where = f"AMQP at {self.endpoint.display}"
        try:
            self._conn = pika.BlockingConnection(pika.ConnectionParameters(**params))
        except Exception as exc:  # noqa: BLE001 - every failure becomes one masked reason
            raise _amqp_error(where, exc, budget) from None
        props = getattr(self._conn._impl, "server_properties", None) or {}
        self.server_version = _text(props.get("version"))
        self.server_product = _text(props.get("product"))
        self.server_cluster_name = _text(props.get("cluster_name"))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._broken:
            try:
                conn._impl._adapter_disconnect_stream()
            except Exception:  # noqa: BLE001 - best effort on an abandoned connection
                pass
            return
        try:
            self._bounded(conn.close)
        except Exception:  # noqa: BLE001
            try:
                conn._impl._adapter_disconnect_stream()
            except Exception:  # noqa: BLE001
                pass

    def _bounded(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run one blocking pika call with a watchdog on the connection's I/O loop."""
        conn = self._conn
        if conn is None:
            raise RabbitError("AMQP connection is not open", kind="closed")
        budget = self.deadline.budget(self.cap)
        if self.deadline.expired():
            self._broken = True
            raise RabbitError(f"AMQP at {self.endpoint.display}: no time left (scan timeout {self.deadline.seconds:g} s)",
                              kind="timeout")

        def on_timeout() -> None:
            raise _Timeout()

        ioloop = conn._impl.ioloop
        handle = ioloop.call_later(budget, on_timeout)
        try:
            return fn(*args, **kwargs)
        except _Timeout:
            self._broken = True
            raise RabbitError(f"AMQP at {self.endpoint.display} did not answer within {budget:.1f} s", kind="timeout") from None
        finally:
            try:
                ioloop.remove_timeout(handle)
            except Exception:  # noqa: BLE001
                pass

    def _channel(self):
        return self._bounded(self._conn.channel)

    def _close_channel(self, channel: Any) -> None:
        try:
            if channel.is_open:
                self._bounded(channel.close)
        except RabbitError:
            raise
        except Exception:  # noqa: BLE001 - the broker may have closed it already
            pass

    # -- passive declares (one channel each: a failed passive declare closes its channel)
    def queue_passive(self, name: str) -> PassiveResult:
        import pika.exceptions as pex

        channel = self._channel()
        try:
            ok = self._bounded(channel.queue_declare, queue=name, passive=True)
            return PassiveResult(name, True, int(ok.method.message_count), int(ok.method.consumer_count))
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return PassiveResult(name, False)
            return PassiveResult(name, True, error=scrub(f"{exc.reply_code} {exc.reply_text}"))
        except RabbitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _amqp_error(f"AMQP at {self.endpoint.display}", exc, self.cap) from None
        finally:
            self._close_channel(channel)

    def exchange_passive(self, name: str) -> bool:
        import pika.exceptions as pex

        if not name:
            return True  # the default exchange always exists
        channel = self._channel()
        try:
            self._bounded(channel.exchange_declare, exchange=name, passive=True)
            return True
        except pex.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise RabbitError(f"passive declare of exchange {name!r}: {exc.reply_code} {exc.reply_text}",
                              kind="protocol") from None
        except RabbitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _amqp_error(f"AMQP at {self.endpoint.display}", exc, self.cap) from None
        finally:
            self._close_channel(channel)

    # -- peek (only under --peek): basic.get without ack, then requeue everything read
    def peek(self, queue: str, limit: int) -> list[PeekedMessage]:
        """Read up to `limit` messages' headers and put them all back (basic.nack requeue=True).

        Side effects the caller must report: the messages come back with redelivered=True, their order
        can change, and on a quorum queue each read counts toward the delivery limit.
        """
        import pika.exceptions as pex

        channel = self._channel()
        read: list[PeekedMessage] = []
        last_tag = None
        try:
            for _ in range(max(0, limit)):
                if self.deadline.remaining() < 0.5:
                    break  # leave time to put back what was read
                method, properties, body = self._bounded(channel.basic_get, queue=queue, auto_ack=False)
                if method is None:
                    break
                last_tag = method.delivery_tag
                headers = properties.headers if isinstance(properties.headers, Mapping) else {}
                envelope = from_parts(
                    _plain(headers),
                    {"delivery_info": {"exchange": method.exchange, "routing_key": method.routing_key,
                                       "redelivered": bool(method.redelivered)},
                     "priority": properties.priority},
                    properties.content_type, properties.content_encoding, len(body or b""),
                )
                read.append(PeekedMessage(envelope, properties.delivery_mode, bool(method.redelivered)))
            if last_tag is not None:
                self._bounded(channel.basic_nack, delivery_tag=last_tag, multiple=True, requeue=True)
                last_tag = None
        except pex.ChannelClosedByBroker as exc:
            # The broker requeues everything unacked on a closed channel by itself.
            raise RabbitError(f"peek into {queue!r}: {exc.reply_code} {exc.reply_text}", kind="protocol") from None
        except RabbitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _amqp_error(f"AMQP at {self.endpoint.display}", exc, self.cap) from None
        finally:
            # Closing the channel requeues anything still unacked (e.g. after a timeout).
            self._close_channel_quietly(channel)
        return read

    def _close_channel_quietly(self, channel: Any) -> None:
        try:
            self._close_channel(channel)
        except Exception:  # noqa: BLE001
            self._broken = True


def iter_passive(probe: AmqpProbe, names: list[str]) -> Iterator[PassiveResult]:
    for name in names:
        yield probe.queue_passive(name)


def _plain(value: Any, depth: int = 0) -> Any:
    """AMQP table values as plain Python (bytes -> str), bounded in depth."""
    if depth > 8:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def _text(value: Any) -> Optional[str]:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _connection_error(where: str, exc: BaseException, text: str, budget: float) -> RabbitError:
    inner = exc.args[0] if exc.args else None
    # pika wraps the socket's error in connector errors whose str() is empty: unwrap to the cause
    for _ in range(4):
        if getattr(inner, "exception", None) is not None:
            inner = inner.exception
        elif getattr(inner, "exceptions", None):
            inner = inner.exceptions[-1]
        else:
            break
    inner_text = f"{type(inner).__name__}: {inner}" if inner is not None else text
    lowered = inner_text.lower()
    if "timed out" in lowered or "timeout" in lowered:
        return RabbitError(f"{where} did not answer within {budget:.1f} s", kind="timeout")
    if "refused" in lowered:
        return RabbitError(f"{where}: connection refused", kind="refused")
    if "ssl" in lowered or "tls" in lowered or "certificate" in lowered:
        return RabbitError(f"{where}: TLS error: {inner_text}", kind="tls")
    return RabbitError(f"{where}: cannot connect: {inner_text}", kind="refused")


def _amqp_error(where: str, exc: BaseException, budget: float) -> RabbitError:
    import pika.exceptions as pex

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, pex.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return RabbitError(f"{where}: login refused (wrong user or password)", kind="auth")
    if isinstance(exc, pex.ProbableAccessDeniedError) or "NOT_ALLOWED" in text or "vhost" in text.lower():
        return RabbitError(f"{where}: access to the vhost refused (does it exist, and may the user use it?)",
                           kind="forbidden")
    if isinstance(exc, pex.AMQPConnectionError):
        return _connection_error(where, exc, text, budget)
    # pika raises its connector's stack timeout (the AMQP handshake outlived stack_timeout) unwrapped
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timeout" in type(exc).__name__.lower():
        return RabbitError(f"{where} did not answer within {budget:.1f} s", kind="timeout")
    if isinstance(exc, ssl.SSLError):
        return RabbitError(f"{where}: TLS error: {exc}", kind="tls")
    return RabbitError(f"{where}: {text}", kind="error")
