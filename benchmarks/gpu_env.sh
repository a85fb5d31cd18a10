# Sourced by gpu_suite.sh and gpu_session.sh: the interpreter, the output folder and an
# importable fastbert (an editable install; else the tree on PYTHONPATH, where the
# fastbert/kernels symlink finds the top-level kernels/).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python}
OUT=${1:-benchmarks/results/$(date +%F)-gpu}
mkdir -p "$OUT"
if ! "$PYTHON" -c "import fastbert.kernels, fastbert.bench" 2>/dev/null; then
    "$PYTHON" -m pip install --no-deps --no-build-isolation -q -e . || echo "!!! pip install -e . failed"
fi
if ! "$PYTHON" -c "import fastbert.kernels" 2>/dev/null; then
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
