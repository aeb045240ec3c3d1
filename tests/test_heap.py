"""kept_heap: the probe trainers' freed memory stays mapped between steps (no page faults to refill it)."""

from __future__ import annotations

import os
import platform
import resource

import pytest
import torch

from marble_eval.heap import kept_heap

BLOCK_FLOATS, BLOCKS = 2_500_000, 8  # 8 x 10 MB, freed together: like a grid step's activations
STEP_BYTES = BLOCKS * BLOCK_FLOATS * 4


def _step() -> None:
    blocks = [torch.ones(BLOCK_FLOATS) for _ in range(BLOCKS)]  # written: every page touched
    del blocks


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _faults_per_step(steps: int = 5) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        _step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_step_memory_stays_mapped_inside_and_is_returned_outside() -> None:
    pages_per_step = STEP_BYTES / resource.getpagesize()
    with kept_heap() as applied:
        assert applied
        before = _rss()
        _step()
        assert _rss() - before > 0.9 * STEP_BYTES  # freed, yet still mapped: the next step reuses it
        assert _faults_per_step() < 0.1 * pages_per_step  # measured ~2.5%
    # outside, glibc's defaults again: the same step's memory goes back to the kernel once freed
    before = _rss()
    _step()
    assert _rss() - before < 0.1 * STEP_BYTES
