"""A quiet, deterministic, file-free lightning.Trainer for in-memory probe training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L

from marble_eval.lightning_utils import quiet_lightning


@contextmanager
def quiet_fit() -> Iterator[None]:
    """Around a probe fit: Lightning quiet and torch's deterministic algorithms on (then restored)."""
    with quiet_lightning(deterministic=True):
        yield


def make_trainer(max_epochs: int, callbacks: list[L.Callback] | None = None, validate: bool = True) -> L.Trainer:
    """CPU trainer without loggers, checkpoint files, progress bar or sanity validation."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
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
