"""Extraction on several processes, GPUs or machines: Lightning ``Trainer.predict`` with DDP.

Rank 0's list of not-yet-cached items is broadcast, and rank r takes every world_size-th item.
Each rank decodes in its own DataLoader workers (its share of the node's cores), embeds exactly as
the single-process loop does (``embedder.BatchEmbedder``) and writes shards straight into the cache
folder (unique names make many writers safe). At the end each rank leaves its failures and counts
in ``parts/``; no rank waits at a collective barrier. Ranks beat a heartbeat file (``liveness``):
global rank 0 waits for the parts of the live ranks, and a rank that dies ends the others within
minutes (they stop after writing what they finished). Rank 0 then merges: failures.json is the
union, the index is rebuilt from the shards on disk, and the items of a dead rank are listed as not
extracted; a rerun resumes. The cache folder must be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.strategies import DDPStrategy, Strategy

from marble_eval.datasets.base import SPLITS, Dataset, Item
from marble_eval.errors import MarbleEvalError
from marble_eval.features.assemble import ItemAssembler, ShardBuffer
from marble_eval.features.cache import FeatureCache
from marble_eval.features.embedder import Embedded
from marble_eval.features.extract import (
    ExtractSettings,
    ExtractSummary,
    batch_embedder,
    cache_key,
    computing_in,
    loader_for,
    open_cache,
    todo_items,
    validate_settings,
    window_stream,
)
from marble_eval.features.liveness import DEAD_AFTER_SECONDS, Heartbeat, RankWatch
from marble_eval.features.windows import WindowBatch
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.progress import progress_bar

# Only the start-up collectives (broadcast, Lightning's set-up barriers) remain, when every rank is alive and
# loading the same model: a rank that dies there ends the others after this long, not torch's 30 min.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
ACCELERATORS = {"cpu": "cpu", "cuda": "gpu", "mps": "mps"}


@dataclass(frozen=True)
class _ReloadedEncoder:
    """Stands in for an encoder while pickled: parametrized modules (MERT's weight-normed positional
    conv) cannot be pickled, so spawned ranks load the model again and check it is the same one."""

    info: ModelInfo

    def load(self) -> AudioEncoder:
        from marble_eval.models import load_model_like

        encoder = load_model_like(self.info)
        if encoder.info != self.info:
            raise MarbleEvalError(f"model {self.info.model_id!r}: loading it again in a spawned process gives a "
                                  f"different model (changed in memory?); use strategy 'ddp' or 'ddp_fork'")
        return encoder


class ExtractionModule(pl.LightningModule):
    """Wraps a frozen AudioEncoder for ``Trainer.predict``: one predict step embeds one WindowBatch."""

    def __init__(self, encoder: AudioEncoder, dataset: Dataset, todo: list[Item], settings: ExtractSettings) -> None:
        super().__init__()
        # A plain attribute, not a submodule: on_predict_start moves the encoder to this rank's device
        # itself, and pickling (spawned ranks) replaces it by a stand-in that reloads the weights.
        self.encoder = encoder
        self.dataset = dataset
        self.todo_ids = [item.id for item in todo]
        self.settings = settings
        self.share: list[Item] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "encoder": _ReloadedEncoder(self.encoder.info)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if isinstance(self.encoder, _ReloadedEncoder):
            self.encoder = self.encoder.load()

    def setup(self, stage: str) -> None:
        _ignore_lightning_advice()  # spawned ranks do not inherit the launcher's filters

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        """This rank's share of rank 0's to-do list (the broadcast keeps every rank on the same snapshot)."""
        trainer = self.trainer
        todo_ids = trainer.strategy.broadcast(self.todo_ids, src=0)
        by_id = {item.id: item for item in self.dataset.items}
        self.share = [by_id[item_id] for item_id in todo_ids[trainer.global_rank::trainer.world_size]]
        key = cache_key(self.encoder, self.dataset, self.settings)
        stream = window_stream(self.encoder, self.dataset, self.share, key, self.settings)
        return loader_for(stream, self.encoder, self.settings, local_ranks=max(1, trainer.num_devices))

    def on_predict_start(self) -> None:
        self.encoder.to(self.device, self.encoder.precision)
        self.running = contextlib.ExitStack()
        self.running.enter_context(computing_in(self.encoder, self.settings.precision))
        self.embedder = batch_embedder(self.encoder, self.settings)

    def on_predict_end(self) -> None:
        self.running.close()

    def transfer_batch_to_device(self, batch: WindowBatch, device: torch.device, dataloader_idx: int) -> WindowBatch:
        return batch  # the embedder copies the (pinned) waves to the device itself, non-blocking

    def predict_step(self, batch: WindowBatch, batch_idx: int) -> Embedded | None:
        """This batch's outputs on CPU; on CUDA the previous batch's (one batch late, as in the single-process
        loop: the writer drains the last one at the end)."""
        return self.embedder.submit(batch)


class ShardWriter(BasePredictionWriter):
    """Writes each rank's completed items as cache shards, then its failures and counts as a part file."""

    def __init__(self, cache: FeatureCache, shard_items: int, show_progress: bool,
                 checkpoint_seconds: float | None = None) -> None:
        super().__init__(write_interval="batch")
        self.cache = cache
        self.shard_items = shard_items
        self.checkpoint_seconds = checkpoint_seconds
        self.show_progress = show_progress
        self.stats: dict[str, float] = {}
        self.failures: dict[str, dict[str, str]] = {}

    def on_predict_start(self, trainer: pl.Trainer, pl_module: ExtractionModule) -> None:
        self.assembler = ItemAssembler()
        self.shards = ShardBuffer(self.cache, self.shard_items, self.checkpoint_seconds)
        self.stats = {"rank": trainer.global_rank, "items": len(pl_module.share), "extracted": 0, "audio_seconds": 0.0}
        self.failures = {}
        self.finished = False
        self.started = time.perf_counter()
        self.bar = progress_bar(self.show_progress and trainer.is_global_zero, realtime=True)
        self.bar.start()
        self.task = self.bar.add_task(f"extract rank 0 of {trainer.world_size}", total=len(pl_module.share),
                                      realtime="")
        self.heartbeat = Heartbeat(self.cache.directory / "parts", trainer.global_rank, trainer.world_size).start()

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: ExtractionModule, prediction: Any,
                           batch_indices: Any, batch: WindowBatch, batch_idx: int, dataloader_idx: int) -> None:
        self.collect(prediction, pl_module)
        if self.heartbeat.dead_peers:
            self.collect(pl_module.embedder.drain(), pl_module)
            self.finish(trainer)
            ranks = ", ".join(str(rank) for rank in sorted(self.heartbeat.dead_peers))
            raise PeerLost(f"rank(s) {ranks} stopped (no heartbeat for {DEAD_AFTER_SECONDS:.0f} s); this rank "
                           f"stopped too, its finished items are cached; rerun the same command to resume")

    def collect(self, prediction: Embedded | None, pl_module: ExtractionModule) -> None:
        """Assemble one batch's outputs; completed items go to shards, failed ones to this rank's failures."""
        if prediction is None:
            return
        completed, failed = self.assembler.add(prediction.batch, prediction.states, prediction.frames)
        for item in completed:
            self.shards.add(pl_module.share[item.position].id, item.features, item.frames, item.stamp)
            self.stats["extracted"] += 1
            self.stats["audio_seconds"] += item.seconds
        for position, reason in failed:
            item = pl_module.share[position]
            self.failures[item.id] = {"path": item.path, "reason": reason}
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, advance=len(completed) + len(failed),
                        realtime=f"{self.stats['audio_seconds'] / elapsed:.1f}x realtime per rank")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: ExtractionModule) -> None:
        self.collect(pl_module.embedder.drain(), pl_module)  # the last batch, on CUDA still pending
        self.finish(trainer)

    def finish(self, trainer: pl.Trainer) -> None:
        """Write what is finished and this rank's part (once); no barrier: rank 0 waits on the part files."""
        if getattr(self, "finished", False):
            return
        self.finished = True
        self.bar.stop()
        self.shards.close()
        self.stats["wall_seconds"] = time.perf_counter() - self.started
        self.cache.write_part(f"rank-{trainer.global_rank}", self.failures, self.stats)
        self.heartbeat.stop()


class PeerLost(MarbleEvalError):
    """Another rank of a distributed extraction stopped beating: this one stops too (its work is cached)."""


def merge_and_list_missing(cache: FeatureCache, todo_ids: list[str], todo_paths: list[str], world_size: int,
                           dead: set[int]) -> tuple[dict[str, dict[str, str]], list[dict[str, float]]]:
    """Merge the parts; the items of ``dead`` ranks that are not cached become failures that say so (failures.json
    tells what is missing; a rerun extracts exactly those)."""
    parts = cache.directory / "parts"
    for beat in parts.glob("*.alive") if parts.is_dir() else []:
        beat.unlink(missing_ok=True)
    failures, stats = cache.merge_parts()
    if dead:
        done = cache.done_ids()
        for rank in sorted(dead):
            for item_id, path in list(zip(todo_ids, todo_paths))[rank::world_size]:
                if item_id not in done and item_id not in failures:
                    failures[item_id] = {"path": path, "reason": f"not extracted: rank {rank} stopped before it "
                                                                  f"finished; rerun the same command to resume"}
        cache.write_failures(dict(sorted(failures.items())))
    return failures, stats


def build_strategy(strategy: str | Strategy | None) -> str | Strategy:
    """Lightning strategy for a name; DDP variants get a collective timeout that outlasts uneven ranks."""
    if isinstance(strategy, Strategy):
        return strategy
    name = strategy or "ddp"
    if name == "ddp":
        return DDPStrategy(timeout=COLLECTIVE_TIMEOUT)
    if name in ("ddp_spawn", "ddp_fork", "ddp_notebook"):
        method = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}[name]
        return DDPStrategy(start_method=method, timeout=COLLECTIVE_TIMEOUT)
    return name


def accelerator_for(device: AudioEncoder | torch.device | str) -> str:
    """Lightning accelerator name for a torch device (or the device a model was loaded on)."""
    if isinstance(device, AudioEncoder):
        device = device.device
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise MarbleEvalError(f"--device {device}: not a torch device; use cpu, cuda or cuda:N") from None
    if kind not in ACCELERATORS:
        raise MarbleEvalError(f"--device {device}: distributed extraction runs on cpu, cuda or mps")
    return ACCELERATORS[kind]


def _ignore_lightning_advice() -> None:
    """Lightning's advice that does not apply here: worker counts and persistence are chosen on
    purpose, and an iterable dataset has no batch indices."""
    for message in (".*does not have many workers.*", ".*persistent_workers.*", ".*infer the batch indices.*",
                    ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's set-up chatter and advice for the duration (filters and level restored after)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            _ignore_lightning_advice()
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def extract_distributed(model: AudioEncoder, dataset: Dataset, root: Path, settings: ExtractSettings,
                        devices: int | str = 2, num_nodes: int = 1, strategy: str | Strategy | None = "ddp",
                        accelerator: str | None = None, splits: tuple[str, ...] = SPLITS,
                        show_progress: bool = True) -> ExtractSummary:
    """Extract like ``extract_dataset`` with ``devices`` x ``num_nodes`` processes; same cache, item for item.

    With ``strategy="ddp"`` Lightning re-runs the current command for ranks > 0, so call this
    from a script or the CLI (not an interactive session); "ddp_spawn" works anywhere. Global
    rank 0 returns the whole run's summary; other ranks return their own share's.
    """
    validate_settings(settings)
    cache = open_cache(root, model, dataset, settings).create()
    wanted = [item for item in dataset.items if item.split in splits]
    todo, check = todo_items(cache, dataset, wanted)
    started = time.perf_counter()
    writer = ShardWriter(cache, settings.shard_items, show_progress, settings.checkpoint_seconds)
    module = ExtractionModule(model, dataset, todo, settings)
    with _quiet_lightning():
        trainer = pl.Trainer(accelerator=accelerator or accelerator_for(model), devices=devices,
                             num_nodes=num_nodes, strategy=build_strategy(strategy), precision="32-true",
                             logger=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False, use_distributed_sampler=False, callbacks=[writer])
        try:
            trainer.predict(module, return_predictions=False)
        except PeerLost:
            if not trainer.is_global_zero:
                raise
    summary = ExtractSummary(cache.directory, total=len(wanted), already_cached=len(wanted) - len(todo),
                             global_rank=trainer.global_rank, world_size=trainer.world_size,
                             changed_audio=len(check.changed), hashed_files=check.hashed, data_dir=dataset.data_dir)
    if trainer.is_global_zero:
        _, dead = RankWatch(cache.directory / "parts", trainer.world_size).wait()
        failures, stats = merge_and_list_missing(cache, [item.id for item in todo], [item.path for item in todo],
                                                 trainer.world_size, dead)
        summary.failures = failures
        summary.extracted = int(sum(part.get("extracted", 0) for part in stats))
        summary.audio_seconds = float(sum(part.get("audio_seconds", 0.0) for part in stats))
    else:
        summary.failures = dict(writer.failures)
        summary.extracted = int(writer.stats.get("extracted", 0))
        summary.audio_seconds = float(writer.stats.get("audio_seconds", 0.0))
    summary.wall_seconds = time.perf_counter() - started
    return summary
