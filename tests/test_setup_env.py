"""scripts/setup_env.sh picks the torch build for the machine (run against a stub python and nvidia-smi)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "setup_env.sh"

STUB_PYTHON = """#!/usr/bin/env bash
# Records every pip call (with PIP_FIND_LINKS); torch imports once a pip install named torch ran.
state="$(dirname "$0")/.."
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip ${*:3} | find-links=${PIP_FIND_LINKS:-}" >>"$state/pip.log"
  case " $* " in *" --dry-run "*) [ -n "${LOCAL_WHEEL:-}" ]; exit $?;; esac
  case "$*" in *torch*) touch "$state/torch";; esac
  exit 0
fi
if [ "$1" = "-c" ]; then
  case "$2" in
    *"print(f'torch=="*) echo "torch==2.13.0";;
    *"torch.version.cuda"*) [ -n "${CUDA_TORCH:-}" ]; exit $?;;
    *"import torch"*) [ -f "$state/torch" ]; exit $?;;
  esac
  exit 0
fi
exit 0
"""


def run_setup(tmp_path: Path, gpu: bool, local_wheel: bool) -> tuple[str, list[str]]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    if gpu:
        smi = tools / "nvidia-smi"
        smi.write_text("#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H100 (UUID: GPU-0)'\n")
        smi.chmod(0o755)
    env = {**os.environ, "VENV": str(venv), "PATH": f"{tools}:/usr/bin:/bin", "CUDA_TORCH": "1" if gpu else "",
           "LOCAL_WHEEL": "1" if local_wheel else "", "PIP_FIND_LINKS": "/opt/wheels"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout, (venv / "pip.log").read_text().splitlines()


def installs(log: list[str]) -> list[str]:
    return [line for line in log if " install " in line and "--dry-run" not in line]


@pytest.mark.parametrize("local_wheel", [True, False])
def test_a_gpu_machine_gets_the_cuda_build_never_the_local_cpu_wheel(tmp_path, local_wheel) -> None:
    out, log = run_setup(tmp_path, gpu=True, local_wheel=local_wheel)
    torch_install = installs(log)[0]
    assert "install numpy torch " in torch_install and "2.13.0" not in torch_install and "whl/cpu" not in torch_install
    assert "find-links=/opt/wheels" not in torch_install  # the local wheel folder is out of sight
    assert not any("--dry-run" in line for line in log) and "CUDA build" in out


def test_a_cpu_machine_keeps_the_local_cpu_wheel_with_numpy_in_the_same_command(tmp_path) -> None:
    out, log = run_setup(tmp_path, gpu=False, local_wheel=True)
    assert "install numpy torch==2.13.0" in installs(log)[0] and "local CPU wheel" in out
