"""A quiet, deterministic, file-free lightning.Trainer for in-memory probe training."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

from marble_eval.lightning_utils import quiet_lightning


def deterministic_on(device: torch.device | str) -> bool:
    """Whether torch's deterministic algorithms can be on for a fit on ``device``: always on the CPU;
    on CUDA only when cuBLAS was given a fixed workspace (CUBLAS_WORKSPACE_CONFIG=:4096:8 or :16:8),
    without which deterministic mode makes every CUDA matmul raise."""
    if torch.device(device).type != "cuda":
        return True
    return os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")


@contextmanager
def quiet_fit(deterministic: bool = True) -> Iterator[None]:
    """Around a probe fit: Lightning quiet and (``deterministic``) torch's deterministic algorithms on
    (then restored)."""
    with quiet_lightning(deterministic=deterministic):
        yield


def make_trainer(max_epochs: int, callbacks: list[L.Callback] | None = None, validate: bool = True,
                 device: torch.device | str = "cpu") -> L.Trainer:
    """Trainer on ``device`` (cpu, cuda or cuda:N) without loggers, checkpoint files, progress bar or
    sanity validation."""
    where = torch.device(device)
    accelerator = "cuda" if where.type == "cuda" else "cpu"
    devices: list[int] | int = [where.index if where.index is not None else torch.cuda.current_device()] \
        if where.type == "cuda" else 1
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        deterministic=None,  # quiet_fit() turns deterministic algorithms on, and back off
        callbacks=callbacks or [],
    )
