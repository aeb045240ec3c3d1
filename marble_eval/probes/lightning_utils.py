"""A quiet, deterministic, file-free lightning.Trainer for in-memory probe training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch

_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
_NOISE = (
    ".*does not have many workers.*",
    ".*configure_optimizers` returned `None`.*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # lightning 2.6 on torch >= 2.10
)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """For the duration of a fit: silence Lightning's start-up banners and data-loader advice, and
    insist on deterministic algorithms. Lightning's own ``deterministic=True`` would leave that on for
    the whole process and also fill every new tensor with NaN (fill_uninitialized_memory), which
    costs ~70 us per allocation; everything is restored on exit."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    determinism = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
            torch.utils.deterministic.fill_uninitialized_memory = fill
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
        deterministic=None,  # quiet_lightning() turns deterministic algorithms on, and back off
        callbacks=callbacks or [],
    )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: leave torch's setting), restored afterwards.
    On a busy shared machine one thread can be several times faster for many small probes."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
