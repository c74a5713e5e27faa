"""AST helpers for statements within one scope: walking a scope, publishes, exception handlers, bindings."""
from __future__ import annotations

import ast
from typing import Callable, Iterable, Optional

from .expr import call_name, dotted_name, last_name

PUBLISH_METHODS = {"delay", "apply_async", "send_task"}
SCOPE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
BROAD_EXCEPTIONS = {"Exception", "BaseException"}
FuncNode = (ast.FunctionDef, ast.AsyncFunctionDef)


_SCOPE_TYPES = frozenset(SCOPE_NODES)
_FIELDS_REVERSED: dict[type, tuple[str, ...]] = {}


def walk_scope(nodes: Iterable[ast.AST] | ast.AST) -> list[ast.AST]:
    """Every node under `nodes` that runs in the same scope: nested functions, lambdas and classes are not entered.
    Depth first, children in ast.iter_child_nodes order (the order of ast.walk's own children, without its
    generators: this walk is the one every scope query shares)."""
    if isinstance(nodes, ast.AST):
        stack = [nodes]
    else:
        stack = [n for n in nodes if n.__class__ not in _SCOPE_TYPES]
    stack.reverse()
    out: list[ast.AST] = []
    append, pop, push = out.append, stack.pop, stack.append
    node_type, skip, reversed_fields = ast.AST, _SCOPE_TYPES, _FIELDS_REVERSED
    while stack:
        node = pop()
        append(node)
        kind = node.__class__
        fields = reversed_fields.get(kind)
        if fields is None:
            fields = reversed_fields[kind] = tuple(reversed(kind._fields))
        for name in fields:
            value = getattr(node, name, None)
            if value.__class__ is list:
                for item in reversed(value):
                    if isinstance(item, node_type) and item.__class__ not in skip:
                        push(item)
            elif isinstance(value, node_type) and value.__class__ not in skip:
                push(value)
    return out


def scope_body(func: ast.AST) -> list[ast.AST]:
    """The statements of a function (or module/class) without its decorators, arguments or nested scopes."""
    return list(getattr(func, "body", []))


def in_order(nodes: Iterable[ast.AST]) -> list[ast.AST]:
    return sorted(nodes, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))


def is_publish(call: ast.AST) -> bool:
    """`x.delay(...)`, `x.apply_async(...)`, `app.send_task(...)` (the *_on_commit variants are not publishes now)."""
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in PUBLISH_METHODS


def publishes(nodes: Iterable[ast.AST] | ast.AST) -> list[ast.Call]:
    return in_order(n for n in walk_scope(nodes) if is_publish(n))


def receiver(call: ast.Call) -> str:
    """`a.b` for a call `a.b.method(...)`; '' when the receiver is not a plain name chain."""
    return dotted_name(call.func.value) if isinstance(call.func, ast.Attribute) else ""


def exception_names(node: Optional[ast.expr]) -> list[str]:
    """Last names of the exception classes an `except` clause names (['*'] for a bare except)."""
    if node is None:
        return ["*"]
    items = node.elts if isinstance(node, ast.Tuple) else [node]
    names = []
    for item in items:
        name = dotted_name(item)
        names.append(name.split(".")[-1] if name else "?")
    return names


def is_broad_handler(handler: ast.ExceptHandler, also: Iterable[str] = ()) -> bool:
    names = set(exception_names(handler.type))
    return bool(names & ({"*"} | BROAD_EXCEPTIONS | set(also)))


REQUEUE_WORDS = ("retry", "enqueue", "requeue", "reschedule")


def reraises_or_retries(statements: Iterable[ast.AST]) -> bool:
    """A handler body that raises, retries or re-publishes (re-enqueues) the work does not swallow it."""
    for node in walk_scope(list(statements)):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            name = last_name(node)
            if name in ("apply_async_on_commit", "delay_on_commit", "_exit", "exit", "lpush", "rpush") or \
                    is_publish(node) or any(word in name.lower() for word in REQUEUE_WORDS):
                return True
    return False


ERROR_RESPONSE_WORDS = ("error", "badrequest", "notfound", "forbidden", "unavailable", "failure")


def _error_status(node: Optional[ast.AST]) -> bool:
    """A literal HTTP status >= 400, or a name like status.HTTP_503_SERVICE_UNAVAILABLE."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value >= 400
    name = dotted_name(node).split(".")[-1] if node is not None else ""
    return name.startswith(("HTTP_4", "HTTP_5"))


def is_error_response(value: Optional[ast.AST]) -> bool:
    """`return JsonResponse(..., status=400)`, `return HttpResponseServerError()`, `return Response(status=
    status.HTTP_503_...)`, `return jsonify(...), 500`, `abort(500)`: the caller is told that the work failed."""
    if isinstance(value, ast.Tuple) and len(value.elts) >= 2:
        return _error_status(value.elts[1])
    if not isinstance(value, ast.Call):
        return False
    name = last_name(value).lower()
    if "response" in name or name in ("abort", "jsonify", "render"):
        status = next((kw.value for kw in value.keywords if kw.arg in ("status", "status_code", "code")), None)
        if status is None and name == "abort" and value.args:
            status = value.args[0]
        return _error_status(status) or ("response" in name and any(w in name for w in ERROR_RESPONSE_WORDS))
    return False


CLEANUP_CALLS = {"release", "close", "rollback", "unlock", "cleanup", "clean_up", "unlink", "remove", "rmtree",
                 "delete", "delete_lock", "release_lock"}


def _is_cleanup(call: ast.Call) -> bool:
    """Releasing a lock, closing or rolling back, removing a temporary file: it does not save the lost work."""
    name = last_name(call)
    if name not in CLEANUP_CALLS:
        return False
    if name in ("delete", "remove"):
        recv = receiver(call).lower()
        return recv in ("os", "shutil") or any(word in recv for word in ("lock", "cache", "redis", "tmp", "temp"))
    return True


LOGGING_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log", "print",
                 "capture_exception", "capture_message", "captureException", "captureMessage", "incr", "increment"}


def _is_logging_call(call: ast.Call) -> bool:
    name = call_name(call)
    head = name.split(".")[0].lower() if name else ""
    if head == "messages":
        return False  # django.contrib.messages.error(request, ...): the user is told
    return last_name(call) in LOGGING_CALLS or "log" in head or head in ("sentry_sdk", "sentry", "statsd", "metrics")


def only_logs(statements: Iterable[ast.stmt]) -> bool:
    """A handler that does nothing but log, count, pass, continue, return (not an error response), set local
    variables or clean up (release a lock, close, roll back): the work is still lost."""
    for stmt in statements:
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            value = stmt.value
            if all(isinstance(t, ast.Name) for t in targets) and not any(
                    isinstance(n, ast.Call) and not _is_logging_call(n) and last_name(n) not in ("str", "repr", "format")
                    for n in ast.walk(value or ast.Constant(None))):
                continue
            return False
        if isinstance(stmt, (ast.Pass, ast.Continue, ast.Break)):
            continue
        if isinstance(stmt, ast.Return):
            if is_error_response(stmt.value):
                return False
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and (
                _is_logging_call(stmt.value) or _is_cleanup(stmt.value)):
            continue
        return False
    return True


def is_fallback(statements: list[ast.stmt], later: Iterable[ast.AST]) -> bool:
    """A handler that only sets local variables (no logging, no return) that code after it reads: the error is
    handled by a fallback value (`except Exception: note = f"failed: {e}"`, then the note is recorded)."""
    names: set[str] = set()
    for stmt in statements:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if not all(isinstance(t, ast.Name) for t in targets):
                return False
            names |= {t.id for t in targets}
            continue
        return False
    return bool(names) and any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in names
                               for n in later)


def assigned_from(func: ast.AST, predicate: Callable[[ast.expr], bool]) -> dict[str, int]:
    """Names bound in a function's own scope to an expression matching `predicate` -> line of the binding."""
    bound: dict[str, int] = {}
    for node in walk_scope(scope_body(func)):
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets, value = [node.target], node.iter
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None and predicate(item.context_expr):
                    for name in ast.walk(item.optional_vars):
                        if isinstance(name, ast.Name):
                            bound[name.id] = node.lineno
            continue
        if value is None or not predicate(value):
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                bound[target.id] = node.lineno
            elif isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
                bound[target.elts[0].id] = node.lineno  # obj, created = X.objects.get_or_create(...)
    return bound
