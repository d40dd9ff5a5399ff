#!/usr/bin/env bash
# Set up stepsift in ./.venv: PyTorch first, then the package with its dev extras.
# torch is pinned here, not in pyproject.toml, so that GPU users can bring their own
# build: set TORCH_SPEC (e.g. TORCH_SPEC="torch" or a CUDA wheel) or TORCH_SPEC=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "$TORCH_SPEC" != "skip" ]; then
    .venv/bin/python -m pip install --quiet "$TORCH_SPEC"
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
