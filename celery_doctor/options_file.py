"""`[tool.celery-doctor]` in pyproject.toml: the same options as the command line (celery_doctor/options.py);
unknown keys are errors."""
from __future__ import annotations

import os
from typing import Any, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


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
    """The options of [tool.celery-doctor] in `path`, by option name (celery_doctor.options), checked against
    the options table: an unknown key, a value of the wrong type or not among the choices is an error."""
    from .options import BY_KEY

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
    values: dict[str, Any] = {}
    for key, value in section.items():
        option = BY_KEY.get(key)
        if option is None:
            raise OptionsFileError(f"{path}: unknown key {key!r} in [tool.celery-doctor] "
                                   f"(known: {', '.join(sorted(BY_KEY))})")
        types, name = option.file_types()
        if isinstance(value, str) and option.type is list:
            value = [value]
        elif not isinstance(value, types) or (option.type is not bool and isinstance(value, bool)):
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be a {name}, not {type(value).__name__}")
        if option.type is list and not all(isinstance(item, str) for item in value):
            bad = next(item for item in value if not isinstance(item, str))
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be a list of strings, not of "
                                   f"{type(bad).__name__}")
        if option.choices and value not in option.choices:
            raise OptionsFileError(f"{path}: [tool.celery-doctor] {key} must be one of "
                                   f"{', '.join(option.choices)}, not {value!r}")
        values[option.name] = value
    return values
