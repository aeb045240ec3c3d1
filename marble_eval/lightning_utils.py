"""Quiet Lightning runs: the one place its start-up chatter and inapplicable advice are silenced."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
ADVICE = (
    ".*does not have many workers.*",
    ".*configure_optimizers` returned `None`.*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*LeafSpec.*",  # lightning 2.6 on torch >= 2.10
)


@contextmanager
def quiet_lightning(ignore: Sequence[str] = (), deterministic: bool = False) -> Iterator[None]:
    """For the duration: Lightning's loggers at WARNING, its advice in ``ADVICE`` (and the warning
    patterns ``ignore``) filtered; with ``deterministic``, torch's deterministic algorithms on.
    Lightning's own ``deterministic=True`` would leave that on for the whole process and also fill
    every new tensor with NaN (fill_uninitialized_memory, ~70 us per allocation); everything is
    restored on exit."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    determinism = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    fill = torch.utils.deterministic.fill_uninitialized_memory
    with warnings.catch_warnings():
        for pattern in (*ADVICE, *ignore):
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        if deterministic:
            torch.use_deterministic_algorithms(True)
            torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
            torch.utils.deterministic.fill_uninitialized_memory = fill
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


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
