"""Where a configuration runs: eager mode and test settings, which make broker and acknowledgement findings
conditional, and what the project's own code does that makes generic advice concrete (it revokes tasks).

- Eager mode: with `task_always_eager`, `Task.apply_async` calls `self.apply(...)` and returns an EagerResult
  (celery/app/task.py, Task.apply_async): the task runs in the caller's process and nothing is published, so no
  acknowledgement, prefetch, visibility timeout or queue is involved. `app.send_task` ignores the setting (it warns
  `AlwaysEagerIgnored` and publishes: celery/app/base.py, Celery.send_task), so a finding on the broker still holds
  for tasks sent by name.
- Test settings: a configuration module named like a test module (test.py, testing.py, test_settings.py,
  settings_test.py, conftest.py, or a module in a tests/ directory or one below it) is not what production runs.
"""
from __future__ import annotations

import ast
import os
from typing import TYPE_CHECKING, Optional

from ..model import Location

if TYPE_CHECKING:
    from ..parts.config import AppConfig
    from ..parts.source import SourceTree

TEST_STEMS = frozenset({"test", "tests", "testing", "test_settings", "settings_test", "settings_tests",
                        "settings_testing", "testing_settings", "tests_settings", "conftest", "test_config",
                        "config_test", "testconfig", "test_celeryconfig", "celeryconfig_test"})
TEST_DIRS = frozenset({"test", "tests", "testing"})
REVOKE_METHODS = frozenset({"revoke", "revoke_by_stamped_headers", "terminate"})


def eager_reason(config: "AppConfig") -> Optional[str]:
    """Why tasks of this configuration do not go through the broker, or None: task_always_eager is true."""
    value = config.value("task_always_eager")
    if value is True or (isinstance(value, int) and not isinstance(value, bool) and value):
        return ("task_always_eager=True: apply_async/delay run the task in the caller's process and publish nothing "
                "(only send_task still publishes)")
    return None


def test_settings_reason(config: "AppConfig") -> Optional[str]:
    """Why this configuration looks like test settings, or None: the module it came from is named as a test module."""
    origin = config.config_origin
    if not origin:
        return None
    path = origin.replace("\\", "/")
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    # only the folders just above the module: a checkout under ~/test/ or /builds/testing/ is not test settings
    folders = {part.lower() for part in path.split("/")[-3:-1]}
    if stem in TEST_STEMS or stem.startswith("test_") or stem.endswith(("_test", "_tests")):
        return f"the settings come from {os.path.basename(path)}, a test settings module"
    hit = sorted(folders & TEST_DIRS)
    if hit:
        return f"the settings come from {os.path.basename(path)} in a {hit[0]}/ directory: test settings"
    return None


def not_production_reason(config: "AppConfig") -> Optional[str]:
    """Why this configuration is not a production one (eager mode or test settings), or None."""
    return eager_reason(config) or test_settings_reason(config)


def revoke_calls(tree: Optional["SourceTree"]) -> list[Location]:
    """Where the project's code revokes tasks: `.revoke(...)` on a result or `app.control`, `revoke_by_stamped_headers`,
    or `control.terminate(...)`. Empty when there is no source."""
    from ..pyast import last_name, project
    from ..pyast.lazy import nodes_of

    proj = project(tree)
    if proj is None:
        return []
    found = []
    for module in proj.modules_mentioning("revoke", "terminate("):
        for node in nodes_of(module.tree, ast.Call):
            if isinstance(node.func, ast.Attribute) and last_name(node) in REVOKE_METHODS:
                if last_name(node) == "terminate" and "control" not in ast.unparse(node.func.value):
                    continue  # process.terminate() and friends: not Celery's remote control
                found.append(Location(module.path, node.lineno))
    return found
