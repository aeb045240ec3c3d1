"""One probe as a plain LightningModule (stock nn.Linear, torch.optim.Adam, ReduceLROnPlateau and
Lightning's EarlyStopping): the reference the batched grid trainer (marble_eval.probes.bank) must
reproduce exactly on CPU. Adam is torch's single-tensor implementation (foreach=False, fused=False),
whose arithmetic the bank's vectorised Adam repeats. Test-only: production code trains through the grid."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from marble_eval.lightning_utils import torch_threads
from marble_eval.probes.core import (
    EVAL_ROWS,
    WEIGHTED,
    HeadShape,
    Layer,
    dropout_mask,
    epoch_batches,
    init_head,
    init_state_logits,
    item_outputs,
    mix_states,
    probe_loss,
    stream,
)
from marble_eval.probes.data import SplitData, SplitTensors, check_data
from marble_eval.probes.evaluation import monitor_score, split_metrics
from marble_eval.probes.lightning_utils import make_trainer, quiet_fit
from marble_eval.probes.recipe import ProbeRecipe

MONITOR = "valid_monitor"  # the task type's monitored metric (TaskType.monitor)


class WindowBatches(Dataset):
    """Windows of one split; fetched a whole batch at a time (features as float32, item labels)."""

    def __init__(self, split: SplitTensors) -> None:
        self.split = split

    def __len__(self) -> int:
        return self.split.n_windows

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.split.features[index].float(), self.split.labels[self.split.item_of_window[index]]


def _as_batch(batch: Any) -> Any:
    """Collate function: WindowBatches already returns stacked tensors."""
    return batch


class EpochBatches(Sampler[list[int]]):
    """A batch sampler: each epoch's batches (windows, or whole items) from the probe's ``shuffle`` stream.
    (torch's RandomSampler also draws a discarded remainder permutation every epoch.)"""

    def __init__(self, split: SplitTensors, batch_unit: str, batch_size: int, gen: torch.Generator) -> None:
        self.split, self.batch_unit, self.batch_size, self.gen = split, batch_unit, batch_size, gen

    def __len__(self) -> int:
        units = self.split.n_items if self.batch_unit == "item" else self.split.n_windows
        return -(-units // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        return iter([batch.tolist() for batch in epoch_batches(self.gen, self.split, self.batch_unit, self.batch_size)])


class SeededDropout(nn.Module):
    """Dropout whose masks come from the probe's ``dropout`` stream instead of the global RNG."""

    def __init__(self, p: float, gen: torch.Generator) -> None:
        super().__init__()
        self.p, self.gen = p, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(self.gen, tuple(x.shape), self.p)


class Probe(nn.Module):
    """Layer choice + head: [B, L, D] window features -> [B, T] logits."""

    def __init__(self, shape: HeadShape, n_states: int, layer: Layer, seed: int, weighted_init: str = "uniform") -> None:
        super().__init__()
        self.layer = layer
        initial = init_state_logits(seed, n_states - 1, weighted_init)
        self.state_logits = nn.Parameter(initial) if layer == WEIGHTED else None
        linears = [nn.Linear(shape.dim, shape.n_labels)] if shape.hidden is None else [
            nn.Linear(shape.dim, shape.hidden), nn.Linear(shape.hidden, shape.n_labels)
        ]
        with torch.no_grad():
            for linear, (weight, bias) in zip(linears, zip(*[iter(init_head(seed, shape))] * 2)):
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
        if shape.hidden is None:
            self.head = nn.Sequential(linears[0])
        else:
            dropout = SeededDropout(shape.dropout, stream(seed, "dropout"))
            self.head = nn.Sequential(linears[0], nn.ReLU(), dropout, linears[1])

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.state_logits is None:
            x = states[:, self.layer]
        else:
            x = mix_states(self.state_logits, states[:, 1:])
        return self.head(x)


class ProbeModule(L.LightningModule):
    """One (lr, layer, seed) probe trained on in-memory features with the recipe's optimiser,
    ReduceLROnPlateau on the task's validation monitor (window logits averaged per item)."""

    def __init__(self, recipe: ProbeRecipe, splits: dict[str, SplitTensors], task: str, lr: float, layer: Layer, seed: int) -> None:
        super().__init__()
        train = splits["train"]
        n_states, dim = train.features.shape[1:]
        shape = HeadShape(dim, recipe.hidden_dim, train.labels.shape[1], recipe.dropout)
        self.recipe, self.splits, self.task, self.lr, self.seed = recipe, splits, task, lr, seed
        self.probe = Probe(shape, n_states, layer, seed, recipe.weighted_init)
        self._valid_logits: list[torch.Tensor] = []

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.probe(states)

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        sampler = EpochBatches(train, self.recipe.batch_unit, self.recipe.batch_size, stream(self.seed, "shuffle"))
        return DataLoader(WindowBatches(train), batch_sampler=sampler, collate_fn=_as_batch)

    def val_dataloader(self) -> DataLoader:
        data = WindowBatches(self.splits["valid"])
        return DataLoader(data, batch_size=EVAL_ROWS, sampler=SequentialSampler(data), collate_fn=_as_batch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        states, targets = batch
        return probe_loss(self.probe(states), targets, self.task)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._valid_logits.append(self.probe(batch[0]))

    def on_validation_epoch_end(self) -> None:
        valid = self.splits["valid"]
        logits = torch.cat(self._valid_logits)
        self._valid_logits.clear()
        probs = item_outputs(logits, valid.item_of_window, valid.windows_per_item, self.task)
        self.log(MONITOR, monitor_score(valid.labels, probs, self.recipe.empty_tags, self.task))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.recipe.weight_decay,
                                     foreach=False, fused=False)
        schedule = self.recipe.lr_schedule
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=schedule.factor, patience=schedule.patience, threshold=schedule.threshold
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch"}}


class KeepWeights(L.Callback):
    """Keeps in memory the weights of the best validation epoch (or of the last, if restore_best is
    off): Lightning's ModelCheckpoint only writes files."""

    def __init__(self, restore_best: bool) -> None:
        self.restore_best = restore_best
        self.best_score = float("-inf")
        self.best_epoch = 0
        self.epochs = 0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = float(trainer.callback_metrics[MONITOR])
        self.epochs = trainer.current_epoch + 1
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.epochs
            if self.restore_best:
                self.state = copy.deepcopy(pl_module.probe.state_dict())
        if not self.restore_best:
            self.state = copy.deepcopy(pl_module.probe.state_dict())


def evaluate_probe(probe: nn.Module, split: SplitTensors, task: str, tags: list[str] | None,
                   empty_tags: str = "exclude", aggregation: str = "mean_logit") -> dict[str, Any]:
    """Full metrics of one probe on one split (eval mode, windows in EVAL_ROWS chunks), its item
    outputs aggregated from the window logits as ``aggregation`` says."""
    probe.eval()
    with torch.no_grad():
        logits = torch.cat([
            probe(split.features[start : start + EVAL_ROWS].float()) for start in range(0, split.n_windows, EVAL_ROWS)
        ])
    probs = item_outputs(logits, split.item_of_window, split.windows_per_item, task, aggregation)
    return split_metrics(split.labels, probs, task, tags, empty_tags)


def train_probe(
    data: dict[str, SplitData],
    recipe: ProbeRecipe,
    task: str,
    lr: float,
    layer: Layer,
    seed: int,
    tags: list[str] | None = None,
    max_epochs: int | None = None,
    threads: int | None = None,
    aggregations: tuple[str, ...] = ("mean_logit",),
) -> dict[str, Any]:
    """Train one probe with lightning.Trainer; return its config, epochs, best epoch, valid/test metrics.
    ``threads``: torch intra-op threads while training (None: torch's current setting). With several
    ``aggregations`` (window aggregations, key task), ``by_aggregation`` holds the valid/test metrics
    of each."""
    splits = check_data(data, task)
    module = ProbeModule(recipe, splits, task, lr, layer, seed)
    keep = KeepWeights(recipe.restore_best)
    stop = EarlyStopping(MONITOR, mode="max", patience=recipe.early_stopping.patience, min_delta=recipe.early_stopping.min_delta)
    with quiet_fit(), torch_threads(threads):
        make_trainer(max_epochs or recipe.max_epochs, [keep, stop]).fit(module)
    if keep.state is not None:
        module.probe.load_state_dict(keep.state)
    scored = keep.state is not None  # None: no epoch had a finite validation score
    by_aggregation = {how: {name: evaluate_probe(module.probe, splits[name], task, tags, recipe.empty_tags, how)
                            for name in ("valid", "test")} for how in aggregations[1:]} if scored else {}
    return {
        **({"by_aggregation": by_aggregation} if by_aggregation else {}),
        "lr": lr,
        "layer": layer,
        "seed": seed,
        "epochs": keep.epochs,
        "best_epoch": keep.best_epoch,
        **{name: evaluate_probe(module.probe, splits[name], task, tags, recipe.empty_tags) if scored else None
           for name in ("valid", "test")},
    }
