"""The config part of a static run: collect_config over the bare app, with the project's locations put back
(settings and tasks point at the project's files, not at ours) and what came from the environment."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from ..collectors.config import _setting_lines, collect_config
from ..model import Finding
from ..parts.config import AppConfig
from .build import StaticConfig


def collect_static_config(static: StaticConfig, broker: Any = None) -> AppConfig:
    config = collect_config(static.app, broker)
    tasks = {name: dataclasses.replace(info, location=static.task_locations.get(name, info.location))
             for name, info in config.tasks.items()}
    lines = dict(_setting_lines(static.origin, config.settings))
    lines.update(static.setting_lines)
    return dataclasses.replace(config, tasks=tasks, config_origin=static.origin,
                               app_module_file=os.path.abspath(static.found.path), setting_lines=lines)


def env_note(static: StaticConfig, finding: Finding) -> Optional[str]:
    """The evidence line saying that a finding's setting comes from the environment (None: it does not)."""
    if finding.location is None:
        return None
    for setting, (variables, location) in sorted(static.from_env.items()):
        if location.path == finding.location.path and location.line == finding.location.line:
            names = ", ".join(f"${v}" for v in sorted(variables))
            return (f"{setting} comes from the environment ({names}): read statically, the default written in the "
                    "source was used; the deployed value may differ")
    return None


def with_env_notes(static: Optional[StaticConfig], findings: list) -> list:
    if static is None or not static.from_env:
        return findings
    out = []
    for finding in findings:
        note = env_note(static, finding)
        out.append(dataclasses.replace(finding, evidence=(*finding.evidence, note)) if note else finding)
    return out


def describe(static: StaticConfig) -> str:
    """One line for the report's header: where the configuration was read, and what came from the environment."""
    app = static.found
    text = f"config read statically, nothing imported: {app.variable} = Celery(...) at {app.path}:{app.line}"
    if static.origin and os.path.abspath(app.path) != static.origin:
        rel = os.path.relpath(static.origin)
        text += f", settings {static.origin if rel.startswith('..') else rel}"
    if static.from_env:
        names = ", ".join(f"{s} (${'/$'.join(sorted(v))})" for s, (v, _) in sorted(static.from_env.items()))
        text += f"; from the environment, defaults in the source used: {names}"
    return text
