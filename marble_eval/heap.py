"""Keep freed memory in the process while many same-sized steps run (glibc; elsewhere a no-op).

A probe-grid step allocates and frees activations of ~10 MB. glibc hands such memory back to the
kernel (chunks above its mmap threshold are unmapped on free; free space at the heap top above its
trim threshold is trimmed), and the next step faults every page in again: measured ~20% of a grid
step on a 2-core VM. (Extraction was tried too: no gain measured in extract_dataset, +450 MB of RSS.)
No library exposes glibc's mallopt, hence these few lines over ctypes.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
KEEP_MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit
KEEP_TRIM_THRESHOLD = 1 << 30


def _mallopt() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


@contextmanager
def kept_heap() -> Iterator[bool]:
    """While inside, blocks up to 32 MB come from the heap and freed memory stays mapped (up to 1 GiB
    of it beyond what is in use); yields whether glibc took the settings. On exit glibc's documented
    defaults are set back (fixed now: its own adjustment of them restarts only in a new process)."""
    mallopt = _mallopt()
    if mallopt is None:
        yield False
        return
    applied = mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1
    try:
        yield applied
    finally:
        mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
        mallopt(M_MMAP_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
