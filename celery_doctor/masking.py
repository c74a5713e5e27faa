"""Masking of secrets in URLs and in any text that may carry one (error messages included).

Two layers, both applied by `scrub` to everything bound for output, a log or an error:

- credential positions are always masked, whatever the password: the userinfo of a URL
  (`scheme://user:PW@`), secret query values (`?password=PW`);
- registered secrets (every password seen while loading the target) are masked where they appear. A
  distinctive one (long, or mixing letters with digits or symbols, like a generated password) is masked
  everywhere, so that a library message quoting it bare cannot leak it. A common word (`celery`, `guest`,
  a password equal to its user name) would blank out task, queue and setting names if masked everywhere: it
  is masked only in credential positions (`:PW@` of a URL cut from its scheme, `password=PW`,
  `'password': 'PW'`, `password PW`, `AUTH PW`).
"""
from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import parse_qsl

MASK = "***"
_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key|auth|cred", re.I)

# scheme://user:password@host  or scheme://:password@host. Like urlsplit (and kombu, redis-py, amqp), the
# userinfo runs to the LAST '@' before the host's end ('/', '?', '#'): a password may hold an unencoded '@'
# (and a user name an '@' too: amqp://me@corp.example:pw@host//).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/?#\s;]*):(?P<pw>[^/?#\s;]*)@")
# ?password=...&ssl_keyfile=...
_QUERY = re.compile(r"(?P<key>[?&;][^=&\s;]*(?:pass|secret|token|auth|cred)[^=&\s;]*)=(?P<val>[^&\s;]*)", re.I)


# A secret shaped like a word or a name (letters with `.`/`_`/`-` between them, or only digits) could be any
# ordinary word of the report: it is masked in credential positions only, unless it is this long.
_WORDLIKE = re.compile(r"[A-Za-z]+(?:[._-][A-Za-z]+)*|[0-9]+")
DISTINCTIVE_MIN, WORDLIKE_MAX = 6, 15
# Where a bare secret is a credential: after a key naming one (password=, 'password': ', passwd ...).
_SECRET_KEY = r"(?:[A-Za-z_]*(?:pass(?:word|wd)?|pwd|secret|token|auth|cred(?:ential)?s?)[A-Za-z_]*)"


def distinctive(secret: str) -> bool:
    """True for a secret that cannot be mistaken for an ordinary word: masked wherever it appears."""
    if len(secret) > WORDLIKE_MAX:
        return True
    return len(secret) >= DISTINCTIVE_MIN and not _WORDLIKE.fullmatch(secret)


def _credential_positions(secret: str) -> re.Pattern:
    s = re.escape(secret)
    end = r"(?![A-Za-z0-9_])"
    return re.compile(
        rf"(?P<userinfo>:){s}(?=@)"  # user:PW@host, :PW@host (a URL without its scheme, a netloc)
        rf"|(?P<key>\b{_SECRET_KEY}['\"]?\s*[:=]\s*[bru]?['\"]?){s}{end}"  # password=PW, 'password': 'PW'
        rf"|(?P<word>\b(?:password|passwd|pwd|auth)\s+){s}{end}",  # "with password PW", "AUTH PW"
        re.I,
    )


class SecretRegistry:
    """Raw secret strings seen while loading the target; any later text containing one is scrubbed."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 3 and secret != MASK:
            self._secrets.add(secret)

    def add_url(self, url: str | None) -> None:
        for secret in secrets_in_url(url):
            self.add(secret)

    def scrub(self, text: str) -> str:
        text = mask_text(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret not in text:
                continue
            if distinctive(secret):
                text = text.replace(secret, MASK)
            else:
                text = _credential_positions(secret).sub(lambda m: (m.group("userinfo") or m.group("key")
                                                                     or m.group("word")) + MASK, text)
        return text

    def clear(self) -> None:
        self._secrets.clear()


SECRETS = SecretRegistry()


def secrets_in_url(url: str | None) -> list[str]:
    if not url:
        return []
    found = []
    for part in re.split(r"[;\s]+", url):
        match = _USERINFO.search(part)
        if match and match.group("pw"):
            found.append(match.group("pw"))
            from urllib.parse import unquote

            found.append(unquote(match.group("pw")))
        if "?" in part:
            for key, value in parse_qsl(part.split("?", 1)[1], keep_blank_values=True):
                if value and _SECRET_QUERY_KEYS.search(key):
                    found.append(value)
    return found


def mask_url(url: str | None) -> str | None:
    """Mask the password (and secret query values) of one or several `;`-separated URLs."""
    if url is None:
        return None
    return mask_text(str(url))


def mask_text(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m.group('key')}={MASK}", text)


def scrub(text: object) -> str:
    """Mask URLs and every registered secret in any text bound for output, a log or an error."""
    return SECRETS.scrub(str(text))


def scrub_all(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(scrub(t) for t in texts)
