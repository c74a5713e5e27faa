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

import queue as _queue
import socket as _socket
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from .deadline import Deadline
from .masking import mask_url, scrub

SEP = "\x06\x16"  # kombu's priority / binding separator
PRIORITY_STEPS = (0, 3, 6, 9)
BINDING_PREFIX = "_kombu.binding."
CHUNK = 1000  # elements per LRANGE: about a quarter of a millisecond of server time for 1 KB messages
SMALL_SET = 1000  # SMEMBERS up to this size, SSCAN above
MAX_CLIENT_LIST = 5000  # above this many connected clients, CLIENT LIST is skipped (it is O(clients))
BLOCKING_COMMANDS = {"brpop", "blpop", "brpoplpush", "blmove", "blmpop"}
DEFAULT_CAP = 5.0  # seconds any single command may wait, at most


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
class BrokerURL:
    """One broker URL as kombu reads it (secrets stay in `password`, never printed)."""

    raw: str = field(repr=False)
    scheme: str
    host: Optional[str]
    port: Optional[int]
    db: int
    username: Optional[str]
    password: Optional[str] = field(repr=False)
    ssl: bool
    socket_path: Optional[str]
    query: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def masked(self) -> str:
        return mask_url(self.raw) or ""

    @property
    def address(self) -> str:
        return self.socket_path or f"{self.host}:{self.port}"


def parse_url(url: str) -> BrokerURL:
    """Parse one `redis://`, `rediss://`, `sentinel://`, `redis+socket://` or `socket://` URL."""
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    socket_path = None
    db_text = parts.path.lstrip("/")
    if scheme in ("redis+socket", "socket", "unix"):
        socket_path = parts.path or None
        db_text = query.get("virtual_host") or query.get("db") or "0"
    elif "virtual_host" in query:
        db_text = query["virtual_host"]
    try:
        db = int(db_text or query.get("db") or 0)
    except ValueError:
        raise RedisReadError(f"the database in {mask_url(url)!r} is not a number: {db_text!r}") from None
    try:
        port = parts.port
    except ValueError:
        raise RedisReadError(f"malformed port in {mask_url(url)!r}") from None
    default_port = 26379 if scheme == "sentinel" else 6379
    return BrokerURL(raw=url, scheme=scheme, host=parts.hostname or ("127.0.0.1" if not socket_path else None),
                     port=port or (default_port if not socket_path else None), db=db, username=username or None,
                     password=password or None, ssl=scheme == "rediss" or query.get("ssl", "").lower() == "true",
                     socket_path=socket_path, query=query)


def split_failover(url: Optional[str]) -> list[str]:
    return [u.strip() for u in (url or "").split(";") if u.strip()]


_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def _ssl_kwargs(target: BrokerURL, use_ssl: Any) -> dict:
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


class BulkArrayReader:
    """Reads one RESP2 reply that is an array of bulk strings (an LRANGE reply) straight off a socket.

    redis-py's pure-Python parser costs about 2 us per element (a readline and a read per bulk string);
    this one receives the whole reply into one reusable buffer and walks it by the declared lengths, never
    scanning the payloads, then slices every element out at once: about a third of the cost. (With hiredis
    installed, redis-py parses in C and is used instead: see `Reader.lrange_raw`.)
    """

    KEEP = 4 << 20  # a buffer grown beyond this for one huge reply is given back afterwards

    def __init__(self, size: int = 1 << 20) -> None:
        self.size = size
        self.buf = bytearray(size)

    def read(self, sock: Any) -> list[bytes]:
        buf = self.buf
        view = memoryview(buf)
        got = 0
        count = 0
        total: Optional[int] = None
        pos = 0
        starts: list[int] = []
        ends: list[int] = []
        try:
            while True:
                if got == len(buf):
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
                received = sock.recv_into(view[got:])
                if not received:
                    raise ConnectionError("the server closed the connection")
                got += received
                if total is None:
                    nl = buf.find(b"\r\n", 0, got)
                    if nl < 0:
                        continue
                    kind = buf[0]
                    if kind == 45:  # "-": an error reply (WRONGTYPE ...)
                        import redis

                        raise redis.ResponseError(bytes(buf[1:nl]).decode("utf-8", "replace"))
                    if kind != 42:  # "*"
                        raise _Unexpected(f"reply starts with {bytes(buf[:1])!r}")
                    total = max(0, int(buf[1:nl]))
                    pos = nl + 2
                find = buf.find
                while count < total:
                    nl = find(b"\r\n", pos, got)
                    if nl < 0:
                        break
                    if buf[pos] != 36:  # "$"
                        raise _Unexpected(f"array element starts with {bytes(buf[pos:pos + 1])!r}")
                    start = nl + 2
                    end = start + int(buf[pos + 1:nl])
                    if end + 2 > got:
                        break
                    starts.append(start)
                    ends.append(end)
                    pos = end + 2
                    count += 1
                if count == total:
                    break
            if pos != got:
                raise _Unexpected(f"{got - pos} bytes after the reply")
            data = bytes(view[:got])
        finally:
            view.release()
            if len(buf) > self.KEEP:
                self.buf = bytearray(self.size)
        return list(map(data.__getitem__, map(slice, starts, ends)))


def _raw_readable(connection: Any) -> bool:
    """True when `connection` uses redis-py's pure-Python RESP2 parser with nothing buffered: its socket
    can then be read directly. False with hiredis (faster in C), RESP3, or anything unexpected."""
    parser = getattr(connection, "_parser", None)
    if type(parser).__name__ != "_RESP2Parser" or getattr(connection, "_sock", None) is None:
        return False
    buffer = getattr(parser, "_buffer", None)
    try:
        return buffer is None or buffer.unread_bytes() == 0
    except Exception:  # noqa: BLE001 - an unknown redis-py internals: use the ordinary path
        return False


class Reader:
    """One read-only connection to one Redis database, every call bounded by the run's deadline."""

    def __init__(self, target: BrokerURL, deadline: Deadline, prefix: str = "", cap: float = DEFAULT_CAP,
                 use_ssl: Any = None, host: Optional[str] = None, port: Optional[int] = None,
                 db: Optional[int] = None) -> None:
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
        self.commands = 0
        self.touch_free = False  # CLIENT NO-TOUCH accepted (Redis 7.2+): reads leave LRU/LFU data alone
        timeout = deadline.budget(cap)
        kwargs = dict(db=self.db, username=target.username, password=target.password, socket_timeout=timeout,
                      socket_connect_timeout=timeout, single_connection_client=True, decode_responses=False,
                      retry=Retry(NoBackoff(), 0), health_check_interval=0, protocol=2)
        if target.socket_path:
            kwargs["unix_socket_path"] = target.socket_path
        else:
            kwargs.update(host=self._host, port=self._port)
            kwargs.update(_ssl_kwargs(target, use_ssl))
        try:  # a single-connection client connects (and negotiates) right here
            try:
                self.client = redis.Redis(**kwargs)
            except redis.AuthenticationError as exc:
                if not (kwargs.get("password") and any(t in str(exc) for t in _NO_PASSWORD_SET)):
                    raise
                # The server has no password. Clients that authenticate with HELLO (kombu with redis-py 5+, RESP3)
                # are let in whatever password they send: the workers are connected, so read it as they do.
                kwargs.update(username=None, password=None)
                self.client = redis.Redis(**kwargs)
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
        self._pending: Optional[tuple] = None  # (key, start, stop) of an LRANGE sent ahead, reply not yet read

    # -- plumbing ------------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        where = self.target.socket_path or f"{self._host}:{self._port}"
        return f"{where}/{self.db}"

    def clone(self, db: Optional[int] = None) -> "Reader":
        """Another connection to the same server (a second database, or a prefetching thread)."""
        return Reader(self.target, self.deadline, self.prefix, self.cap, self._use_ssl, self._host, self._port,
                      self.db if db is None else db)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _arm(self, cap: Optional[float]) -> float:
        if self.deadline.expired():
            raise RedisReadError(f"Redis at {self.where}: the scan's deadline passed")
        timeout = self.deadline.budget(min(cap or self.cap, self.cap))
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
        self._pending = None
        timeout = self._arm(None)
        try:
            if _raw_readable(connection):
                if self._array is None:
                    self._array = BulkArrayReader()
                return self._array.read(connection._sock)
            return list(connection.read_response() or ())
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

    def stream_list(self, key: str, chunk: int = CHUNK, limit: Optional[int] = None, reserve: float = 0.5,
                    prefetch: bool = False) -> "ListStream":
        return ListStream(self, key, chunk=chunk, limit=limit, reserve=reserve, prefetch=prefetch)

    def sample_list(self, key: str, length: int, want: int, windows: int = 4) -> list[list[bytes]]:
        """Up to `want` elements in `windows` evenly spaced windows (head, middle, tail): a sample, not a stream."""
        if length <= 0 or want <= 0:
            return []
        if length <= want:
            return list(ListStream(self, key, chunk=min(CHUNK, max(want, 1)), limit=want))
        windows = max(1, min(windows, want))
        sizes = [want // windows + (1 if w < want % windows else 0) for w in range(windows)]
        chunks = []
        for w, size in enumerate(sizes):
            start = (length - size) * w // max(1, windows - 1) if windows > 1 else 0
            got = 0
            while got < size:
                step = min(CHUNK, size - got)
                items = self.lrange_raw(key, start + got, start + got + step - 1)
                if not items:
                    break
                chunks.append(items)
                got += len(items)
        return chunks


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
    """Every element of a list, oldest-pushed last, in bounded LRANGE chunks; yields lists of raw elements.

    Reads from the head (index 0, where producers LPUSH) towards the tail (where workers BRPOP). A push
    while we read shifts every index by one: each chunk overlaps the previous one by one element and the
    stream re-synchronises on it, so nothing is counted twice. Pops at the tail only end the stream early.
    `shifted` counts elements pushed meanwhile; `lost_track` is set when more than a chunk was pushed between
    two reads (counts may then be off by up to a chunk). `stopped` says why the stream ended before the end.
    """

    def __init__(self, reader: Reader, key: str, chunk: int = CHUNK, limit: Optional[int] = None,
                 reserve: float = 0.5, prefetch: bool = False) -> None:
        self.reader, self.key, self.chunk, self.limit, self.reserve = reader, key, max(1, chunk), limit, reserve
        self.prefetch = prefetch
        self.read = 0
        self.shifted = 0
        self.lost_track = False
        self.stopped: Optional[str] = None
        self.error: Optional[str] = None

    def _chunks(self, reader: Reader, stop: threading.Event) -> Iterator[list]:
        position = 0  # index of the next unread element
        last = None
        ahead: Optional[tuple] = None  # (key, start, stop) of the LRANGE this stream sent ahead
        try:
            while not stop.is_set():
                if self.limit is not None and self.read >= self.limit:
                    self.stopped = f"the limit of {self.limit:,} messages"
                    return
                if reader.deadline.remaining() < self.reserve:
                    self.stopped = "the deadline"
                    return
                want = self.chunk if self.limit is None else min(self.chunk, self.limit - self.read)
                # after the first chunk, re-read the last element seen: the stream re-synchronises on it
                wanted = (position, position + want - 1) if last is None else (position - 1, position + want - 1)
                # the reply asked for ahead is used if nobody ran another command on this Reader meanwhile
                if ahead is None or reader.pending() != ahead or ahead[1:] != wanted:
                    reader.lrange_send(self.key, *wanted)  # (drops a pending reply first)
                ahead = None
                items = reader.lrange_receive()
                if last is None:
                    new = items
                    position += len(new)
                else:
                    if not items:
                        return
                    if items[0] == last:
                        new = items[1:]
                    else:
                        try:
                            found = items.index(last)
                        except ValueError:
                            found = -1
                        if found > 0:
                            self.shifted += found
                            new = items[found + 1:]
                        else:
                            self.lost_track = True
                            new = items
                    position = position - 1 + len(items)
                if not new:
                    return
                last = new[-1]
                self.read += len(new)
                if len(items) >= want and not stop.is_set() and reader.deadline.remaining() >= self.reserve:
                    # Ask for the next chunk now: the server prepares it while the caller works on this one.
                    following = self.chunk if self.limit is None else min(self.chunk, self.limit - self.read)
                    if following > 0:
                        reader.lrange_send(self.key, position - 1, position + following - 1)
                        ahead = reader.pending()
                yield new
        finally:
            if ahead is not None and reader.pending() == ahead:
                reader.discard_reply()

    def __iter__(self) -> Iterator[list]:
        if not self.prefetch:
            yield from self._chunks(self.reader, threading.Event())
            return
        # A second connection reads ahead while the caller summarises: socket waits overlap with the work.
        reader = self.reader.clone()
        box: _queue.Queue = _queue.Queue(maxsize=2)
        stop = threading.Event()
        done = object()

        def run() -> None:
            try:
                reader.open()
                for items in self._chunks(reader, stop):
                    while not stop.is_set():
                        try:
                            box.put(items, timeout=0.2)
                            break
                        except _queue.Full:
                            continue
            except RedisReadError as exc:
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported as a reason, never a traceback
                self.error = scrub(f"{type(exc).__name__}: {exc}")
            finally:
                reader.close()
                while True:
                    try:
                        box.put(done, timeout=0.2)
                        break
                    except _queue.Full:
                        if stop.is_set():
                            try:
                                box.get_nowait()
                            except _queue.Empty:
                                pass

        thread = threading.Thread(target=run, name="celery-doctor-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    items = box.get(timeout=max(0.1, self.reader.deadline.remaining()))
                except _queue.Empty:
                    self.stopped = "the deadline"
                    return
                if items is done:
                    return
                yield items
        finally:
            stop.set()
            thread.join(1.0)
        if self.error:
            raise RedisReadError(self.error)


# -- the ack emulation -------------------------------------------------------------------------------
@dataclass
class UnackedRow:
    tag: str
    delivered_at: float
    payload: Optional[bytes]  # the JSON [message, exchange, routing_key] from the `unacked` hash; None if absent


def stream_unacked(reader: Reader, index_key: str, hash_key: str, chunk: int = 500,
                   limit: Optional[int] = None) -> Iterator[list[UnackedRow]]:
    """`unacked_index` by rank (oldest delivery first) in chunks, each joined with its `unacked` hash value."""
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
        values = reader.call("HMGET", hash_key, *tags)
        yield [UnackedRow(_text(tag), float(score), value) for (tag, score), value in zip(rows, values)]
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
    if "=" in value and "," in value or value.startswith("keys="):
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


def connect_url(url: str, deadline: Deadline, transport_options: Optional[Mapping[str, Any]] = None,
                cap: float = DEFAULT_CAP, use_ssl: Any = None) -> Reader:
    """Open a Reader on one redis/rediss/socket URL (not sentinel: see `connect_sentinel`)."""
    target = parse_url(url)
    prefix = str((transport_options or {}).get("global_keyprefix") or "")
    return Reader(target, deadline, prefix=prefix, cap=cap, use_ssl=use_ssl).open()


def connect_sentinel(urls: list[str], deadline: Deadline, transport_options: Mapping[str, Any],
                     cap: float = DEFAULT_CAP) -> tuple[Reader, str]:
    """Ask the sentinels for the master (as kombu does) and open a Reader on it; (reader, 'host:port')."""
    import redis
    from redis.sentinel import Sentinel

    master_name = transport_options.get("master_name")
    if not master_name:
        raise RedisReadError("sentinel:// URL without broker_transport_options['master_name']: kombu cannot "
                             "connect either (ValueError)")
    targets = [parse_url(u) for u in urls]
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
