"""Extraction stage: audio -> windows -> frozen model -> per-layer time means -> cache.

Single process: DataLoader workers decode and window the audio (``extract_data``), the model
embeds batches of equal-length windows taken across files, and completed items go to cache
shards (``extract_collect``). Several processes or machines: ``extract_distributed``.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from marble_eval.features.audio import split_windows, stream_windows
from marble_eval.features.cache import CacheKey, FeatureCache
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.features.assemble import ItemAssembler, ShardBuffer
from marble_eval.features.windows import (BatchPlan, WindowBatch, WindowStream, decode_jobs, default_batch_samples,
                                      default_num_workers, window_loader)
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.progress import progress_bar


# The command line's default precision ("auto"), chosen from the measured drift (docs/scale.md): on the
# 768-wide MERT-95M layout bf16 moves pooled states by ~0.5% (relative L2) and probe metrics by ~0.1
# point, for 2-3x the fp32 speed where bf16 is native. On narrow models (the 32-wide test models) it
# moves states by ~37%, and where bf16 is emulated it is slower than fp32: both stay fp32.
# ExtractSettings() itself stays the fp32 reference.
BF16_MIN_DIM = 512


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` multiplies bf16 in hardware (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own CPU feature probes
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def auto_precision(info: ModelInfo, device: torch.device | str) -> str:
    """The default compute precision for ``info``'s model on ``device``: bf16 when the device has
    native bf16 and the model is at least BF16_MIN_DIM wide (where the drift was measured), else fp32."""
    return "bf16" if info.dim >= BF16_MIN_DIM and native_bf16(device) else "fp32"


@dataclass(frozen=True)
class ExtractSettings:
    """Preprocessing and run settings; None means the dataset's (or fixed-window model's, or device's) default.

    Only window_seconds, max_seconds, precision and storage change the features (they are in
    the cache key); the others only change speed and memory. ``precision`` is what runs: the
    model is switched to it for the run (and back).
    """

    window_seconds: float | None = None
    max_seconds: float | None = None
    precision: str = "fp32"
    storage: str = "fp16"
    batch_size: int = 8                  # windows per forward pass, at most
    shard_items: int = 64
    batch_seconds: float | None = None   # audio per forward pass, at most (None: 40 s on CPU, 480 s on GPU)
    num_workers: int | None = None       # decode workers (None: 1 on CPU, up to 8 for a GPU; 0: main process)


@dataclass
class ExtractSummary:
    """What one extraction run did (for a distributed run: all ranks together, on global rank 0)."""

    cache_dir: Path
    total: int
    extracted: int = 0
    already_cached: int = 0
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0
    global_rank: int = 0
    world_size: int = 1

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable closing summary."""
        processes = f" on {self.world_size} processes" if self.world_size > 1 else ""
        out = [f"cache: {self.cache_dir}",
               f"items: {self.total} total, {self.extracted} extracted now, {self.already_cached} already cached, "
               f"{len(self.failures)} skipped",
               f"time: {self.wall_seconds:.1f} s for {self.audio_seconds:.1f} s of audio "
               f"({self.realtime:.1f}x realtime{processes})"]
        out += [f"skipped {item_id}: {failure['reason']}" for item_id, failure in sorted(self.failures.items())]
        if self.failures:
            out.append(f"failures listed in {self.cache_dir / 'failures.json'}")
        return out


def effective_window(model: AudioEncoder, dataset: Dataset, settings: ExtractSettings) -> float:
    """Window length actually used: a fixed-window model's own, else the setting, else the dataset's."""
    if model.info.fixed_window_seconds:
        return float(model.info.fixed_window_seconds)
    return float(dataset.window_seconds if settings.window_seconds is None else settings.window_seconds)


def cache_key(model: AudioEncoder, dataset: Dataset, settings: ExtractSettings) -> CacheKey:
    """The cache key for extracting ``dataset`` with ``model`` under ``settings``."""
    info = model.info
    return CacheKey(
        dataset=f"{dataset.name}-v{dataset.version}", model_id=info.model_id, model_fingerprint=info.fingerprint,
        family=info.family, sample_rate=info.sample_rate, n_hidden_states=info.n_hidden_states, dim=info.dim,
        window_seconds=effective_window(model, dataset, settings),
        max_seconds=dataset.max_seconds if settings.max_seconds is None else settings.max_seconds,
        precision=settings.precision, storage=settings.storage, model_settings=dict(info.extra),
    )


def open_cache(root: Path, model: AudioEncoder, dataset: Dataset, settings: ExtractSettings) -> FeatureCache:
    """The cache folder for this model, dataset and settings (not created)."""
    return FeatureCache(root, cache_key(model, dataset, settings))


def embed_waveform(model: AudioEncoder, wave: np.ndarray, window_seconds: float,
                   batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One decoded file -> ([windows, L, D] time means, [windows] frame counts)."""
    windows = split_windows(wave, model.info.sample_rate, window_seconds)
    return model.embed_windows(windows, batch_size=batch_size)


def model_device(model: AudioEncoder) -> torch.device:
    """The device a model runs on (CPU for objects that do not say)."""
    return torch.device(getattr(model, "device", "cpu"))


def batch_plan(model: AudioEncoder, settings: ExtractSettings) -> BatchPlan:
    """How windows are batched: across files for an AudioEncoder, one file per call for anything else.

    Objects that only offer ``info`` and ``embed_windows`` (wrappers, test doubles) keep the
    one-call-per-file contract of the original loop.
    """
    rate = model.info.sample_rate
    samples = default_batch_samples(model_device(model), rate) if settings.batch_seconds is None \
        else max(1, int(settings.batch_seconds * rate))
    return BatchPlan(batch_size=max(1, settings.batch_size), batch_samples=samples,
                     mix_files=isinstance(model, AudioEncoder))


def window_stream(model: AudioEncoder, dataset: Dataset, items: list[Item], key: CacheKey,
                  settings: ExtractSettings) -> WindowStream:
    """The decode side of a run over ``items`` (positions index ``items``)."""
    return WindowStream(decode_jobs(dataset, items), model.info.sample_rate, key.window_seconds, key.max_seconds,
                        batch_plan(model, settings), min_samples=min_window_samples(model))


def min_window_samples(model: AudioEncoder, limit: int = 1 << 20) -> int:
    """Fewest samples for which the model produces a frame (1 for objects without ``n_frames``)."""
    if not isinstance(model, AudioEncoder) or model.n_frames(1) > 0:
        return 1
    low, high = 1, limit  # n_frames(low) == 0; frames grow with length
    if model.n_frames(high) == 0:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if model.n_frames(middle) == 0 else (low, middle)
    return high


def num_workers(model: AudioEncoder, settings: ExtractSettings) -> int:
    """Decode workers for this run."""
    return default_num_workers(model_device(model)) if settings.num_workers is None else settings.num_workers


@contextlib.contextmanager
def computing_in(model: AudioEncoder, precision: str) -> Iterator[None]:
    """Run ``model`` in ``precision`` for the duration (the cache key records it, so it must hold)."""
    if not isinstance(model, AudioEncoder):
        yield
        return
    previous = model.precision
    model.to(model.device, precision)
    try:
        yield
    finally:
        model.to(model.device, previous)


def embed_batch(model: AudioEncoder, batch: WindowBatch, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs for the windows of one batch: ([B, L, D] float32, [B] frames)."""
    if not batch.keys:
        return np.zeros((0, model.info.n_hidden_states, model.info.dim), np.float32), np.zeros(0, np.int64)
    return model.embed_windows(batch.windows(), batch_size=max(batch_size, len(batch.keys)))


def extract_dataset(model: AudioEncoder, dataset: Dataset, root: Path, settings: ExtractSettings,
                    splits: tuple[str, ...] = SPLITS, show_progress: bool = True) -> ExtractSummary:
    """Extract every not-yet-cached item of ``splits``; bad audio is skipped and reported."""
    cache = open_cache(root, model, dataset, settings).create()
    wanted = [item for item in dataset.items if item.split in splits]
    done = cache.done_ids()
    todo = [item for item in wanted if item.id not in done]
    summary = ExtractSummary(cache.directory, total=len(wanted), already_cached=len(wanted) - len(todo))
    loader = window_loader(window_stream(model, dataset, todo, cache.key, settings), num_workers(model, settings))
    assembler, shards = ItemAssembler(), ShardBuffer(cache, settings.shard_items)
    started = time.perf_counter()
    with computing_in(model, settings.precision), progress_bar(show_progress, realtime=True) as bar:
        task = bar.add_task(f"extract {dataset.name}", total=len(todo), realtime="")
        for batch in loader:
            states, frames = embed_batch(model, batch, settings.batch_size)
            completed, failed = assembler.add(batch, states, frames)
            for item in completed:
                shards.add(todo[item.position].id, item.features, item.frames)
                summary.audio_seconds += item.seconds
                summary.extracted += 1
            for position, reason in failed:
                summary.failures[todo[position].id] = {"path": todo[position].path, "reason": reason}
            elapsed = time.perf_counter() - started
            bar.update(task, advance=len(completed) + len(failed),
                       realtime=f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x realtime")
        shards.flush()
    cache.write_failures(summary.failures)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def embed_files(model: AudioEncoder, paths: list[Path], window_seconds: float = 0.0,
                max_seconds: float | None = None, batch_size: int = 8) -> np.ndarray:
    """[n_files, L, D]: for each file every hidden state averaged over all frames of all windows."""
    if model.info.fixed_window_seconds:
        window_seconds = float(model.info.fixed_window_seconds)
    out = np.zeros((len(paths), model.info.n_hidden_states, model.info.dim), dtype=np.float32)
    with computing_in(model, getattr(model, "precision", "fp32")):
        for row, path in enumerate(paths):
            out[row] = _embed_file(model, Path(path), window_seconds, max_seconds, batch_size)
    return out


def _embed_file(model: AudioEncoder, path: Path, window_seconds: float, max_seconds: float | None,
                batch_size: int) -> np.ndarray:
    """[L, D] frame-weighted mean over all windows of one file, embedded as they stream in."""
    total = np.zeros((model.info.n_hidden_states, model.info.dim), dtype=np.float64)
    frame_total = 0
    chunk: list[np.ndarray] = []
    windows = stream_windows(path, model.info.sample_rate, window_seconds, max_seconds)
    for window in itertools.chain(windows, [None]):  # windows stream in; embed batch_size at a time
        if window is not None:
            chunk.append(window)
        if chunk and (window is None or len(chunk) == batch_size):
            states, frames = model.embed_windows(chunk, batch_size)
            total += np.einsum("w,wld->ld", frames.astype(np.float64), states.astype(np.float64))
            frame_total += int(frames.sum())
            chunk = []
    return (total / max(frame_total, 1)).astype(np.float32)
