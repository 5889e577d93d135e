#!/usr/bin/env bash
# A real user's first command on a CUDA machine (it runs on a CPU-only machine too):
#   1. installs the project (make install) and, where a GPU is present but torch has no CUDA, a
#      CUDA build of the same torch version from TORCH_INDEX_URL;
#   2. prints the devices torch sees;
#   3. runs the smallest real case, python -m tda.smoke (both papers' pipelines on real-format
#      files with a Hugging Face-format model; sample files and a tiny model are written when no
#      source is given, so no network is needed), and prints its JSON summary.
#
#   scripts/gpu_smoke.sh [tda.smoke options: --model NAME_OR_PATH --ftrace SRC --xsum SRC --nproc N ...]
#   make gpu-smoke SMOKE_ARGS="--model gpt2"
#
# Environment: SKIP_INSTALL=1 uses .venv as it is; TORCH_INDEX_URL is the wheel index of the CUDA
# build (default https://download.pytorch.org/whl/cu130); SMOKE_WORK the work folder (default
# .smoke); PYTHON the interpreter make install starts from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_cuda() { "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; }

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    make install ${PYTHON:+PYTHON=$PYTHON}
    if has_gpu && ! torch_cuda; then
        version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
        echo "gpu_smoke: a GPU is present but torch $version has no CUDA; installing its CUDA build from $TORCH_INDEX_URL"
        "$PY" -m pip uninstall --yes torch
        "$PY" -m pip install "torch==$version" --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple
    fi
fi
if [[ ! -x "$PY" ]]; then
    echo "gpu_smoke: $PY does not exist; run without SKIP_INSTALL=1 (or make install) first" >&2
    exit 1
fi
if has_gpu; then
    nvidia-smi -L
    if ! torch_cuda; then
        echo "gpu_smoke: nvidia-smi sees a GPU but torch cannot use it (driver too old for this CUDA build?);" \
             "set TORCH_INDEX_URL to the index of a build your driver supports, or run on the CPU with --device cpu" >&2
        exit 1
    fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available(), '| devices:', torch.cuda.device_count())"
exec "$PY" -m tda.smoke --work "${SMOKE_WORK:-.smoke}" --nproc 2 "$@"
