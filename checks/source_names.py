"""Source checks about what the code schedules or sends by name: periodic tasks without expires, task names
that no registered task has."""
from __future__ import annotations

import ast
import difflib
from typing import Optional

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import Project, dotted_name, keyword, last_name, nodes_of, walk_scope
from celery_doctor.settings import human_seconds

from ._util import plural
from .source_common import code, loc, project_of, registered_name


def _mentions_expires(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.keyword) and sub.arg == "expires":
            return True
        if isinstance(sub, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "expires" for k in sub.keys):
            return True
    return False


def _signature_task(proj: Project, sig: ast.AST):
    """The task of this tree a signature expression names (`ping.s()`, `ping.signature(...)`), if any."""
    node = sig
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in ("s", "si", "signature", "subtask"):
            name = dotted_name(node.func.value).split(".")[-1]
            found = proj.tasks_named(name) if name else []
            return found[0] if len(found) == 1 else None
        node = node.func.value
    return None


def periodic_task_calls(proj: Project):
    """(module, enclosing function or None, the add_periodic_task call) for every call in the tree."""
    for module in proj.modules_mentioning("add_periodic_task"):
        for scope in proj.scopes(module):
            for node in scope.calls():
                if last_name(node) == "add_periodic_task":
                    yield module, scope.func, node


@check(
    id="CD540",
    slug="periodic-task-without-expires",
    title="add_periodic_task without expires: runs missed while workers are down all execute at once",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="After workers were down or busy for a while, a periodic task runs many times in a burst, "
                "duplicating its work and delaying every other task behind the backlog.",
        why="Beat keeps publishing on schedule whether or not workers consume. Without `expires` each queued run "
            "stays valid forever, so when workers return they execute every missed run, back to back. With "
            "`expires` workers discard runs older than that (logged `Discarding revoked task`).",
        confirm="`redis-cli LLEN <queue>` / `rabbitmqctl list_queues` during an outage: the periodic task's messages "
                "pile up; `celery-doctor scan` counts duplicates per task.",
        fix="Pass `expires=` to add_periodic_task, a bit less than the interval: "
            "`sender.add_periodic_task(300, sync.s(), name='sync', expires=280)`.",
        risk="A run that waited longer than `expires` is skipped, not caught up; for runs that must each happen, make "
             "the task process everything pending instead of one slot.",
        references=("https://docs.celeryq.dev/en/stable/userguide/periodic-tasks.html#entries",),
    ),
)
def periodic_without_expires(snapshot: Snapshot):
    proj = project_of(snapshot)
    config = snapshot.config
    for module, func, call in periodic_task_calls(proj):
        if keyword(call, "expires") is not None:
            continue
        sig = _signature_expr(module, func, call)
        if sig is None or _mentions_expires(sig):
            continue
        task = _signature_task(proj, sig)
        if task is not None and task.option("expires") is not None:
            continue
        name_node = keyword(call, "name")
        entry_name = name_node.value if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str) else None
        task_name = registered_name(snapshot, task) if task is not None else None
        if _in_beat_schedule_without_expires(config, entry_name, task_name):
            continue  # the app's beat_schedule already holds this entry: CD141 reports it from the configuration
        evidence, suggestion = _periodic_text(proj, module, call, entry_name or task_name or code(module, sig, 40))
        yield periodic_without_expires.finding(
            subject=f"beat:{entry_name}" if entry_name else (f"task:{task_name}" if task_name else f"file:{module.path}"),
            evidence=evidence, fix=f"Add `{suggestion}` to the add_periodic_task call (or `.set(expires=...)` on the "
                                   "signature).",
            location=loc(module, call))


def _periodic_text(proj: Project, module, call: ast.Call, label: str) -> tuple[list[str], str]:
    """The evidence for an add_periodic_task call without expires, and the expires= to suggest."""
    schedule = call.args[0] if call.args else keyword(call, "schedule")
    every = proj.seconds(module, schedule) if schedule is not None else None
    suggestion = f"expires={int(every * 0.9) or 1}" if every else "expires=<a bit less than the interval>"
    evidence = [f"`{code(module, call, 90)}` at line {call.lineno} schedules {label}"
                + (f" every {human_seconds(every)}" if every else "") + " without expires",
                "runs published while workers are down or behind stay valid forever and all execute on recovery"]
    return evidence, suggestion


def _signature_expr(module, func, call: ast.Call) -> Optional[ast.AST]:
    """The signature an add_periodic_task call schedules; a name is followed to its assignment in the same scope.
    None when there is none, or it is built elsewhere (cannot tell)."""
    sig = call.args[1] if len(call.args) > 1 else keyword(call, "sig")
    if not isinstance(sig, ast.Name):
        return sig
    scope = func.body if func is not None else module.tree.body
    return next((n.value for n in walk_scope(scope) if isinstance(n, ast.Assign) and
                 any(isinstance(t, ast.Name) and t.id == sig.id for t in n.targets)), None)


def _in_beat_schedule_without_expires(config, entry_name: Optional[str], task_name: Optional[str]) -> bool:
    return config is not None and any(
        "expires" not in e.options and ((entry_name and e.name == entry_name) or (task_name and e.task == task_name))
        for e in config.beat)


NAME_CALLS = {"send_task", "signature", "subtask", "Signature"}


def named_calls(proj: Project):
    """(module, call, task name) for calls that name a task by a string literal."""
    for module in proj.modules_mentioning(*NAME_CALLS):
        for node in nodes_of(module.tree, ast.Call):
            if last_name(node) not in NAME_CALLS:
                continue
            target = node.args[0] if node.args else keyword(node, "name")
            if isinstance(target, ast.Constant) and isinstance(target.value, str) and target.value:
                yield module, node, target.value


@check(
    id="CD541",
    slug="unknown-task-name",
    title="send_task/signature names a task the app does not register",
    category=Category.ROUTING,
    needs=("source", "config"),
    runbook=Runbook(
        symptom="Tasks sent by name never run; worker logs show `Received unregistered task of type '...'. The "
                "message has been ignored and discarded.` and the result stays PENDING (or FAILURE NotRegistered).",
        why="`send_task('name')` and `signature('name')` are not checked against the registry when sending: the "
            "message is published and the worker that receives it, not knowing the name, rejects and discards it "
            "(celery/worker/consumer/consumer.py `Consumer.on_unknown_task`: `message.reject_log_error(...)`, "
            "requeue=False in kombu/message.py, then the result is marked FAILURE NotRegistered; a rejected message without a "
            "dead-letter exchange is gone). A typo, a renamed task or an unimported module all end the same way.",
        confirm="`celery -A proj inspect registered` on the workers consuming the queue; grep worker logs for "
                "`unregistered task`.",
        fix="Use the registered name (or call the task object: `charge_order.delay(...)`), and make sure the worker "
            "imports the module defining it (`include=[...]`/`imports`/autodiscover).",
        risk="None. If another codebase's workers register that name (a separate service), the finding is a false "
             "positive: suppress it with `# celery-doctor: ignore[CD541]` on that line.",
    ),
)
def unknown_task_name(snapshot: Snapshot):
    proj = project_of(snapshot)
    config = snapshot.config
    if not config.tasks:
        return  # a producer-only app (or no app): names belong to other services' workers
    registered = set(config.registered)
    user_tasks = sorted(config.tasks)
    prefixes = {name.split(".")[0] for name in user_tasks}
    defined = {t.name: t for t in proj.tasks}
    for module, call, name in named_calls(proj):
        if name in registered:
            continue
        close = difflib.get_close_matches(name, user_tasks, n=1, cutoff=0.8)
        tail = name.split(".")[-1]
        same_tail = [n for n in user_tasks if n.split(".")[-1] == tail and n != name]
        local = defined.get(name)
        if not (name.split(".")[0] in prefixes or close or same_tail or local is not None):
            continue
        if same_tail and not close:
            close = same_tail[:1]
        evidence = [f"`{code(module, call, 80)}` at line {call.lineno} names {name!r}, which is not among the "
                    f"{plural(len(registered), 'task')} the app registers"]
        if close:
            evidence.append(f"closest registered name: {close[0]!r}")
        if local is not None:
            evidence.append(f"a task of that name is defined at {local.module.path}:{local.node.lineno}, but the app "
                            "does not import its module: workers will not know it either")
        evidence.append("the worker that receives it logs `Received unregistered task` and discards the message")
        yield unknown_task_name.finding(subject=f"task:{name}", evidence=evidence, confidence=Confidence.INFERRED,
                                        location=loc(module, call))


CHECKS = [periodic_without_expires, unknown_task_name]
