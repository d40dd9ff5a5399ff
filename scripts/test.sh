#!/usr/bin/env bash
# One command from a fresh clone: set up, then lint and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The report's browser test (tests/test_report.py) renders the page in Debian's chromium.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium for the report's browser test (apt-get) ..."
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq chromium >/dev/null; }; then
            echo "warning: apt-get could not install chromium; tests/test_report.py will skip" \
                "(or fail under CI=true)" >&2
        fi
    else
        echo "note: /usr/bin/chromium is missing and this is not a root shell with apt-get;" \
            "install it (sudo apt-get install -y chromium) for the report's browser test," \
            "which skips without it (and fails under CI=true)" >&2
    fi
fi
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
