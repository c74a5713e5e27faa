"""Source checks about database transactions: tasks published inside a SQLAlchemy transaction or a Django
transaction.atomic block, before the commit. (Engines shared across fork and scoped sessions: source_fork; ORM
instances as task arguments: source_orm.)"""
from __future__ import annotations

import ast
from typing import Optional

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import (
    Module,
    Project,
    all_nodes,
    dotted_name,
    is_publish,
    keyword,
    last_name,
    publishes,
    receiver,
)

from .source_common import code, loc, overriding_class, project_of, published_task, task_class_chain, task_subject

SESSION_WRITES = {"add", "add_all", "merge", "delete", "flush", "bulk_save_objects", "bulk_insert_mappings",
                  "bulk_update_mappings"}
SESSION_ENDS = {"commit", "rollback", "close"}
WRITE_STATEMENTS = {"insert", "update", "delete"}


def published_task_name(proj: Project, snapshot: Snapshot, call: ast.Call) -> Optional[str]:
    """The task a `x.delay()` / `x.apply_async()` / `x.s()` call publishes, when x is a task of this tree."""
    if not isinstance(call.func, ast.Attribute):
        return None
    target = dotted_name(call.func.value).split(".")[-1]
    found = proj.tasks_named(target) if target else []
    return task_subject(snapshot, found[0])[5:] if len(found) == 1 else None


def publish_subject(proj: Project, snapshot: Snapshot, module: Module, call: ast.Call) -> str:
    name = published_task_name(proj, snapshot, call)
    return f"task:{name}" if name else f"file:{module.path}"


NOT_DB_SESSIONS = ("http", "request", "client", "api", "aiohttp", "browser", "web")


def is_db_session(recv: str) -> bool:
    """A receiver that looks like a database session (not a requests/aiohttp/API client session)."""
    last = recv.split(".")[-1].lower() if recv else ""
    return "session" in last and not any(word in recv.lower() for word in NOT_DB_SESSIONS)


def _is_write(call: ast.Call) -> bool:
    if not isinstance(call.func, ast.Attribute) or not is_db_session(receiver(call)):
        return False
    method = call.func.attr
    if method in SESSION_WRITES:
        first = call.args[0] if call.args else None
        # session.delete("https://...") is an HTTP client, not the ORM
        return not isinstance(first, (ast.Constant, ast.JoinedStr))
    if method == "execute" and call.args:
        for node in ast.walk(call.args[0]):
            if not isinstance(node, ast.Call):
                continue
            name = last_name(node)
            if name in WRITE_STATEMENTS:
                return True  # insert(Order).values(...), update(Order)...
            if name == "text" and node.args and isinstance(node.args[0], ast.Constant) and \
                    str(node.args[0].value).strip().split(" ")[0].lower() in WRITE_STATEMENTS:
                return True  # text("UPDATE ...")
    return False


def _is_end(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and call.func.attr in SESSION_ENDS and is_db_session(receiver(call))


def _transaction_block(item: ast.withitem) -> bool:
    expr = item.context_expr
    if not (isinstance(expr, ast.Call) and last_name(expr) in ("begin", "begin_nested")):
        return False
    recv = receiver(expr).split(".")[-1].lower()
    return any(word in recv for word in ("session", "engine", "conn", "db"))


def _on_commit_hint(snapshot: Snapshot) -> str:
    config = snapshot.config
    version = tuple(int(p) for p in (config.celery_version.split(".")[:2] if config else []) if p.isdigit())
    if version and version < (5, 4):
        return "`transaction.on_commit(lambda: task.delay(...))`"
    return "`task.delay_on_commit(...)` (Celery 5.4+) or `transaction.on_commit(lambda: task.delay(...))`"


TXN_WHY = ("the message can reach a worker before the transaction commits, so the task does not find the row "
           "(DoesNotExist / NoResultFound) or acts on data that is then rolled back")


@check(
    id="CD510",
    slug="publish-before-commit",
    title="A task is published inside an open SQLAlchemy transaction, before its commit",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="Tasks fail now and then with `NoResultFound`/`ObjectDeletedError`, or quietly do nothing because "
                "the row they look up is not there yet; re-running them by hand works.",
        why="`session.add(...)`/`flush()` (or a `with session.begin():` block) opens a transaction that other "
            "connections cannot see until `commit()`. A `.delay()` in between sends the message at once, and a "
            "fast worker runs the task before the commit (the row does not exist for it yet) or after a rollback "
            "(the row never existed). The task then fails or does nothing, and nothing re-runs it.",
        confirm="`celery-doctor lint --select CD510` lists the publishes; compare the task's `received` time in the "
                "worker log with the commit time of the request.",
        fix="Publish after `session.commit()`, or register the publish on the session's `after_commit` event "
            "(`event.listen(session, 'after_commit', ...)`); pass ids, not objects.",
        risk="If the process dies between commit and publish, the task is not sent: for must-run work use an outbox "
             "row written in the same transaction and a relay that publishes it.",
        references=("https://docs.sqlalchemy.org/en/20/orm/session_transaction.html",),
    ),
)
def publish_before_commit(snapshot: Snapshot):
    proj = project_of(snapshot)
    for module in proj.modules_mentioning("ession", "begin"):
        if module.path not in proj.publishing_paths:
            continue
        for scope in proj.scopes(module):
            reported: set[int] = set()
            yield from _publishes_in_begin_blocks(snapshot, proj, module, scope, reported)
            yield from _publishes_after_writes(snapshot, proj, module, scope, reported)


def _publishes_in_begin_blocks(snapshot: Snapshot, proj: Project, module: Module, scope, reported: set[int]):
    """Publishes inside `with session.begin():` (or engine/connection begin) blocks of the scope."""
    for node in scope.nodes:
        if not isinstance(node, (ast.With, ast.AsyncWith)):
            continue
        blocks = [i for i in node.items if _transaction_block(i)]
        if not blocks:
            continue
        for call in publishes(node.body):
            reported.add(id(call))
            yield publish_before_commit.finding(
                subject=publish_subject(proj, snapshot, module, call),
                evidence=[f"`{code(module, call, 80)}` at line {call.lineno} is inside "
                          f"`with {code(module, blocks[0].context_expr, 60)}:` (line {node.lineno}), "
                          f"which commits only when the block ends at line {node.end_lineno}", TXN_WHY],
                location=loc(module, call))


def _publishes_after_writes(snapshot: Snapshot, proj: Project, module: Module, scope, reported: set[int]):
    """Publishes that follow a session write with no commit/rollback/close in between, in source order."""
    events = [n for n in scope.calls() if _is_write(n) or _is_end(n) or is_publish(n)]
    events.sort(key=lambda n: (n.lineno, n.col_offset))
    pending: Optional[ast.Call] = None
    for index, call in enumerate(events):
        if _is_write(call):
            pending = pending or call
        elif _is_end(call):
            pending = None
        elif pending is not None and id(call) not in reported:
            reported.add(id(call))
            end = next((e for e in events[index + 1:] if _is_end(e)), None)
            committed = (f"committed at line {end.lineno} (`{code(module, end, 40)}`)" if end is not None
                         else "not committed before it in this function")
            yield publish_before_commit.finding(
                subject=publish_subject(proj, snapshot, module, call),
                evidence=[f"`{code(module, pending, 60)}` at line {pending.lineno} writes in a transaction "
                          f"{committed}; `{code(module, call, 60)}` at line {call.lineno} publishes before "
                          "the commit", TXN_WHY],
                location=loc(module, call))


REPLICA_WORDS = ("replica", "read_only", "readonly", "reader", "slave")


def _is_atomic(expr: ast.AST) -> bool:
    """`transaction.atomic` / `atomic(...)`, unless on a read replica (`using=settings.DATABASE_REPLICA`): a
    transaction that writes nothing has no commit a worker could run ahead of (saleor's generate_deferred_payloads)."""
    target = expr.func if isinstance(expr, ast.Call) else expr
    if dotted_name(target).split(".")[-1] != "atomic":
        return False
    using = keyword(expr, "using") if isinstance(expr, ast.Call) else None
    if using is None and isinstance(expr, ast.Call) and expr.args:
        using = expr.args[0]
    text = (dotted_name(using) or (str(using.value) if isinstance(using, ast.Constant) else "")).lower() \
        if using is not None else ""
    return not any(word in text for word in REPLICA_WORDS)


def _is_true(proj: Project, module: Module, node: ast.AST) -> bool:
    return proj.constant(module, node) is True


def _atomic_requests_line(proj: Project, module: Module, node: ast.AST) -> Optional[int]:
    """The line of `'ATOMIC_REQUESTS': True` (a database's dict), `X['ATOMIC_REQUESTS'] = True` or
    `dict(ATOMIC_REQUESTS=True)` when `node` is one of those.

    Django reads the setting only in a database's entry of DATABASES (django/db/utils.py
    ConnectionHandler.configure_settings, django/core/handlers/base.py make_view_atomic): a top-level or class
    attribute `ATOMIC_REQUESTS = True` does nothing and is not counted."""
    if isinstance(node, ast.Dict):
        return next((key.lineno for key, value in zip(node.keys, node.values)
                     if isinstance(key, ast.Constant) and key.value == "ATOMIC_REQUESTS"
                     and _is_true(proj, module, value)), None)
    if isinstance(node, ast.Assign) and _is_true(proj, module, node.value):
        for target in node.targets:
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant) \
                    and target.slice.value == "ATOMIC_REQUESTS":
                return node.lineno
        return None
    if isinstance(node, ast.Call) and last_name(node) == "dict":
        return next((kw.value.lineno for kw in node.keywords
                     if kw.arg == "ATOMIC_REQUESTS" and _is_true(proj, module, kw.value)), None)
    return None


def _atomic_requests(proj: Project) -> Optional[tuple[Module, int]]:
    """Where ATOMIC_REQUESTS=True is set for a database (Django DATABASES setting), if anywhere in the tree."""
    for module in proj.modules:
        if "ATOMIC_REQUESTS" not in module.file.text:
            continue
        for node in all_nodes(module.tree):
            line = _atomic_requests_line(proj, module, node)
            if line is not None:
                return module, line
    return None


VIEW_METHODS = {"perform_create", "perform_update", "perform_destroy", "form_valid", "save_model"}


def _is_view(func: ast.AST) -> bool:
    if any(dotted_name(d.func if isinstance(d, ast.Call) else d).split(".")[-1] == "non_atomic_requests"
           for d in func.decorator_list):
        return False
    params = [a.arg for a in func.args.posonlyargs + func.args.args][:2]
    return "request" in params or func.name in VIEW_METHODS


@check(
    id="CD511",
    slug="publish-inside-atomic",
    title="A task is published inside a Django transaction.atomic block, before the commit",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="Tasks fail with `Model.DoesNotExist` for rows that exist when you look later, or act on stale "
                "values; it happens more under load (fast workers, slow requests).",
        why="Inside `transaction.atomic` (a `with` block, the decorator, or every view when a database of `DATABASES` "
            "has `ATOMIC_REQUESTS: True`; Django reads it nowhere else) the writes are invisible to other "
            "connections until the outermost block commits. `.delay()` publishes at once (celery/app/task.py "
            "Task.apply_async -> app.send_task, with no regard for the transaction), so the worker can run "
            "before the commit, or after a rollback of data that never existed. Not reported: an atomic block on a "
            "read replica (`using=` a replica), and tasks whose class (base= or the app's task_cls) overrides "
            "apply_async/delay to publish through `transaction.on_commit`.",
        confirm="`celery-doctor lint --select CD511`; worker logs show `DoesNotExist` for ids created moments "
                "before by a request.",
        fix="Publish on commit: `task.delay_on_commit(...)` (Celery 5.4+, on the Django task class) or "
            "`transaction.on_commit(lambda: task.delay(...))`; pass primary keys, not instances.",
        risk="On-commit callbacks do not run if the transaction rolls back (intended), and are lost if the process "
             "dies right after the commit: use an outbox for must-run work. In tests, use "
             "`TestCase.captureOnCommitCallbacks` to run them.",
        references=("https://docs.djangoproject.com/en/stable/topics/db/transactions/#performing-actions-after-commit",
                    "https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html#trigger-tasks-at-the-end-of-the-database-transaction"),
    ),
)
def publish_inside_atomic(snapshot: Snapshot):
    proj = project_of(snapshot)
    hint = _on_commit_hint(snapshot)
    atomic_requests = _atomic_requests(proj)
    for module in proj.modules_mentioning("atomic", "request"):
        if module.path not in proj.publishing_paths:
            continue
        for scope in proj.scopes(module):
            reported: set[int] = set()
            for call, evidence, confidence in _atomic_publishes(module, scope, atomic_requests):
                if id(call) in reported or _publishes_on_commit(proj, call):
                    continue
                reported.add(id(call))
                yield publish_inside_atomic.finding(
                    subject=publish_subject(proj, snapshot, module, call), evidence=[evidence, TXN_WHY],
                    fix=f"Publish on commit: {hint}.", confidence=confidence, location=loc(module, call))


def _publishes_on_commit(proj: Project, call: ast.Call) -> bool:
    """The task's class (its base=, or the app's task_cls) overrides apply_async/delay to publish through
    transaction.on_commit (addons-server's AMOTask): `.delay()` already waits for the commit."""
    chain = task_class_chain(proj, published_task(proj, call))
    return overriding_class(chain, {"apply_async", "delay"}, calling="on_commit") is not None


def _atomic_publishes(module: Module, scope, atomic_requests: Optional[tuple[Module, int]]):
    """(publish, why it is inside a transaction, confidence) for a scope: an @atomic function, `with atomic():`
    blocks, a view under ATOMIC_REQUESTS=True; a publish can come more than once, the first reason counts."""
    func, body = scope.func, scope.body
    if func is not None and any(_is_atomic(d) for d in func.decorator_list):
        for call in publishes(body):
            yield call, (f"`{code(module, call, 80)}` at line {call.lineno} runs in {func.name}(), decorated with "
                         f"@transaction.atomic (line {func.lineno}): it publishes before the commit"), \
                Confidence.CONFIGURED
    for node in scope.nodes:
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(_is_atomic(i.context_expr) for i in node.items):
            for call in publishes(node.body):
                yield call, (f"`{code(module, call, 80)}` at line {call.lineno} is inside `with transaction.atomic():` "
                             f"(line {node.lineno}): it publishes before the commit"), Confidence.CONFIGURED
    if atomic_requests and func is not None and _is_view(func):
        where, line = atomic_requests
        for call in publishes(body):
            yield call, (f"`{code(module, call, 80)}` at line {call.lineno} runs in the view {func.name}(); "
                         f"ATOMIC_REQUESTS=True ({where.path}:{line}) wraps every view in a transaction, so it "
                         "publishes before the commit"), Confidence.INFERRED


CHECKS = [publish_before_commit, publish_inside_atomic]
