"""Reading a project's Celery configuration without importing it: the source is parsed, never executed.

- values: evaluating one expression (literals, arithmetic, names, environment lookups with their defaults,
  timedelta, crontab, Queue/Exchange);
- modules: a module's top-level names, evaluated in order (also across `from x import NAME` / `import *` within
  the project);
- apps: finding the Celery app(s) and the statements that configure them;
- tasks: the stand-in tasks registered with the options read from their decorators;
- build: a bare Celery app (never the project's) configured with what was read, for collect_config.
"""
from __future__ import annotations

from .build import StaticConfig, read_static_config

__all__ = ["StaticConfig", "read_static_config"]
