#!/usr/bin/env bash
# Create .venv and install marble-eval into it without ever pulling the CUDA torch on a CPU machine.
# Order matters: torch first (an installed one; else on a machine where nvidia-smi sees a GPU the CUDA build;
# else the local CPU wheel, else the CPU build), together with numpy, then the package, whose torch requirement
# is then already satisfied.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "setup: reusing the torch already installed for $PYTHON"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # numpy goes in with torch (same command): torch built without it warns "Failed to initialize NumPy".
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # A GPU machine gets the CUDA build from the registry, never the local CPU wheel.
    echo "setup: nvidia-smi sees a GPU; installing the CUDA build of torch"
    # pip's find-links (where a local CPU wheel lives) pointed at an empty folder for this one install
    NO_WHEELS=$(mktemp -d)
    PIP_FIND_LINKS="$NO_WHEELS" "${PIP[@]}" install numpy torch 2>&1 | { grep -v "is ignored" || true; }
    rmdir "$NO_WHEELS"
  elif "${PIP[@]}" install --dry-run --no-deps --no-index "torch==2.13.0" >/dev/null 2>&1; then
    # The local CPU wheel (pip's find-links) is there if a no-index, no-deps dry run finds it;
    # its dependencies then come from the registry as usual.
    "${PIP[@]}" install numpy "torch==2.13.0" 2>&1 | { grep -v "is ignored" || true; }
    echo "setup: installed the local CPU wheel torch==2.13.0"
  else
    echo "setup: no local torch wheel; installing the CPU build from the PyTorch index"
    "${PIP[@]}" install numpy
    "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && \
   ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
  echo "setup: warning: this machine has a GPU but $VENV's torch is a CPU build; remove $VENV and rerun" >&2
fi
# Pin the torch now installed while the package goes in: a dependency asking for another torch then fails
# the install instead of pip replacing the CPU build with the default (CUDA) one from the registry.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$VENV/bin/python" -c "import torch; print(f'torch=={torch.__version__}')" >"$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" -e ".[test,report]" 2>&1 | { grep -v "is ignored" || true; }
"$VENV/bin/python" -c "import marble_eval, torch, transformers, lightning; print(f'setup: marble-eval ready (torch {torch.__version__}, transformers {transformers.__version__})')"
