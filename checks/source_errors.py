"""Source checks about errors: swallowed task errors, swallowed publish errors, waiting on results in a task."""
from __future__ import annotations

import ast
from typing import Iterator, Optional

from celery_doctor.model import Category, Runbook, Snapshot, check
from celery_doctor.pyast import (
    FuncNode,
    Module,
    Project,
    assigned_from,
    dotted_name,
    exception_names,
    is_broad_handler,
    is_publish,
    keyword,
    last_name,
    only_logs,
    publishes,
    reraises_or_retries,
    walk_scope,
)
from celery_doctor.pyast.scope import is_fallback

from ._util import preview
from .source_common import code, loc, project_of, task_subject

PUBLISH_ERRORS = ("OperationalError", "KombuError")
CELERY_CONTROL = ("Retry", "Reject", "Ignore")


def _describe_except(handler: Optional[ast.ExceptHandler]) -> str:
    if handler is None:
        return "contextlib.suppress(Exception)"
    if handler.type is None:
        return "a bare `except:`"
    names = exception_names(handler.type)
    return f"`except {', '.join(names) if len(names) == 1 else '(' + ', '.join(names) + ')'}:`"


def _handler_does(handler: Optional[ast.ExceptHandler]) -> str:
    if handler is None:
        return "suppresses the error"
    kinds = set()
    for stmt in handler.body:
        if isinstance(stmt, ast.Pass):
            kinds.add("passes")
        elif isinstance(stmt, ast.Return):
            kinds.add("returns a value" if stmt.value is not None and not (
                isinstance(stmt.value, ast.Constant) and stmt.value.value is None) else "returns")
        elif isinstance(stmt, (ast.Continue, ast.Break)):
            kinds.add("moves on to the next item")
        elif isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            kinds.add("sets a local variable")
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and only_logs([stmt]):
            kinds.add("logs")
        else:
            kinds.add("handles it locally")
    order = ["logs", "sets a local variable", "passes", "returns", "returns a value", "moves on to the next item",
             "handles it locally"]
    return " and ".join(k for k in order if k in kinds) or "does nothing"


def _loop_tries(body: list) -> set:
    """Try/With nodes that sit inside a loop of the same scope."""
    inside = set()
    for node in walk_scope(body):
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            for sub in walk_scope(node.body):
                if isinstance(sub, (ast.Try, ast.With, ast.AsyncWith)):
                    inside.add(id(sub))
    return inside


def _is_suppress(item: ast.withitem) -> bool:
    expr = item.context_expr
    if isinstance(expr, ast.Call) and last_name(expr) == "suppress":
        names = {dotted_name(a).split(".")[-1] for a in expr.args}
        return bool(names & {"Exception", "BaseException"})
    return False


def swallowing(body: list) -> Iterator[tuple[ast.AST, Optional[ast.ExceptHandler]]]:
    """(try-or-with, handler) for each broad handler in this scope that neither raises, retries nor re-publishes."""
    for node in walk_scope(body):
        if isinstance(node, ast.Try) or node.__class__.__name__ == "TryStar":
            for handler in node.handlers:
                if is_broad_handler(handler) and not reraises_or_retries(handler.body):
                    yield node, handler
        elif isinstance(node, (ast.With, ast.AsyncWith)) and any(_is_suppress(i) for i in node.items):
            yield node, None


def swallowed_publish(node: ast.AST, handler: Optional[ast.ExceptHandler]) -> bool:
    """A try whose body publishes and whose handler only logs: that is CD502's, not CD501's."""
    if handler is None or not isinstance(node, ast.Try) or not publishes(node.body):
        return False
    return only_logs(handler.body)


def _control_flow_raised(node: ast.AST) -> list[str]:
    """Retry/Reject/Ignore raised (or self.retry called) in a try body: the broad handler catches them too."""
    found = []
    body = node.body if isinstance(node, (ast.Try, ast.With, ast.AsyncWith)) else []
    for sub in walk_scope(body):
        if isinstance(sub, ast.Call) and last_name(sub) == "retry":
            found.append(f"self.retry() at line {sub.lineno}")
        elif isinstance(sub, ast.Raise) and sub.exc is not None:
            target = sub.exc.func if isinstance(sub.exc, ast.Call) else sub.exc
            name = dotted_name(target).split(".")[-1]
            if name in CELERY_CONTROL:
                found.append(f"raise {name} at line {sub.lineno}")
    return found


SWALLOW_FIX = ("Catch only the exceptions the task can really handle. For the rest, re-raise (`raise`) so the task "
               "ends FAILURE, or retry with a bound: `raise self.retry(exc=exc)` with `max_retries` set.")


@check(
    id="CD501",
    slug="swallowed-task-exception",
    title="A broad except in a task swallows the error: the task succeeds, its work is lost",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="The task shows SUCCESS (or nothing at all) in Flower and the result backend, yet its effect never "
                "happened; only a log line (if any) tells that it failed.",
        why="A bare `except:`, `except Exception:` or `except BaseException:` in the task body, or in a decorator "
            "or base class wrapped around the task, that neither re-raises nor retries makes the task return "
            "normally. Celery records SUCCESS and acknowledges the message (celery/app/trace.py build_tracer: "
            "mark_as_done on a normal return; celery/worker/request.py Request.on_success acks an acks_late "
            "message), so nothing retries it and no failure is reported. Celery's own `Retry`, `Reject` and "
            "`Ignore` subclass Exception, so such a handler also swallows `self.retry()`. Not reported: a handler "
            "that re-enqueues the work, does more than log (records the failure), only sets a fallback value the "
            "task then uses, or returns the error as the result to a reader of it (a chord callback, a caller "
            "waiting on `.get()`).",
        confirm="`celery-doctor lint --select CD501` lists the lines. Grep the worker logs for the handler's message "
                "next to `succeeded in` for the same task id.",
        fix="Catch only the exceptions the task can handle; re-raise the rest (`raise`) or retry with a bound "
            "(`raise self.retry(exc=exc)` with `max_retries`). A wrapper decorator must re-raise after logging.",
        risk="Tasks that used to end SUCCESS now end FAILURE (or retry): alerting on failures may fire, and "
             "`acks_late` tasks that fail are acked (or rejected with `task_acks_on_failure_or_timeout=False`).",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#retrying",),
    ),
)
def swallowed_exception(snapshot: Snapshot):
    proj = project_of(snapshot)
    consumed = _consumed_results(proj)
    for task in proj.tasks:
        loops = _loop_tries(task.body)
        for node, handler in swallowing(task.body):
            if swallowed_publish(node, handler) or (handler is not None and (
                    not only_logs(handler.body) or is_fallback(handler.body, _outside(task.body, handler))
                    or (task.label in consumed and _returns_value(handler)))):
                continue
            where = handler or node
            evidence = [f"{_describe_except(handler)} at line {where.lineno} in task {task.name} "
                        f"{_handler_does(handler)} and neither re-raises nor retries",
                        "the task returns normally: Celery records SUCCESS and acks the message, so the failed work "
                        "is neither retried nor reported"]
            if id(node) in loops:
                evidence.append("it sits in a loop: each item that fails is skipped silently")
            caught = _control_flow_raised(node)
            if caught:
                evidence.append(f"it also catches Celery's Retry/Reject/Ignore ({', '.join(caught)}): they "
                                "subclass Exception")
            yield swallowed_exception.finding(subject=task_subject(snapshot, task), evidence=evidence,
                                              fix=SWALLOW_FIX, location=loc(task.module, where))
    yield from _wrappers(snapshot, proj)


def _returns_value(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Return) and n.value is not None and not (
        isinstance(n.value, ast.Constant) and n.value.value is None) for n in walk_scope(handler.body))


def _canvas_or_waiting_modules(proj: Project) -> list:
    """Modules with a canvas member (`.s(`/`.si(`), or a publish and a `.get(` (`.get(` alone waits on nothing)."""
    return [m for m in proj.modules_mentioning(".s(", ".si(", ".get(")
            if ".s(" in m.file.text or ".si(" in m.file.text or m.path in proj.publishing_paths]


def _consumed_results(proj: Project) -> set[str]:
    """Tasks whose return value someone reads: members of a canvas (`name.s(...)`/`.si(...)` in a group, chord
    or chain, whose callback gets the results) and tasks whose AsyncResult is waited on (`r = name.delay(...)`
    then `r.get()`). A handler returning an error value to them reports the failure (micromasters'
    recreate_index chord)."""
    found: set[str] = set()
    for module in _canvas_or_waiting_modules(proj):
        for scope in proj.scopes(module):
            results: dict[str, str] = {}
            for node in scope.nodes:
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in ("s", "si"):
                    found.add(dotted_name(node.func.value).split(".")[-1])
                elif isinstance(node, ast.Assign) and is_publish(node.value) and len(node.targets) == 1 and \
                        isinstance(node.targets[0], ast.Name):
                    results[node.targets[0].id] = dotted_name(node.value.func.value).split(".")[-1]
            for node in scope.nodes:
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id in results:
                    found.add(results[node.func.value.id])
    found.discard("")
    return found


def _wrappers(snapshot: Snapshot, proj: Project):
    """Decorators and base classes (`__call__`) around tasks that swallow errors, one finding per handler."""
    wrapped: dict[tuple[str, int], dict] = {}
    for task in proj.tasks:
        name = task_subject(snapshot, task)[5:]
        for label, module, func in _wrapper_functions(proj, task):
            for where, handler in _swallowing_handlers(func):
                entry = wrapped.setdefault((module.path, where.lineno), {"label": label, "module": module,
                                                                         "where": where, "handler": handler,
                                                                         "tasks": []})
                if name not in entry["tasks"]:
                    entry["tasks"].append(name)
    for (_path, line), entry in sorted(wrapped.items()):
        tasks = entry["tasks"]
        yield swallowed_exception.finding(
            subject=f"task:{sorted(tasks)[0]}",
            evidence=[f"{entry['label']} wraps {len(tasks)} task(s) ({preview(tasks)}); its "
                      f"{_describe_except(entry['handler'])} at line {line} {_handler_does(entry['handler'])} "
                      "and does not re-raise",
                      "every error of the wrapped tasks ends in SUCCESS: nothing retries or reports the lost work"],
            fix="Re-raise after logging in the wrapper (`except Exception: log.exception(...); raise`), or catch only "
                "the exceptions it can really handle.",
            location=loc(entry["module"], entry["where"]))


def _wrapper_functions(proj: Project, task) -> list[tuple[str, Module, ast.AST]]:
    """(label, module, function) for the decorators below the task decorator and the base classes' __call__."""
    candidates: list[tuple[str, Module, ast.AST]] = []
    decorators = list(getattr(task.node, "decorator_list", ()))
    # Only decorators below the task decorator wrap the function the worker runs; those above it wrap the
    # Task object, which the worker never calls.
    below = decorators[decorators.index(task.decorator) + 1:] if task.decorator in decorators else []
    for decorator in below:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = dotted_name(target).split(".")[-1]
        found = proj.function(name, task.module) if name else None
        if found:
            candidates.append((f"decorator @{name}", *found))
    base = task.option("base")
    base_name = task.cls.name if task.cls else (dotted_name(base).split(".")[-1] if base is not None else "")
    for module, cls in proj.class_chain(base_name, task.module) if base_name else ():
        for stmt in cls.body:
            if isinstance(stmt, FuncNode) and stmt.name == "__call__":
                candidates.append((f"base class {cls.name}.__call__", module, stmt))
    return candidates


def _swallowing_handlers(func: ast.AST):
    """(where, handler) for each broad handler in the function (and its inner functions) that only logs."""
    bodies = [func.body] + [n.body for n in ast.walk(func) if isinstance(n, FuncNode) and n is not func]
    for body in bodies:
        for node, handler in swallowing(body):
            if handler is None or (only_logs(handler.body) and not is_fallback(handler.body, _outside(body, handler))):
                yield handler or node, handler


def _outside(body: list, handler: ast.ExceptHandler) -> list[ast.AST]:
    """The nodes of a scope that are not inside `handler`."""
    inside = {id(n) for n in walk_scope(handler.body)}
    return [n for n in walk_scope(body) if id(n) not in inside]


@check(
    id="CD502",
    slug="swallowed-publish-error",
    title="A publish error is caught and only logged: the task is never sent",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="During a broker blip or restart, some tasks are simply never executed; the only trace is an "
                "`OperationalError` (or `Error 111 connecting`) in the web or producer logs.",
        why="When the broker is unreachable, `apply_async`/`delay` retries under `task_publish_retry_policy` (about "
            "0.7 s by default) and then raises `kombu.exceptions.OperationalError` (celery/app/amqp.py "
            "send_task_message -> producer.publish(retry=..., retry_policy=...); kombu/connection.py "
            "Connection.ensure re-raises once the retries are spent, as OperationalError). A surrounding "
            "`except Exception:` that only logs (or passes) drops that task: it was never queued and nothing will "
            "send it again. Not reported: a handler that tells the caller (returns an error response, "
            "`messages.error(request, ...)`) or re-enqueues the work.",
        confirm="`celery-doctor lint --select CD502` lists the lines; grep producer logs for the handler's message "
                "and `OperationalError`.",
        fix="Let the error propagate so the caller fails visibly (and its own retry logic runs), or on failure "
            "write the task to an outbox table that a periodic job re-sends. Never only log a failed publish.",
        risk="Requests that used to succeed while the broker was down now fail; an outbox needs de-duplication "
             "(tasks idempotent) because a publish can succeed and still look failed.",
    ),
)
def swallowed_publish_error(snapshot: Snapshot):
    proj = project_of(snapshot)
    config = snapshot.config
    for module in proj.modules_mentioning("delay", "apply_async", "send_task"):
        for scope in proj.scopes(module):
            body = scope.body
            for node in scope.nodes:
                if not isinstance(node, ast.Try):
                    continue
                sent = publishes(node.body)
                if not sent:
                    continue
                for handler in node.handlers:
                    if not is_broad_handler(handler, also=PUBLISH_ERRORS):
                        continue
                    if reraises_or_retries(handler.body) or not only_logs(handler.body):
                        continue
                    evidence = [f"`{code(module, sent[0], 80)}` at line {sent[0].lineno} is inside a try whose "
                                f"{_describe_except(handler)} at line {handler.lineno} {_handler_does(handler)}",
                                "a publish that fails (broker down, connection reset) raises OperationalError after "
                                "the publish retries; this handler drops the task: it is never queued or re-sent"]
                    if config is not None and config.value("task_publish_retry") is False:
                        evidence.append("task_publish_retry=False: the first connection error already raises")
                    task = next((t for t in proj.tasks if t.module.path == module.path and t.node.body is body), None)
                    subject = task_subject(snapshot, task) if task else f"file:{module.path}"
                    yield swallowed_publish_error.finding(subject=subject, evidence=evidence,
                                                          location=loc(module, handler))
                    break


RESULT_CLASSES = {"AsyncResult", "GroupResult", "ResultSet", "EagerResult"}
CANVAS = {"group", "chord", "chain"}
WAIT_METHODS = {"get", "wait", "join", "join_native"}


def _is_result(expr: ast.AST) -> bool:
    if not isinstance(expr, ast.Call):
        return False
    if is_publish(expr):
        return True
    name = last_name(expr)
    if name in RESULT_CLASSES or (name == "restore" and "GroupResult" in dotted_name(expr.func)):
        return True
    inner = expr.func
    return isinstance(inner, ast.Call) and last_name(inner) in CANVAS  # group(...)() / chain(...)()


@check(
    id="CD503",
    slug="result-get-inside-task",
    title="A task waits for another task's result (.get()): it fails or deadlocks the pool",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="The task fails with `RuntimeError: Never call result.get() within a task!`, or (with "
                "`disable_sync_subtasks=False`) workers stop making progress: every pool slot waits for a subtask "
                "that no free slot can run.",
        why="Waiting on an AsyncResult inside a task blocks a pool process until the subtask finishes. Under prefork "
            "Celery refuses by default and raises RuntimeError, so the task fails every time (celery/result.py "
            "AsyncResult.get -> assert_will_not_block, even for a result that is already ready). With "
            "`disable_sync_subtasks=False` or `allow_join_result()` it waits instead: once all slots wait, the "
            "subtasks they wait for can never run (deadlock), and their messages sit reserved until a restart.",
        confirm="`celery -A proj inspect active` shows every slot busy in the waiting task; grep worker logs for "
                "`Never call result.get() within a task`.",
        fix="Do not wait: chain the follow-up work (`chain(a.s(x), b.s())`, or `a.apply_async(link=b.s())`), or use "
            "a chord for fan-out/fan-in.",
        risk="The calling task no longer has the subtask's result in hand; code after `.get()` must move into the "
             "callback task.",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#avoid-launching-synchronous-subtasks",),
    ),
)
def result_get_in_task(snapshot: Snapshot):
    proj = project_of(snapshot)
    for task in proj.tasks:
        tracked = assigned_from(task.node, _is_result)
        allowed = any(isinstance(n, (ast.With, ast.AsyncWith)) and any(
            isinstance(i.context_expr, ast.Call) and last_name(i.context_expr) == "allow_join_result" for i in n.items)
            for n in walk_scope(task.body))
        for node in walk_scope(task.body):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in WAIT_METHODS):
                continue
            target = node.func.value
            if not (_is_result(target) or (isinstance(target, ast.Name) and target.id in tracked)):
                continue
            opt_out = keyword(node, "disable_sync_subtasks")
            waits = allowed or (isinstance(opt_out, ast.Constant) and opt_out.value is False)
            evidence = [f"`{code(task.module, node, 80)}` at line {node.lineno} in task {task.name} waits for "
                        "another task's result"]
            if waits:
                evidence.append("the sync-subtask guard is turned off (disable_sync_subtasks=False / "
                                "allow_join_result): the pool slot blocks, and when all slots wait the pool deadlocks")
            else:
                evidence.append("under the prefork pool Celery raises RuntimeError('Never call result.get() within "
                                "a task!'): the task fails every time it gets here")
            yield result_get_in_task.finding(subject=task_subject(snapshot, task), evidence=evidence,
                                             location=loc(task.module, node))


CHECKS = [swallowed_exception, swallowed_publish_error, result_get_in_task]
