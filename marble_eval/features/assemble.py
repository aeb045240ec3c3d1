"""Consumer side of extraction: per-window results -> whole items -> cache shards.

Shared by the single-process loop and the distributed prediction writer, so both produce the
same items from the same windows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from marble_eval.features.cache import UNKNOWN_AUDIO, AudioStamp, FeatureCache
from marble_eval.features.windows import WindowBatch


@dataclass
class CompletedItem:
    """All windows of one item: features [W, L, D] float32, frames [W], decoded seconds, its audio file's stamp."""

    position: int
    features: np.ndarray
    frames: np.ndarray
    seconds: float
    stamp: AudioStamp = UNKNOWN_AUDIO


@dataclass
class _Partial:
    windows: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    expected: int | None = None
    seconds: float = 0.0
    stamp: AudioStamp = UNKNOWN_AUDIO


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
        for position, count, seconds, *stamp in batch.finished:
            if position in self._failed:  # e.g. a window that did not fit in memory failed it earlier
                continue
            partial = self._partial.setdefault(position, _Partial())
            partial.expected, partial.seconds = count, seconds
            partial.stamp = stamp[0] if stamp else UNKNOWN_AUDIO
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
                             np.array([count for _, count in rows], dtype=np.int64), partial.seconds, partial.stamp)


class ShardBuffer:
    """Completed items waiting to be written as cache shards.

    A shard is written when ``shard_items`` items are buffered, at least every
    ``checkpoint_seconds`` by a timer thread started with the first item (it also writes while the
    caller is blocked on a slow decode or forward pass), and on ``close``. Use it as a context manager: leaving the block, normally or by
    an exception (Ctrl-C, SIGTERM), stops the timer and writes what is buffered. A write error in
    the timer thread is raised by the next ``add``, ``flush`` or ``close``.
    """

    def __init__(self, cache: FeatureCache, shard_items: int, checkpoint_seconds: float | None = None) -> None:
        self.cache = cache
        self.shard_items = max(1, shard_items)
        self.checkpoint_seconds = checkpoint_seconds
        self._items: dict[str, tuple[np.ndarray, np.ndarray, AudioStamp]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._timer: threading.Thread | None = None

    def __enter__(self) -> "ShardBuffer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, item_id: str, features: np.ndarray, frames: np.ndarray, stamp: AudioStamp = UNKNOWN_AUDIO) -> None:
        """Buffer one finished item (written with the next shard)."""
        with self._lock:
            self._raise_timer_error()
            self._start_timer()
            self._items[item_id] = (features, frames, stamp)
            if len(self._items) >= self.shard_items:
                self._write()

    def buffered(self) -> int:
        """Items finished but not yet written."""
        with self._lock:
            return len(self._items)

    def flush(self) -> None:
        """Write whatever is buffered as one shard (nothing when empty)."""
        with self._lock:
            self._raise_timer_error()
            self._write()

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        self.flush()

    def _write(self) -> None:
        if self._items:
            self.cache.write_shard(self._items)
            self._items = {}  # only once the shard is on disk: an interrupted write is retried

    def _start_timer(self) -> None:
        # started with the first item, not before: decode workers fork when the loop begins, and a
        # process should not fork while another of its threads may be writing
        if self._timer is None and self.checkpoint_seconds and not self._stop.is_set():
            self._timer = threading.Thread(target=self._tick, name="marble-eval-checkpoint", daemon=True)
            self._timer.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.checkpoint_seconds):
            try:
                with self._lock:
                    self._write()
            except BaseException as exc:  # handed to the main thread; the timer stops
                self._error = exc
                return

    def _raise_timer_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
