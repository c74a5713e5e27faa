"""Source checks about databases: publishing inside a transaction, engines shared across fork, scoped sessions
left open between tasks, ORM instances passed as task arguments."""
from __future__ import annotations

import ast
from typing import Iterator, Optional

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import (
    FuncNode, Module, Project, assigned_from, call_name, dotted_name, is_publish, keyword, last_name, publishes,
    receiver, scope_body, walk_scope,
)

from ._util import preview
from .source_common import code, loc, project_of, task_subject

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


def _is_session(recv: str) -> bool:
    """A receiver that looks like a database session (not a requests/aiohttp/API client session)."""
    last = recv.split(".")[-1].lower() if recv else ""
    return "session" in last and not any(word in recv.lower() for word in NOT_DB_SESSIONS)


def _is_write(call: ast.Call) -> bool:
    if not isinstance(call.func, ast.Attribute) or not _is_session(receiver(call)):
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
    return isinstance(call.func, ast.Attribute) and call.func.attr in SESSION_ENDS and _is_session(receiver(call))


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
        for scope in proj.scopes(module):
            body = scope.body
            reported: set[int] = set()
            for node in scope.nodes:
                if isinstance(node, (ast.With, ast.AsyncWith)):
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


def _is_atomic(expr: ast.AST) -> bool:
    target = expr.func if isinstance(expr, ast.Call) else expr
    return dotted_name(target).split(".")[-1] == "atomic"


def _atomic_requests(proj: Project) -> Optional[tuple[Module, int]]:
    """Where ATOMIC_REQUESTS=True is set (Django DATABASES setting), if anywhere in the tree."""
    for module in proj.modules:
        if "ATOMIC_REQUESTS" not in module.file.text:
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "ATOMIC_REQUESTS" and \
                            isinstance(value, ast.Constant) and value.value is True:
                        return module, key.lineno
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value is True:
                for target in node.targets:
                    if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
                            and target.slice.value == "ATOMIC_REQUESTS") or \
                            (isinstance(target, ast.Name) and target.id == "ATOMIC_REQUESTS"):
                        return module, node.lineno
            elif isinstance(node, ast.Call) and last_name(node) == "dict":
                for kw in node.keywords:
                    if kw.arg == "ATOMIC_REQUESTS" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
                        return module, kw.value.lineno
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
        why="Inside `transaction.atomic` (a `with` block, the decorator, or every view with `ATOMIC_REQUESTS=True`) "
            "the writes are invisible to other connections until the outermost block commits. `.delay()` publishes "
            "at once, so the worker can run before the commit, or after a rollback of data that never existed.",
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
        for scope in proj.scopes(module):
            func, body = scope.func, scope.body
            reported: set[int] = set()
            if func is not None and any(_is_atomic(d) for d in func.decorator_list):
                for call in publishes(body):
                    reported.add(id(call))
                    yield publish_inside_atomic.finding(
                        subject=publish_subject(proj, snapshot, module, call),
                        evidence=[f"`{code(module, call, 80)}` at line {call.lineno} runs in {func.name}(), "
                                  f"decorated with @transaction.atomic (line {func.lineno}): it publishes before the "
                                  "commit", TXN_WHY],
                        fix=f"Publish on commit: {hint}.", location=loc(module, call))
            for node in scope.nodes:
                if isinstance(node, (ast.With, ast.AsyncWith)) and any(_is_atomic(i.context_expr) for i in node.items):
                    for call in publishes(node.body):
                        if id(call) in reported:
                            continue
                        reported.add(id(call))
                        yield publish_inside_atomic.finding(
                            subject=publish_subject(proj, snapshot, module, call),
                            evidence=[f"`{code(module, call, 80)}` at line {call.lineno} is inside `with "
                                      f"transaction.atomic():` (line {node.lineno}): it publishes before the commit",
                                      TXN_WHY],
                            fix=f"Publish on commit: {hint}.", location=loc(module, call))
            if atomic_requests and func is not None and _is_view(func):
                where, line = atomic_requests
                for call in publishes(body):
                    if id(call) in reported:
                        continue
                    yield publish_inside_atomic.finding(
                        subject=publish_subject(proj, snapshot, module, call),
                        evidence=[f"`{code(module, call, 80)}` at line {call.lineno} runs in the view {func.name}(); "
                                  f"ATOMIC_REQUESTS=True ({where.path}:{line}) wraps every view in a transaction, so "
                                  "it publishes before the commit", TXN_WHY],
                        fix=f"Publish on commit: {hint}.", confidence=Confidence.INFERRED, location=loc(module, call))


ENGINE_FACTORIES = {"create_engine", "create_async_engine", "engine_from_config", "async_engine_from_config"}
RAW_CLIENTS = {"psycopg2.connect", "psycopg.connect", "pymysql.connect", "MySQLdb.connect", "mysql.connector.connect",
               "cx_Oracle.connect", "oracledb.connect", "MongoClient", "pymongo.MongoClient", "motor.AsyncIOMotorClient"}
SINGLE_PROCESS_POOLS = {"solo", "threads", "gevent", "eventlet"}
ENGINE_USES = {"connect", "begin", "execute", "raw_connection", "create_all", "drop_all", "reflect", "inspect",
               "Session", "scalar"}


def _is_main_guard(stmt: ast.AST) -> bool:
    return isinstance(stmt, ast.If) and "__main__" in ast.dump(stmt.test)


def import_time_nodes(module: Module) -> Iterator[ast.AST]:
    """Nodes that run when the module is imported: module level and class bodies, not function bodies."""
    pending = list(module.tree.body)
    while pending:
        stmt = pending.pop(0)
        if isinstance(stmt, ast.ClassDef):
            pending[0:0] = list(stmt.body)
            continue
        if isinstance(stmt, FuncNode) or _is_main_guard(stmt):
            continue
        yield from walk_scope(stmt)


def _assigned_name(module: Module, call: ast.Call) -> str:
    """The module-level name a call's result is bound to (directly or as an argument), '' if none."""
    for stmt in module.tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            if any(n is call for n in ast.walk(stmt.value)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        return target.id
    return ""


def _client_kind(call: ast.Call) -> str:
    name = call_name(call)
    last = name.split(".")[-1]
    if last in ENGINE_FACTORIES:
        pool = keyword(call, "poolclass")
        if pool is not None and dotted_name(pool).split(".")[-1] == "NullPool":
            return ""
        return "engine"
    if name in RAW_CLIENTS or last in ("MongoClient", "AsyncIOMotorClient"):
        return "client"
    return ""


@check(
    id="CD512",
    slug="engine-created-before-fork",
    title="A database engine or client is created at import time and shared by forked pool processes",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="With `--concurrency` > 1 (prefork), tasks fail at random with `ResourceClosedError`, "
                "`OperationalError: SSL error: decryption failed or bad record mac`, `server closed the connection "
                "unexpectedly`, or read another task's rows; with `-c 1` or `-P solo` the errors vanish.",
        why="The prefork pool forks its children from the main worker process after it imported the task modules. "
            "An engine (connection pool) or client created at import time, and used there before the fork, "
            "hands the same open sockets to every child: two processes then talk over one connection and corrupt "
            "each other's protocol stream, so tasks fail or see wrong data.",
        confirm="`celery -A proj inspect stats` (pool `max-concurrency` > 1, `implementation` prefork); grep worker "
                "logs for the errors above; they stop with `--pool solo`.",
        fix="Dispose the pool in each child: `@worker_process_init.connect` → `engine.dispose(close=False)` "
            "(SQLAlchemy 1.4.33+; older: `engine.dispose()`), or create engines/clients lazily per process, or use "
            "`poolclass=NullPool`.",
        risk="`dispose(close=False)` only drops the inherited pool in the child; the parent keeps its connections. "
             "NullPool opens a connection per checkout (slower, more load on the database).",
        references=("https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork",),
    ),
)
def engine_before_fork(snapshot: Snapshot):
    proj = project_of(snapshot)
    candidates = proj.modules_mentioning(*ENGINE_FACTORIES, *{c.split(".")[-1] for c in RAW_CLIENTS})
    if not candidates:
        return
    config = snapshot.config
    if config is not None:
        pool = str(config.value("worker_pool") or "prefork").split(":")[-1].split(".")[-1].lower()
        if pool in SINGLE_PROCESS_POOLS or config.value("worker_concurrency") == 1:
            return
    if any("register_after_fork" in m.file.text or "register_at_fork" in m.file.text for m in proj.modules):
        return
    handlers = proj.signal_handlers("worker_process_init")
    handled_names: set[str] = set()
    disposes_anything = False
    for _, handler in handlers:
        for node in ast.walk(handler):
            if isinstance(node, ast.Name):
                handled_names.add(node.id)
            elif isinstance(node, ast.Attribute):
                handled_names.add(node.attr)
            if isinstance(node, ast.Call) and last_name(node) == "dispose":
                disposes_anything = True
    worker = proj.worker_modules()
    for module in candidates:
        if module.path not in worker:
            continue
        nodes = list(import_time_nodes(module))
        for call in nodes:
            if not isinstance(call, ast.Call):
                continue
            kind = _client_kind(call)
            if not kind:
                continue
            name = _assigned_name(module, call)
            if (name and name in handled_names) or (kind == "engine" and disposes_anything):
                continue
            uses = [n for n in nodes if isinstance(n, ast.Call) and n is not call and name and (
                name in {dotted_name(a) for a in n.args} | {dotted_name(k.value) for k in n.keywords}
                or receiver(n) == name) and (last_name(n) in ENGINE_USES or last_name(n).startswith("create_all"))]
            what = "an engine" if kind == "engine" else "a database client (an open connection)"
            evidence = [f"`{code(module, call, 70)}` at line {call.lineno} creates {what} when {module.path} is "
                        f"imported; the worker imports it ({worker[module.path]})",
                        "prefork children are forked after that import and inherit its pooled connections: two "
                        "children sharing one socket corrupt each other's queries (ResourceClosedError, SSL or "
                        "protocol errors, wrong rows)"]
            confidence = Confidence.INFERRED
            if uses:
                evidence.append(f"it is used at import time too (line {uses[0].lineno}: `{code(module, uses[0], 60)}`): "
                                "the main process holds an open connection before it forks")
                confidence = Confidence.CONFIGURED
            elif kind == "client":
                confidence = Confidence.CONFIGURED
            evidence.append("no worker_process_init handler disposes or re-creates it")
            target = name or "engine"
            fix = (f"Dispose it in each pool process: `@worker_process_init.connect` (celery.signals) on "
                   f"`def _reset_db(**kwargs): {target}.dispose(close=False)`; or create it lazily per process, or "
                   "pass `poolclass=NullPool`."
                   if kind == "engine" else
                   f"Open the connection per process: create `{target}` in a `worker_process_init` handler (or on "
                   "first use in the task), not at import time.")
            yield engine_before_fork.finding(subject=f"file:{module.path}", evidence=evidence, fix=fix,
                                             confidence=confidence, location=loc(module, call))


CLEANUP_SIGNALS = ("task_postrun", "task_prerun")


def _scoped_sessions(proj: Project) -> list[tuple[Module, str, ast.Call]]:
    found = []
    for module in proj.modules_mentioning("scoped_session"):
        for node in import_time_nodes(module):
            if isinstance(node, ast.Call) and last_name(node) == "scoped_session":
                name = _assigned_name(module, node)
                if name:
                    found.append((module, name, node))
    return found


def _removes(nodes: Iterator[ast.AST], names: set[str]) -> bool:
    for node in nodes:
        if isinstance(node, ast.Call) and last_name(node) == "remove" and \
                dotted_name(node.func.value).split(".")[-1] in names:
            return True
    return False


@check(
    id="CD513",
    slug="scoped-session-not-removed",
    title="A scoped_session is used in tasks but never removed at task end",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="After one task fails on a database error, every later task in the same worker process fails with "
                "`PendingRollbackError` / `InvalidRequestError: This Session's transaction has been rolled back`; "
                "or tasks read stale rows. Restarting the worker \"fixes\" it for a while.",
        why="A `scoped_session` hands each thread the same Session until `remove()` is called. A prefork child runs "
            "task after task in one thread, so without a `remove()` at task end the session, its open transaction, "
            "connection and identity map carry over: later tasks see stale objects, and after a failed flush every "
            "following task in that process fails until the child is replaced.",
        confirm="Grep worker logs for `PendingRollbackError` or `Can't reconnect until invalid transaction is rolled "
                "back` in tasks that follow a first failure in the same `ForkPoolWorker-N`.",
        fix="Remove the session after every task: `@task_postrun.connect def _close_session(**kwargs): "
            "Session.remove()` (celery.signals), or in a Task base class's `after_return`.",
        risk="Objects loaded in a task are detached after it ends; code that kept them between tasks must reload.",
        references=("https://docs.sqlalchemy.org/en/20/orm/contextual.html",),
    ),
)
def scoped_session_not_removed(snapshot: Snapshot):
    proj = project_of(snapshot)
    sessions = _scoped_sessions(proj)
    if not sessions:
        return
    cleanup_nodes = [n for _, h in proj.signal_handlers(*CLEANUP_SIGNALS) for n in ast.walk(h)]
    for module in proj.modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef) and proj.is_task_class(node, module):
                cleanup_nodes.extend(ast.walk(node))
    for smodule, name, call in sessions:
        aliases = {name}
        for module in proj.modules:
            for alias, (source_module, imported) in proj.imported_names.get(module.path, {}).items():
                if imported == name and source_module == smodule.name:
                    aliases.add(alias)
        if _removes(iter(cleanup_nodes), aliases):
            continue
        users = []
        for task in proj.tasks:
            body_names = {n.id for n in walk_scope(task.body) if isinstance(n, ast.Name)}
            if not body_names & aliases:
                continue
            in_finally = [n for t in walk_scope(task.body) if isinstance(t, ast.Try) for n in walk_scope(t.finalbody)]
            if _removes(iter(in_finally), aliases):
                continue
            users.append(task)
        if not users:
            continue
        names = [task_subject(snapshot, t)[5:] for t in users]
        yield scoped_session_not_removed.finding(
            subject=f"file:{smodule.path}",
            evidence=[f"`{name} = {code(smodule, call, 60)}` at line {call.lineno} is used by "
                      f"{len(users)} task(s): {preview(names)}",
                      f"no task_postrun handler, Task base class or finally block calls {name}.remove(): each pool "
                      "process reuses one session (and its transaction) across tasks, so one failed flush makes "
                      "every later task in that process fail (PendingRollbackError)"],
            fix=f"Remove it after every task: `@task_postrun.connect` (celery.signals) on "
                f"`def _remove_session(**kwargs): {name}.remove()`.",
            location=loc(smodule, call))


MODEL_BASES = {"Base", "DeclarativeBase", "AbstractUser", "AbstractBaseUser", "PermissionsMixin"}
ORM_GETTERS = {"get", "first", "last", "latest", "earliest", "create", "get_or_create", "update_or_create", "one",
               "one_or_none", "first_or_404", "get_or_404", "scalar_one", "scalar_one_or_none", "save"}


class Orm:
    """What in this tree looks like an ORM model instance."""

    def __init__(self, proj: Project):
        self.proj = proj
        self.models: set[str] = set()
        for module in proj.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ClassDef) and self._is_model(node, module, 0):
                    self.models.add(node.name)

    def _is_model(self, node: ast.ClassDef, module: Module, depth: int) -> bool:
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__tablename__"
                                                    for t in stmt.targets):
                return True
        for base in node.bases:
            name = dotted_name(base)
            last = name.split(".")[-1]
            if name.endswith("models.Model") or name == "db.Model" or last in MODEL_BASES:
                return True
            if depth < 5:
                found = self.proj.cls(last, module) if last else None
                if found and found[1] is not node and self._is_model(found[1], found[0], depth + 1):
                    return True
        return False

    def is_fetch(self, expr: ast.AST) -> bool:
        """An expression that evaluates to a model instance (or, for loops, an iterable of them)."""
        if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant) and expr.slice.value == 0:
            return self.is_fetch(expr.value)  # obj = Model.objects.get_or_create(...)[0]
        if not isinstance(expr, ast.Call):
            return False
        name = call_name(expr)
        last = name.split(".")[-1]
        first = name.split(".")[0]
        if last in ("get_object_or_404",):
            return True
        if "values" in name:
            return False  # values()/values_list() give plain data
        if first in self.models and (last == first or ".objects" in name or ".query" in name):
            return last == first or last in ORM_GETTERS or last in ("all", "filter", "exclude", "order_by")
        if last == "save" and (first.lower().endswith("serializer") or first.lower().endswith("form")):
            return True
        if ".objects." in name:
            return last in ORM_GETTERS or last in ("all", "filter", "exclude", "order_by", "select_related")
        if _is_session(receiver(expr)) and last in ("get", "merge") and expr.args:
            return dotted_name(expr.args[0]).split(".")[-1] in self.models
        query = next((n for n in ast.walk(expr) if isinstance(n, ast.Call) and last_name(n) == "query" and n.args),
                     None)
        if query is not None and dotted_name(query.args[0]).split(".")[-1] in self.models:
            return last in ORM_GETTERS or last in ("query", "all", "filter", "filter_by", "order_by")
        return False

    def single(self, expr: ast.AST) -> bool:
        """Like is_fetch, but only for a single instance (not a queryset)."""
        if not self.is_fetch(expr):
            return False
        if isinstance(expr, ast.Subscript):
            return True
        last = call_name(expr).split(".")[-1]
        first = call_name(expr).split(".")[0]
        return last in ORM_GETTERS or last == "get_object_or_404" or (first in self.models and last == first)


def _task_arguments(call: ast.Call) -> list[ast.expr]:
    """The argument expressions a publish/signature call passes to the task."""
    method = last_name(call)
    if method in ("delay", "s", "si"):
        return list(call.args) + [k.value for k in call.keywords if k.arg is not None]
    values: list[ast.expr] = []
    args = keyword(call, "args")
    kwargs = keyword(call, "kwargs")
    positional = call.args[1:] if method in ("send_task", "signature") else call.args
    if args is None and positional:
        args = positional[0]
    if kwargs is None and len(positional) > 1:
        kwargs = positional[1]
    if isinstance(args, (ast.Tuple, ast.List)):
        values += args.elts
    if isinstance(kwargs, ast.Dict):
        values += [v for v in kwargs.values if v is not None]
    elif isinstance(kwargs, ast.Call) and last_name(kwargs) == "dict":
        values += [k.value for k in kwargs.keywords]
    return values


def _instances(func: ast.AST, orm: Orm) -> dict[str, int]:
    """Names bound to one model instance: assignments from a fetch, and loop variables over a queryset."""
    bound = assigned_from(func, orm.single)
    for node in walk_scope(scope_body(func)):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) and isinstance(node.target, ast.Name) \
                and orm.is_fetch(node.iter):
            bound[node.target.id] = getattr(node, "lineno", None) or node.iter.lineno
    return bound


TASK_CALLS = {"delay", "apply_async", "send_task", "s", "si", "signature"}


@check(
    id="CD514",
    slug="orm-instance-task-argument",
    title="An ORM model instance is passed as a task argument",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="`kombu.exceptions.EncodeError: Object of type Order is not JSON serializable` when publishing; or, "
                "with pickle, tasks that overwrite newer data with old values.",
        why="Task arguments are serialized into the message. With the default JSON serializer a model instance "
            "cannot be encoded, so the publish raises and the task is never sent. With pickle the worker receives "
            "a copy of the row as it was at publish time: by the time the task runs it may be stale, and saving it "
            "overwrites newer changes (and accepting pickle lets anyone who can write to the broker run code).",
        confirm="`celery-doctor lint --select CD514`; producer logs for `EncodeError ... is not JSON serializable`.",
        fix="Pass the primary key (`order.pk`) and load the row inside the task "
            "(`Order.objects.get(pk=order_id)` / `session.get(Order, order_id)`).",
        risk="The task must handle the row having been deleted in between (`DoesNotExist`).",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#state",),
    ),
)
def orm_instance_argument(snapshot: Snapshot):
    proj = project_of(snapshot)
    orm = Orm(proj)
    config = snapshot.config
    serializer = str(config.value("task_serializer") or "json") if config is not None else "json"
    for module in proj.modules_mentioning(".delay(", "apply_async", "send_task", ".s(", ".si(", "signature("):
        model_methods = set()
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef) and node.name in orm.models:
                model_methods |= {id(s) for s in node.body if isinstance(s, FuncNode)}
        for scope in proj.scopes(module):
            func = scope.func
            calls = [n for n in scope.calls() if isinstance(n.func, ast.Attribute) and n.func.attr in TASK_CALLS]
            if not calls:
                continue
            instances = _instances(func, orm) if func is not None else {}
            params = set()
            if func is not None:
                arg_names = [a.arg for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs]
                if id(func) in model_methods and arg_names[:1] == ["self"]:
                    params.add("self")
                if "instance" in arg_names and "sender" in arg_names:
                    params.add("instance")  # a Django post_save/pre_delete receiver
            for call in calls:
                for value in _task_arguments(call):
                    why = ""
                    if isinstance(value, ast.Name) and value.id in instances:
                        why = f"`{value.id}`, a model instance (bound at line {instances[value.id]})"
                    elif isinstance(value, ast.Name) and value.id in params:
                        why = ("`self`, the model instance itself" if value.id == "self"
                               else "`instance`, the model instance the signal was sent for")
                    elif orm.single(value):
                        why = f"`{code(module, value, 50)}`, which returns a model instance"
                    elif dotted_name(value).endswith("request.user"):
                        why = f"`{dotted_name(value)}`, the user model instance"
                    if not why:
                        continue
                    effect = ("with the json serializer the publish raises EncodeError (not JSON serializable): "
                              "the task is never sent" if serializer == "json" else
                              f"with the {serializer} serializer the worker gets a copy of the row as it was at "
                              "publish time: stale by the time it runs, and saving it overwrites newer changes")
                    yield orm_instance_argument.finding(
                        subject=publish_subject(proj, snapshot, module, call),
                        evidence=[f"`{code(module, call, 80)}` at line {call.lineno} passes {why}", effect],
                        confidence=Confidence.INFERRED, location=loc(module, call))
                    break


CHECKS = [publish_before_commit, publish_inside_atomic, engine_before_fork, scoped_session_not_removed,
          orm_instance_argument]
