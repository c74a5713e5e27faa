"""Reading Celery settings as the installed version sees them: effective value, default, and how it was set."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

# kombu's Redis transport default; Celery's docs: "The default visibility timeout for Redis is 1 hour."
REDIS_DEFAULT_VISIBILITY_TIMEOUT = 3600
# RabbitMQ's consumer_timeout default since 3.8.17 (milliseconds in rabbitmq.conf).
RABBITMQ_DEFAULT_CONSUMER_TIMEOUT = 1800


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    explicit: bool  # set by the app (under this name or an old uppercase one), not the default
    set_as: Optional[str] = None  # the old uppercase name it was set under, if any
    known: bool = True  # False when the installed Celery has no such setting

    def describe(self) -> str:
        how = f"set as {self.set_as}" if self.set_as else ("set" if self.explicit else "default")
        if not self.known:
            how = "not in the installed Celery"
        return f"{self.name}={self.value!r} ({how})"


def read_setting(conf: Any, name: str) -> Setting:
    """The effective value of `name` in a celery Settings object, and whether the app set it."""
    from celery.app import defaults

    known = name in defaults.SETTING_KEYS or name in conf
    old_name = defaults._TO_OLD_KEY.get(name)
    explicit_maps = conf.maps[:-1] if hasattr(conf, "maps") else [conf]
    set_as = None
    explicit = False
    for mapping in explicit_maps:
        if name in mapping:
            explicit = True
            break
        if old_name and old_name in mapping:
            explicit, set_as = True, old_name
            break
    try:
        value = conf.get(name)
    except Exception:  # noqa: BLE001 - a lazy Django settings object can raise anything on access
        value = None
    return Setting(name=name, value=value, explicit=explicit, set_as=set_as, known=known)


def as_seconds(value: Any) -> Optional[float]:
    """A duration setting (number, timedelta) in seconds, or None."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "none"
    seconds = float(seconds)
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds / 86400:g} d" if seconds % 86400 == 0 else f"{seconds / 3600:g} h"
    if seconds >= 3600 and seconds % 60 == 0:
        return f"{seconds / 3600:g} h" if seconds % 3600 == 0 else f"{seconds / 60:g} min"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
