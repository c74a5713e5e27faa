"""The wheel holds every module of the engine and the built-in checks (as celery_doctor.checks), and no
top-level `checks` package: a module missing from pyproject's package list works in an editable install and
breaks in a real one."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_every_module_and_no_top_level_checks(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert "Warning" not in build.stderr and "deprecated" not in build.stderr, build.stderr
    [wheel] = tmp_path.glob("celery_doctor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "celery_doctor").rglob("*.py")
                if "__pycache__" not in p.parts}
    expected |= {"celery_doctor/checks/" + p.name for p in (ROOT / "checks").glob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith("checks/")], "the wheel claims a top-level 'checks' package"
