#!/usr/bin/env bash
# Create .venv (if missing) and install celery-doctor with its test extras, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# set-up chatter goes to stderr: `example.sh --format json > report.json` must stay pure JSON
# setuptools says "Editable installation ... folders with the same name as your package" (InformationOnly, which
# pip 24+ shows as a BuildBackendWarning) for every editable install whose packages are not one plain tree: ours
# maps checks/ to celery_doctor.checks on purpose (a real install ships no top-level `checks`; tests/test_packaging.py).
# Nothing to act on, so that one message is filtered by its text; every other warning still shows.
PYTHONWARNINGS="ignore:Editable installation" \
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" >&2 || true
.venv/bin/python -c "import celery_doctor.checks" # the install must provide celery_doctor.checks
