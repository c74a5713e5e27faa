"""Static analysis of the project's source for the checks (files are only parsed, never imported or executed).

- expr: single expressions (names, keywords, literal durations, naive datetimes, source text);
- scope: statements of one scope (walking it, publishes, exception handlers, bindings);
- project: the per-tree index (modules, imports, constants, definitions, classes, signal handlers);
- calls: project-wide call queries (literal delays, add_periodic_task).

The tasks of a tree come from celery_doctor.facts.source_tasks (Project.tasks). Every public name stays
importable from here.
"""
from __future__ import annotations

from .calls import DELAY_METHODS, Delay, calls, literal_delays, periodic_task_locations
from .expr import (
    call_name,
    dotted_name,
    is_naive_now,
    keyword,
    last_name,
    literal_seconds,
    names_in,
    now_plus_seconds,
    segment,
)
from .lazy import all_nodes, nodes_of
from .project import _MISSING, MISSING, NON_CELERY_TASK_MODULES, Module, Project, Scope, project
from .scope import (
    BROAD_EXCEPTIONS,
    LOGGING_CALLS,
    PUBLISH_METHODS,
    SCOPE_NODES,
    FuncNode,
    assigned_from,
    exception_names,
    in_order,
    is_broad_handler,
    is_publish,
    only_logs,
    publishes,
    receiver,
    reraises_or_retries,
    scope_body,
    walk_scope,
)

# facts.source_tasks builds on the modules above and is imported first by some callers: importing it here would
# be a cycle, so its two names are looked up on first use (PEP 562).
_FROM_SOURCE_TASKS = ("TASK_DECORATORS", "Task")


def __getattr__(name: str):
    if name in _FROM_SOURCE_TASKS:
        from ..facts import source_tasks

        return getattr(source_tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BROAD_EXCEPTIONS",
    "DELAY_METHODS",
    "LOGGING_CALLS",
    "MISSING",
    "NON_CELERY_TASK_MODULES",
    "PUBLISH_METHODS",
    "SCOPE_NODES",
    "TASK_DECORATORS",
    "_MISSING",
    "Delay",
    "FuncNode",
    "Module",
    "Project",
    "Scope",
    "Task",
    "all_nodes",
    "assigned_from",
    "call_name",
    "calls",
    "dotted_name",
    "exception_names",
    "in_order",
    "is_broad_handler",
    "is_naive_now",
    "is_publish",
    "keyword",
    "last_name",
    "literal_delays",
    "literal_seconds",
    "names_in",
    "nodes_of",
    "now_plus_seconds",
    "only_logs",
    "periodic_task_locations",
    "project",
    "publishes",
    "receiver",
    "reraises_or_retries",
    "scope_body",
    "segment",
    "walk_scope",
]
