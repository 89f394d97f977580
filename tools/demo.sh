#!/usr/bin/env bash
# The README demo: a traced request through two WSGI services, shown by the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/venv.sh
exec .venv/bin/python tools/demo.py "$@"
