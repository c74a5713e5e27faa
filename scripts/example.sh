#!/usr/bin/env bash
# The main job: scan the bundled example shop (Redis broker, db 15) after putting realistic work on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/install.sh
.venv/bin/python -m examples.shop.seed >&2 || echo "(could not seed the example broker; scanning anyway)" >&2
exec .venv/bin/celery-doctor scan --app examples.shop --fail-on never "$@"
