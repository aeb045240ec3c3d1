"""A quiet, deterministic, file-free lightning.Trainer for in-memory probe training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L

_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
_NOISE = (
    ".*does not have many workers.*",
    ".*configure_optimizers` returned `None`.*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # lightning 2.6 on torch >= 2.10
)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banners and data-loader advice for the duration of a fit."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


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
        deterministic=True,
        callbacks=callbacks or [],
    )
