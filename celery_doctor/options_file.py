"""`[tool.celery-doctor]` in pyproject.toml: the same options as the command line; unknown keys are errors."""
from __future__ import annotations

import os
from typing import Any, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ALLOWED = {
    "app": str, "broker": str, "source": list, "select": list, "ignore": list, "fail-on": str,
    "format": str, "output": list, "timeout": (int, float), "deep": bool, "max-messages": int,
    "management-url": str, "consumer-timeout": (int, float),
}


CHOICES = {"format": ("text", "json", "sarif", "markdown"), "fail-on": ("high", "medium", "low", "never")}


class OptionsFileError(Exception):
    pass


def find_pyproject(start: Optional[str] = None) -> Optional[str]:
    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def load_options(path: Optional[str]) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OptionsFileError(f"{path}: cannot read: {exc}") from None
    section = data.get("tool", {}).get("celery-doctor", {})
    if not isinstance(section, dict):
        raise OptionsFileError(f"{path}: [tool.celery-doctor] must be a table")
    for key, value in section.items():
        if key not in ALLOWED:
            raise OptionsFileError(f"{path}: unknown key {key!r} in [tool.celery-doctor] "
                                   f"(known: {', '.join(sorted(ALLOWED))})")
        expected = ALLOWED[key]
        if isinstance(value, str) and expected is list:
            section[key] = [value]
        elif not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            name = expected.__name__ if isinstance(expected, type) else "number"
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be a {name}, not {type(value).__name__}")
        if expected is list and not all(isinstance(item, str) for item in section[key]):
            bad = next(item for item in section[key] if not isinstance(item, str))
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be a list of strings, not of "
                                   f"{type(bad).__name__}")
        if key in CHOICES and section[key] not in CHOICES[key]:
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be one of "
                                   f"{', '.join(CHOICES[key])}, not {section[key]!r}")
    return section
