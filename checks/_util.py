"""Small helpers shared by the built-in checks (wording of evidence, not logic)."""
from __future__ import annotations

from typing import Iterable, Optional

from celery_doctor.model import Location
from celery_doctor.parts.config import AppConfig


def preview(names: Iterable[str], limit: int = 6) -> str:
    names = sorted(set(names))
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def setting_line(config: AppConfig, name: str) -> str:
    return config.setting(name).describe()


def setting_location(config: AppConfig, *names: str) -> Optional[Location]:
    for name in names:
        location = config.located(name)
        if location:
            return location
    return None


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
