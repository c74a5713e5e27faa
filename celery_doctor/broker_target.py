"""The broker a run diagnoses, read once: `BrokerTarget`.

The loader (`diagnose.load_target`) builds one from the URL the app will use and hands it to everything
that reaches the broker. Building it:

- splits the `;`-separated failover list and parses each URL once (`BrokerURL`: scheme, host, port, user,
  password, path, query, as kombu and redis-py read them);
- registers the URL's secrets with masking (the passwords as written and percent-decoded, secret query
  values), so that no later text can show them;
- masks it for display (`.masked`, and `.masked` of each URL);
- decides the transport: "redis", "rabbitmq", or the name of any other kombu transport;
- notes the first reason the URL is malformed (`.error`); `validate()` raises it (a usage error).

Only `.raw` (and a URL's `.raw` / `.password`) carries secrets: it is for kombu and redis-py, never for
output. The views of one URL that a client needs (the Redis address, the AMQP endpoint) are derived from
the parsed parts in redisio.py and rabbitmq_api.py, never by parsing the text again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from .masking import SECRETS, mask_url, scrub

REDIS_SCHEMES = frozenset({"redis", "rediss", "sentinel", "redis+socket", "socket"})
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
# Schemes kombu knows besides its transport aliases (its redis transport reads these itself).
EXTRA_SCHEMES = frozenset({"rediss", "sentinel"})


class BrokerURLError(ValueError):
    """A malformed broker URL; the message is one line, masked."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kombu_aliases() -> frozenset[str]:
    from kombu.transport import TRANSPORT_ALIASES

    return frozenset(TRANSPORT_ALIASES)


def transport_name(scheme: Optional[str]) -> Optional[str]:
    """'redis', 'rabbitmq', or another kombu transport's name, for a URL scheme or a broker_transport setting.

    `X+Y://` is kombu's transport X reading the URL `Y://` (`sqla+postgresql://`, `redis+socket://`)."""
    scheme = (scheme or "").strip().lower()
    if not scheme:
        return None
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in AMQP_SCHEMES:
        return "rabbitmq"
    if "+" in scheme:
        return transport_name(scheme.split("+", 1)[0])
    return scheme


def _known_scheme(scheme: str) -> bool:
    aliases = _kombu_aliases()
    if scheme in aliases or scheme in EXTRA_SCHEMES:
        return True
    return "+" in scheme and scheme.split("+", 1)[0] in aliases


@dataclass(frozen=True)
class BrokerURL:
    """One URL of a failover list, split once. `raw` and `password` never appear in repr."""

    raw: str = field(repr=False)
    scheme: str
    masked: str
    hostname: Optional[str] = None  # lower-cased, as urllib gives it
    port: Optional[int] = None  # None when the URL names none (or it is malformed: see `error`)
    username: Optional[str] = None  # percent-decoded
    password: Optional[str] = field(default=None, repr=False)  # percent-decoded
    path: str = ""
    query: Mapping[str, str] = field(default_factory=dict, repr=False)
    error: Optional[str] = None  # why the URL is malformed or unknown (masked, one line); None when fine
    malformed: bool = False  # the URL could not be split, or its port is not a port

    @property
    def transport(self) -> Optional[str]:
        return transport_name(self.scheme)


def parse_url(text: str) -> BrokerURL:
    """Split one broker URL (not a failover list). Never raises: a problem is kept in `.error`."""
    raw = text.strip()
    masked = mask_url(raw) or ""
    if "://" not in raw:
        return BrokerURL(raw=raw, scheme=raw.lower(), masked=masked,
                         error=f"broker URL {scrub(raw)!r} has no scheme (expected e.g. redis://host:6379/0)")
    scheme = raw.split("://", 1)[0].lower()
    try:
        split = urlsplit(raw)
    except ValueError as exc:  # a broken IPv6 host
        return BrokerURL(raw=raw, scheme=scheme, masked=masked, malformed=True,
                         error=f"malformed broker URL {scrub(raw)!r}: {_one_line(exc)}")
    scheme = split.scheme.lower()  # '' when the text before :// is no scheme (an unknown scheme below)
    error = None
    malformed = False
    try:
        port = split.port
    except ValueError as exc:  # not a number, or out of range
        port, malformed = None, True
        error = f"malformed broker URL {scrub(raw)!r}: {_one_line(exc)}"
    if error is None and not _known_scheme(scheme):
        error = f"unknown broker scheme {scheme!r} in {scrub(raw)!r}"
    return BrokerURL(
        raw=raw, scheme=scheme, masked=masked, hostname=split.hostname, port=port,
        username=unquote(split.username) if split.username else None,
        password=unquote(split.password) if split.password else None,
        path=split.path, query=dict(parse_qsl(split.query, keep_blank_values=True)),
        error=error, malformed=malformed,
    )


@dataclass(frozen=True)
class BrokerTarget:
    """The broker URL of a run: parsed, validated, masked, its secrets registered, its transport decided."""

    raw: Optional[str] = field(repr=False)  # as configured: for kombu and redis-py only, never for output
    urls: tuple[BrokerURL, ...] = ()  # the failover list, in kombu's order (blank entries dropped)
    transport: Optional[str] = None  # "redis", "rabbitmq", another kombu transport name, or None
    masked: Optional[str] = None  # the whole URL (every failover URL) with its secrets masked
    error: Optional[str] = None  # the first reason the URL is malformed (masked, one line); None when fine

    @classmethod
    def parse(cls, raw: Optional[str], transport_setting: Optional[str] = None) -> "BrokerTarget":
        """Read `raw` (one URL or a `;`-separated failover list) once; `transport_setting`: the app's
        broker_transport, which wins over the scheme (as in Celery). Registers the secrets with masking."""
        if raw is not None and not isinstance(raw, str):
            raw = None
        SECRETS.add_url(raw)
        urls = tuple(parse_url(part) for part in (raw or "").split(";") if part.strip())
        for url in urls:
            SECRETS.add(url.password)  # as decoded (add_url registers it as written, and its query values)
        error = None
        if raw and not urls:
            error = "the broker URL is empty"
        elif urls:
            error = next((url.error for url in urls if url.error), None)
        setting = transport_setting if isinstance(transport_setting, str) else None
        transport = transport_name(setting) or (urls[0].transport if urls else None)
        return cls(raw=raw, urls=urls, transport=transport, masked=mask_url(raw), error=error)

    @classmethod
    def of_app(cls, app: Any) -> "BrokerTarget":
        """The broker a Celery app uses: its broker_url (as Celery reads it: $CELERY_BROKER_URL first), and
        broker_transport when it sets one."""
        conf = app.conf
        return cls.parse(_read(lambda: conf.broker_url), _read(lambda: conf.get("broker_transport")))

    def validate(self) -> "BrokerTarget":
        """Raise BrokerURLError (one masked line) when a URL is malformed, has no scheme or an unknown one."""
        if self.error:
            raise BrokerURLError(self.error)
        return self

    @property
    def first(self) -> Optional[BrokerURL]:
        return self.urls[0] if self.urls else None

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(url.scheme for url in self.urls)


def _read(get: Any) -> Optional[str]:
    try:
        value = get()
    except Exception:  # noqa: BLE001 - a lazy settings object (Django) may raise on access
        return None
    return value if isinstance(value, str) else None
