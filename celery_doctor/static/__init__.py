"""Reading a project's Celery configuration without importing it: the source is parsed, never executed.

- values: evaluating one expression (literals, arithmetic, names, environment lookups with their defaults,
  timedelta, crontab, Queue/Exchange);
- modules: a module's top-level names, evaluated in order (also across `from x import NAME` / `import *` within
  the project);
- apps: finding the Celery app(s) and the statements that configure them;
- tasks: the stand-in tasks registered with the options read from their decorators;
- periodic: beat entries added with add_periodic_task in the app's configure/finalize handlers;
- build: a bare Celery app (never the project's) configured with what was read, for collect_config;
- collect: the config part from it, with the project's locations and the settings that come from the environment;
- elsewhere: configuration not applied but named under Not checked (inside functions, in other modules);
- secrets: broker/backend URLs written with their password (CD173, and masking).
"""
from __future__ import annotations

from .build import StaticConfig, read_static_config

__all__ = ["StaticConfig", "read_static_config"]
