"""Where the probe grid trains: the default device and a one-line error for one this machine lacks."""

from __future__ import annotations

import torch

from marble_eval.errors import MarbleEvalError


def default_device() -> torch.device:
    """``cuda`` (the current CUDA device) when torch sees a GPU, else ``cpu`` (the reference)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def probe_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device the grid trains on: ``device`` (cpu, cuda or cuda:N) checked against this
    machine, or ``default_device()`` when None; one line naming the fix otherwise."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise MarbleEvalError(f"--device {device}: not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise MarbleEvalError(f"--device {device}: CUDA is not available on this machine (no GPU or a CPU-only "
                                  f"torch); use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise MarbleEvalError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type != "cpu":
        raise MarbleEvalError(f"--device {device}: the probe grid runs on cpu or cuda; use one of them")
    return parsed
