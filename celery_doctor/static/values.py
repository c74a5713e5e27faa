"""Evaluating one expression of the project's source, statically: what the value would be, or why it cannot be
known without running the code.

Only our code runs: literals, containers, arithmetic, names already bound (the caller's lookup), environment
lookups with the default the source writes (the variable itself is not read: the report says the value comes
from the environment), and a few constructors built here from parsed literals (timedelta, crontab, schedule,
Queue, Exchange, the plain types).
"""
from __future__ import annotations

import ast
import datetime as dt
import operator
from typing import Any, Callable, Optional

MAX_SIZE = 100_000  # a string or container built by arithmetic larger than this is not evaluated
ENV_READERS = {"get", "getenv", "setdefault"}  # os.environ.get, os.getenv, os.environ.setdefault
ENV_TYPED = {"str", "int", "bool", "float", "list", "tuple", "dict", "json", "url", "db_url", "cache_url",
             "path", "decimal", "bytes", "timedelta", "db", "cache", "email_url", "email", "search_url"}


class Unresolved(Exception):
    """The value cannot be known statically; the message says why (one line)."""


class Opaque:
    """A name bound to something we do not model (an imported module, a function): reading it is Unresolved."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


class Namespace:
    """Attributes read from a class body or a module, for config_from_object(obj) (Celery reads them with getattr)."""

    def __init__(self, label: str, values: dict, path: Optional[str] = None, lines: Optional[dict] = None,
                 env: Optional[dict] = None) -> None:
        self.label = label
        self.values = values
        self.path = path  # the file it is written in, as shown in reports
        self.lines = lines or {}  # name -> (path, line)
        self.env = env or {}  # name -> {environment variable: the default used}

    def __repr__(self) -> str:
        return f"<{self.label}>"


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}
_PLAIN_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "str": str,
                "int": int, "float": float, "bool": bool}
_STR_METHODS = {"format", "upper", "lower", "strip", "rstrip", "lstrip", "split", "replace", "join", "startswith",
                "endswith", "rsplit"}


def _sized(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict, set)) and len(value) > MAX_SIZE:
        raise Unresolved("a value too large to evaluate statically")
    return value


def dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


class Evaluator:
    """Evaluates expressions of one module. `lookup(name)` gives a name's value (or raises Unresolved);
    `attribute(value, attr)` reads an attribute of a value the lookup returned (modules, classes of the project).
    The environment variables read are collected in `env` (name -> the default used)."""

    def __init__(self, lookup: Callable[[str], Any],
                 attribute: Optional[Callable[[Any, str], Any]] = None) -> None:
        self.lookup = lookup
        self.attribute = attribute
        self.env: dict[str, Any] = {}
        self.depth = 0

    def __call__(self, node: Optional[ast.AST]) -> Any:
        if node is None:
            return None
        self.depth += 1
        try:
            if self.depth > 60:
                raise Unresolved("an expression nested too deeply")
            method = getattr(self, "_" + node.__class__.__name__, None)
            if method is None:
                raise Unresolved(f"a {node.__class__.__name__} expression")
            return _sized(method(node))
        finally:
            self.depth -= 1

    # ----- literals and containers ----------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _items(self, elts: list) -> list:
        out: list = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                out.extend(self(elt.value))
            else:
                out.append(self(elt))
        return out

    def _List(self, node: ast.List) -> Any:
        return self._items(node.elts)

    def _Tuple(self, node: ast.Tuple) -> Any:
        return tuple(self._items(node.elts))

    def _Set(self, node: ast.Set) -> Any:
        return set(self._items(node.elts))

    def _Dict(self, node: ast.Dict) -> Any:
        out: dict = {}
        for key, value in zip(node.keys, node.values):
            if key is None:
                merged = self(value)
                if not isinstance(merged, dict):
                    raise Unresolved("a ** of something that is not a dict")
                out.update(merged)
            else:
                out[self(key)] = self(value)
        return out

    def _JoinedStr(self, node: ast.JoinedStr) -> Any:
        out = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.format_spec is not None:
                    raise Unresolved("an f-string with a format spec")
                value = self(part.value)
                out.append(repr(value) if part.conversion == ord("r") else str(value))
            else:
                out.append(str(self(part)))
        return "".join(out)

    # ----- operators ------------------------------------------------------------------------------------------
    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise Unresolved("an operator not evaluated statically")
        left, right = self(node.left), self(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
            raise Unresolved("a power too large to evaluate statically")
        if isinstance(node.op, ast.Mult) and ((isinstance(left, int) and len_of(right) * left > MAX_SIZE)
                                              or (isinstance(right, int) and len_of(left) * right > MAX_SIZE)):
            raise Unresolved("a value too large to evaluate statically")
        try:
            return op(left, right)
        except Exception as exc:  # noqa: BLE001 - the code would raise too: not a value we can use
            raise Unresolved(f"an expression that fails ({type(exc).__name__})") from None

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self(node.operand)
        try:
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.UAdd):
                return +value
            if isinstance(node.op, ast.Not):
                return not value
        except TypeError:
            pass
        raise Unresolved("a unary operator not evaluated statically")

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        value = None
        for operand in node.values:
            value = self(operand)
            if isinstance(node.op, ast.Or) and value:
                return value
            if isinstance(node.op, ast.And) and not value:
                return value
        return value

    def _Compare(self, node: ast.Compare) -> Any:
        left = self(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            right = self(comparator)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except Exception:  # noqa: BLE001
                raise Unresolved("a comparison that fails") from None
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self(node.body) if self(node.test) else self(node.orelse)

    # ----- names, attributes, subscripts ----------------------------------------------------------------------
    def _Name(self, node: ast.Name) -> Any:
        value = self.lookup(node.id)
        if isinstance(value, Opaque):
            raise Unresolved(f"{node.id} is {value.what}")
        return value

    def _Attribute(self, node: ast.Attribute) -> Any:
        if dotted(node) in ("os.environ", "environ"):
            raise Unresolved("the environment (os.environ), read as a whole")
        base = node.value
        value = self.lookup(base.id) if isinstance(base, ast.Name) else self(base)
        if self.attribute is not None:
            return self.attribute(value, node.attr)
        raise Unresolved(f"the attribute {dotted(node) or node.attr}")

    def _Subscript(self, node: ast.Subscript) -> Any:
        if dotted(node.value) in ("os.environ", "environ"):
            key = self(node.slice)
            raise Unresolved(f"the environment variable {key} (os.environ[...], no default in the source)")
        value, key = self(node.value), self(node.slice)
        try:
            return value[key]
        except Exception:  # noqa: BLE001
            raise Unresolved("a subscript that fails") from None

    def _Slice(self, node: ast.Slice) -> Any:
        return slice(self(node.lower), self(node.upper), self(node.step))

    # ----- calls ----------------------------------------------------------------------------------------------
    def _Call(self, node: ast.Call) -> Any:
        name = dotted(node.func)
        last = name.split(".")[-1] if name else (node.func.attr if isinstance(node.func, ast.Attribute) else "")
        for handler in (self._env_call, self._constructor_call, self._method_call):
            found, value = handler(node, name, last)
            if found:
                return value
        raise Unresolved(f"a call to {name or last or 'an expression'}()")

    def _env_call(self, node: ast.Call, name: str, last: str) -> tuple[bool, Any]:
        if name in ("os.environ.get", "environ.get", "os.getenv", "getenv", "os.environ.setdefault",
                    "environ.setdefault"):
            return True, self._env_get(node, default_index=1, default_kw="default")
        head = name.split(".")[0] if name else ""
        if name == "env" or (head == "env" and last in ENV_TYPED and name.count(".") == 1):
            index = 2 if name == "env" and len(node.args) > 2 else 1
            return True, self._env_get(node, default_index=index, default_kw="default")
        if name in ("config", "decouple.config"):
            return True, self._decouple(node)
        return False, None

    def _env_get(self, node: ast.Call, default_index: int, default_kw: str) -> Any:
        if not node.args:
            raise Unresolved("an environment lookup without a variable name")
        variable = self(node.args[0])
        default_node = node.args[default_index] if len(node.args) > default_index else None
        for kw in node.keywords:
            if kw.arg == default_kw:
                default_node = kw.value
        default = self(default_node) if default_node is not None else None
        if default_node is None and not dotted(node.func).endswith(("get", "getenv")):
            raise Unresolved(f"the environment variable {variable} (no default in the source)")
        self.env[str(variable)] = default
        return default

    def _decouple(self, node: ast.Call) -> Any:
        if not node.args:
            raise Unresolved("config() without a variable name")
        variable = self(node.args[0])
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        if "default" not in keywords:
            raise Unresolved(f"the setting {variable} read by config() (no default in the source)")
        value = self(keywords["default"])
        cast = dotted(keywords["cast"]) if "cast" in keywords else ""
        if cast == "bool" and isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on", "y", "t")
        elif cast in ("int", "float", "str", "bool"):
            try:
                value = _PLAIN_TYPES[cast](value)
            except (TypeError, ValueError):
                raise Unresolved(f"config({variable!r}) with a default its cast cannot convert") from None
        elif cast:
            raise Unresolved(f"config({variable!r}) with cast={cast}")
        self.env[str(variable)] = value
        return value

    def _args(self, node: ast.Call) -> tuple[list, dict]:
        args = self._items(node.args)
        kwargs: dict = {}
        for kw in node.keywords:
            if kw.arg is None:
                extra = self(kw.value)
                if not isinstance(extra, dict):
                    raise Unresolved("a ** of something that is not a dict")
                kwargs.update(extra)
            else:
                kwargs[kw.arg] = self(kw.value)
        return args, kwargs

    def _constructor_call(self, node: ast.Call, name: str, last: str) -> tuple[bool, Any]:
        build = _constructor(name, last)
        if build is None:
            return False, None
        args, kwargs = self._args(node)
        try:
            return True, build(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the project's code would fail too
            raise Unresolved(f"{last}(...) with arguments it refuses ({type(exc).__name__})") from None

    def _method_call(self, node: ast.Call, name: str, last: str) -> tuple[bool, Any]:
        if not isinstance(node.func, ast.Attribute) or last not in _STR_METHODS | {"total_seconds", "copy", "get"}:
            return False, None
        receiver = self(node.func.value)
        if (isinstance(receiver, str) and last in _STR_METHODS) or (last == "total_seconds" \
                and isinstance(receiver, dt.timedelta)) or (last in ("copy", "get") and isinstance(receiver, dict)):
            args, kwargs = self._args(node)
            try:
                return True, getattr(receiver, last)(*args, **kwargs)
            except Exception:  # noqa: BLE001
                raise Unresolved(f"a call to .{last}() that fails") from None
        return False, None


def len_of(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _constructor(name: str, last: str) -> Optional[Callable[..., Any]]:
    """The constructor our code runs for a call to `name` (None: not one we build)."""
    if name in _PLAIN_TYPES:
        return _PLAIN_TYPES[name]
    if last == "timedelta" and name in ("timedelta", "datetime.timedelta", "dt.timedelta"):
        return dt.timedelta
    if last in ("crontab", "schedule", "solar") and name.split(".")[0] in (last, "celery", "schedules"):
        from celery import schedules

        return getattr(schedules, last)
    if last in ("Queue", "Exchange", "Broadcast") and name.split(".")[0] in (last, "kombu", "common"):
        import kombu
        from kombu import common

        return getattr(kombu, last, None) or getattr(common, last)
    return None
