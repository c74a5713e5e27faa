"""Which source files the checks can need parsed: a bytes-level test run on every file before `ast.parse`.

Parsing is most of the cost of the source lint, and most files of a large tree have nothing to do with Celery.
A file passes (`might_matter`) when its bytes contain a token without which no check could report anything in
it or learn anything global from it; the others are read (and keep their text and inline suppressions) but are
parsed only if a check looks one of their names up (Project.function/cls/constants/imports, SourceTree.load).

Why a file without these tokens cannot produce a finding (keep in sync with checks/source_*.py,
checks/config_*.py, facts/source_tasks.py, facts/context.py and pyast/calls.py; tests/test_source_scale.py
compares the findings with and without this filter):

- tasks (facts.source_tasks): a task decorator's name ends with `task` (task, shared_task, periodic_task,
  x.task); a task class derives from `Task` (word). Decorator factories defined in one module and used in
  another, and task classes deriving from the project's own task classes, are followed by name (closure below).
- publishes and signatures (scope.is_publish, source_orm, source_names): `delay` (word), `apply_async`,
  `send_task`, `signature(`, `Signature`, `subtask`, `.s(`, `.si(`.
- literal delays, naive ETAs and expiries (calls.literal_delays, config_misc): `countdown`, and `eta=` and
  `expires=` (they are read only as keyword arguments of a call; whitespace may stand before the `=`).
- a queue named at a call (config_static CD170: `queue=` keyword, or an options dict with a "queue" key):
  `queue=` or a quoted "queue".
- global facts read anywhere in the tree: `ATOMIC_REQUESTS`, `register_after_fork`, `register_at_fork`,
  `__json__`, `register_type(`, serializer settings, `Celery` (word), `autodiscover_tasks`, signal names
  (worker_process_init, task_prerun, task_postrun), `revoke`, `terminate(`, `scoped_session`.
- database engines and clients created at import time (source_fork): the engine factories, `MongoClient`,
  `MotorClient`, and `connect` together with a driver name (psycopg, pymysql, MySQLdb, mysql, cx_Oracle,
  oracledb).
- locks released in `finally` (source_locks): `nx=`, `setnx` or `.add(` with `cache`, and `delete`/`unlink`,
  and `finally`.
- broker and backend URLs with a password in a string literal (static/secrets.py: masked in every output, and
  reported): a scheme it knows, `://`, `user:password@`.
- ORM models (source_orm's model index reads every class of the tree): `__tablename__`, or one of the model
  base names as a word (Model, Base, DeclarativeBase, AbstractUser, AbstractBaseUser, PermissionsMixin). Such a
  file (when nothing else in it matters) is parsed only if it defines a class on one of these bases or with
  `__tablename__` (decided in a worker process, collectors.syntax); models deriving from the project's own
  models are followed by name (closure).

Closure (collectors.source): after the passing files are parsed, the names of the decorator factories and of
the classes that may be task classes or models are collected; an unparsed file whose class bases or decorators
name one of them, or that imports one of those classes under another name (`import Base as B`), is parsed too,
until nothing new comes in.

Helpers called from tasks, base classes, constants and imports of unparsed files need no token: the Project
finds them by name and parses their file on demand.

Once a "core" file is parsed, the same words are looked for again in its code alone (collectors.refine: strings
and comments blanked, `core_words`); a file that passed only through a docstring, a comment or a string is set
aside again, unparsed.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Optional

# Plain substrings: a bytes `in` test each (fast). The checks read CODE_SUBSTRINGS only as code (a name, an
# attribute, a keyword argument); TEXT_SUBSTRINGS also as the key of a dict literal (`{"ATOMIC_REQUESTS": True}`,
# `{"countdown": 10}`, `conf.update({"task_serializer": ...})`), so collectors.refine looks for them in strings too.
CODE_SUBSTRINGS = (
    b"apply_async", b"send_task", b"signature(", b"Signature", b"subtask", b".s(", b".si(",
    b"register_after_fork", b"register_at_fork", b"__json__", b"register_type(", b"autodiscover_tasks",
    b"worker_process_init", b"task_prerun", b"task_postrun", b"revoke", b"terminate(", b"scoped_session",
    b"create_engine", b"create_async_engine", b"engine_from_config", b"MongoClient", b"MotorClient",
)
TEXT_SUBSTRINGS = (b"countdown", b"ATOMIC_REQUESTS", b"task_serializer", b"TASK_SERIALIZER", b"CELERY_SERIALIZER")
SUBSTRINGS = CODE_SUBSTRINGS + TEXT_SUBSTRINGS
_WORD_BYTES = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz") | \
    frozenset(range(0x80, 0x100))
_QUOTES = frozenset(b"'\"")


class Word:
    """A word followed by `tail`, and preceded by what `before` says: "free" (not a letter, digit, `_` or
    non-ASCII byte), "quote" (a quote) or "any".

    The regex starts with the word itself, so the engine scans for that literal fast; the byte before each match is
    tested here. (A lookbehind written first makes the regex engine try every position of the file: it was most of
    the prefilter's time.) No match can start inside another, so finditer misses none."""

    def __init__(self, word: bytes, tail: bytes = rb"\b", before: str = "free"):
        self.word = word
        self._rx = re.compile(re.escape(word) + tail)
        self._before = before

    def search(self, data: bytes) -> bool:
        if self.word not in data:
            return False
        for match in self._rx.finditer(data):
            start = match.start()
            if self._before == "any" or self._allowed(data[start - 1] if start else None):
                return True
        return False

    def _allowed(self, previous: Optional[int]) -> bool:
        if self._before == "quote":
            return previous is not None and previous in _QUOTES
        return previous is None or previous not in _WORD_BYTES


_KEYWORD = rb"[\s\\]*=(?!=)"  # read only as a keyword argument (whitespace may stand before the `=`)
WORDS = (
    Word(b"task", before="any"), Word(b"Task"), Word(b"delay"), Word(b"eta", _KEYWORD),
    Word(b"expires", _KEYWORD), Word(b"Celery"), Word(b"queue", _KEYWORD), Word(b"queue", rb"['\"]", before="quote"),
)
CODE_WORDS, TEXT_WORDS = WORDS[:7], WORDS[7:]  # a quoted "queue" is the key of an options dict
MODEL_WORDS = (b"Model", b"Base", b"DeclarativeBase", b"AbstractUser", b"AbstractBaseUser", b"PermissionsMixin")
MODEL_BASES = {w.decode() for w in MODEL_WORDS} | {"Task"}
_MODELS = tuple(Word(w) for w in MODEL_WORDS)
DRIVERS = (b"psycopg", b"pymysql", b"MySQLdb", b"mysql", b"cx_Oracle", b"oracledb")
# A broker/backend URL with a password (static/secrets.py reads them from string literals, masks and reports them):
# `<scheme>://user:password@`, the scheme a run of [a-z0-9+] (any case) holding one of these names. The regex starts
# at the literal `://` (fast); the scheme before it is read here.
_AFTER_SCHEME = re.compile(rb"://[^:/?#\s@]*:[^/?#\s]+@")
_SCHEME_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+")
_SECRET_SCHEMES = (b"redis", b"sentinel", b"amqp", b"sqs", b"mongodb", b"db+", b"couchbase", b"arangodb",
                   b"cassandra", b"elasticsearch", b"es")


def secret_url(data: bytes) -> bool:
    """True when the bytes hold a broker/backend URL with a user:password@ part."""
    for match in _AFTER_SCHEME.finditer(data):
        end = start = match.start()
        while start > 0 and data[start - 1] in _SCHEME_BYTES:
            start -= 1
        scheme = data[start:end].lower()
        if any(name in scheme for name in _SECRET_SCHEMES):
            return True
    return False


def _lock_release(code: bytes, text: bytes) -> bool:
    acquires = b"nx=" in code or b"setnx" in code or (b".add(" in code and b"cache" in text.lower())
    return acquires and (b"delete" in code or b"unlink" in code) and b"finally" in code


def core_words(code: bytes, text: bytes) -> bool:
    """True when the file holds a token of a "core" file (see the module docstring): the tokens the checks read
    only as code are looked for in `code`, the others in `text`. The bytes-level test passes the file's bytes as
    both; collectors.refine passes, as `code`, the bytes with every string and comment blanked."""
    if any(token in code for token in CODE_SUBSTRINGS) or any(token in text for token in TEXT_SUBSTRINGS):
        return True
    if any(word.search(code) for word in CODE_WORDS) or any(word.search(text) for word in TEXT_WORDS):
        return True
    if b"connect" in code and any(driver in text for driver in DRIVERS):
        return True
    return _lock_release(code, text)


def relevance(data: bytes) -> Optional[str]:
    """"core" when a check may need the file parsed, "model" when only ORM model base names are in it (it is
    parsed only if it defines a class on such a base, or with __tablename__: collectors.syntax finds out in a
    worker process), None when nothing in it matters (see the module docstring). A parsed "core" file may be
    set aside again (collectors.refine)."""
    if core_words(data, data) or (b"://" in data and secret_url(data)):
        return "core"
    if b"__tablename__" in data or any(word.search(data) for word in _MODELS):
        return "model"
    return None


def might_matter(data: bytes) -> bool:
    """True when a check may need this file parsed (see the module docstring for why the others cannot)."""
    return relevance(data) is not None


# ----- names an unparsed file refers to, for the closure and the on-demand lookups (supersets: a match is
# ----- confirmed by parsing the file) ---------------------------------------------------------------------------
_IDENT = r"[^\W\d]\w*"
_DEFS = re.compile(r"(?:def|class)[\s\\]+(" + _IDENT + r")")
_CLASS_NAMED = re.compile(r"class[\s\\]+(" + _IDENT + r")[\s\\]*(?:\[[^\]]*\][\s\\]*)?\(([^:]*)")
_DECORATOR = re.compile(r"@[\s\\]*\(?[\s\\]*(" + _IDENT + r"(?:[\s\\]*\.[\s\\]*" + _IDENT + r")*)")
_WORD = re.compile(_IDENT)
_AS = re.compile(r"as(?=[\s\\]+(" + _IDENT + "))")  # starts with the literal: an identifier first would try every word


def _norm(name: str) -> str:
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


def defined_names(text: str) -> set[str]:
    """Every name that may be defined with `def`/`class` in the text (a superset of the real ones)."""
    return {_norm(m.group(1)) for m in _DEFS.finditer(text)} if ("def" in text or "class" in text) else set()


def aliased_names(text: str) -> set[str]:
    """Every identifier X of `X as Y` in the text (`import X as Y`, also `except X as e`: a superset)."""
    return {original for original, _ in alias_pairs(text)}


def alias_pairs(text: str) -> set[tuple[str, str]]:
    """(X, Y) for every `X as Y` in the text, X the last part of a dotted name (a superset of the imports that
    rename)."""
    found: set[tuple[str, str]] = set()
    for match in _AS.finditer(text):
        end = match.start() - 1
        if end < 0 or not (text[end].isspace() or text[end] == "\\"):
            continue  # `as` inside a word (alias, has)
        while end >= 0 and (text[end].isspace() or text[end] == "\\"):
            end -= 1
        start = end
        while start >= 0 and (text[start].isalnum() or text[start] == "_"):
            start -= 1
        word = text[start + 1:end + 1].lstrip("0123456789")
        while word and word[0].isdigit():  # other digits than ASCII ones
            word = word[1:]
        if word:
            found.add((_norm(word), _norm(match.group(1))))
    return found


def class_bases(text: str) -> list[tuple[str, set[str]]]:
    """(class name, the words of its base list) for every `class` statement the text may hold (a superset)."""
    if "class" not in text:
        return []
    return [(_norm(m.group(1)), {_norm(w) for w in _WORD.findall(m.group(2))}) for m in _CLASS_NAMED.finditer(text)]


def referenced_bases(text: str) -> set[str]:
    """Words in class base lists and decorators of the text (a superset of the names they refer to)."""
    found: set[str] = set()
    if "class" in text:
        for match in _CLASS_NAMED.finditer(text):
            found.update(_norm(w) for w in _WORD.findall(match.group(2)))
    if "@" in text:
        for match in _DECORATOR.finditer(text):
            found.update(_norm(w) for w in _WORD.findall(match.group(1)))
    return found
