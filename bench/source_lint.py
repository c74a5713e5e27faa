"""Benchmark: `celery-doctor lint` over a large tree of real Python: lines per second and peak memory.

    .venv/bin/python bench/source_lint.py [--lines 1000000] [--runs 3] [--tree DIR] [--static] [--baseline REV] [--keep]

The tree is built in a temporary directory from real files: the example shop (a Celery project) and the packages
installed in this virtualenv (celery, kombu, billiard, amqp, vine, redis, django, click, typer, rich, pytest, pip,
setuptools, ...), copied whole, in that order, until about --lines lines. `--tree DIR` lints DIR instead (for
example a checkout of a real Celery project).

Each run is the real CLI in a child process (`celery-doctor lint --app benchapp --source TREE --format json`, with a
bare app that sets only a broker URL; lint opens no connection). `--static` also runs `celery-doctor lint --source
TREE` without --app, which finds the example shop's app in the tree and reads its configuration statically. The
peak RSS is the child's own, read with wait4, and so is its CPU time. Prints the lines, files, seconds (wall, median
of --runs), lines/s, CPU seconds and peak RSS, the findings and the files listed under Not checked.

`--compare` also runs this checkout with every file parsed (CELERY_DOCTOR_SOURCE_PREFILTER=0: no prefilter, see
celery_doctor/pyast/prefilter.py) and compares the findings (check, location, subject, evidence): they must be
identical. `--baseline REV` also runs the code of git revision REV (exported with git archive into a temporary directory,
nothing in the checkout is touched) on the same tree (the figures before a change) and compares the findings (they differ
where other changes since REV changed checks).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["celery", "kombu", "billiard", "amqp", "vine", "redis", "django", "click", "typer", "rich", "_pytest",
            "pip", "setuptools", "pygments", "prompt_toolkit", "pydantic", "sqlparse", "dateutil", "hypothesis"]


def _lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return handle.read().count(b"\n")


def python_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(root) for f in files if f.endswith(".py")]


def build_tree(dest: Path, target_lines: int) -> None:
    """Copy the example shop, then whole installed packages, until about target_lines lines of Python."""
    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(ROOT / "examples" / "shop", dest / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    total = sum(_lines(p) for p in python_files(dest))
    for name in PACKAGES:
        if total >= target_lines:
            break
        source = site / name
        if not source.is_dir():
            continue
        shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        total += sum(_lines(p) for p in python_files(dest / name))


def run_lint(tree: Path, work: Path, pythonpath: str = "", prefilter: bool = True, static: bool = False) -> dict:
    """One lint run in a child process: wall and CPU seconds, the child's peak RSS (MB), the JSON report."""
    out_path = work / "report.json"
    env = dict(os.environ)
    env.pop("CELERY_BROKER_URL", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if not prefilter:
        env["CELERY_DOCTOR_SOURCE_PREFILTER"] = "0"
    (work / "benchapp.py").write_text('from celery import Celery\n\napp = Celery("bench", broker="redis://127.0.0.1:6379/0")\n')
    command = [sys.executable, "-m", "celery_doctor", "lint", *([] if static else ["--app", "benchapp"]),
               "--source", str(tree), "--format", "json", "--fail-on", "never", "--timeout", "3600"]
    started = time.perf_counter()
    with open(out_path, "w") as out, open(work / "stderr.txt", "w") as err:
        child = subprocess.Popen(command, cwd=work, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"celery-doctor lint failed: {(work / 'stderr.txt').read_text()[-2000:]}")
    return {"wall": elapsed, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024,
            "report": json.loads(out_path.read_text())}


def comparable(report: dict) -> list:
    return sorted(json.dumps([f["check"], f.get("location"), f.get("subject"), f.get("evidence")], sort_keys=True)
                  for f in report["findings"])


def export_revision(rev: str, dest: Path) -> str:
    """The code of `rev` in dest (git archive), importable with PYTHONPATH=dest; returns that path."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "celery_doctor" / "checks").symlink_to(dest / "checks")  # as the editable install maps it
    return str(dest)


def measure(label: str, tree: Path, work: Path, runs: int, lines: int, files: int, pythonpath: str = "",
            prefilter: bool = True, static: bool = False) -> dict:
    results = [run_lint(tree, work, pythonpath, prefilter, static) for _ in range(runs)]
    wall = statistics.median(r["wall"] for r in results)
    report = results[-1]["report"]
    skipped = [n for n in report.get("not_checked", []) if n.get("part") not in ("redis", "rabbitmq", "workers")]
    print(f"{label}: {lines} lines, {files} files, {wall:.2f} s (median of {runs}), {lines / wall:,.0f} lines/s, "
          f"CPU {statistics.median(r['cpu'] for r in results):.2f} s, peak RSS "
          f"{max(r['rss'] for r in results):.0f} MB, {len(report['findings'])} findings, "
          f"{len(skipped)} not checked", flush=True)
    return report


def _compare(label: str, before: dict, after: dict) -> None:
    old, new = comparable(before), comparable(after)
    print(f"findings identical to {label}: {old == new}", flush=True)
    for item in sorted(set(old) ^ set(new)):
        print(("  only there: " if item in old else "  only here: ") + item[:300])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", help="lint this directory instead of building one")
    parser.add_argument("--baseline", help="also run git revision REV on the tree and compare the findings")
    parser.add_argument("--baseline-runs", type=int, help="runs of the baseline (default --runs)")
    parser.add_argument("--compare", action="store_true", help="also run with every file parsed "
                        "(CELERY_DOCTOR_SOURCE_PREFILTER=0) and compare the findings: they must be identical")
    parser.add_argument("--static", action="store_true", help="also lint without --app: the configuration read "
                        "statically from the tree (the example shop's app)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="cd-source-bench-"))
    try:
        tree = Path(args.tree).resolve() if args.tree else temp / "tree"
        if not args.tree:
            build_tree(tree, args.lines)
        paths = python_files(tree)
        lines = sum(_lines(p) for p in paths)
        work = temp / "work"
        work.mkdir()
        report = measure("this checkout", tree, work, args.runs, lines, len(paths))
        if args.static:
            measure("this checkout, static (no --app)", tree, work, args.runs, lines, len(paths), static=True)
        if args.compare:
            unfiltered = measure("this checkout, every file parsed", tree, work, 1, lines, len(paths), prefilter=False)
            _compare("every file parsed", unfiltered, report)
        if args.baseline:
            old = export_revision(args.baseline, temp / "baseline")
            before = measure(f"revision {args.baseline}", tree, work, args.baseline_runs or args.runs, lines, len(paths),
                             old)
            _compare(f"revision {args.baseline}", before, report)
    finally:
        if args.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
