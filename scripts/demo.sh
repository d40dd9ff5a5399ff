#!/usr/bin/env bash
# One command from a fresh clone: set up, then run the built-in demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/stepsift demo "$@"
