"""Torch devices: the one check of a device name against this machine, and the default accelerator."""

from __future__ import annotations

import torch

from marble_eval.errors import MarbleEvalError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def default_device() -> torch.device:
    """``cuda`` (the current CUDA device) when torch sees a GPU, else ``cpu`` (the reference)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(device: str | torch.device, types: tuple[str, ...] = DEVICE_TYPES,
                 what: str = "marble-eval") -> torch.device:
    """The torch device for ``device`` (one of ``types``), or one line saying why this machine cannot run on it."""
    names = ", ".join(f"{kind}, {kind}:N" if kind == "cuda" else kind for kind in types)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MarbleEvalError(f"--device {device}: not a device; use {names}") from None
    if parsed.type not in types:
        raise MarbleEvalError(f"--device {device}: {what} runs on {names}; use one of them")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise MarbleEvalError(f"--device {device}: CUDA is not available on this machine (no GPU or a CPU-only "
                                  f"torch); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise MarbleEvalError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                  f"cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise MarbleEvalError(f"--device {device}: MPS (Apple GPU) is not available on this machine; use --device cpu")
    return parsed


def probe_device(device: str | torch.device | None = None) -> torch.device:
    """The device the probe grid trains on: ``device`` (cpu, cuda or cuda:N) checked, or ``default_device()``."""
    return default_device() if device is None else check_device(device, ("cpu", "cuda"), "the probe grid")
