"""A bare Celery app configured with what the source says, for the same collect_config as `--app`.

The app is ours (`celery.Celery(main, set_as_current=False, fixups=[])`): nothing of the project is imported.
Every value given to it was evaluated statically (celery_doctor.static.values); config_from_object gets a dict,
never a module name, so Celery imports nothing. The steps are replayed in source order through Celery's own API,
so its rules (namespaces, old setting names, what wins over what) apply unchanged.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..model import Location
from ..parts.source import SourceTree
from .apps import FoundApp, Step, choose, django_settings_default, find_apps, steps_of, task_calls
from .elsewhere import configured_elsewhere, configured_in_functions
from .modules import Binding, Lazy, Modules, module_name, namespace_attribute, parsed, settle, settled
from .periodic import Periodic, periodic_calls
from .tasks import TASK_OPTIONS, register, stand_ins
from .values import Evaluator, Namespace, Opaque, Unresolved

# Celery() keywords that are settings (Celery sets them in the configuration); the others (loader, fixups,
# task_cls, amqp, ...) name classes Celery would import: they are not passed on.
APP_SETTING_KEYWORDS = {"broker": "broker_url", "backend": "result_backend", "include": "include"}


@dataclass
class StaticConfig:
    app: Any  # the bare celery.Celery, configured
    found: FoundApp
    others: list
    origin: Optional[str] = None  # absolute path of the file the settings come from
    setting_lines: dict = field(default_factory=dict)  # setting -> Location
    from_env: dict = field(default_factory=dict)  # setting -> ({variable: default used}, Location)
    task_locations: dict = field(default_factory=dict)  # task name -> Location
    not_checked: list = field(default_factory=list)  # (what, why)


def setting_name(key: str, prefix: Optional[str]) -> Optional[str]:
    """The Celery setting a name of a configuration source stands for (None: not a setting)."""
    from celery.app import defaults

    if not isinstance(key, str):
        return None
    if prefix:
        head = prefix.rstrip("_") + "_"
        if not key.startswith(head):
            return None
        key = key[len(head):].lower()
        return key if key in defaults.SETTING_KEYS else None
    if key in defaults.SETTING_KEYS:
        return key
    return defaults._TO_NEW_KEY.get(key)


class _Builder:
    def __init__(self, found: FoundApp, modules: Modules) -> None:
        self.found = found
        self.modules = modules
        self.names = modules.module(module_name(found.path))
        self.result = StaticConfig(app=None, found=found, others=[])
        self.prefix: Optional[str] = None

    def where(self, line: int) -> Location:
        return Location(self.found.path, line)

    def evaluate(self, node: ast.AST, what: str, line: int) -> tuple[bool, Any, dict]:
        evaluate = Evaluator(self.names.value if self.names else _unknown, namespace_attribute)
        try:
            return True, evaluate(node), dict(evaluate.env)
        except Unresolved as exc:
            self.result.not_checked.append((f"{what} ({self.where(line)})", f"not read statically: {exc}"))
            return False, None, {}

    def record(self, setting: str, location: Location, env: dict) -> None:
        self.result.setting_lines[setting] = location
        if env:
            self.result.from_env[setting] = (env, location)
        else:
            self.result.from_env.pop(setting, None)

    # ----- the app ---------------------------------------------------------------------------------------------
    def create(self) -> Any:
        from celery import Celery

        call = self.found.call
        main = None
        if call.args:
            ok, main, _ = self.evaluate(call.args[0], "the app's name", call.lineno)
        kwargs: dict = {}
        source = None
        for kw in call.keywords:
            if kw.arg == "config_source":
                source = kw.value
            elif kw.arg == "task_cls":
                self._task_cls(kw, kwargs)
            elif kw.arg == "namespace":
                ok, value, _ = self.evaluate(kw.value, "Celery(namespace=...)", kw.value.lineno)
                kwargs["namespace"] = value if ok and isinstance(value, str) else None
            else:
                self._app_keyword(kw, kwargs)
        self.prefix = kwargs.get("namespace")
        app = Celery(main if isinstance(main, str) else None, set_as_current=False, fixups=[], **kwargs)
        self.result.app = app
        if source is not None:
            self.config_from_object(Step("config_from_object", ast.Call(ast.Name("x"), [source], []), source.lineno))
        return app

    def _task_cls(self, kw: ast.keyword, kwargs: dict) -> None:
        """Celery(task_cls=ProjectTask): the class's task options (acks_late, time limits...) as class attributes of
        a Task subclass of ours, which Celery makes the base of every task (its methods are not read)."""
        from celery import Task

        ok, value, _ = self.evaluate(kw.value, "Celery(task_cls=...)", kw.value.lineno)
        if not ok:
            return
        if isinstance(value, str):  # 'proj.tasks:BaseTask', as Celery's symbol_by_name reads it
            value = self._module_or_attribute(value)
        if not isinstance(value, Namespace):
            self.result.not_checked.append((f"Celery(task_cls=...) ({self.where(kw.value.lineno)})",
                                            "not read statically: not a class of the source"))
            return
        attrs = {key: settle(v) for key, v in value.values.items() if key in TASK_OPTIONS}
        attrs = {key: v for key, v in attrs.items() if not isinstance(v, (Unresolved, Opaque))}
        kwargs["task_cls"] = type(value.label.split(" ")[-1], (Task,), attrs)

    def _app_keyword(self, kw: ast.keyword, kwargs: dict) -> None:
        from celery.app import defaults

        setting = APP_SETTING_KEYWORDS.get(kw.arg or "") or (kw.arg if kw.arg in defaults.SETTING_KEYS else None)
        if setting is None:
            if kw.arg not in ("set_as_current", "autofinalize", "strict_typing"):
                self.result.not_checked.append((f"Celery({kw.arg or '**'}=...) ({self.where(kw.value.lineno)})",
                                                "not read statically: not a setting"))
            return
        ok, value, env = self.evaluate(kw.value, f"Celery({kw.arg}=...)", kw.value.lineno)
        if ok:
            kwargs[kw.arg] = value
            self.record(setting, self.where(kw.value.lineno), env)

    # ----- steps -----------------------------------------------------------------------------------------------
    def run(self, steps: Optional[tuple] = None) -> None:
        for step in self.found.steps if steps is None else steps:
            getattr(self, step.kind)(step)

    def branch(self, step: Step) -> None:
        ok, test, _ = self.evaluate(step.node.test, "the condition of an `if` configuring the app", step.line)
        if ok:
            self.run(tuple(steps_of(step.node.body if test else step.node.orelse, self.found.variable)))

    def config_from_object(self, step: Step) -> None:
        call = step.node
        target = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "obj"), None)
        namespace = next((k.value for k in call.keywords if k.arg == "namespace"), None)
        prefix = None
        if namespace is not None:
            ok, prefix, _ = self.evaluate(namespace, "config_from_object(namespace=...)", step.line)
            if not ok:
                return
            prefix = prefix if isinstance(prefix, str) and prefix else None
        source = self._config_source(target, step.line) if target is not None else None
        if source is None:
            return
        django = isinstance(target, ast.Constant) and str(target.value).startswith("django.conf")
        values = self._settings(source, prefix or self.prefix, django)
        self.result.app.config_from_object(values, namespace=prefix)
        self.prefix = prefix or self.prefix
        if source.path:
            self.result.origin = os.path.abspath(source.path)

    def _config_source(self, target: ast.AST, line: int) -> Optional[Namespace]:
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            name = target.value
            if name.startswith("django.conf"):
                name = self.modules.django_settings or ""
                if not name:
                    self.result.not_checked.append((f"the Django settings ({self.where(line)})", "not read "
                                                    "statically: no DJANGO_SETTINGS_MODULE default in the source"))
                    return None
            found = self._module_or_attribute(name)
            if found is None:
                self.result.not_checked.append((f"the configuration {target.value!r} ({self.where(line)})",
                                                f"not read statically: module {name!r} not found in the source"))
            return found
        ok, value, _ = self.evaluate(target, "config_from_object(...)", line)
        if ok and not isinstance(value, (Namespace, dict)):
            self.result.not_checked.append((f"config_from_object(...) ({self.where(line)})",
                                            f"not read statically: a {type(value).__name__}"))
            return None
        return Namespace("a dict", value, self.found.path) if isinstance(value, dict) else value

    def _module_or_attribute(self, name: str) -> Optional[Namespace]:
        module, _, attr = name.partition(":")
        if not attr:
            found = self.modules.module(module)
            if found is not None:
                return found.as_namespace()
            module, _, attr = name.rpartition(".")
        found = self.modules.module(module)
        if found is None or attr not in found.names:
            return None
        value = settle(found.names[attr].value)
        return value if isinstance(value, Namespace) else None

    def _settings(self, source: Namespace, prefix: Optional[str], django: bool) -> dict:
        """The resolved values of a configuration source (the Django settings object shows upper-case names only);
        the settings that could not be read are listed as not checked."""
        values = {}
        for key, value in source.values.items():
            setting = setting_name(key, prefix)
            if setting is None or (django and not key.isupper()):
                continue  # Celery reads only its settings (and Django's settings object shows upper-case names)
            path, line = source.lines.get(key, (source.path, None))
            if isinstance(value, Lazy):
                imported = settled(Binding(value, line or 0))
                value, env = imported.value, imported.env
                path, line = (imported.path, imported.line) if imported.path else (path, line)
            else:
                env = source.env.get(key, {})
            location = Location(path, line) if path else self.where(0)
            if isinstance(value, (Unresolved, Opaque)):
                why = value if isinstance(value, Unresolved) else f"it is {value.what}"
                self.result.not_checked.append((f"{key} ({location})", f"not read statically: {why}"))
                continue
            values[key] = value
            self.record(setting, location, env)
        return values

    def update(self, step: Step) -> None:
        call = step.node
        values: dict = {}
        items: list = []
        whole = [*call.args, *(kw.value for kw in call.keywords if kw.arg is None)]  # update(d), update(**d)
        for arg in whole:
            if isinstance(arg, ast.Dict) and all(k is not None for k in arg.keys):
                items += list(zip(arg.keys, arg.values))
            else:
                ok, value, env = self.evaluate(arg, "conf.update(...)", step.line)
                if ok and isinstance(value, dict):
                    values.update(value)
                    for key in value:
                        self._note_key(key, step.line, env)
                elif ok:
                    self.result.not_checked.append((f"conf.update(...) ({self.where(step.line)})",
                                                    f"not read statically: a {type(value).__name__}, not a dict"))
        items += [(ast.Constant(kw.arg, lineno=kw.value.lineno), kw.value) for kw in call.keywords if kw.arg]
        for key_node, value_node in items:
            ok, key, _ = self.evaluate(key_node, "a key of conf.update(...)", step.line)
            if not ok:
                continue
            ok, value, env = self.evaluate(value_node, f"{key} in conf.update(...)", getattr(key_node, "lineno", step.line))
            if ok:
                values[key] = value
                self._note_key(key, getattr(key_node, "lineno", step.line), env)
        if values:
            self.result.app.conf.update(values)

    def _note_key(self, key: Any, line: int, env: dict) -> None:
        setting = setting_name(key, None) or setting_name(key, self.prefix)
        if setting:
            self.record(setting, self.where(line), env)

    def set(self, step: Step) -> None:
        ok, value, env = self.evaluate(step.node, f"conf.{step.key}", step.line)
        if ok:
            self.result.app.conf.update({step.key: value})
            self._note_key(step.key, step.line, env)

    def set_item(self, step: Step) -> None:
        ok, key, _ = self.evaluate(step.item, f"conf.{step.key}[...]", step.line)
        ok2, value, _ = self.evaluate(step.node, f"conf.{step.key}[{key!r}]", step.line) if ok else (False, None, {})
        current = self.result.app.conf.get(step.key) if ok2 else None
        if isinstance(current, dict):
            current[key] = value  # in place, as the project's code does (Celery deep-copies its defaults)
            self.result.setting_lines.setdefault(step.key, self.where(step.line))
        elif ok2:
            self.result.not_checked.append((f"conf.{step.key}[{key!r}] ({self.where(step.line)})",
                                            f"not read statically: conf.{step.key} is not a dict here"))

    def item_update(self, step: Step) -> None:
        ok, value, _ = self.evaluate(step.node.args[0], f"conf.{step.key}.update(...)", step.line) \
            if step.node.args else (False, None, {})
        current = self.result.app.conf.get(step.key) if ok else None
        if isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
            self.result.setting_lines.setdefault(step.key, self.where(step.line))


def _periodic(builder: _Builder, tasks: list) -> None:
    """Beat entries the app's configure/finalize handlers add with add_periodic_task (celery_doctor.static.periodic)."""
    calls = periodic_calls(builder.found)
    if not calls:
        return
    names: dict = {}
    for stand_in in tasks:
        names.setdefault(stand_in.label, []).append(stand_in.name)
    periodic = Periodic(builder.result.app, builder.evaluate, names, builder.found.path, builder.result.not_checked)
    for call in calls:
        location = periodic.add(call)
        if location is not None:
            builder.result.setting_lines.setdefault("beat_schedule", location)


def _unknown(name: str) -> Any:
    raise Unresolved(f"{name}: the app's module could not be read")


def read_static_config(tree: Optional[SourceTree], cwd: Optional[str] = None) -> Optional[StaticConfig]:
    """The Celery app of the source, configured statically (None when the source creates no app)."""
    found, others = choose(find_apps(tree))
    if found is None:
        return None
    modules = Modules(tree, os.path.abspath(cwd or os.getcwd()))
    modules.django_settings = (os.environ.get("DJANGO_SETTINGS_MODULE") or found.django_settings
                               or django_settings_default(tree))
    builder = _Builder(found, modules)
    app = builder.create()
    builder.run()
    result = builder.result
    result.others = others
    if result.origin is None:
        result.origin = os.path.abspath(found.path)
    elsewhere = frozenset(o.variable for o in others if o.path == found.path)
    tasks, notes = stand_ins(tree, modules, elsewhere)
    result.not_checked += notes
    for listed in (tree.files if tree else ()):
        source = parsed(tree, listed) if ".task(" in listed.text or "shared_task(" in listed.text else None
        if source is not None:
            result.not_checked += [(f"a task registered by calling the decorator ({source.path}:{call.lineno})",
                                    "not read statically: only decorated functions are read as tasks")
                                   for call in task_calls(source.tree)]
    result.task_locations = register(app, tasks)
    _periodic(builder, tasks)
    result.not_checked += configured_in_functions(found) + configured_elsewhere(found, tree, modules)
    for other in others:
        result.not_checked.append((f"the Celery app {other.variable} ({other.path}:{other.line})",
                                   f"not linted: the source creates several apps, this run read {found.variable} "
                                   f"({found.path}:{found.line}); give --source or --app to choose"))
    return result
