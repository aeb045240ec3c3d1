"""Extraction stage: audio -> windows -> frozen model -> per-layer time means -> cache.

Single process: DataLoader workers decode and window the audio (``windows``), the model
embeds batches of equal-length windows taken across files, and completed items go to cache
shards (``assemble``), written at least every ``checkpoint_seconds``. Several processes or
machines: ``distributed``. ``validate_settings`` checks settings and device before anything loads.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from marble_eval.audio.decode import split_windows, stream_windows
from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.devices import check_device
from marble_eval.errors import EXIT_NOTHING_EXTRACTED, EXIT_OK, EXIT_SOME_SKIPPED, AudioError, MarbleEvalError
from marble_eval.features.assemble import ItemAssembler, ShardBuffer
from marble_eval.features.cache import STORAGE_DTYPES, AudioCheck, CacheKey, FeatureCache, dataset_label
from marble_eval.features.embedder import BatchEmbedder, Embedded, worker_preprocess
from marble_eval.features.windows import (
    BatchPlan,
    WindowStream,
    decode_jobs,
    default_batch_samples,
    default_num_workers,
    window_loader,
)
from marble_eval.files import atomic_write_bytes
from marble_eval.models.base import AudioEncoder, normalise_precision  # fp32, the reference, is the default (#16)
from marble_eval.progress import progress_bar

STORAGES = tuple(STORAGE_DTYPES)
DEFAULT_CHECKPOINT_SECONDS = 30.0
DEFAULT_EMBED_WINDOW_SECONDS = 30.0  # `embed`: bounded memory whatever the file length
DEFAULT_CPU_BATCH_SIZE = 8


class ExtractionInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during extraction: what had finished is written; rerunning resumes."""


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
    batch_size: int | None = None        # windows per forward pass, at most (None: 8 on CPU; a GPU: --batch-seconds)
    shard_items: int = 64
    batch_seconds: float | None = None   # audio per forward pass, at most (None: 40 s on CPU, 480 s on GPU)
    num_workers: int | None = None       # decode workers (None: 1 on CPU; a GPU: its rank's cores - 1; 0: main process)
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS  # finished items reach disk at least this often


def _number(flag: str, value: float | None, rule: str, ok: bool) -> None:
    if value is not None and not ok:
        raise MarbleEvalError(f"{flag} {value}: must be {rule}")


def validate_settings(settings: ExtractSettings, device: str | torch.device | None = None) -> None:
    """Refuse impossible settings and devices with one line, before any model or audio is loaded."""
    def finite(value: float | None) -> bool:
        return value is not None and math.isfinite(value)

    _number("--batch-size", settings.batch_size, "1 or more", settings.batch_size is None or settings.batch_size >= 1)
    window = settings.window_seconds
    _number("--window-seconds", window, "0 (the whole clip) or a finite number of seconds",
            finite(window) and window >= 0)
    _number("--max-seconds", settings.max_seconds, "a finite number of seconds above 0",
            finite(settings.max_seconds) and settings.max_seconds > 0)
    _number("--batch-seconds", settings.batch_seconds, "a finite number of seconds above 0",
            finite(settings.batch_seconds) and settings.batch_seconds > 0)
    _number("--checkpoint-seconds", settings.checkpoint_seconds, "a finite number of seconds above 0",
            finite(settings.checkpoint_seconds) and settings.checkpoint_seconds > 0)
    _number("--num-workers", settings.num_workers, "0 (decode in the main process) or more",
            settings.num_workers is None or settings.num_workers >= 0)
    _number("shard_items", settings.shard_items, "1 or more", settings.shard_items >= 1)
    normalise_precision(settings.precision)
    if settings.storage not in STORAGES:
        raise MarbleEvalError(f"--storage {settings.storage}: use one of {', '.join(STORAGES)}")
    if device is not None:
        check_device(device)


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
    changed_audio: int = 0      # cached items whose audio file changed since: extracted again
    hashed_files: int = 0       # audio files hashed to tell (size or mtime differed)
    data_dir: Path | None = None

    @property
    def usable(self) -> int:
        """Items with features in the cache after this run."""
        return self.extracted + self.already_cached

    def exit_code(self) -> int:
        """EXIT_NOTHING_EXTRACTED when no item has features, EXIT_SOME_SKIPPED when some were skipped, else 0."""
        if self.usable == 0:
            return EXIT_NOTHING_EXTRACTED
        return EXIT_SOME_SKIPPED if self.failures else EXIT_OK

    @property
    def realtime(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def _time_line(self, processes: str) -> str:
        if self.extracted == 0 and self.audio_seconds == 0:
            what = "every item was already cached" if self.already_cached == self.total else "no audio extracted"
            return f"time: {self.wall_seconds:.1f} s; {what}"
        return (f"time: {self.wall_seconds:.1f} s for {self.audio_seconds:.1f} s of audio "
                f"({self.realtime:.1f}x realtime{processes})")

    def lines(self) -> list[str]:
        """Human-readable closing summary."""
        processes = f" on {self.world_size} processes" if self.world_size > 1 else ""
        out = [f"cache: {self.cache_dir}",
               f"items: {self.total} total, {self.extracted} extracted now, {self.already_cached} already cached, "
               f"{len(self.failures)} skipped",
               f"audio: {self.changed_audio} changed file(s) extracted again, {self.hashed_files} file(s) hashed "
               f"to check the cache",
               self._time_line(processes)]
        out += [f"skipped {item_id}: {failure['reason']}" for item_id, failure in sorted(self.failures.items())]
        if self.failures:
            out.append(f"failures listed in {self.cache_dir / 'failures.json'}")
        return out


def effective_window(model: AudioEncoder, dataset: Dataset, settings: ExtractSettings) -> float:
    """Window length actually used (recorded in the cache key): a fixed-window model's own, else the setting,
    else the dataset's, else (a dataset that leaves it open) the model family's native context (MuQ,
    MusicFM, Whisper 30 s, Dasheng 10.08 s), else the whole clip."""
    if model.info.fixed_window_seconds:
        return float(model.info.fixed_window_seconds)
    if settings.window_seconds is not None:
        return float(settings.window_seconds)
    if dataset.window_seconds is not None:
        return float(dataset.window_seconds)
    return float(model.info.native_window_seconds or 0.0)


def cache_key(model: AudioEncoder, dataset: Dataset, settings: ExtractSettings) -> CacheKey:
    """The cache key for extracting ``dataset`` with ``model`` under ``settings``."""
    info = model.info
    return CacheKey(
        dataset=dataset_label(dataset), dataset_identity=dataset.identity(), model_id=info.model_id,
        model_fingerprint=info.fingerprint,
        family=info.family, sample_rate=info.sample_rate, n_hidden_states=info.n_hidden_states, dim=info.dim,
        window_seconds=effective_window(model, dataset, settings),
        max_seconds=dataset.max_seconds if settings.max_seconds is None else settings.max_seconds,
        precision=normalise_precision(settings.precision), storage=settings.storage, model_settings=dict(info.extra),
        n_parameters=info.n_parameters,
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
    device = model_device(model)
    samples = default_batch_samples(device, rate) if settings.batch_seconds is None \
        else max(1, int(settings.batch_seconds * rate))
    return BatchPlan(batch_size=resolved_batch_size(settings.batch_size, device, samples), batch_samples=samples,
                     mix_files=isinstance(model, AudioEncoder))


def resolved_batch_size(batch_size: int | None, device: torch.device, batch_samples: int) -> int:
    """Windows per forward: as given; else 8 on CPU, and on a GPU as many as the audio budget holds (the
    budget, ``--batch-seconds``, is then the only bound: 480 s = 16 windows of 30 s)."""
    if batch_size is not None:
        return max(1, batch_size)
    return DEFAULT_CPU_BATCH_SIZE if device.type == "cpu" else max(1, batch_samples)


def window_stream(model: AudioEncoder, dataset: Dataset, items: list[Item], key: CacheKey,
                  settings: ExtractSettings) -> WindowStream:
    """The decode side of a run over ``items`` (positions index ``items``)."""
    preprocess, _ = worker_preprocess(model)
    return WindowStream(decode_jobs(dataset, items), model.info.sample_rate, key.window_seconds, key.max_seconds,
                        batch_plan(model, settings), min_samples=min_window_samples(model), preprocess=preprocess,
                        drop_partial=dataset.drop_partial_windows and key.window_seconds > 0)


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


def num_workers(model: AudioEncoder, settings: ExtractSettings, local_ranks: int = 1) -> int:
    """Decode workers for this run (per process; ``local_ranks`` processes share this machine's cores)."""
    if settings.num_workers is not None:
        return settings.num_workers
    return default_num_workers(model_device(model), local_ranks)


def batch_embedder(model: AudioEncoder, settings: ExtractSettings) -> BatchEmbedder:
    """The embedder of a run: preprocessing where ``window_stream``'s workers do not do it."""
    _, in_main = worker_preprocess(model)
    return BatchEmbedder(model, settings.batch_size or DEFAULT_CPU_BATCH_SIZE, preprocess_in_main=in_main)


def loader_for(stream: WindowStream, model: AudioEncoder, settings: ExtractSettings,
               local_ranks: int = 1) -> torch.utils.data.DataLoader:
    """The run's DataLoader: pinned batches when the model is on CUDA."""
    return window_loader(stream, num_workers(model, settings, local_ranks),
                         pin_memory=model_device(model).type == "cuda")


@contextlib.contextmanager
def float32_math(precision: str) -> Iterator[None]:
    """fp32 means IEEE fp32 on CUDA too: TF32 off for matmuls and cudnn convolutions, unless ``precision`` is
    tf32 (opt-in). torch's process-wide settings are restored afterwards."""
    mode = "tf32" if normalise_precision(precision) == "tf32" else "ieee"
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    previous = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = mode, mode
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = previous


@contextlib.contextmanager
def computing_in(model: AudioEncoder, precision: str) -> Iterator[None]:
    """Run ``model`` in ``precision`` for the duration (the cache key records it, so it must hold)."""
    precision = normalise_precision(precision)
    if not isinstance(model, AudioEncoder):
        with float32_math(precision):
            yield
        return
    previous = model.precision
    model.to(model.device, precision)
    try:
        with float32_math(precision):
            yield
    finally:
        model.to(model.device, previous)


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ExtractionInterrupted in the main thread for the duration (so the
    shard buffer is written on the way out); previous handlers are restored. Elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise ExtractionInterrupted(f"stopped by {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def todo_items(cache: FeatureCache, dataset: Dataset, wanted: list[Item]) -> tuple[list[Item], AudioCheck]:
    """The items of ``wanted`` to extract: not cached, or cached from audio that has changed since."""
    paths: dict[str, Path | None] = {}
    for item in wanted:
        try:
            paths[item.id] = dataset.audio_path(item)
        except MarbleEvalError:
            paths[item.id] = None
    check = cache.check_audio(paths)
    return [item for item in wanted if item.id not in check.current], check


def extract_dataset(model: AudioEncoder, dataset: Dataset, root: Path, settings: ExtractSettings,
                    splits: tuple[str, ...] = SPLITS, show_progress: bool = True) -> ExtractSummary:
    """Extract every item of ``splits`` not cached from its current audio; bad audio is skipped and reported.

    Finished items are written at least every ``settings.checkpoint_seconds`` and at once on
    SIGINT/SIGTERM (then ExtractionInterrupted is raised): a rerun resumes.
    """
    validate_settings(settings)
    cache = open_cache(root, model, dataset, settings).create()
    wanted = [item for item in dataset.items if item.split in splits]
    todo, check = todo_items(cache, dataset, wanted)
    summary = ExtractSummary(cache.directory, total=len(wanted), already_cached=len(wanted) - len(todo),
                             changed_audio=len(check.changed), hashed_files=check.hashed, data_dir=dataset.data_dir)
    started = time.perf_counter()
    with interrupted_by_signals(), computing_in(model, settings.precision), \
            ShardBuffer(cache, settings.shard_items, settings.checkpoint_seconds) as shards, \
            progress_bar(show_progress and bool(todo), realtime=True) as bar:
        loader = loader_for(window_stream(model, dataset, todo, cache.key, settings), model, settings)
        assembler = ItemAssembler()
        embedder = batch_embedder(model, settings)
        task = bar.add_task(f"extract {dataset.name}", total=len(todo), realtime="")

        def collect(done: Embedded | None) -> None:
            if done is None:
                return
            completed, failed = assembler.add(done.batch, done.states, done.frames)
            for item in completed:
                shards.add(todo[item.position].id, item.features, item.frames, item.stamp)
                summary.audio_seconds += item.seconds
                summary.extracted += 1
            for position, reason in failed:
                summary.failures[todo[position].id] = {"path": todo[position].path, "reason": reason}
            elapsed = time.perf_counter() - started
            bar.update(task, advance=len(completed) + len(failed),
                       realtime=f"{summary.audio_seconds / max(elapsed, 1e-9):.1f}x realtime")

        try:
            for batch in loader:  # outputs are collected one batch late: the host overlaps the device
                collect(embedder.submit(batch))
        except BaseException:  # Ctrl-C, SIGTERM, a crash: the batch already computed is kept too
            with contextlib.suppress(Exception):
                collect(embedder.drain())
            raise
        collect(embedder.drain())
    cache.write_failures(summary.failures)
    summary.wall_seconds = time.perf_counter() - started
    return summary


@dataclass
class Embeddings:
    """What ``embed_paths`` made: one row per embedded file, and the files it skipped with the reason."""

    features: np.ndarray                      # [n_embedded, L, D] float32
    paths: list[str]                          # the embedded files, row by row
    failures: dict[str, str] = field(default_factory=dict)  # skipped file -> reason

    def save(self, output: Path) -> None:
        """Write exactly ``output`` (atomically): an .npz with ``features``, ``paths`` and ``ids`` (file stems)."""
        buffer = io.BytesIO()
        np.savez(buffer, features=self.features, paths=np.array(self.paths, dtype=str),
                 ids=np.array([Path(path).stem for path in self.paths], dtype=str))
        atomic_write_bytes(Path(output), buffer.getvalue())


def embed_paths(model: AudioEncoder, paths: list[Path], window_seconds: float = DEFAULT_EMBED_WINDOW_SECONDS,
                max_seconds: float | None = None, batch_size: int | None = 8,
                show_progress: bool = False) -> Embeddings:
    """Embed each file (frame-weighted mean of every hidden state over its windows); bad files are skipped.

    Windows stream in as the file decodes, so a long file needs the memory of one window per batch row.
    """
    if model.info.fixed_window_seconds:
        window_seconds = float(model.info.fixed_window_seconds)
    batch_size = batch_size or DEFAULT_CPU_BATCH_SIZE
    rows, kept, failures = [], [], {}
    with computing_in(model, getattr(model, "precision", "fp32")), progress_bar(show_progress) as bar:
        task = bar.add_task("embed", total=len(paths))
        for path in paths:
            try:
                rows.append(_embed_file(model, Path(path), window_seconds, max_seconds, batch_size))
                kept.append(str(path))
            except AudioError as exc:
                failures[str(path)] = str(exc)
            bar.update(task, advance=1)
    features = np.stack(rows) if rows else np.zeros((0, model.info.n_hidden_states, model.info.dim), np.float32)
    return Embeddings(features, kept, failures)


def embed_files(model: AudioEncoder, paths: list[Path], window_seconds: float = 0.0,
                max_seconds: float | None = None, batch_size: int | None = 8) -> np.ndarray:
    """[n_files, L, D]: for each file every hidden state averaged over all frames of all windows (raises on bad audio)."""
    if model.info.fixed_window_seconds:
        window_seconds = float(model.info.fixed_window_seconds)
    batch_size = batch_size or DEFAULT_CPU_BATCH_SIZE
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
