"""The fast walks and byte tests of the source lint give exactly what their plain definitions give, on real code:
the prefilter's words and URL test (pyast.prefilter), the scope walk (pyast.scope.walk_scope), the per-type node
lists (pyast.lazy.nodes_of). They replaced slower code with the same answers; these keep them the same."""
from __future__ import annotations

import ast
import gc
import re
import subprocess
import sys
from pathlib import Path

import celery
import kombu
import pytest

from celery_doctor.pyast.lazy import all_nodes, nodes_of
from celery_doctor.pyast.prefilter import WORDS, Word, secret_url
from celery_doctor.pyast.scope import SCOPE_NODES, walk_scope

REAL_FILES = sorted(Path(celery.__file__).parent.rglob("*.py"))[:120] + sorted(Path(kombu.__file__).parent.rglob("*.py"))[:60]

# The definitions the fast versions replaced (lookbehind regexes; ast.iter_child_nodes).
PLAIN_WORDS = [re.compile(rb"task\b"), re.compile(rb"(?<![\w\x80-\xff])Task\b"),
               re.compile(rb"(?<![\w\x80-\xff])delay\b"), re.compile(rb"(?<![\w\x80-\xff])eta[\s\\]*=(?!=)"),
               re.compile(rb"(?<![\w\x80-\xff])expires[\s\\]*=(?!=)"), re.compile(rb"(?<![\w\x80-\xff])Celery\b"),
               re.compile(rb"(?<![\w\x80-\xff])queue[\s\\]*=(?!=)|['\"]queue['\"]")]
PLAIN_SECRET = re.compile(rb"(?i)(?:redis|sentinel|amqp|sqs|mongodb|db\+|couchbase|arangodb|cassandra|elasticsearch|es)"
                          rb"[a-z0-9+]*://[^:/?#\s@]*:[^/?#\s]+@")
TRICKY = [b"x = 'redis://u:p@h'", b"REDIS+X://u:p@h", b"aes://u:p@h", b"http://u:p@h", b"redis://u@h",
          b"mongodb+srv://a:b@c", b"db+postgresql://a:b@c", b"foo_eta = 1", "\u00e9eta=1".encode(), b"eta == 1",
          b"eta\\\n = 3", b"'queue'", b'"queue"', b"'queue\"", b"x('queue\")", b"q'queue", b"xqueue=1", b"queue =2",
          b"aTask", b"Tasks", b"Task", b"mytask", b"task_", b"delay(", b"xdelay", "\u00e9Celery".encode(), b"Celery",
          b"", b"://:@"]


def plain_walk_scope(nodes):
    stack = [nodes] if isinstance(nodes, ast.AST) else [n for n in nodes if not isinstance(n, SCOPE_NODES)]
    stack.reverse()
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed([c for c in ast.iter_child_nodes(node) if not isinstance(c, SCOPE_NODES)]))


@pytest.mark.parametrize("data", TRICKY + [p.read_bytes() for p in REAL_FILES[:80]])
def test_prefilter_words_and_urls_match_their_plain_regexes(data):
    assert [w.search(data) for w in WORDS[:6]] == [bool(r.search(data)) for r in PLAIN_WORDS[:6]]
    assert (WORDS[6].search(data) or WORDS[7].search(data)) == bool(PLAIN_WORDS[6].search(data))
    assert secret_url(data) == bool(PLAIN_SECRET.search(data))


def test_a_word_after_a_letter_digit_underscore_or_non_ascii_byte_is_not_the_word():
    word = Word(b"Model")
    assert word.search(b"class A(Model):") and word.search(b"Model")
    assert not any(word.search(b) for b in (b"MyModel", b"_Model", b"9Model", "\u00e9Model".encode(), b"Models"))


def test_walk_scope_and_nodes_of_follow_the_plain_walks_on_real_code():
    for path in REAL_FILES:
        tree = ast.parse(path.read_bytes())
        scopes = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for body in scopes:
            assert [id(n) for n in walk_scope(body)] == [id(n) for n in plain_walk_scope(body)], path
        assert [id(n) for n in all_nodes(tree)] == [id(n) for n in ast.walk(tree)], path
        for kind in (ast.Call, ast.Constant, ast.ClassDef):
            assert [id(n) for n in nodes_of(tree, kind)] == [id(n) for n in ast.walk(tree) if type(n) is kind], path


def test_index_module_walks_only_statements_and_finds_what_the_whole_walk_finds():
    from celery_doctor.parts.compact_ast import compact
    from celery_doctor.pyast.lazy import index_module

    match = ast.parse("match x:\n    case 1:\n        import a\n        def f():\n            from b import c\n"
                      "try:\n    pass\nexcept* E:\n    import d\nelse:\n    import e\nfinally:\n    class K:\n"
                      "        import g\n")
    for tree in [match] + [ast.parse(path.read_bytes()) for path in REAL_FILES]:
        for version in (tree, compact(tree)):
            walked = list(ast.walk(version))
            imports = [n for n in walked if isinstance(n, (ast.Import, ast.ImportFrom))]
            defs = [n for n in walked if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            assert index_module(version) == (imports, defs)
    assert sorted(n.names[0].name for n in index_module(match)[0]) == ["a", "c", "d", "e", "g"]  # every block


def test_source_collection_leaves_the_collector_enabled_and_a_run_leaves_nothing_frozen(tmp_path):
    """The source collector pauses the cyclic collector while it parses and freezes the trees; a run (diagnose)
    thaws them, so a long-lived process (serve) frees each scan's garbage."""
    (tmp_path / "tasks.py").write_text("from celery import Celery\n\napp = Celery('t', broker='redis://localhost')\n\n\n"
                                       "@app.task\ndef add(x, y):\n    return x + y\n")
    code = ("import gc, sys\n"
            "from celery_doctor.collectors.source import collect_source\n"
            "from celery_doctor.diagnose import diagnose\n"
            "from celery_doctor.options import RunOptions\n"
            f"tree = collect_source([{str(tmp_path)!r}])\n"
            "assert gc.isenabled() and gc.get_freeze_count() > 0, gc.get_freeze_count()\n"
            f"diagnose(RunOptions(mode='lint', sources=[{str(tmp_path)!r}], cwd={str(tmp_path)!r}))\n"
            "assert gc.isenabled() and gc.get_freeze_count() == 0, gc.get_freeze_count()\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    assert gc.isenabled()


def test_aliased_names_are_the_originals_of_every_x_as_y():
    from celery_doctor.pyast.prefilter import aliased_names

    text = ("from proj.base import BaseTask as Basis\nimport a.b as c\ntry:\n    pass\nexcept KeyError as e:\n    pass\n"
            "from m import (\n    One as\\\n    Uno,\n)\nalias = 1\nhas as_ = 2\n")
    assert aliased_names(text) == {"BaseTask", "b", "KeyError", "One"}
