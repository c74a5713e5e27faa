"""Beat entries added in code: `sender.add_periodic_task(schedule, task.s(...), name=..., **options)` in a function
connected to the app's on_after_configure (or on_after_finalize) signal, as Celery's docs show. Celery runs those
handlers when the app is configured; here each call is replayed on the bare app through the same
`add_periodic_task`, with the task's signature built from its registered name."""
from __future__ import annotations

import ast
from typing import Any, Callable, Optional

from ..model import Location
from .apps import FoundApp
from .values import Unresolved, dotted

SIGNALS = ("on_after_configure", "on_after_finalize")
SIGNATURE_METHODS = ("s", "si", "signature")


def periodic_calls(found: FoundApp) -> list[ast.Call]:
    """The add_periodic_task calls of the handlers the app's module connects to its configure/finalize signals."""
    wanted = {f"{found.variable}.{signal}.connect" for signal in SIGNALS}
    calls = []
    for node in found.file.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                dotted(d.func if isinstance(d, ast.Call) else d) in wanted for d in node.decorator_list):
            calls += [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                      and c.func.attr == "add_periodic_task"]
    return calls


def _argument(call: ast.Call, index: int, name: str) -> Optional[ast.AST]:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == name), None)


class Periodic:
    """Replays add_periodic_task calls; `evaluate(node, what, line)` is the builder's (ok, value, env)."""

    def __init__(self, app: Any, evaluate: Callable, task_names: dict, path: str, notes: list) -> None:
        self.app = app
        self.evaluate = evaluate
        self.task_names = task_names  # the function's name in the source -> registered names
        self.path = path
        self.notes = notes  # (what, why) not checked

    def signature(self, node: Optional[ast.AST], line: int) -> Any:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SIGNATURE_METHODS):
            raise Unresolved("the signature is not `task.s(...)`, `task.si(...)` or `task.signature(...)`")
        label = dotted(node.func.value).split(".")[-1]
        names = self.task_names.get(label, [])
        if len(names) != 1:
            raise Unresolved(f"the task {label or '?'} is not one task of the source")
        args, kwargs = self._sig_arguments(node, line)
        return self.app.signature(names[0], args=args, kwargs=kwargs, immutable=node.func.attr == "si")

    def _sig_arguments(self, node: ast.Call, line: int) -> tuple[tuple, dict]:
        if node.func.attr == "signature":
            args = _argument(node, 0, "args")
            kwargs = _argument(node, 1, "kwargs")
            ok1, args, _ = self.evaluate(args, "the task's args", line) if args is not None else (True, (), {})
            ok2, kwargs, _ = self.evaluate(kwargs, "the task's kwargs", line) if kwargs is not None else (True, {}, {})
        else:
            ok1, args, _ = self.evaluate(ast.Tuple(elts=list(node.args), ctx=ast.Load()), "the task's args", line)
            ok2, kwargs, _ = self.evaluate(ast.Dict(keys=[ast.Constant(k.arg) for k in node.keywords if k.arg],
                                                    values=[k.value for k in node.keywords if k.arg]),
                                           "the task's kwargs", line)
        if not (ok1 and ok2):
            raise Unresolved("the task's arguments")
        return tuple(args or ()), dict(kwargs or {})

    def add(self, call: ast.Call) -> Optional[Location]:
        """Replay one call; its location when it added an entry (None: listed as not checked by evaluate)."""
        line = call.lineno
        ok, schedule, _ = self.evaluate(_argument(call, 0, "schedule"), "add_periodic_task(schedule)", line)
        options: dict = {}
        for kw in call.keywords:
            if kw.arg not in (None, "schedule", "sig"):
                ok_kw, options[kw.arg], _ = self.evaluate(kw.value, f"add_periodic_task({kw.arg}=...)", line)
                ok = ok and ok_kw
        try:
            sig = self.signature(_argument(call, 1, "sig"), line)
        except Unresolved as exc:
            self.notes.append((f"add_periodic_task(...) ({self.path}:{line})", f"not read statically: {exc}"))
            return None
        if not ok:
            return None
        self.app.add_periodic_task(schedule, sig, **options)
        return Location(self.path, line)
