"""What keeps the source lint's memory down on large trees: compact syntax trees (parts.compact_ast), "core" files
set aside again once parsed when only their strings and comments named a Celery word (collectors.refine), and
class lookups skipped when the class cannot lead to a task or a model (pyast.lineage). Each must leave the
findings exactly as they were (tests/test_source_scale.py compares whole trees with and without the prefilter)."""
from __future__ import annotations

import ast
import gc
import textwrap
import tracemalloc
from pathlib import Path

import celery
import kombu
import pytest

from celery_doctor.collectors.refine import code_bytes, needed, set_aside
from celery_doctor.parts.compact_ast import CompactNode, compact
from celery_doctor.parts.source import parse_source
from celery_doctor.pyast.lineage import Lineage
from tests.conftest import write_tree
from tests.test_source_scale import _findings

REAL_FILES = sorted(Path(celery.__file__).parent.rglob("*.py"))[:60] + sorted(Path(kombu.__file__).parent.rglob("*.py"))[:30]


def _shape(tree: ast.AST) -> list:
    """Every node in ast.walk order: its ast class and every field and position that is not a node."""
    out = []
    for node in ast.walk(tree):
        values = [getattr(node, name, None) for name in (*node._fields, *getattr(node, "_attributes", ()))]
        out.append((node.__class__, [v if not isinstance(v, (ast.AST, list)) else type(v).__name__ for v in values]))
    return out


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_compact_tree_reads_as_the_tree_ast_parse_made(path):
    text = path.read_text()
    real = ast.parse(text)
    small = compact(real)
    assert isinstance(small, CompactNode) and isinstance(small, ast.Module) and type(small) is not ast.Module
    assert _shape(small) == _shape(real)
    assert ast.unparse(small) == ast.unparse(real)
    calls = [n for n in ast.walk(small) if isinstance(n, ast.Call)]
    assert [ast.get_source_segment(text, n) for n in calls] == \
        [ast.get_source_segment(text, n) for n in ast.walk(real) if isinstance(n, ast.Call)]
    assert ast.get_docstring(small) == ast.get_docstring(real)


def test_compact_nodes_take_about_half_the_memory_and_answer_isinstance_as_ast_nodes():
    text = (Path(celery.__file__).parent / "app" / "base.py").read_text()
    gc.collect()
    tracemalloc.start()
    try:
        real = ast.parse(text)
        real_bytes = tracemalloc.get_traced_memory()[0]
        small = compact(real)
        small_bytes = tracemalloc.get_traced_memory()[0] - real_bytes
    finally:
        tracemalloc.stop()
    assert small_bytes < 0.55 * real_bytes, (small_bytes, real_bytes)
    small.cache = 1  # the module keeps a __dict__ (pyast.lazy caches its walks there)
    call = compact(ast.parse("x = app.send_task('t', queue='q')")).body[0].value
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.keywords[0].arg == "queue"
    assert isinstance(call, ast.expr) and isinstance(call, ast.AST) and not isinstance(call, ast.Name)
    literal = compact(ast.parse("{'a': (1, -2.5, None)}", mode="eval")).body
    assert ast.literal_eval(literal) == {"a": (1, -2.5, None)}


def test_a_tree_too_deep_to_copy_is_kept_as_ast_parse_made_it_and_one_too_deep_to_parse_is_not_checked(tmp_path):
    from celery_doctor.collectors.source import collect_source

    source = parse_source("deep.py", "x = " + " + ".join(["a"] * 1500) + "\n")
    assert source.tree is not None and not isinstance(source.tree, CompactNode)
    assert isinstance(source.tree.body[0], ast.Assign)
    write_tree(tmp_path, {"deeper.py": "x = " + " + ".join(["a"] * 5000) + "\n", "tasks.py": "import celery\n",
                          "plain.py": "y = " + " + ".join(["b"] * 5000) + "\n"})
    for prefilter in (True, False):  # parsed here, or only checked for syntax (collectors.syntax)
        tree = collect_source([str(tmp_path)], prefilter=prefilter)
        assert {Path(path).name: why for path, why in tree.not_checked()} == {
            "deeper.py": "not parseable: nested too deeply for Python's parser",
            "plain.py": "not parseable: nested too deeply for Python's parser"}


def _code(text: str) -> bytes:
    text = textwrap.dedent(text)
    return code_bytes(ast.parse(text), text.encode())


def test_code_bytes_blanks_strings_and_comments_and_keeps_code_and_fstring_expressions():
    code = _code('''
        """Docs: call task.delay() to publish."""
        x = "apply_async"  # revoke it later
        y = f"{job.delay()} and # not a comment {'countdown'}"
        z = b'send_task' + r"\\#" ; w = 1  # signature(
        ''')
    assert b"Docs" not in code and b"apply_async" not in code and b"revoke" not in code and b"send_task" not in code
    assert b"signature(" not in code
    assert b"job.delay()" in code and b"# not a comment" in code  # an f-string is kept whole
    assert b"w = 1" in code and code.count(b"\n") == 5


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_code_bytes_counts_lines_as_the_parser_does(newline):
    text = newline.join(['s = """a', 'b"""', 'c = "x"  # c', "task.delay()", ""])
    code = code_bytes(ast.parse(text), text.encode())
    assert b"task.delay()" in code and b'"x"' not in code and b"a" + newline.encode() + b"b" not in code


@pytest.mark.parametrize("text, kept", [
    ('"""Run it with task.delay() or apply_async."""\nX = 1\n', False),  # a docstring only
    ("# call job.delay() here\nX = 1\n", False),  # a comment only
    ('WORDS = ("task", "Task", "queue=")\n', False),  # a lexer's keyword list
    ("job.delay()\n", True),
    ("from celery import Task\n", True),
    ('DATABASES = {"default": {"ATOMIC_REQUESTS": True}}\n', True),  # a word the checks also read in a dict key
    ('OPTIONS = {"queue": "q"}\n', True),
    ('"""Docs."""\nBROKER = "redis://user:s3cret@cache.internal:6379/0"\n', True),  # a URL with a password
    ('"""Docs: redis://user:password@host."""\nX = 1\n', False),  # a placeholder password is not reported
    ("from db import Base\n\n\nclass Order(Base):  # a model: the ORM check reads it\n    pass\n", True),
])
def test_a_core_file_is_set_aside_when_only_its_strings_and_comments_named_a_celery_word(text, kept):
    source = parse_source("proj/module.py", text)
    assert needed(source) is kept
    after = set_aside(source)
    assert (after.tree is not None) is kept and after.deferred is not kept and after.text == text


def test_lineage_follows_bases_and_import_aliases_by_name():
    lineage = Lineage([
        "from celery import Task\n\nclass BaseTask(Task):\n    pass\n",
        "from proj.base import BaseTask as Basis\n\nclass Mid(Basis):\n    pass\n\nclass Leaf(Mid, Mixin):\n    pass\n",
        "class View(Generic):\n    pass\n\nclass Detail(View):\n    pass\n",
        "class Row:\n    __tablename__ = 'rows'\n",
    ])
    tasks = lineage.derived(frozenset({"Task"}))
    assert {"Task", "BaseTask", "Basis", "Mid", "Leaf"} <= tasks and not {"View", "Detail", "Generic", "Row"} & tasks
    models = lineage.derived(frozenset({"Model"}), tablename=True)
    assert "Row" in models and "View" not in models


LOOKUPS = {
    "proj/__init__.py": "",
    "proj/views.py": """
        from proj.generic import DetailView
        from proj.tasks import work


        class OrderView(DetailView):
            def post(self):
                work.delay()
        """,
    "proj/generic.py": """
        class View:
            pass


        class DetailView(View):
            pass
        """,
    "proj/tasks.py": """
        from celery import shared_task
        from proj.base import BaseTask as Basis


        class Job(Basis):
            pass


        @shared_task(base=Job)
        def work():
            return 1
        """,
    "proj/base.py": """
        from celery import Task


        class BaseTask(Task):
            acks_late = True
        """,
}


def test_a_class_that_cannot_lead_to_a_task_is_not_looked_up(tmp_path, monkeypatch):
    from celery_doctor.collectors.source import collect_source
    from celery_doctor.pyast import project

    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, LOOKUPS)
    everything, _ = _findings(Path("proj"), prefilter=False)
    filtered, _ = _findings(Path("proj"), prefilter=True)
    assert filtered == everything
    tree = collect_source(["proj"])
    proj = project(tree)
    classes = {node.name: (module, node) for module in proj.modules for node in proj.definitions(module)
               if isinstance(node, ast.ClassDef)}
    assert proj.is_task_class(classes["Job"][1], classes["Job"][0])  # through BaseTask, imported as Basis
    assert not proj.is_task_class(classes["OrderView"][1], classes["OrderView"][0])
    assert "proj/generic.py" not in tree._loaded  # DetailView leads to no task: never parsed to find out
    assert "proj/generic.py" in {f.path for f in tree.files if f.deferred}
