"""Source checks about lock-based de-duplication: locks that expire while the task still runs, and locks released
by a run that never acquired them."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import Module, Project, Task, keyword, last_name, receiver, walk_scope
from celery_doctor.settings import human_seconds

from .source_common import code, loc, project_of, soft_time_limit, task_subject, time_limit

DJANGO_CACHE_DEFAULT_TIMEOUT = 300.0
NOT_LOCKS = {"threading", "multiprocessing", "asyncio", "fcntl"}


@dataclass(frozen=True)
class Acquire:
    module: Module
    call: ast.Call
    kind: str  # "SET NX", "SETNX", "cache.add", "lock"
    key: Optional[ast.expr]
    expiry: Optional[float]  # seconds; None: never expires (or not a literal)
    expiry_note: str = ""
    deletable: bool = True  # released by deleting the key (no ownership check)

    @property
    def key_dump(self) -> str:
        return ast.dump(self.key) if self.key is not None else ""


def _true(node: Optional[ast.AST]) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def acquisitions(proj: Project, module: Module, body: list) -> list[Acquire]:
    """Lock acquisitions written in one scope: Redis SET NX EX/PX, SETNX(+EXPIRE), cache.add, redis-py lock()."""
    found = []
    nodes = list(walk_scope(body))
    for call in nodes:
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        key = call.args[0] if call.args else keyword(call, "name") or keyword(call, "key")
        acquire = _acquire(proj, module, call, key, nodes)
        if acquire is not None:
            found.append(acquire)
    return found


def _acquire(proj: Project, module: Module, call: ast.Call, key: Optional[ast.expr], nodes: list) -> Optional[Acquire]:
    method = call.func.attr
    recv = receiver(call)
    if method == "set" and _true(keyword(call, "nx")):
        return _set_nx(proj, module, call, key)
    if method == "setnx":
        return _setnx(proj, module, call, key, nodes)
    if method == "add" and "cache" in recv.split(".")[-1].lower():
        return _cache_add(proj, module, call, key)
    if method == "lock" and recv and recv.split(".")[0] not in NOT_LOCKS:
        timeout = keyword(call, "timeout") or (call.args[1] if len(call.args) > 1 else None)
        return Acquire(module, call, "lock", key, proj.seconds(module, timeout) if timeout is not None else None,
                       deletable=False)
    return None


def _setnx(proj: Project, module: Module, call: ast.Call, key: Optional[ast.expr], nodes: list) -> Acquire:
    """`SETNX key value`, with the expiry of an `EXPIRE key seconds` in the same scope."""
    expire = next((n for n in nodes if isinstance(n, ast.Call) and last_name(n) == "expire"
                   and len(n.args) >= 2 and ast.dump(n.args[0]) == ast.dump(key)), None) if key is not None else None
    return Acquire(module, call, "SETNX", key, proj.seconds(module, expire.args[1]) if expire is not None else None)


def _cache_add(proj: Project, module: Module, call: ast.Call, key: Optional[ast.expr]) -> Acquire:
    """Django's `cache.add(key, value, timeout)`: without a timeout, the cache's default."""
    timeout = call.args[2] if len(call.args) > 2 else keyword(call, "timeout")
    if timeout is None:
        return Acquire(module, call, "cache.add", key, DJANGO_CACHE_DEFAULT_TIMEOUT,
                       " (Django's default cache TIMEOUT, unless CACHES sets another)")
    return Acquire(module, call, "cache.add", key, proj.seconds(module, timeout))


def _set_nx(proj: Project, module: Module, call: ast.Call, key: Optional[ast.expr]) -> Acquire:
    """`SET key value NX [EX seconds | PX milliseconds]`."""
    ex, px = keyword(call, "ex"), keyword(call, "px")
    expiry = proj.seconds(module, ex) if ex is not None else None
    if px is not None:
        ms = proj.seconds(module, px)
        expiry = ms / 1000.0 if ms is not None else None
    return Acquire(module, call, "SET NX" + (" EX" if ex is not None else " PX" if px is not None else ""), key, expiry)


def _released(acquire: Acquire, body: list) -> bool:
    """Whether the scope deletes the key it set: a lock, as opposed to a throttle key left to expire."""
    if not acquire.deletable:
        return True
    dump = acquire.key_dump
    return bool(dump) and any(isinstance(n, ast.Call) and last_name(n) in ("delete", "unlink") and n.args
                              and ast.dump(n.args[0]) == dump for n in walk_scope(body))


def locks(proj: Project, module: Module, body: list) -> list[Acquire]:
    """Acquisitions that are released again in the same scope (de-duplication locks)."""
    return [a for a in acquisitions(proj, module, body) if _released(a, body)]


def task_acquisitions(proj: Project, task: Task) -> list[Acquire]:
    """Locks taken in the task body, and in helpers of this tree the body calls (one level deep)."""
    found = locks(proj, task.module, task.body)
    seen = set()
    for node in walk_scope(task.body):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        name = node.func.id
        if name in seen:
            continue
        seen.add(name)
        helper = proj.function(name, task.module)
        if helper and helper[1] is not task.node and not proj.task_for(*helper):
            found += locks(proj, helper[0], helper[1].body)
    return found


def _renews(task: Task) -> bool:
    return any(isinstance(n, ast.Call) and last_name(n) in ("extend", "reacquire", "expire", "touch")
               for n in walk_scope(task.body))


@check(
    id="CD530",
    slug="lock-expires-before-task-ends",
    title="A de-duplication lock expires before the task can finish: two runs at once",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="A task that must run once at a time (an import, a sync, a payout) occasionally runs twice "
                "concurrently, with duplicated rows or double side effects, usually when it is slow.",
        why="The lock (Redis `SET key v NX EX n`, `cache.add(key, v, n)`, `redis.lock(name, timeout=n)`) expires "
            "after n seconds whether or not the task finished. If the task may run longer (its time_limit is above "
            "n, or it has none), a second run acquires the expired lock while the first still works; with Redis "
            "redeliveries (visibility_timeout) or retries this is exactly when duplicates arrive.",
        confirm="Compare the lock's expiry with the task's `time_limit` (`celery -A proj inspect active` shows how "
                "long runs take); `redis-cli TTL <lock key>` while the task runs.",
        fix="Make the lock outlive the task: set the task's `time_limit` below the lock expiry (and `soft_time_limit` "
            "below that), or extend the lock while working (`lock.extend()` / a heartbeat).",
        risk="A longer expiry keeps the lock held longer after a crashed worker (SIGKILL skips the release), delaying "
             "the next run by up to the expiry; a shorter time_limit kills runs that used to finish.",
        references=("https://docs.celeryq.dev/en/stable/tutorials/task-cookbook.html#ensuring-a-task-is-only-executed-one-at-a-time",),
    ),
)
def lock_expires_early(snapshot: Snapshot):
    proj = project_of(snapshot)
    for task in proj.tasks:
        acquired = [a for a in task_acquisitions(proj, task) if a.expiry is not None and a.expiry > 0]
        if not acquired or _renews(task):
            continue
        limit, limit_text = time_limit(snapshot, proj, task)
        for acquire in acquired:
            expiry_text = f"{human_seconds(acquire.expiry)}{acquire.expiry_note}"
            where = f"`{code(acquire.module, acquire.call, 70)}` at {acquire.module.path}:{acquire.call.lineno}"
            if limit is not None:
                if limit <= acquire.expiry:
                    continue
                evidence = [f"{where} locks for {expiry_text}; task {task.name} may run up to {limit_text}",
                            "after the lock expires a second run acquires it while the first still works: two runs "
                            "at once"]
                confidence = Confidence.CONFIGURED
            else:
                soft = soft_time_limit(snapshot, proj, task)
                if soft is not None and soft <= acquire.expiry:
                    continue
                evidence = [f"{where} locks for {expiry_text}; task {task.name} has no time_limit, so nothing stops "
                            "it from outliving the lock",
                            "a run slower than the expiry lets the next run acquire the lock while it still works: "
                            "two runs at once"]
                confidence = Confidence.INFERRED
            yield lock_expires_early.finding(
                subject=task_subject(snapshot, task), evidence=evidence, confidence=confidence,
                fix=f"Give {task.name} a `time_limit` below {human_seconds(acquire.expiry)} (and a soft_time_limit "
                    "below that), or raise the lock's expiry above the task's time_limit.",
                location=loc(acquire.module, acquire.call))
            break


def _guarded_releases(finalbody: list) -> tuple[list[ast.Call], list[ast.Call]]:
    """(unguarded, guarded) key deletions in a finally block; guarded ones sit under an `if` or an `and`."""
    unguarded, guarded = [], []
    for stmt in finalbody:
        conditional = isinstance(stmt, ast.If) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.BoolOp))
        for node in walk_scope(stmt):
            if isinstance(node, ast.Call) and last_name(node) in ("delete", "unlink") and node.args:
                (guarded if conditional else unguarded).append(node)
    return unguarded, guarded


def _exits(statements: list) -> bool:
    return any(isinstance(s, (ast.Return, ast.Raise, ast.Continue, ast.Break)) for s in statements)


def _acquire_var(func_body: list, call: ast.Call) -> str:
    for node in walk_scope(func_body):
        if isinstance(node, (ast.Assign, ast.NamedExpr, ast.AnnAssign)) and node.value is call:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    return target.id
    return ""


def _checked_before(func_body: list, try_node: ast.Try, call: ast.Call, var: str) -> bool:
    """Whether the not-acquired path leaves before the try (or the try runs only when acquired)."""
    for node in walk_scope(func_body):
        if not isinstance(node, ast.If):
            continue
        test_mentions = any(n is call for n in ast.walk(node.test)) or (
            var and any(isinstance(n, ast.Name) and n.id == var for n in ast.walk(node.test)))
        if not test_mentions:
            continue
        contains_try = any(n is try_node for n in ast.walk(node))
        if contains_try:
            return True
        if node.lineno < try_node.lineno and (_exits(node.body) or _exits(node.orelse)):
            return True
    return False


@check(
    id="CD531",
    slug="lock-released-when-not-acquired",
    title="A lock is released in finally even when this run never acquired it",
    category=Category.TASK_CODE,
    needs=("source",),
    runbook=Runbook(
        symptom="The run-once lock does not hold: a task meant to run one at a time runs two or three copies at once "
                "whenever it is triggered while already running.",
        why="The release (`cache.delete(key)` / `redis.delete(key)`) is in a `finally` that also runs when the "
            "acquire failed because another run holds the lock. That run's lock is deleted, so the next trigger "
            "acquires it and runs concurrently with the first.",
        confirm="`redis-cli MONITOR` (briefly, on a test instance) shows `DEL <lock key>` from a run whose `SET ... NX` "
                "returned nil; or log acquire results.",
        fix="Release only what you acquired: `if not acquired: return` before the `try:`, or `if acquired: "
            "cache.delete(key)` in the finally; better, store a token and delete only if it still matches "
            "(redis-py `Lock` does this).",
        risk="None for correctness; a run that crashes still leaves the lock until it expires.",
        references=("https://docs.celeryq.dev/en/stable/tutorials/task-cookbook.html#ensuring-a-task-is-only-executed-one-at-a-time",),
    ),
)
def lock_released_when_not_acquired(snapshot: Snapshot):
    proj = project_of(snapshot)
    for module in proj.modules_mentioning("nx=", "setnx", ".add("):
        if "delete" not in module.file.text and "unlink" not in module.file.text:
            continue
        for func in (s.func for s in proj.scopes(module) if s.func is not None):
            acquired = [a for a in acquisitions(proj, module, func.body) if a.deletable and a.key is not None]
            if not acquired:
                continue
            for try_node in walk_scope(func.body):
                if not isinstance(try_node, ast.Try) or not try_node.finalbody:
                    continue
                found = _release_without_acquire(func, try_node, acquired)
                if found is None:
                    continue
                release, match, inside = found
                task = proj.task_for(module, func)
                subject = task_subject(snapshot, task) if task else f"file:{module.path}"
                placement = ("inside the try" if inside else "before the try, and the try runs whether or not "
                             "it succeeded")
                yield lock_released_when_not_acquired.finding(
                    subject=subject,
                    evidence=[f"`{code(module, release, 60)}` at line {release.lineno} in `finally` runs even when "
                              f"`{code(module, match.call, 60)}` (line {match.call.lineno}, {placement}) did not "
                              "acquire the lock",
                              "a run that finds the lock taken deletes the holder's lock: the next run starts while "
                              "the first still works"],
                    fix="Release only when acquired: return early when the acquire fails (before `try:`), or guard "
                        "the delete with `if acquired:`.",
                    location=loc(module, release))


def _release_without_acquire(func: ast.AST, try_node: ast.Try, acquired: list[Acquire]):
    """The first unguarded release in the try's finally of a lock that this run may not hold:
    (release, its acquisition, whether the acquisition is inside the try), or None."""
    unguarded, _ = _guarded_releases(try_node.finalbody)
    for release in unguarded:
        dump = ast.dump(release.args[0])
        match = next((a for a in acquired if a.key_dump == dump), None)
        if match is None:
            continue
        inside = any(n is match.call for n in walk_scope(try_node.body))
        if not inside:
            if match.call.lineno > try_node.lineno:
                continue
            var = _acquire_var(func.body, match.call)
            if _checked_before(func.body, try_node, match.call, var):
                continue
        return release, match, inside
    return None


CHECKS = [lock_expires_early, lock_released_when_not_acquired]
