"""Broker and result backend URLs written in the source with their password (read from string literals only)."""
from __future__ import annotations

import ast
import re
from typing import Iterator, Optional

from ..parts.source import SourceFile, SourceTree
from ..pyast.lazy import nodes_of

# Broker and result-backend URL schemes (kombu transports, Celery backends) that carry credentials in the URL.
_URL = re.compile(
    r"(?P<scheme>redis|rediss|sentinel|amqp|amqps|pyamqp|librabbitmq|sqs|mongodb(?:\+srv)?|db\+[a-z0-9+]+|"
    r"couchbase|arangodb|cassandra|elasticsearch|es)://(?P<user>[^:/?#\s@]*):(?P<pw>[^/?#\s]+)@(?P<host>[^/?#\s:]*)",
    re.I)
_PLACEHOLDER = re.compile(r"^(?:\$\{.*\}|\{.*\}|%\(?.*|<.*>|\*+|x+|\.\.\.|password|pass|pw|secret|changeme)$", re.I)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", ""}


def _test_file(path: str) -> bool:
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py" \
        or any(p in ("tests", "test", "testing") for p in parts[:-1])


def literal_urls(tree: Optional[SourceTree]) -> tuple[tuple[str, int, str, str, str], ...]:
    """(path, line, url, password, host) for every string literal of the tree (test files left out) holding a
    broker/backend URL with a password (found once per tree)."""
    return tree.memo("literal_urls", lambda: tuple(_literal_urls(tree))) if tree else ()


def _literal_urls(tree: SourceTree) -> Iterator[tuple[str, int, str, str, str]]:
    for source in tree.parsed():
        yield from file_literal_urls(source)


def file_literal_urls(source: SourceFile) -> Iterator[tuple[str, int, str, str, str]]:
    """literal_urls of one parsed file (collectors.refine keeps a file parsed when it holds one)."""
    if "://" not in source.text or _test_file(source.path):
        return
    for node in nodes_of(source.tree, ast.Constant):
        if not (isinstance(node.value, str) and "@" in node.value):
            continue
        for match in _URL.finditer(node.value):
            password = match.group("pw")
            if not _PLACEHOLDER.match(password):
                yield source.path, node.lineno, match.group(0), password, match.group("host").lower()


def register_source_secrets(tree: Optional[SourceTree]) -> None:
    """Mask the passwords written in the source wherever a report quotes the code (masking.SECRETS)."""
    from ..masking import SECRETS

    for _, _, _, password, _ in literal_urls(tree):
        SECRETS.add(password)
