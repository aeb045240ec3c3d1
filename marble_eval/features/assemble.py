"""Consumer side of extraction: per-window results -> whole items -> cache shards.

Shared by the single-process loop and the distributed prediction writer, so both produce the
same items from the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marble_eval.features.cache import FeatureCache
from marble_eval.features.windows import WindowBatch


@dataclass
class CompletedItem:
    """All windows of one item: features [W, L, D] float32, frames [W], decoded seconds."""

    position: int
    features: np.ndarray
    frames: np.ndarray
    seconds: float


@dataclass
class _Partial:
    windows: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    expected: int | None = None
    seconds: float = 0.0


class ItemAssembler:
    """Collects window results (in any order, from any worker) until each item is complete."""

    def __init__(self) -> None:
        self._partial: dict[int, _Partial] = {}
        self._failed: set[int] = set()

    def add(self, batch: WindowBatch, states: np.ndarray, frames: np.ndarray
            ) -> tuple[list[CompletedItem], list[tuple[int, str]]]:
        """Record one embedded batch; returns the items it completed and the item failures it carried."""
        touched: set[int] = set()
        for (position, window), row_states, row_frames in zip(batch.keys, states, frames):
            if position in self._failed:
                continue
            self._partial.setdefault(position, _Partial()).windows[window] = (row_states, int(row_frames))
            touched.add(position)
        for position, count, seconds in batch.finished:
            partial = self._partial.setdefault(position, _Partial())
            partial.expected, partial.seconds = count, seconds
            touched.add(position)
        failures = []
        for position, reason in batch.failed:
            self._failed.add(position)
            self._partial.pop(position, None)
            touched.discard(position)
            failures.append((position, reason))
        completed = []
        for item in [self._complete(position) for position in sorted(touched) if self._is_complete(position)]:
            if np.isfinite(item.features).all():
                completed.append(item)
            else:  # one odd input must not stop (or, cached, poison) the whole run
                self._failed.add(item.position)
                failures.append((item.position, "the model produced NaN or Inf features for this audio"))
        return completed, failures

    def pending(self) -> int:
        """Items with some results but not complete yet."""
        return len(self._partial)

    def _is_complete(self, position: int) -> bool:
        partial = self._partial.get(position)
        return partial is not None and partial.expected is not None and len(partial.windows) == partial.expected

    def _complete(self, position: int) -> CompletedItem:
        partial = self._partial.pop(position)
        rows = [partial.windows[index] for index in range(partial.expected or 0)]
        return CompletedItem(position, np.stack([states for states, _ in rows]).astype(np.float32, copy=False),
                             np.array([count for _, count in rows], dtype=np.int64), partial.seconds)


class ShardBuffer:
    """Completed items waiting to be written; a shard is written every ``shard_items`` items."""

    def __init__(self, cache: FeatureCache, shard_items: int) -> None:
        self.cache = cache
        self.shard_items = max(1, shard_items)
        self.items: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, item_id: str, features: np.ndarray, frames: np.ndarray) -> None:
        self.items[item_id] = (features, frames)
        if len(self.items) >= self.shard_items:
            self.flush()

    def flush(self) -> None:
        """Write whatever is buffered as one shard (nothing when empty)."""
        self.cache.write_shard(self.items)
        self.items = {}
