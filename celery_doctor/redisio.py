"""Read-only Redis primitives for a kombu broker: connect under a deadline, list keys, stream lists.

Everything here only reads. Commands are chosen so that none can take long on the server whatever the
data size: SCAN (never KEYS), LRANGE/ZRANGE/HMGET/SSCAN in bounded chunks, LLEN/HLEN/ZCARD/ZCOUNT/
SCARD, OBJECT IDLETIME, INFO, CONFIG GET, CLIENT LIST (only when the client count is small). Keys are
addressed as kombu writes them: the transport's `global_keyprefix` is prepended by `Reader.key()`.

Typical use (the `trace` command finds one task id this way)::

    reader = connect_url("redis://host:6379/0", deadline, transport_options={"global_keyprefix": "x:"})
    for chunk in reader.stream_list(reader.key("celery")):
        ...
"""
from __future__ import annotations

import socket as _socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence

from .broker_target import BrokerURL
from .broker_target import parse_url as parse_broker_url
from .deadline import Deadline
from .masking import scrub
from .redis_memory import ElementSizes, MemoryGuard, MemoryPressure

SEP = "\x06\x16"  # kombu's priority / binding separator
PRIORITY_STEPS = (0, 3, 6, 9)
BINDING_PREFIX = "_kombu.binding."
CHUNK = 1000  # elements per LRANGE at most: about a quarter of a millisecond of server time for 1 KB messages
# (fewer when the elements are large: see redis_memory.py, every reply is bounded in bytes too)
SMALL_SET = 1000  # SMEMBERS up to this size, SSCAN above
MAX_CLIENT_LIST = 5000  # above this many connected clients, CLIENT LIST is skipped (it is O(clients))
BLOCKING_COMMANDS = {"brpop", "blpop", "brpoplpush", "blmove", "blmpop"}
DEFAULT_CAP = 5.0  # seconds any single command may wait, at most
WRAP_UP = 0.75  # seconds kept back from every command's wait for the collector to hand in what it read


# What Redis answers to AUTH when it has no password at all (7.x, and before 6.0).
_NO_PASSWORD_SET = ("called without any password configured", "no password is set")


class RedisReadError(Exception):
    """A masked, one-line reason why Redis could not be read."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(" ".join(str(message).split())))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True)
class RedisAddress:
    """Where one broker URL points, as kombu's Redis transport reads it (secrets stay in `password`, never printed)."""

    url: "BrokerURL" = field(repr=False)
    host: Optional[str]
    port: Optional[int]
    db: int
    ssl: bool
    socket_path: Optional[str]

    @property
    def scheme(self) -> str:
        return self.url.scheme

    @property
    def username(self) -> Optional[str]:
        return self.url.username

    @property
    def password(self) -> Optional[str]:
        return self.url.password

    @property
    def query(self) -> Mapping[str, str]:
        return self.url.query

    @property
    def masked(self) -> str:
        return self.url.masked

    @property
    def address(self) -> str:
        return self.socket_path or f"{self.host}:{self.port}"


def redis_address(url: "BrokerURL | str") -> RedisAddress:
    """A `redis://`, `rediss://`, `sentinel://`, `redis+socket://` or `socket://` URL of the broker target (a
    string is parsed by celery_doctor.broker_target): host, port, database, TLS, socket, with kombu's defaults."""
    if isinstance(url, str):
        url = parse_broker_url(url)
    if url.malformed:
        raise RedisReadError(url.error or f"malformed broker URL {url.masked!r}")
    scheme, query = url.scheme, url.query
    socket_path = None
    db_text = url.path.lstrip("/")
    if scheme in ("redis+socket", "socket", "unix"):
        socket_path = url.path or None
        db_text = query.get("virtual_host") or query.get("db") or "0"
    elif "virtual_host" in query:
        db_text = query["virtual_host"]
    try:
        db = int(db_text or query.get("db") or 0)
    except ValueError:
        raise RedisReadError(f"the database in {url.masked!r} is not a number: {db_text!r}") from None
    default_port = 26379 if scheme == "sentinel" else 6379
    return RedisAddress(url=url, host=url.hostname or ("127.0.0.1" if not socket_path else None),
                        port=url.port or (default_port if not socket_path else None), db=db,
                        ssl=scheme == "rediss" or query.get("ssl", "").lower() == "true", socket_path=socket_path)


_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def _ssl_kwargs(target: RedisAddress, use_ssl: Any) -> dict:
    kwargs: dict = {}
    if not target.ssl:
        return kwargs
    kwargs["ssl"] = True
    options = dict(use_ssl) if isinstance(use_ssl, Mapping) else {}
    for key in _SSL_KEYS:
        if key in target.query:
            options.setdefault(key, target.query[key])
    for key in _SSL_KEYS:
        if key not in options:
            continue
        value = options[key]
        if key == "ssl_cert_reqs":
            import ssl

            names = {"CERT_NONE": "none", "CERT_OPTIONAL": "optional", "CERT_REQUIRED": "required",
                     "none": "none", "optional": "optional", "required": "required"}
            if isinstance(value, ssl.VerifyMode):
                value = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional"}.get(value, "required")
            else:
                value = names.get(str(value), "required")
        kwargs[key] = value
    return kwargs


class _Unexpected(Exception):
    """The reply was not the RESP2 array of bulk strings an LRANGE returns."""


class Oversized(bytes):
    """Stands in a reply for an element that was drained off the socket, not kept: `size` is all that is known."""

    size: int

    def __new__(cls, size: int) -> "Oversized":
        obj = super().__new__(cls, b"")
        obj.size = size
        return obj


class _Reply:
    """The state of one LRANGE reply being received into `buf`."""

    def __init__(self, buf: bytearray) -> None:
        self.buf = buf
        self.got = 0  # bytes received
        self.pos = 0  # where the next element header starts
        self.count = 0  # elements walked
        self.total: Optional[int] = None  # elements in the reply, once the header is read
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.oversized: dict[int, int] = {}  # element index -> declared size, for drained elements
        self.wire = 0  # bytes of drained elements

    def header(self, expect: Optional[int]) -> bool:
        """Read the array header once it has come; False while it has not."""
        buf = self.buf
        nl = buf.find(b"\r\n", 0, self.got)
        if nl < 0:
            if self.got > 64:
                raise _Unexpected("no reply header")
            return False
        kind = buf[0]
        if kind == 45:  # "-": an error reply (WRONGTYPE ...)
            import redis

            raise redis.ResponseError(bytes(buf[1:nl]).decode("utf-8", "replace"))
        if kind != 42:  # "*"
            raise _Unexpected(f"reply starts with {bytes(buf[:1])!r}")
        self.total = max(0, int(buf[1:nl]))
        if expect is not None and self.total > expect:
            raise _Unexpected(f"{self.total} elements where at most {expect} were asked for")
        self.pos = nl + 2
        return True


class BulkArrayReader:
    """Reads one RESP2 reply that is an array of bulk strings (an LRANGE reply) straight off a socket.

    redis-py's pure-Python parser costs about 2 us per element (a readline and a read per bulk string);
    this one receives the whole reply into one reusable buffer and walks it by the declared lengths, never
    scanning the payloads, then slices every element out at once: about a third of the cost. (With hiredis
    installed, redis-py parses in C and is used instead: see `Reader.lrange_raw`.)

    Its own memory is capped: an element declared larger than `element_cap` is drained in small pieces and
    comes back as an `Oversized` placeholder, and a reply that keeps coming beyond `reply_cap` bytes (a
    server that is not Redis) is refused.
    """

    KEEP = 4 << 20  # a buffer grown beyond this for one huge reply is given back afterwards
    DRAIN = 1 << 20

    def __init__(self, size: int = 1 << 20, element_cap: int = 64 << 20, reply_cap: int = 80 << 20) -> None:
        self.size = size
        self.buf = bytearray(size)
        self.element_cap = element_cap
        self.reply_cap = reply_cap
        self.last_bytes = 0  # bytes the last reply carried on the wire (drained elements included)
        # The last reply as received, when none of its elements was drained: (its bytes, where each element starts
        # and ends in them). A consumer can copy a run of elements from it in one piece (message_stats.SplitStats).
        self.last_raw: Optional[tuple[bytes, list[int], list[int]]] = None

    def _drain(self, sock: Any, count: int, until: float) -> None:
        scratch = bytearray(min(self.DRAIN, max(1, count)))
        view = memoryview(scratch)
        try:
            while count > 0:
                if time.monotonic() > until:
                    raise TimeoutError("the reply did not end in time")
                received = sock.recv_into(view[:min(len(scratch), count)])
                if not received:
                    raise ConnectionError("the server closed the connection")
                count -= received
        finally:
            view.release()

    def read(self, sock: Any, expect: Optional[int] = None, seconds: float = 5.0) -> list[bytes]:
        """The elements of one LRANGE reply; `expect`: at most this many (what was asked for); `seconds`: the
        whole reply must have come by then (a per-recv timeout alone lets a trickle go on for ever)."""
        until = time.monotonic() + seconds
        reply = _Reply(self.buf)
        view = memoryview(reply.buf)
        try:
            while reply.total is None or reply.count < reply.total:
                if time.monotonic() > until:
                    raise TimeoutError("the reply did not end in time")
                if reply.got == len(reply.buf):
                    if reply.got > 2 * self.reply_cap:
                        raise _Unexpected(f"a reply larger than {self.reply_cap >> 20} MB")
                    view.release()
                    reply.buf.extend(bytes(len(reply.buf)))
                    view = memoryview(reply.buf)
                received = sock.recv_into(view[reply.got:])
                if not received:
                    raise ConnectionError("the server closed the connection")
                reply.got += received
                if reply.total is None and not reply.header(expect):
                    continue
                self._elements(reply, sock, until)
            if reply.pos != reply.got:
                raise _Unexpected(f"{reply.got - reply.pos} bytes after the reply")
            data = bytes(view[:reply.got])
        finally:
            view.release()
            self.buf = reply.buf if len(reply.buf) <= self.KEEP else bytearray(self.size)
        self.last_bytes = reply.got + reply.wire
        items = list(map(data.__getitem__, map(slice, reply.starts, reply.ends)))
        self.last_raw = None if reply.oversized else (data, reply.starts, reply.ends)
        for index, size in reply.oversized.items():
            items[index] = Oversized(size)
        return items

    def _elements(self, reply: "_Reply", sock: Any, until: float) -> None:
        """Walk the element headers received so far (the hot loop: locals, no payload scanning)."""
        buf, got, pos, count, total = reply.buf, reply.got, reply.pos, reply.count, reply.total
        starts, ends, find = reply.starts, reply.ends, buf.find
        while count < total:
            nl = find(b"\r\n", pos, got)
            if nl < 0:
                if got - pos > 32:
                    raise _Unexpected("an element header without its end")
                break
            if buf[pos] != 36:  # "$"
                raise _Unexpected(f"array element starts with {bytes(buf[pos:pos + 1])!r}")
            start = nl + 2
            size = int(buf[pos + 1:nl])
            if size > self.element_cap or start + size + 2 > self.reply_cap:
                got = self._drain_element(reply, sock, pos, start, size, got, until)
                count += 1
                continue
            end = start + size
            if end + 2 > got:
                break
            starts.append(start)
            ends.append(end)
            pos = end + 2
            count += 1
        reply.got, reply.pos, reply.count = got, pos, count

    def _drain_element(self, reply: "_Reply", sock: Any, pos: int, start: int, size: int, got: int,
                       until: float) -> int:
        """Drop an element too large to keep: what precedes it stays, its bytes go through a small scratch
        buffer; it is remembered as an `Oversized` placeholder. Returns the new end of the received bytes."""
        buf = reply.buf
        have = got - start
        if have < size + 2:
            self._drain(sock, size + 2 - have, until)
            got = pos
        else:
            rest = bytes(buf[start + size + 2:got])
            buf[pos:pos + len(rest)] = rest
            got = pos + len(rest)
        reply.wire += size
        reply.oversized[len(reply.starts)] = size
        reply.starts.append(pos)
        reply.ends.append(pos)
        return got


def element_sizes(items: list) -> tuple[list[int], int]:
    """(the size of every LRANGE element, an `Oversized` placeholder's declared one; how many were drained), in
    C-level passes when nothing was drained (the deep scan's common case: no Python step per message)."""
    sizes = list(map(len, items))
    if Oversized not in set(map(type, items)):
        return sizes, 0
    drained = 0
    for index, item in enumerate(items):
        if isinstance(item, Oversized):
            sizes[index] = item.size
            drained += 1
    return sizes, drained


MAX_PARSED_REPLY = 128 << 20  # any reply redis-py parses for us (INFO, CLIENT LIST, HMGET ...) is far smaller


def _capped_parser_class() -> Any:
    """redis-py's pure-Python RESP2 parser, refusing any one reply over MAX_PARSED_REPLY bytes (a server that
    is not Redis can send an endless one), or None when this redis-py has no such parser to extend."""
    try:
        from redis._parsers import _RESP2Parser as base  # redis-py 5+
    except ImportError:  # pragma: no cover - redis-py 4.x
        try:
            from redis.connection import PythonParser as base
        except ImportError:
            return None
    import redis

    class _Counted:
        def __init__(self, buffer: Any, connection: Any) -> None:
            self._inner = buffer
            self._connection = connection
            self.used = 0
            self.until = float("inf")
            receive = buffer._read_from_socket

            def guarded_receive(*args: Any, **kwargs: Any) -> Any:
                # readline() receives until it sees CRLF: a line without end is caught here, not after it
                with buffer._buffer.getbuffer() as view:
                    held = view.nbytes
                if held > MAX_PARSED_REPLY:
                    raise redis.exceptions.InvalidResponse(f"a reply larger than {MAX_PARSED_REPLY >> 20} MB")
                if time.monotonic() > self.until:
                    raise redis.exceptions.TimeoutError("the reply did not end in time")
                return receive(*args, **kwargs)

            buffer._read_from_socket = guarded_receive

        def start(self) -> None:
            self.used = 0
            self.until = time.monotonic() + float(getattr(self._connection, "socket_timeout", None) or 5.0)

        def _count(self, size: int) -> None:
            self.used += size
            if self.used > MAX_PARSED_REPLY:
                raise redis.exceptions.InvalidResponse(f"a reply larger than {MAX_PARSED_REPLY >> 20} MB")
            if time.monotonic() > self.until:  # a trickle: every recv gets a byte, none times out
                raise redis.exceptions.TimeoutError("the reply did not end in time")

        def readline(self, *args: Any, **kwargs: Any) -> bytes:
            line = self._inner.readline(*args, **kwargs)
            self._count(len(line or b""))
            return line

        def read(self, length: int, *args: Any, **kwargs: Any) -> bytes:
            self._count(length)  # before reading: a declared length alone can be the problem
            return self._inner.read(length, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    class CappedRESP2Parser(base):  # type: ignore[misc, valid-type]
        def on_connect(self, connection: Any) -> None:
            super().on_connect(connection)
            if getattr(self, "_buffer", None) is not None:
                self._buffer = _Counted(self._buffer, connection)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            if isinstance(getattr(self, "_buffer", None), _Counted):
                self._buffer.start()
            return super().read_response(*args, **kwargs)

    return CappedRESP2Parser


_PARSER_CLASS = _capped_parser_class()


def _raw_readable(connection: Any) -> bool:
    """True when `connection` uses our pure-Python RESP2 parser with nothing buffered: its socket can then be
    read directly. False with RESP3 or anything unexpected."""
    parser = getattr(connection, "_parser", None)
    if _PARSER_CLASS is None or not isinstance(parser, _PARSER_CLASS) or getattr(connection, "_sock", None) is None:
        return False
    buffer = getattr(parser, "_buffer", None)
    try:
        return buffer is None or buffer.unread_bytes() == 0
    except Exception:  # noqa: BLE001 - an unknown redis-py internals: use the ordinary path
        return False


class Reader:
    """One read-only connection to one Redis database, every call bounded by the run's deadline."""

    def __init__(self, target: RedisAddress, deadline: Deadline, prefix: str = "", cap: float = DEFAULT_CAP,
                 use_ssl: Any = None, host: Optional[str] = None, port: Optional[int] = None,
                 db: Optional[int] = None, guard: Optional[MemoryGuard] = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.target = target
        self.deadline = deadline
        self.prefix = prefix or ""
        self.cap = cap
        self.db = target.db if db is None else db
        self._use_ssl = use_ssl
        self._host, self._port = host or target.host, port or target.port
        self.guard = guard or MemoryGuard()  # shared by every connection of the run to this server
        self.commands = 0
        self.touch_free = False  # CLIENT NO-TOUCH accepted (Redis 7.2+): reads leave LRU/LFU data alone
        timeout = deadline.budget(cap)
        kwargs = dict(db=self.db, username=target.username, password=target.password, socket_timeout=timeout,
                      socket_connect_timeout=timeout, decode_responses=False,
                      retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2)
        if target.socket_path:
            kwargs["path"] = target.socket_path
            kwargs["connection_class"] = redis.UnixDomainSocketConnection
        else:
            kwargs.update(host=self._host, port=self._port)
            ssl_kwargs = _ssl_kwargs(target, use_ssl)
            if ssl_kwargs.pop("ssl", False):
                kwargs["connection_class"] = redis.SSLConnection
            kwargs.update(ssl_kwargs)
        if _PARSER_CLASS is not None:
            kwargs["parser_class"] = _PARSER_CLASS

        def connect(**kw: Any) -> Any:
            # A pool of our own so that the capped parser reaches the connection; one connection, made here.
            return redis.Redis(connection_pool=redis.ConnectionPool(**kw), single_connection_client=True)

        try:  # a single-connection client connects (and negotiates) right here
            try:
                self.client = connect(**kwargs)
            except redis.AuthenticationError as exc:
                if not (kwargs.get("password") and any(t in str(exc) for t in _NO_PASSWORD_SET)):
                    raise
                # The server has no password. Clients that authenticate with HELLO (kombu with redis-py 5+, RESP3)
                # are let in whatever password they send: the workers are connected, so read it as they do.
                kwargs.update(username=None, password=None)
                self.client = connect(**kwargs)
        except (redis.TimeoutError, TimeoutError):
            raise RedisReadError(f"Redis at {self.where} did not answer within {timeout:.1f} s") from None
        except redis.AuthenticationError as exc:
            raise RedisReadError(f"Redis at {self.where} refused the credentials: {exc}") from None
        except redis.ConnectionError as exc:
            raise RedisReadError(f"cannot reach Redis at {self.where}: {exc}") from None
        except redis.RedisError as exc:
            raise RedisReadError(f"Redis at {self.where} answered unexpectedly: {exc}") from None
        self.commands = 0
        self.touch_free = False  # CLIENT NO-TOUCH accepted (Redis 7.2+): reads leave LRU/LFU data alone
        self._array: Optional[BulkArrayReader] = None
        self.last_sizes: list[int] = []  # element sizes of the last LRANGE reply received
        self.last_drained = 0  # of its elements, how many were drained (Oversized), not kept
        self.last_raw: Optional[tuple] = None  # BulkArrayReader.last_raw of the last reply, when it read it
        self._pending: Optional[tuple] = None  # (key, start, stop) of an LRANGE sent ahead, reply not yet read

    # -- plumbing ------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        where = self.target.socket_path or f"{self._host}:{self._port}"
        return f"{where}/{self.db}"

    def clone(self, db: Optional[int] = None) -> "Reader":
        """Another connection to the same server (a second database)."""
        return Reader(self.target, self.deadline, self.prefix, self.cap, self._use_ssl, self._host, self._port,
                      self.db if db is None else db, guard=self.guard)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _arm(self, cap: Optional[float]) -> float:
        if self.deadline.expired():
            raise RedisReadError(f"Redis at {self.where}: the scan's deadline passed")
        # leave the caller time to assemble what it read before the run's deadline (a part not handed in by
        # then is lost whole)
        timeout = max(0.05, min(min(cap or self.cap, self.cap), self.deadline.remaining() - WRAP_UP))
        connection = self.client.connection
        if connection is not None:
            connection.socket_timeout = timeout
            connection.socket_connect_timeout = timeout
            sock = getattr(connection, "_sock", None)
            if sock is not None:
                try:
                    sock.settimeout(timeout)
                except OSError:
                    pass
        return timeout

    def call(self, *args: Any, cap: Optional[float] = None) -> Any:
        import redis

        if self._pending is not None:
            self.discard_reply()
        timeout = self._arm(cap)
        self.commands += 1
        try:
            return self.client.execute_command(*args)
        except (redis.TimeoutError, TimeoutError):
            raise RedisReadError(f"Redis at {self.where} did not answer {_text(args[0])} within {timeout:.1f} s") from None
        except redis.AuthenticationError as exc:
            raise RedisReadError(f"Redis at {self.where} refused the credentials: {exc}") from None
        except redis.ConnectionError as exc:
            raise RedisReadError(f"cannot reach Redis at {self.where}: {exc}") from None
        except redis.ResponseError:
            raise
        except redis.RedisError as exc:
            raise RedisReadError(f"Redis at {self.where} answered unexpectedly: {exc}") from None

    def try_call(self, *args: Any, cap: Optional[float] = None) -> tuple[Any, Optional[str]]:
        """(result, None), or (None, reason) when the server refused the command (ACL, renamed, unknown)."""
        import redis

        try:
            return self.call(*args, cap=cap), None
        except redis.ResponseError as exc:
            what = " ".join(_text(a) for a in args[:2])
            return None, scrub(f"{what} refused: {' '.join(str(exc).split())}")

    def pipeline(self, commands: list[tuple], cap: Optional[float] = None) -> list[Any]:
        """Several short read commands in one round trip; errors come back as exception objects."""
        import redis

        if not commands:
            return []
        if self._pending is not None:
            self.discard_reply()
        timeout = self._arm(cap)
        self.commands += len(commands)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            return pipe.execute(raise_on_error=False)
        except (redis.TimeoutError, TimeoutError):
            raise RedisReadError(f"Redis at {self.where} did not answer within {timeout:.1f} s") from None
        except redis.ConnectionError as exc:
            raise RedisReadError(f"cannot reach Redis at {self.where}: {exc}") from None

    def open(self) -> "Reader":
        """Connect and say who we are (best effort: a name in CLIENT LIST, and no LRU touching on 7.2+)."""
        self.call("PING")
        self.try_call("CLIENT", "SETNAME", "celery-doctor")
        _, refused = self.try_call("CLIENT", "NO-TOUCH", "ON")
        self.touch_free = refused is None
        return self

    def close(self) -> None:
        try:
            self.client.close()
            self.client.connection_pool.disconnect()  # our own pool: close() alone would only release it
        except Exception:  # noqa: BLE001 - closing a broken socket is not an error worth reporting
            pass

    # -- server --------------------------------------------------------------------------------------
    def info(self, section: Optional[str] = None) -> dict:
        raw = self.call("INFO", section) if section else self.call("INFO")
        if isinstance(raw, dict):
            return raw
        return parse_info(_text(raw))

    def config_get(self, *names: str) -> tuple[Optional[dict], Optional[str]]:
        """CONFIG GET each name; (values, None) or (None, why CONFIG could not be used)."""
        values: dict = {}
        for name in names:
            result, refused = self.try_call("CONFIG", "GET", name)
            if refused:
                return None, refused
            if isinstance(result, dict):
                values.update({_text(k): _text(v) for k, v in result.items()})
            elif isinstance(result, (list, tuple)):
                values.update({_text(result[i]): _text(result[i + 1]) for i in range(0, len(result) - 1, 2)})
        return values, None

    def client_list(self, connected: Optional[int] = None) -> tuple[Optional[list[dict]], Optional[str]]:
        if connected is not None and connected > MAX_CLIENT_LIST:
            return None, f"CLIENT LIST skipped: {connected} clients connected (more than {MAX_CLIENT_LIST})"
        raw, refused = self.try_call("CLIENT", "LIST")
        if refused:
            return None, refused
        if isinstance(raw, list):
            return raw, None
        return parse_client_list(_text(raw)), None

    # -- keys ----------------------------------------------------------------------------------------
    def scan(self, match: Optional[str] = None, count: int = 1000, type_: Optional[str] = None,
             limit: Optional[int] = None) -> "KeyScan":
        return KeyScan(self, match, count, type_, limit)

    def types(self, keys: list) -> list[str]:
        replies = self.pipeline([("TYPE", k) for k in keys])
        return [_text(r) if not isinstance(r, Exception) else "unknown" for r in replies]

    def idle_seconds(self, key: str) -> Optional[int]:
        value, refused = self.try_call("OBJECT", "IDLETIME", key)
        return int(value) if value is not None and not refused else None

    def llen_many(self, keys: list[str]) -> list[int]:
        replies = self.pipeline([("LLEN", k) for k in keys])
        return [int(r) if isinstance(r, int) else 0 for r in replies]

    def set_members(self, key: str, limit: int = 100_000) -> tuple[list[bytes], bool]:
        """Members of a set (SMEMBERS when small, SSCAN otherwise); (members, complete)."""
        size = self.call("SCARD", key) or 0
        if size <= SMALL_SET:
            return list(self.call("SMEMBERS", key) or ()), True
        members: set = set()
        cursor = b"0"
        while True:
            cursor, batch = self.call("SSCAN", key, cursor, "COUNT", 500)
            members.update(batch)
            if _text(cursor) == "0":
                return list(members), True
            if len(members) >= limit:
                return list(members), False

    # -- memory: our replies must not become the server's memory pressure (redis_memory.py) ----------------
    def check_memory(self) -> None:
        """Read INFO memory when it is due, then raise MemoryPressure if reading must stop."""
        if self.guard.recheck_due():
            raw, refused = self.try_call("INFO", "memory")
            self.guard.update(None if refused else (raw if isinstance(raw, dict) else parse_info(_text(raw))),
                              refused)
        self.guard.ensure_readable()

    def element_estimate(self, key: str, length: Optional[int] = None) -> Optional[int]:
        """Bytes per element of a list, from MEMORY USAGE / LLEN (an over-estimate: it counts the list's
        overhead too); None when MEMORY USAGE is refused or the list is empty."""
        if length is None:
            length = int(self.call("LLEN", key) or 0)
        if length <= 0:
            return None
        usage, refused = self.try_call("MEMORY", "USAGE", key)
        if refused or not isinstance(usage, int):
            return None
        return max(1, usage // length)

    # -- lists ---------------------------------------------------------------------------------------
    def lrange(self, key: str, start: int, stop: int) -> list[bytes]:
        return list(self.call("LRANGE", key, start, stop) or ())

    def lrange_raw(self, key: str, start: int, stop: int) -> list[bytes]:
        """LRANGE, the same result as `lrange`, with the reply read by `BulkArrayReader` when redis-py would
        parse it in pure Python (the deep scan's hot loop); otherwise through redis-py."""
        self.lrange_send(key, start, stop)
        return self.lrange_receive()

    def lrange_send(self, key: str, start: int, stop: int) -> None:
        """Send an LRANGE without waiting for its reply (`lrange_receive` reads it): a stream asks for the next
        chunk before it hands out the current one, so the server prepares it meanwhile. Exactly one receive
        must follow each send; any other command first reads and drops a reply still pending."""
        import redis

        if self._pending is not None:
            self.discard_reply()
        timeout = self._arm(None)
        self.commands += 1
        connection = self.client.connection
        try:
            if connection._sock is None:
                connection.connect()
            connection.send_command("LRANGE", key, start, stop, check_health=False)
            self._pending = (key, start, stop)
        except (redis.TimeoutError, TimeoutError, _socket.timeout):
            connection.disconnect()
            raise RedisReadError(f"Redis at {self.where} did not take LRANGE within {timeout:.1f} s") from None
        except (redis.ConnectionError, OSError) as exc:
            connection.disconnect()
            raise RedisReadError(f"cannot reach Redis at {self.where}: {exc}") from None

    def lrange_receive(self) -> list[bytes]:
        import redis

        connection = self.client.connection
        asked, self._pending = self._pending, None
        expect = asked[2] - asked[1] + 1 if asked and asked[1] >= 0 and asked[2] >= asked[1] else None
        timeout = self._arm(None)
        self.last_raw = None
        try:
            if _raw_readable(connection):
                if self._array is None:
                    self._array = BulkArrayReader(element_cap=self.guard.element_cap)
                items = self._array.read(connection._sock, expect, timeout)
                wire = self._array.last_bytes
                self.last_raw = self._array.last_raw
            else:
                items = list(connection.read_response() or ())
                wire = sum(len(i) for i in items) + 16 * len(items)
            sizes, drained = (list(map(len, items)), 0) if self.last_raw is not None else element_sizes(items)
            self.last_sizes, self.last_drained = sizes, drained  # for the stream: one pass over the chunk, not three
            self.guard.observe(wire, max(sizes, default=0), drained)
            return items
        except redis.ResponseError:
            raise  # the whole error line was read: the connection is still in step
        except (redis.TimeoutError, TimeoutError, _socket.timeout):
            connection.disconnect()
            raise RedisReadError(f"Redis at {self.where} did not answer LRANGE within {timeout:.1f} s") from None
        except (redis.ConnectionError, OSError) as exc:
            connection.disconnect()
            raise RedisReadError(f"cannot reach Redis at {self.where}: {exc}") from None
        except (_Unexpected, ValueError, IndexError, redis.RedisError) as exc:
            connection.disconnect()
            raise RedisReadError(f"Redis at {self.where} answered LRANGE unexpectedly: {exc}") from None

    def pending(self) -> Optional[tuple]:
        """(key, start, stop) of the LRANGE whose reply is still to be read, if any."""
        return self._pending

    def discard_reply(self) -> None:
        """Read and drop the reply of an LRANGE sent ahead and not needed; on any trouble, drop the connection
        (the next command reconnects) so that no stale reply is ever taken for another command's."""
        if self._pending is None:
            return
        try:
            self.lrange_receive()
        except Exception:  # noqa: BLE001 - the connection is dropped below; nothing to report
            try:
                self.client.connection.disconnect()
            except Exception:  # noqa: BLE001
                pass

    def stream_list(self, key: str, chunk: int = CHUNK, limit: Optional[int] = None,
                    reserve: float = 0.5) -> "ListStream":
        return ListStream(self, key, chunk=chunk, limit=limit, reserve=reserve)

    def sample_list(self, key: str, length: int, want: int, windows: int = 4) -> "ListSample":
        """Up to `want` elements in `windows` evenly spaced windows (head, middle, tail): a sample, not a stream.
        Iterate for chunks; `stopped` says why it ended early."""
        return ListSample(self, key, length, want, windows)


class ListSample:
    """Evenly spaced windows of a list, each read as a bounded `ListStream`."""

    def __init__(self, reader: Reader, key: str, length: int, want: int, windows: int = 4) -> None:
        self.reader, self.key, self.length, self.want, self.windows = reader, key, length, want, windows
        self.read = 0
        self.oversized = 0
        self.stopped: Optional[str] = None
        self.error: Optional[str] = None

    def __iter__(self) -> Iterator[list]:
        length, want = self.length, self.want
        if length <= 0 or want <= 0:
            return
        if length <= want:
            plan = [(0, length)]
        else:
            windows = max(1, min(self.windows, want))
            sizes = [want // windows + (1 if w < want % windows else 0) for w in range(windows)]
            plan = [((length - size) * w // max(1, windows - 1) if windows > 1 else 0, size)
                    for w, size in enumerate(sizes)]
        for start, size in plan:
            stream = ListStream(self.reader, self.key, limit=size, start=start, length=length)
            yield from stream
            self.read += stream.read
            self.oversized += stream.oversized
            if stream.stopped and not stream.stopped.startswith("the limit"):
                self.stopped, self.error = stream.stopped, stream.error
                return


class KeyScan:
    """SCAN through a database; iterate for key names (bytes). `complete` is False when stopped early."""

    def __init__(self, reader: Reader, match: Optional[str], count: int, type_: Optional[str], limit: Optional[int]):
        self.reader, self.match, self.count, self.type_, self.limit = reader, match, count, type_, limit
        self.scanned_calls = 0
        self.returned = 0
        self.complete = False
        self.stopped: Optional[str] = None

    def __iter__(self) -> Iterator[bytes]:
        cursor: Any = 0
        seen: set = set()  # SCAN may return a key twice; remember only while the scan runs
        while True:
            if self.reader.deadline.remaining() < 0.3:
                self.stopped = "the deadline"
                return
            args: list = ["SCAN", cursor]
            if self.match:
                args += ["MATCH", self.match]
            args += ["COUNT", self.count]
            if self.type_:
                args += ["TYPE", self.type_]
            cursor, keys = self.reader.call(*args)
            self.scanned_calls += 1
            for key in keys:
                if key in seen:
                    continue
                if len(seen) < 1_000_000:
                    seen.add(key)
                self.returned += 1
                yield key
                if self.limit is not None and self.returned >= self.limit:
                    self.stopped = f"the limit of {self.limit:,} keys"
                    return
            if _text(cursor) == "0":
                self.complete = True
                return


class ListStream:
    """Every element of a list (or `limit` of them from index `start`), in LRANGE chunks bounded in elements
    and in bytes; yields lists of raw elements.

    Reads from the head (index 0, where producers LPUSH) towards the tail (where workers BRPOP). A push
    while we read shifts every index by one: each chunk overlaps the previous one by one element and the
    stream re-synchronises on it, so nothing is counted twice. Pops at the tail only end the stream early.
    `shifted` counts elements pushed meanwhile; `lost_track` is set when more than a chunk was pushed between
    two reads (counts may then be off by up to a chunk). `stopped` says why the stream ended before the end
    (deadline, limit, memory pressure, a lost connection); `error` is set too when a read failed. A stream
    never raises: what it could not read is said in `stopped`.

    Chunk sizes follow `ElementSizes`: the first LRANGE asks for as many elements as MEMORY USAGE / LLEN
    says fit in the reply budget (one when unknown), later ones for what the elements seen so far allow.
    """

    def __init__(self, reader: Reader, key: str, chunk: int = CHUNK, limit: Optional[int] = None,
                 reserve: float = 0.5, start: int = 0, length: Optional[int] = None) -> None:
        self.reader, self.key, self.chunk, self.limit, self.reserve = reader, key, max(1, chunk), limit, reserve
        self.start = max(0, start)
        self.length = length  # LLEN when the caller knows it (saves a command)
        self.read = 0
        self.shifted = 0
        self.lost_track = False
        self.stopped: Optional[str] = None
        self.error: Optional[str] = None
        self.oversized = 0  # elements drained, not kept (larger than the read cap)
        # The chunk last yielded as its reply carried it, when nothing of it was drained: (the reply's bytes, where
        # each element of the chunk starts and ends in them); else None.
        self.raw: Optional[tuple[bytes, list[int], list[int]]] = None
        self._ahead: Optional[tuple] = None  # (key, start, stop) of the LRANGE this stream sent ahead

    def _sizes(self, reader: Reader) -> Optional[ElementSizes]:
        """How to size chunks; None (with `stopped` set) when not even one element may be read."""
        estimate = reader.element_estimate(self.key, self.length)
        if estimate is not None:
            refused = reader.guard.may_read_element(estimate)
            if refused:
                self.stopped = f"not read: {refused}"
                return None
        return ElementSizes(reader.guard, estimate, limit=self.chunk, in_flight=2)

    def _want(self, sizes: ElementSizes) -> int:
        want = sizes.next_count()
        return want if self.limit is None else min(want, self.limit - self.read)

    def _resync(self, items: list, last: Any) -> list:
        """The elements of a chunk not seen yet: the chunk re-reads the last element seen, unless pushes at the
        head shifted it further along (counted in `shifted`), or beyond the chunk (`lost_track`)."""
        if last is None or not items:
            return items
        if items[0] == last:
            return items[1:]
        try:
            found = items.index(last)
        except ValueError:
            found = -1
        if found > 0:
            self.shifted += found
            return items[found + 1:]
        self.lost_track = True
        return items

    def _stop_reason(self, reader: Reader) -> Optional[str]:
        if self.limit is not None and self.read >= self.limit:
            return f"the limit of {self.limit:,} messages"
        if reader.deadline.remaining() < self.reserve:
            return "the deadline"
        return None

    def _send(self, reader: Reader, sizes: ElementSizes, first: int, position: int) -> int:
        """Ask for the next chunk (from `first`, which re-reads the last element seen); how many new ones."""
        reader.check_memory()
        want = self._want(sizes)
        if want > 0:
            reader.lrange_send(self.key, first, position + want - 1)  # (drops a pending reply first)
        return want

    def __iter__(self) -> Iterator[list]:
        """`_read`, never raising: what stopped it is said in `stopped` (and `error`)."""
        reader = self.reader
        self._ahead = None
        try:
            yield from self._read(reader)
        except MemoryPressure as exc:
            self.stopped = str(exc)
        except RedisReadError as exc:
            self.error = str(exc)
            self.stopped = f"a read failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - WRONGTYPE and the like: said, never a traceback
            self.error = scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            self.stopped = f"a read failed: {self.error}"
        finally:
            if self._ahead is not None and reader.pending() == self._ahead:
                reader.discard_reply()

    def _read(self, reader: Reader) -> Iterator[list]:
        position = self.start  # index of the next unread element
        last = None
        reader.check_memory()
        sizes = self._sizes(reader)
        while sizes is not None:
            self.stopped = self._stop_reason(reader)
            if self.stopped:
                return
            # the reply asked for ahead is used if nobody ran another command on this Reader meanwhile
            ahead, self._ahead = self._ahead, None
            if ahead is None or reader.pending() != ahead:
                want = self._send(reader, sizes, position if last is None else position - 1, position)
            else:
                want = ahead[2] - position + 1
            items = reader.lrange_receive()
            sizes.learn(reader.last_sizes)
            new = self._resync(items, last)
            position = position + len(items) - (0 if last is None else 1)
            if not new:
                return
            last = new[-1]
            self.read += len(new)
            if reader.last_drained:
                self.oversized += element_sizes(new)[1]
            raw = reader.last_raw
            if raw is not None:  # `new` is the end of the reply (the elements seen before come first)
                skip = len(items) - len(new)
                raw = (raw[0], raw[1][skip:], raw[2][skip:]) if skip else raw
            self.raw = raw
            # Ask for the next chunk now: the server prepares it while the caller works on this one.
            if (len(items) >= want and reader.deadline.remaining() >= self.reserve
                    and self._send(reader, sizes, position - 1, position) > 0):
                self._ahead = reader.pending()
            yield new


# -- the ack emulation -------------------------------------------------------------------------------
@dataclass
class UnackedRow:
    tag: str
    delivered_at: float
    payload: Optional[bytes]  # the JSON [message, exchange, routing_key] from the `unacked` hash; None if absent
    skipped: Optional[str] = None  # why the payload was not read (too large to read safely)


def stream_unacked(reader: Reader, index_key: str, hash_key: str, chunk: int = 500,
                   limit: Optional[int] = None) -> Iterator[list[UnackedRow]]:
    """`unacked_index` by rank (oldest delivery first) in chunks, each joined with its `unacked` hash value.

    Hash values are whole messages: HSTRLEN tells their sizes first, and HMGET asks for them in groups that
    fit the reply budget; a value too large to read safely comes back with `skipped` set. Raises
    MemoryPressure when reading must stop (the caller says so)."""
    start = 0
    while limit is None or start < limit:
        if reader.deadline.remaining() < 0.3:
            return
        stop = start + chunk - 1 if limit is None else min(start + chunk, limit) - 1
        rows = reader.call("ZRANGE", index_key, start, stop, "WITHSCORES")
        if not rows:
            return
        if rows and not isinstance(rows[0], (list, tuple)):
            rows = [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
        tags = [r[0] for r in rows]
        lengths = reader.pipeline([("HSTRLEN", hash_key, tag) for tag in tags])
        values: dict = {}
        skipped: dict = {}
        group: list = []
        group_bytes = 0

        def fetch(group: list, values: dict) -> None:
            reader.check_memory()
            values.update(zip(group, reader.call("HMGET", hash_key, *group)))

        for tag, size in zip(tags, lengths):
            size = size if isinstance(size, int) else 0
            if size <= 0:
                continue  # the index names a delivery whose hash value is gone
            refused = reader.guard.may_read_element(size)
            if refused:
                skipped[tag] = f"not read: {refused.replace('its messages average', 'the message is')}"
                continue
            if group and group_bytes + size > reader.guard.reply_budget():
                fetch(group, values)
                group, group_bytes = [], 0
            group.append(tag)
            group_bytes += size
        if group:
            fetch(group, values)
        yield [UnackedRow(_text(tag), float(score), values.get(tag), skipped.get(tag)) for tag, score in rows]
        if len(rows) < chunk:
            return
        start += len(rows)


# -- parsing helpers ---------------------------------------------------------------------------------
def parse_info(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        out[name] = _coerce(value)
    return out


def _coerce(value: str) -> Any:
    if ("=" in value and "," in value) or value.startswith("keys="):
        return {k: _coerce(v) for k, _, v in (p.partition("=") for p in value.split(","))}
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def parse_client_list(text: str) -> list[dict]:
    clients = []
    for line in text.splitlines():
        entry = {}
        for part in line.split(" "):
            name, _, value = part.partition("=")
            entry[name] = value
        if entry:
            clients.append(entry)
    return clients


def parse_binding(member: bytes) -> tuple[str, str, str]:
    """(routing_key, pattern, queue) from a `_kombu.binding.<exchange>` member."""
    text = _text(member)
    parts = text.split(SEP)
    if len(parts) >= 3:
        return parts[0], parts[1], SEP.join(parts[2:])
    return "", "", text


def priority_keys(queue: str) -> list[tuple[int, str]]:
    """(priority step, list key) for each of kombu's priority sub-queues of `queue` (step 0 is the bare name)."""
    return [(step, queue if step == 0 else f"{queue}{SEP}{step}") for step in PRIORITY_STEPS]


def connect_url(url: "BrokerURL | str", deadline: Deadline, transport_options: Optional[Mapping[str, Any]] = None,
                cap: float = DEFAULT_CAP, use_ssl: Any = None) -> Reader:
    """Open a Reader on one redis/rediss/socket URL (not sentinel: see `connect_sentinel`)."""
    target = redis_address(url)
    prefix = str((transport_options or {}).get("global_keyprefix") or "")
    return Reader(target, deadline, prefix=prefix, cap=cap, use_ssl=use_ssl).open()


def connect_sentinel(urls: Sequence["BrokerURL"], deadline: Deadline, transport_options: Mapping[str, Any],
                     cap: float = DEFAULT_CAP) -> tuple[Reader, str]:
    """Ask the sentinels for the master (as kombu does) and open a Reader on it; (reader, 'host:port')."""
    import redis
    from redis.sentinel import Sentinel

    master_name = transport_options.get("master_name")
    if not master_name:
        raise RedisReadError("sentinel:// URL without broker_transport_options['master_name']: kombu cannot "
                             "connect either (ValueError)")
    targets = [redis_address(u) for u in urls]
    first = targets[0]
    timeout = deadline.budget(cap)
    sentinel_kwargs = dict(transport_options.get("sentinel_kwargs") or {})
    sentinel_kwargs.setdefault("socket_timeout", timeout)
    sentinel_kwargs.setdefault("socket_connect_timeout", timeout)
    sentinel = Sentinel([(t.host, t.port) for t in targets], sentinel_kwargs=sentinel_kwargs,
                        socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        host, port = sentinel.discover_master(master_name)
    except redis.sentinel.MasterNotFoundError as exc:
        raise RedisReadError(f"no sentinel named a master for {master_name!r}: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisReadError(f"no sentinel answered within {timeout:.1f} s: {exc}") from None
    prefix = str(transport_options.get("global_keyprefix") or "")
    reader = Reader(first, deadline, prefix=prefix, cap=cap, host=host, port=int(port)).open()
    return reader, f"{host}:{port}"
