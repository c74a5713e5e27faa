"""Discovering checks: built-ins and plugins alike come from the `celery_doctor.checks` entry points."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Iterable, Optional, Sequence

from .masking import scrub
from .model import BUILTIN_PREFIX, Check

ENTRY_POINT_GROUP = "celery_doctor.checks"
BUILTIN_MODULE_PREFIX = "celery_doctor.checks"


@dataclass(frozen=True)
class LoadError:
    plugin: str  # "distribution[entry]"
    message: str


@dataclass
class Registry:
    checks: list[Check] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)

    def get(self, check_id: str) -> Optional[Check]:
        wanted = check_id.upper()
        for check in self.checks:
            if check.id == wanted or check.slug == check_id.lower():
                return check
        return None


def _entry_points() -> list[EntryPoint]:
    found = entry_points(group=ENTRY_POINT_GROUP)
    unique = {}
    for ep in found:
        unique.setdefault((ep.name, ep.value), ep)
    return sorted(unique.values(), key=lambda ep: (not ep.value.startswith(BUILTIN_MODULE_PREFIX), ep.name))


def _label(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    dist_name = getattr(dist, "name", None) or ep.value.split(":")[0].split(".")[0]
    return f"{dist_name}[{ep.name}]"


def _as_checks(obj: object) -> list[Check]:
    if isinstance(obj, Check):
        return [obj]
    if callable(obj) and not isinstance(obj, type):
        obj = obj()
        if isinstance(obj, Check):
            return [obj]
    if isinstance(obj, Iterable):
        items = list(obj)
        bad = [i for i in items if not isinstance(i, Check)]
        if bad:
            raise TypeError(f"expected Check objects, got {type(bad[0]).__name__}")
        return items
    raise TypeError(f"expected a Check or a list of Checks, got {type(obj).__name__}")


def load_registry(eps: Optional[Sequence[EntryPoint]] = None) -> Registry:
    registry = Registry()
    seen: dict[str, str] = {}
    for ep in eps if eps is not None else _entry_points():
        label = _label(ep)
        builtin = ep.value.startswith(BUILTIN_MODULE_PREFIX)
        try:
            loaded = _as_checks(ep.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin is an entry in the report
            registry.errors.append(LoadError(label, scrub(f"{type(exc).__name__}: {exc}")))
            continue
        for check in loaded:
            if not builtin and check.id.startswith(BUILTIN_PREFIX):
                registry.errors.append(LoadError(label, f"check {check.id}: the {BUILTIN_PREFIX} prefix is reserved for built-in checks"))
                continue
            if check.id in seen:
                registry.errors.append(LoadError(label, f"check {check.id} is already provided by {seen[check.id]}"))
                continue
            seen[check.id] = label
            registry.checks.append(check)
    registry.checks.sort(key=lambda c: c.id)
    return registry


def selected(check_id: str, select: Sequence[str], ignore: Sequence[str]) -> bool:
    """--select/--ignore by id prefix; the longer matching prefix wins (ruff's rule)."""
    best_select = max((len(p) for p in select if check_id.startswith(p.upper())), default=-1 if select else 0)
    best_ignore = max((len(p) for p in ignore if check_id.startswith(p.upper())), default=-1)
    if best_select < 0:
        return False
    return best_ignore < best_select or best_ignore < 0
