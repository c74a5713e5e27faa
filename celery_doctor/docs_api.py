"""docs/api.md: the plugin API reference (every typed part with every field, every fact), generated from the code.

A field's line is its name, its annotation and the comment beside it in the source; a class or function its first
docstring paragraph. `python -m celery_doctor.docs_api [docs/api.md]` rewrites the page; a test keeps it in sync.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import pkgutil
import sys
import tokenize
from pathlib import Path
from typing import Any

PART_MODULES = ("config", "source", "broker", "messages", "redis", "rabbitmq", "workers", "logs", "events")


def _field_comments(module: Any) -> dict[int, str]:
    """Line number -> the comment at the end of that line, in the module's source."""
    source = inspect.getsource(module)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return comments


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(text.split())


def _class_section(cls: type, comments: dict[int, str], module_source_lines: list[str]) -> list[str]:
    lines = [f"### `{cls.__name__}`", ""]
    doc = _first_paragraph(cls.__doc__)
    if doc and not doc.startswith(f"{cls.__name__}("):
        lines += [doc, ""]
    start = inspect.getsourcelines(cls)[1]
    body = inspect.getsourcelines(cls)[0]
    lines += ["| field | type | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        comment = ""
        for offset, text in enumerate(body):
            if text.strip().startswith(f"{field.name}:"):
                comment = comments.get(start + offset, "")
                break
        annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        lines.append(f"| `{field.name}` | `{annotation}` | {comment.replace('|', '/')} |")
    properties = [name for name, value in vars(cls).items() if isinstance(value, property) and not name.startswith("_")]
    methods = [name for name, value in vars(cls).items()
               if inspect.isfunction(value) and not name.startswith("_")]
    if properties or methods:
        lines += ["", "Also: " + ", ".join([f"`{p}` (property)" for p in properties] + [f"`{m}()`" for m in methods])]
    return [*lines, ""]


def _part_section(name: str) -> list[str]:
    module = importlib.import_module(f"celery_doctor.parts.{name}")
    comments = _field_comments(module)
    source_lines = inspect.getsource(module).splitlines()
    lines = [f"## `celery_doctor.parts.{name}`", "", _first_paragraph(module.__doc__), ""]
    classes = [obj for obj in vars(module).values()
               if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__]
    classes.sort(key=lambda c: inspect.getsourcelines(c)[1])
    for cls in classes:
        lines += _class_section(cls, comments, source_lines)
    if hasattr(module, "example"):
        lines += [f"`example(**overrides)`: {_first_paragraph(module.example.__doc__)}", ""]
    return lines


def _facts_section() -> list[str]:
    import celery_doctor.facts as facts

    lines = ["## `celery_doctor.facts`", "", _first_paragraph(facts.__doc__), ""]
    for info in sorted(pkgutil.iter_modules(facts.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"celery_doctor.facts.{info.name}")
        lines += [f"### `celery_doctor.facts.{info.name}`", "", _first_paragraph(module.__doc__), ""]
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                signature = str(inspect.signature(obj)).replace("'", "")
                lines.append(f"- `{name}{signature}`: {_first_paragraph(obj.__doc__)}")
            elif inspect.isclass(obj) and dataclasses.is_dataclass(obj):
                fields = ", ".join(f.name for f in dataclasses.fields(obj))
                lines.append(f"- `{name}` ({fields}): {_first_paragraph(obj.__doc__)}")
        lines.append("")
    return lines


def render_api() -> str:
    lines = ["# Plugin API reference", "",
             "Generated from the code by `python -m celery_doctor.docs_api` (a test fails when it drifts). A check is "
             "a function of a `Snapshot` (`celery_doctor.model`); it reads the parts below through "
             "`snapshot.config`, `.source`, `.redis`, `.rabbitmq`, `.workers`, `.get('logs')`, `.get('events')` "
             "(None when the part was not gathered: declare it in `needs` and the check is skipped instead), and "
             "answers Celery questions with the facts. See docs/plugins.md for how to write and ship one.", ""]
    for name in PART_MODULES:
        try:
            lines += _part_section(name)
        except ImportError:
            continue
    lines += _facts_section()
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api.md")
    target.write_text(render_api(), encoding="utf-8")
    print(target)
