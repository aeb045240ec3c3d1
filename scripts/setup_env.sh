#!/usr/bin/env bash
# Create .venv and install marble-eval into it without ever pulling the CUDA torch on a CPU machine.
# Order matters: torch first (an installed one, else the local CPU wheel), then the package,
# whose torch requirement is then already satisfied.
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
  # The local CPU wheel (pip's find-links) is there if a no-index, no-deps dry run finds it;
  # its dependencies then come from the registry as usual.
  if "${PIP[@]}" install --dry-run --no-deps --no-index "torch==2.13.0" >/dev/null 2>&1; then
    "${PIP[@]}" install "torch==2.13.0" 2>&1 | { grep -v "is ignored" || true; }
    echo "setup: installed the local CPU wheel torch==2.13.0"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" install torch
  else
    echo "setup: no local torch wheel; installing the CPU build from the PyTorch index"
    "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# Pin the torch now installed while the package goes in: a dependency asking for another torch then fails
# the install instead of pip replacing the CPU build with the default (CUDA) one from the registry.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$VENV/bin/python" -c "import torch; print(f'torch=={torch.__version__}')" >"$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" -e ".[test,report]" 2>&1 | { grep -v "is ignored" || true; }
"$VENV/bin/python" -c "import marble_eval, torch, transformers, lightning; print(f'setup: marble-eval ready (torch {torch.__version__}, transformers {transformers.__version__})')"
