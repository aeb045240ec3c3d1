"""kept_heap: the probe trainers' memory stays mapped between steps (no page faults to refill it)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from marble_eval.probes.heap import kept_heap

PAGE = resource.getpagesize()
BLOCK_FLOATS, BLOCKS = 2_500_000, 8  # 8 x 10 MB, freed together: like a grid step's activations


def _step() -> None:
    blocks = [torch.ones(BLOCK_FLOATS) for _ in range(BLOCKS)]  # written: every page touched
    del blocks


def _faults_per_step(steps: int = 5) -> float:
    _step()  # warm-up: the first touch of new memory always faults
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        _step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_step_memory_is_reused_without_page_faults() -> None:
    pages_per_step = BLOCKS * BLOCK_FLOATS * 4 / PAGE
    with kept_heap() as applied:
        assert applied
        kept = _faults_per_step()
    assert kept < 0.05 * pages_per_step
    # outside, glibc gives the memory back and the same steps fault their pages in again
    assert _faults_per_step() > 0.5 * pages_per_step
