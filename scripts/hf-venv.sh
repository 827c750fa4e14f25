#!/usr/bin/env bash
# Makes (idempotently) the Python environment for the Hugging Face reference fixtures and
# benchmarks (tests/hf/): current torch (CPU), transformers, safetensors, numpy, tokenizers.
# It lives outside the repo at $HF_VENV (default /work/.venv-hf) and is never used by
# `make test` (that uses Debian's /usr/bin/python3 with numpy and torch 1.13, or no Python).
#   HF_VENV=/path scripts/hf-venv.sh      # then: $HF_VENV/bin/python tests/hf/make_fixtures.py
#   PYTHON=python3.12 scripts/hf-venv.sh  # the interpreter that makes the venv (default python3)
# torch: the CPU wheel from the PyTorch index when that index answers; otherwise PyPI's wheel.
set -euo pipefail
HF_VENV=${HF_VENV:-/work/.venv-hf}
PY=${PYTHON:-python3}
CPU_INDEX=https://download.pytorch.org/whl/cpu
pkgs=(transformers safetensors numpy tokenizers)

[ -x "$HF_VENV/bin/python" ] || "$PY" -m venv "$HF_VENV"
VPY="$HF_VENV/bin/python"
pip() { "$VPY" -m pip --disable-pip-version-check "$@"; }
have() { "$VPY" -c "import $1" >/dev/null 2>&1; }

if ! have torch; then
  if "$VPY" - "$CPU_INDEX" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)
PYEOF
  then
    echo "hf-venv: torch from the PyTorch CPU index"
    pip install -q torch --index-url "$CPU_INDEX"
  else
    # PyPI's x86_64 wheel is CUDA-enabled: `import torch` fails without its nvidia-*/cuda-*
    # dependencies (torch/__init__.py _load_global_deps), so they come along (~5 GB venv)
    echo "hf-venv: PyTorch CPU index unreachable; torch from PyPI (with its CUDA libraries)"
    pip install -q torch
  fi
fi
missing=()
for p in "${pkgs[@]}"; do have "$p" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || pip install -q "${missing[@]}"

"$VPY" - <<'PYEOF'
import sys, torch, transformers, safetensors, numpy, tokenizers
print("hf-venv: python", sys.version.split()[0], "at", sys.prefix)
for m in (torch, transformers, safetensors, numpy, tokenizers):
    print(f"  {m.__name__:13s} {m.__version__}")
PYEOF
