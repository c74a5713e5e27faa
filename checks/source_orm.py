"""Source check about ORM model instances passed as task arguments."""
from __future__ import annotations

import ast
from typing import Optional

from celery_doctor.model import Category, Confidence, Runbook, Snapshot, check
from celery_doctor.pyast import (
    FuncNode,
    Module,
    Project,
    all_nodes,
    assigned_from,
    call_name,
    dotted_name,
    keyword,
    last_name,
    nodes_of,
    receiver,
    scope_body,
    walk_scope,
)

from .source_common import code, loc, overriding_class, project_of, published_task, task_class_chain
from .source_db import is_db_session, publish_subject

MODEL_BASES = {"Base", "DeclarativeBase", "AbstractUser", "AbstractBaseUser", "PermissionsMixin"}
MODEL_LINEAGE = frozenset(MODEL_BASES | {"Model"})  # the last part of every base _is_model accepts
ORM_GETTERS = {"get", "first", "last", "latest", "earliest", "create", "get_or_create", "update_or_create", "one",
               "one_or_none", "first_or_404", "get_or_404", "scalar_one", "scalar_one_or_none", "save"}


class Orm:
    """What in this tree looks like an ORM model instance."""

    def __init__(self, proj: Project):
        self.proj = proj
        self.models: set[str] = set()
        for module in proj.modules:
            for node in proj.definitions(module):
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
                found = self.proj.cls(last, module) if last in self.proj.lineage.derived(MODEL_LINEAGE, True) else None
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
        by_name = self._fetch_by_name(name)
        if by_name is not None:
            return by_name
        return self._fetch_by_session_or_query(expr, name.split(".")[-1])

    def _fetch_by_name(self, name: str) -> Optional[bool]:
        """What the call's dotted name alone tells (None: it does not tell)."""
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
        return None

    def _fetch_by_session_or_query(self, expr: ast.Call, last: str) -> bool:
        """`session.get(Model, id)` / `session.merge(...)`, or a `session.query(Model)...` chain."""
        if is_db_session(receiver(expr)) and last in ("get", "merge") and expr.args:
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
        symptom="`kombu.exceptions.EncodeError: Object of type Order is not JSON serializable` when publishing; the "
                "task never runs.",
        why="Task arguments are serialized into the message (kombu/serialization.py `dumps` wraps the encoder's "
            "error in EncodeError). With the json (default), msgpack or yaml serializer a model instance cannot be "
            "encoded, so the publish raises and the task is never sent. Not reported when the publish cannot fail "
            "that way: under pickle (the worker gets a copy of the row, which can be stale, but the task is sent), "
            "a custom serializer, a model with `__json__` or registered with `kombu.utils.json.register_type`, or "
            "a task class of the project that overrides `apply_async`/`delay`/`signature` (it may convert).",
        confirm="`celery-doctor lint --select CD514`; producer logs for `EncodeError ... is not JSON serializable`.",
        fix="Pass the primary key (`order.pk`) and load the row inside the task "
            "(`Order.objects.get(pk=order_id)` / `session.get(Order, order_id)`).",
        risk="The task must handle the row having been deleted in between (`DoesNotExist`).",
        references=("https://docs.celeryq.dev/en/stable/userguide/tasks.html#state",),
    ),
)
def orm_instance_argument(snapshot: Snapshot):
    proj = project_of(snapshot)
    if proj.modules_mentioning("register_type(") and _registers_model_type(proj):
        return  # kombu.utils.json.register_type(Model, ...): the json serializer encodes models itself
    orm = Orm(proj)
    if _models_encode_themselves(proj, orm):
        return  # a model with __json__: kombu's JSONEncoder.default calls it (kombu/utils/json.py)
    config = snapshot.config
    # the app's setting when it sets one; else what the source sets (Django settings the static reader or the
    # loaded app may not have seen), else Celery's default json
    explicit = config is not None and config.setting("task_serializer").explicit
    serializer = (str(config.value("task_serializer")), "task_serializer") if explicit else source_serializer(proj)
    for module in proj.modules_mentioning(".delay(", "apply_async", "send_task", ".s(", ".si(", "signature("):
        model_methods = _model_methods(module, orm)
        for scope in proj.scopes(module):
            func = scope.func
            calls = [n for n in scope.calls() if isinstance(n.func, ast.Attribute) and n.func.attr in TASK_CALLS]
            if not calls:
                continue
            instances = _instances(func, orm) if func is not None else {}
            params = _instance_parameters(func, model_methods)
            for call in calls:
                used, converter = _call_serializer(proj, call, serializer)
                if converter or used[0] not in ENCODE_ERROR_SERIALIZERS:
                    continue  # pickle sends a copy, a custom serializer or Task class may convert: no task lost
                why = next(filter(None, (_passes_instance(module, value, instances, params, orm)
                                         for value in _task_arguments(call))), "")
                if why:
                    yield orm_instance_argument.finding(
                        subject=publish_subject(proj, snapshot, module, call),
                        evidence=[f"`{code(module, call, 80)}` at line {call.lineno} passes {why}",
                                  _serializer_effect(used)],
                        confidence=Confidence.INFERRED, location=loc(module, call))


# kombu's json, msgpack and yaml (safe_dump) encoders raise on a model instance (kombu/serialization.py dumps ->
# EncodeError); pickle encodes it, and a custom serializer may.
ENCODE_ERROR_SERIALIZERS = ("json", "application/json", "msgpack", "yaml")
SERIALIZER_SETTINGS = ("task_serializer", "CELERY_TASK_SERIALIZER", "CELERY_SERIALIZER")
CONVERTING_METHODS = {"apply_async", "delay", "signature", "s", "si"}


def _literal_string(proj: Project, module: Module, node: Optional[ast.AST]) -> Optional[str]:
    value = proj.constant(module, node) if node is not None else None
    return value if isinstance(value, str) else None


def source_serializer(proj: Project) -> tuple[str, str]:
    """The task serializer the source sets (Django `CELERY_TASK_SERIALIZER = ...`, `app.conf.task_serializer = ...`,
    `conf.update(task_serializer=...)`, `Celery(task_serializer=...)`), and where; json (Celery's default) when it
    sets none. A non-literal value (read from the environment) counts by its literal `default=` if it has one."""
    found: list[tuple[str, str]] = []
    for module in proj.modules_mentioning(*SERIALIZER_SETTINGS):
        for node in all_nodes(module.tree):
            pairs: list[tuple[str, ast.AST]] = []
            if isinstance(node, ast.Assign):
                pairs = [(dotted_name(t).split(".")[-1], node.value) for t in node.targets]
            elif isinstance(node, ast.Call):
                pairs = [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
            for name, value in pairs:
                if name not in SERIALIZER_SETTINGS:
                    continue
                literal = _literal_string(proj, module, value)
                if literal is None and isinstance(value, ast.Call):
                    literal = _literal_string(proj, module, keyword(value, "default"))
                if literal is not None:
                    found.append((literal, f"{name} in {module.path}:{node.lineno}"))
    other = next((f for f in found if f[0] not in ENCODE_ERROR_SERIALIZERS), None)
    return other or (found[0] if found else ("json", "Celery's default task_serializer"))


def _registers_model_type(proj: Project) -> bool:
    """`register_type(<a model class or Model>, ...)` (kombu.utils.json): models are encoded by the serializer."""
    for module in proj.modules_mentioning("register_type("):
        for node in nodes_of(module.tree, ast.Call):
            if last_name(node) == "register_type" and node.args and \
                    "model" in dotted_name(node.args[0]).lower():
                return True
    return False


def _models_encode_themselves(proj: Project, orm: Orm) -> bool:
    for module in proj.modules_mentioning("__json__"):
        for node in nodes_of(module.tree, ast.ClassDef):
            if node.name in orm.models and any(
                    isinstance(s, FuncNode) and s.name == "__json__" for s in node.body):
                return True
    return False


def _call_serializer(proj: Project, call: ast.Call, serializer: tuple[str, str]) -> tuple[tuple[str, str], bool]:
    """The serializer the publish uses (its serializer=, the task's serializer= option, else the app's), and
    whether the published task's class (base=, or the app's task_cls) overrides the publish: it may convert."""
    task = published_task(proj, call)
    module = task.module if task is not None else None
    given = _literal_string(proj, module, keyword(call, "serializer")) if module is not None else None
    if given is None and isinstance(keyword(call, "serializer"), ast.Constant):
        given = str(keyword(call, "serializer").value)
    chain = task_class_chain(proj, task)
    # an override that only defers the publish to transaction.on_commit (addons-server's AMOTask) converts nothing
    converter = overriding_class(chain, CONVERTING_METHODS) is not None and \
        overriding_class(chain, CONVERTING_METHODS, calling="on_commit") is None
    if given is not None:
        return (given, "the call's serializer="), converter
    option = _literal_string(proj, task.module, task.option("serializer")) if task is not None else None
    return ((option, f"serializer= of task {task.name}") if option else serializer), converter


def _model_methods(module: Module, orm: Orm) -> set[int]:
    """Ids of the methods of the module's model classes (their `self` is a model instance)."""
    methods: set[int] = set()
    for node in orm.proj.definitions(module):
        if isinstance(node, ast.ClassDef) and node.name in orm.models:
            methods |= {id(s) for s in node.body if isinstance(s, FuncNode)}
    return methods


def _instance_parameters(func: Optional[ast.AST], model_methods: set[int]) -> set[str]:
    """Parameters that hold a model instance: `self` of a model method, `instance` of a Django signal receiver."""
    params: set[str] = set()
    if func is None:
        return params
    arg_names = [a.arg for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs]
    if id(func) in model_methods and arg_names[:1] == ["self"]:
        params.add("self")
    if "instance" in arg_names and "sender" in arg_names:
        params.add("instance")  # a Django post_save/pre_delete receiver
    return params


def _passes_instance(module: Module, value: ast.expr, instances: dict[str, int], params: set[str], orm: Orm) -> str:
    """Why a task argument is a model instance ('' when it is not known to be one)."""
    if isinstance(value, ast.Name) and value.id in instances:
        return f"`{value.id}`, a model instance (bound at line {instances[value.id]})"
    if isinstance(value, ast.Name) and value.id in params:
        return ("`self`, the model instance itself" if value.id == "self"
                else "`instance`, the model instance the signal was sent for")
    if orm.single(value):
        return f"`{code(module, value, 50)}`, which returns a model instance"
    if dotted_name(value).endswith("request.user"):
        return f"`{dotted_name(value)}`, the user model instance"
    return ""


def _serializer_effect(serializer: tuple[str, str]) -> str:
    name, where = serializer
    return (f"with the {name} serializer ({where}) the publish raises EncodeError (not serializable): the task is "
            "never sent")


CHECKS = [orm_instance_argument]
