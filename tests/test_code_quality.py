"""The code stays readable: no function in the engine or the checks above cyclomatic complexity 20 (radon), no
check module over 500 lines (split by topic). ruff runs in the test command itself (scripts/test.sh)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_COMPLEXITY = 20
MAX_CHECK_MODULE_LINES = 500


def _sources():
    return sorted([*(ROOT / "celery_doctor").rglob("*.py"), *(ROOT / "checks").glob("*.py")])


def test_no_function_above_complexity_20():
    radon = pytest.importorskip("radon.complexity")
    over = []
    for path in _sources():
        for block in radon.cc_visit(path.read_text(encoding="utf-8")):
            if block.complexity > MAX_COMPLEXITY:
                over.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname} ({block.complexity})")
    assert not over, "split these into named steps:\n" + "\n".join(over)


def test_check_modules_stay_small():
    big = [f"{p.name} ({n} lines)" for p in (ROOT / "checks").glob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_CHECK_MODULE_LINES]
    assert not big, f"split by topic: {big}"
