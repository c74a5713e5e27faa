#!/usr/bin/env bash
# The test command: set everything up on a fresh machine (services, venv, package), then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/install.sh
.venv/bin/ruff check --quiet .  # the lint rules are in pyproject.toml ([tool.ruff])
export CELERY_DOCTOR_RAISE_CHECK_ERRORS=1
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"  # rabbitmqctl, for the tests that create RabbitMQ users
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
