"""Source checks about database connections and worker processes: engines or clients created before the pool
forks, scoped sessions never removed between tasks."""
from __future__ import annotations

import ast
from typing import Iterator

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import (
    FuncNode,
    Module,
    Project,
    call_name,
    dotted_name,
    keyword,
    last_name,
    nodes_of,
    receiver,
    walk_scope,
)

from ._util import preview
from .source_common import code, loc, project_of, task_subject

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
        if not isinstance(stmt, (ast.Assign, ast.AnnAssign)) or stmt.value is None:
            continue
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
    if not candidates or _single_process(snapshot.config):
        return
    if any("register_after_fork" in m.file.text or "register_at_fork" in m.file.text for m in proj.modules):
        return
    handled_names, disposes_anything = _worker_process_init_handling(proj)
    worker = proj.worker_modules()
    for module in candidates:
        if module.path not in worker:
            continue
        nodes = list(import_time_nodes(module))
        for call in nodes:
            kind = _client_kind(call) if isinstance(call, ast.Call) else ""
            if not kind:
                continue
            name = _assigned_name(module, call)
            if (name and name in handled_names) or (kind == "engine" and disposes_anything):
                continue
            evidence, confidence = _engine_evidence(module, call, kind, _import_time_uses(nodes, call, name),
                                                    worker[module.path])
            yield engine_before_fork.finding(subject=f"file:{module.path}", evidence=evidence,
                                             fix=_engine_fix(kind, name or "engine"), confidence=confidence,
                                             location=loc(module, call))


def _single_process(config) -> bool:
    """Workers of this app do not fork children that could share a connection: a single-process pool, or -c 1."""
    if config is None:
        return False
    pool = str(config.value("worker_pool") or "prefork").split(":")[-1].split(".")[-1].lower()
    return pool in SINGLE_PROCESS_POOLS or config.value("worker_concurrency") == 1


def _worker_process_init_handling(proj: Project) -> tuple[set[str], bool]:
    """Names the worker_process_init handlers mention, and whether any of them calls dispose()."""
    handled_names: set[str] = set()
    disposes_anything = False
    for _, handler in proj.signal_handlers("worker_process_init"):
        for node in ast.walk(handler):
            if isinstance(node, ast.Name):
                handled_names.add(node.id)
            elif isinstance(node, ast.Attribute):
                handled_names.add(node.attr)
            if isinstance(node, ast.Call) and last_name(node) == "dispose":
                disposes_anything = True
    return handled_names, disposes_anything


def _import_time_uses(nodes: list, call: ast.Call, name: str) -> list[ast.Call]:
    """Calls at import time that use the engine/client bound to `name` (connect, execute, create_all, ...)."""
    if not name:
        return []
    return [n for n in nodes if isinstance(n, ast.Call) and n is not call and (
        name in {dotted_name(a) for a in n.args} | {dotted_name(k.value) for k in n.keywords}
        or receiver(n) == name) and (last_name(n) in ENGINE_USES or last_name(n).startswith("create_all"))]


def _engine_evidence(module: Module, call: ast.Call, kind: str, uses: list, imported_why: str):
    what = "an engine" if kind == "engine" else "a database client (an open connection)"
    evidence = [f"`{code(module, call, 70)}` at line {call.lineno} creates {what} when {module.path} is "
                f"imported; the worker imports it ({imported_why})",
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
    return evidence, confidence


def _engine_fix(kind: str, target: str) -> str:
    if kind == "engine":
        return (f"Dispose it in each pool process: `@worker_process_init.connect` (celery.signals) on "
                f"`def _reset_db(**kwargs): {target}.dispose(close=False)`; or create it lazily per process, or "
                "pass `poolclass=NullPool`.")
    return (f"Open the connection per process: create `{target}` in a `worker_process_init` handler (or on "
            "first use in the task), not at import time.")


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
    cleanup_nodes = _cleanup_nodes(proj)
    for smodule, name, call in sessions:
        aliases = _aliases(proj, smodule, name)
        if _removes(iter(cleanup_nodes), aliases):
            continue
        users = _tasks_keeping(proj, aliases)
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


def _cleanup_nodes(proj: Project) -> list[ast.AST]:
    """Every node of task_prerun/task_postrun handlers and of Task classes: where a session can be removed."""
    nodes = [n for _, h in proj.signal_handlers(*CLEANUP_SIGNALS) for n in ast.walk(h)]
    for module in proj.modules:
        for node in nodes_of(module.tree, ast.ClassDef):
            if proj.is_task_class(node, module):
                nodes.extend(ast.walk(node))
    return nodes


def _aliases(proj: Project, smodule: Module, name: str) -> set[str]:
    """The session's name and the names other modules import it as."""
    aliases = {name}
    for module in proj.modules:
        for alias, (source_module, imported) in proj.imported_names.get(module.path, {}).items():
            if imported == name and source_module == smodule.name:
                aliases.add(alias)
    return aliases


def _tasks_keeping(proj: Project, aliases: set[str]) -> list:
    """Tasks that use the session and do not remove it in a finally block."""
    users = []
    for task in proj.tasks:
        body_names = {n.id for n in walk_scope(task.body) if isinstance(n, ast.Name)}
        if not body_names & aliases:
            continue
        in_finally = [n for t in walk_scope(task.body) if isinstance(t, ast.Try) for n in walk_scope(t.finalbody)]
        if not _removes(iter(in_finally), aliases):
            users.append(task)
    return users


CHECKS = [engine_before_fork, scoped_session_not_removed]
