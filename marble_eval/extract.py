"""Extraction stage: audio -> windows -> frozen model -> per-layer time means -> cache."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from marble_eval.audio import load_audio, split_windows
from marble_eval.cache import CacheKey, FeatureCache
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.errors import AudioError, MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.progress import progress_bar

DECODE_AHEAD = 8  # files decoded in background threads while the model runs


@dataclass(frozen=True)
class ExtractSettings:
    """Preprocessing and run settings; None means the dataset's (or fixed-window model's) default."""

    window_seconds: float | None = None
    max_seconds: float | None = None
    precision: str = "fp32"
    storage: str = "fp16"
    batch_size: int = 8
    shard_items: int = 64


@dataclass
class ExtractSummary:
    """What one extraction run did."""

    cache_dir: Path
    total: int
    extracted: int = 0
    already_cached: int = 0
    failures: dict[str, dict[str, str]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    audio_seconds: float = 0.0

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable closing summary."""
        out = [f"cache: {self.cache_dir}",
               f"items: {self.total} total, {self.extracted} extracted now, {self.already_cached} already cached, "
               f"{len(self.failures)} skipped",
               f"time: {self.wall_seconds:.1f} s for {self.audio_seconds:.1f} s of audio ({self.realtime:.1f}x realtime)"]
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


def _decoded(items: list[Item], dataset: Dataset, rate: int, max_seconds: float | None
             ) -> Iterator[tuple[Item, np.ndarray | AudioError]]:
    """Decode items in background threads, yielding them in order (bounded look-ahead)."""
    def decode(item: Item) -> np.ndarray | AudioError:
        try:
            return load_audio(dataset.audio_path(item), rate, max_seconds)
        except AudioError as exc:
            return exc
        except MarbleEvalError as exc:  # e.g. a path escaping the data dir
            return AudioError(str(exc))

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(decode, item) for item in items[:DECODE_AHEAD]]
        for position, item in enumerate(items):
            result = pending[position].result()
            pending[position] = None  # free the decoded audio once consumed
            ahead = position + DECODE_AHEAD
            if ahead < len(items):
                pending.append(pool.submit(decode, items[ahead]))
            yield item, result


def extract_dataset(model: AudioEncoder, dataset: Dataset, root: Path, settings: ExtractSettings,
                    splits: tuple[str, ...] = SPLITS, show_progress: bool = True) -> ExtractSummary:
    """Extract every not-yet-cached item of ``splits``; bad audio is skipped and reported."""
    cache = open_cache(root, model, dataset, settings).create()
    key = cache.key
    wanted = [item for item in dataset.items if item.split in splits]
    todo = [item for item in wanted if item.id not in cache.done_ids()]
    summary = ExtractSummary(cache.directory, total=len(wanted), already_cached=len(wanted) - len(todo))
    buffer: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    with progress_bar(show_progress, realtime=True) as bar:
        task = bar.add_task(f"extract {dataset.name}", total=len(todo), realtime="")
        for item, audio in _decoded(todo, dataset, model.info.sample_rate, key.max_seconds):
            if isinstance(audio, AudioError):
                summary.failures[item.id] = {"path": item.path, "reason": str(audio)}
            else:
                buffer[item.id] = embed_waveform(model, audio, key.window_seconds, settings.batch_size)
                summary.audio_seconds += len(audio) / model.info.sample_rate
                summary.extracted += 1
                if len(buffer) >= settings.shard_items:
                    cache.write_shard(buffer)
                    buffer = {}
            elapsed = time.perf_counter() - started
            bar.update(task, advance=1, realtime=f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x realtime")
        cache.write_shard(buffer)
    cache.write_failures(summary.failures)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def embed_files(model: AudioEncoder, paths: list[Path], window_seconds: float = 0.0,
                max_seconds: float | None = None, batch_size: int = 8) -> np.ndarray:
    """[n_files, L, D]: for each file every hidden state averaged over all frames of all windows."""
    if model.info.fixed_window_seconds:
        window_seconds = float(model.info.fixed_window_seconds)
    out = np.zeros((len(paths), model.info.n_hidden_states, model.info.dim), dtype=np.float32)
    for row, path in enumerate(paths):
        wave = load_audio(Path(path), model.info.sample_rate, max_seconds)
        states, frames = embed_waveform(model, wave, window_seconds, batch_size)
        weights = frames.astype(np.float64) / max(frames.sum(), 1)
        out[row] = np.einsum("w,wld->ld", weights, states.astype(np.float64))
    return out
