"""Decode side of extraction: items -> streamed windows -> batches of equal-length windows.

Runs inside torch DataLoader workers (or inline with ``num_workers=0``). Each worker owns
every k-th item, streams its windows (bounded memory, see ``audio.stream_windows``) and groups
windows of equal length, across files, into batches. Item-level events (all windows of an
item decoded, or its audio failed) ride along on the next batch, so the consumer can tell when
an item is complete without any shared state between processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from marble_eval.audio.decode import AudioStream, stream_windows
from marble_eval.datasets.base import Dataset, Item
from marble_eval.errors import AudioError, MarbleEvalError
from marble_eval.features.cache import audio_stamp

DEFAULT_BATCH_SECONDS = {"cpu": 40.0, "cuda": 480.0}  # audio per forward: CPU activations grow ~35 MB per s
PENDING_FACTOR = 2  # a worker holds at most this many batches' worth of undelivered windows


@dataclass(frozen=True)
class DecodeJob:
    """One item to decode: its position in the run's item list and its audio path (or why there is none)."""

    position: int
    path: str | None
    error: str | None = None


@dataclass
class WindowBatch:
    """Equal-length raw windows from one or more items, plus item events decoded before it was sent."""

    waves: torch.Tensor                      # [B, T] float32 (model-preprocessed when ``preprocessed``)
    keys: list[tuple[int, int]]              # (item position, window index) of each row
    finished: list[tuple] = field(default_factory=list)   # (position, n windows, seconds, AudioStamp)
    failed: list[tuple[int, str]] = field(default_factory=list)           # (position, reason)
    preprocessed: bool = False               # the decode worker applied the model's per-window normalisation

    def windows(self) -> list[np.ndarray]:
        """The rows as numpy arrays (what AudioEncoder.embed_windows takes)."""
        return list(self.waves.numpy()) if self.keys else []

    def pin_memory(self) -> "WindowBatch":
        """The same batch with its waves in page-locked memory (the DataLoader calls this when pinning)."""
        if self.keys:
            self.waves = self.waves.pin_memory()
        return self


@dataclass(frozen=True)
class BatchPlan:
    """How windows are grouped into forward passes."""

    batch_size: int = 8                  # at most this many windows per batch
    batch_samples: int = 40 * 24000      # and at most this many samples (one window always fits)
    mix_files: bool = True               # False: a batch never spans two items (one call per file)

    def capacity(self, length: int) -> int:
        """Windows of ``length`` samples that fit in one batch."""
        return max(1, min(self.batch_size, self.batch_samples // max(length, 1)))


def decode_jobs(dataset: Dataset, items: Sequence[Item]) -> list[DecodeJob]:
    """Jobs for ``items`` in order; an item whose path is refused becomes a job that fails with the reason."""
    jobs = []
    for position, item in enumerate(items):
        try:
            jobs.append(DecodeJob(position, str(dataset.audio_path(item))))
        except MarbleEvalError as exc:
            jobs.append(DecodeJob(position, None, str(exc)))
    return jobs


class _Batcher:
    """Groups (key, window) pairs by length into batches; bounded number of held windows."""

    def __init__(self, plan: BatchPlan, preprocessed: bool = False) -> None:
        self.plan = plan
        self.preprocessed = preprocessed
        self.buckets: dict[int, list[tuple[tuple[int, int], np.ndarray]]] = {}  # insertion order = age
        self.finished: list[tuple] = []
        self.failed: list[tuple[int, str]] = []

    def held(self) -> tuple[int, int]:
        """(windows, samples) waiting in buckets."""
        return (sum(len(bucket) for bucket in self.buckets.values()),
                sum(length * len(bucket) for length, bucket in self.buckets.items()))

    def add(self, key: tuple[int, int], wave: np.ndarray) -> Iterator[WindowBatch]:
        bucket = self.buckets.setdefault(len(wave), [])
        bucket.append((key, wave))
        if len(bucket) >= self.plan.capacity(len(wave)):
            yield self._emit(len(wave))
        while self.buckets and self._over_budget():
            yield self._emit(next(iter(self.buckets)))

    def _over_budget(self) -> bool:
        windows, samples = self.held()
        return windows > PENDING_FACTOR * self.plan.batch_size or samples > PENDING_FACTOR * self.plan.batch_samples

    def fail(self, position: int, reason: str) -> None:
        for length in list(self.buckets):
            self.buckets[length] = [entry for entry in self.buckets[length] if entry[0][0] != position]
            if not self.buckets[length]:
                del self.buckets[length]
        self.failed.append((position, reason))

    def flush(self) -> Iterator[WindowBatch]:
        while self.buckets:
            yield self._emit(next(iter(self.buckets)))
        if self.finished or self.failed:
            yield self._batch([], [])

    def _emit(self, length: int) -> WindowBatch:
        entries = self.buckets.pop(length)
        return self._batch([key for key, _ in entries], [wave for _, wave in entries])

    def _batch(self, keys: list[tuple[int, int]], waves: list[np.ndarray]) -> WindowBatch:
        tensor = torch.from_numpy(np.stack(waves)) if waves else torch.zeros((0, 0), dtype=torch.float32)
        batch = WindowBatch(tensor, keys, self.finished, self.failed, self.preprocessed)
        self.finished, self.failed = [], []
        return batch


class WindowStream(IterableDataset):
    """Batches of windows of ``jobs``; under a DataLoader each worker takes every k-th job."""

    def __init__(self, jobs: Sequence[DecodeJob], sample_rate: int, window_seconds: float,
                 max_seconds: float | None, plan: BatchPlan, min_samples: int = 1,
                 preprocess: Callable[[np.ndarray], np.ndarray] | None = None, drop_partial: bool = False) -> None:
        super().__init__()
        self.jobs = list(jobs)
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self.max_seconds = max_seconds
        self.plan = plan
        self.min_samples = max(1, min_samples)  # shorter windows give the model no frame: the item fails
        self.preprocess = preprocess  # the model's per-window normalisation, run here in the worker
        self.drop_partial = drop_partial  # only full windows (the dataset's audio.partial_windows: drop)

    def __iter__(self) -> Iterator[WindowBatch]:
        worker = get_worker_info()
        jobs = self.jobs if worker is None else self.jobs[worker.id::worker.num_workers]
        batcher = _Batcher(self.plan, preprocessed=self.preprocess is not None)
        for job in jobs:
            yield from self._decode(job, batcher)
            if not self.plan.mix_files or not batcher.buckets:
                # nothing of this item waits in a bucket: send its end event now, not with the next
                # file's first batch (a slow or stalled next file must not hold a finished item back)
                yield from batcher.flush()
        yield from batcher.flush()

    def _decode(self, job: DecodeJob, batcher: _Batcher) -> Iterator[WindowBatch]:
        if job.path is None:
            batcher.fail(job.position, job.error or "no audio path")
            return
        count, samples = 0, 0
        try:
            audio = AudioStream(Path(job.path), self.sample_rate, self.max_seconds)
            for window in stream_windows(audio, self.sample_rate, self.window_seconds,
                                         drop_partial=self.drop_partial):
                if len(window) < self.min_samples:  # only ever a clip's sole window (short tails are dropped)
                    batcher.fail(job.position, f"{job.path}: too short ({1000 * len(window) / self.sample_rate:.1f} "
                                               f"ms; the model needs at least {self.min_samples} samples at "
                                               f"{self.sample_rate} Hz)")
                    return
                samples += len(window)
                if self.preprocess is not None:
                    window = self.preprocess(window)
                yield from batcher.add((job.position, count), window)
                count += 1
        except AudioError as exc:
            batcher.fail(job.position, str(exc))
            return
        if count == 0:
            full = f" (no full {self.window_seconds:g}-s window: this dataset drops partial windows)" \
                if self.drop_partial else ""
            batcher.fail(job.position, f"{job.path}: no audio samples{full}")
            return
        try:  # after the decode: the bytes are in the page cache, hashing them is cheap
            stamp = audio_stamp(Path(job.path), audio.decoder)
        except OSError as exc:
            batcher.fail(job.position, f"{job.path}: cannot read ({exc.strerror or exc})")
            return
        batcher.finished.append((job.position, count, samples / self.sample_rate, stamp))


def _keep(batch: WindowBatch) -> WindowBatch:
    return batch


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what a batch scheduler granted)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def default_num_workers(device: torch.device | str, local_ranks: int = 1, cores: int | None = None) -> int:
    """Decode workers when not set: decoding is ~1% of a CPU forward, so one on CPU; to feed a GPU, every core
    this rank's share of the node leaves after its own main process (bf16 MERT-95M wants ~23 cores of MP3)."""
    if torch.device(device).type == "cpu":
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, local_ranks) - 1)


def default_batch_samples(device: torch.device | str, sample_rate: int) -> int:
    """Samples per forward when not set (bounds activation memory)."""
    seconds = DEFAULT_BATCH_SECONDS.get(torch.device(device).type, DEFAULT_BATCH_SECONDS["cuda"])
    return int(seconds * sample_rate)


def window_loader(stream: WindowStream, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``stream`` that hands the workers' batches over unchanged (pinned for a CUDA copy when
    ``pin_memory``), in whatever order the workers finish them (items are assembled from any order)."""
    if num_workers < 0:
        raise MarbleEvalError(f"--num-workers {num_workers}: must be 0 (decode in the main process) or more")
    workers = min(num_workers, max(len(stream.jobs), 1))
    return DataLoader(stream, batch_size=None, collate_fn=_keep, num_workers=workers,
                      prefetch_factor=2 if workers else None, persistent_workers=False,
                      pin_memory=pin_memory and torch.cuda.is_available(), in_order=not workers)
