"""Many probes of one recipe trained at once as one vectorised LightningModule.

Every probe's parameters are rows of stacked tensors [P, ...] and the heads run as batched matmuls
(torch.baddbmm under autograd) on inputs gathered from one shared batch per seed. Each probe keeps
what it would have alone: its own ``torch.optim.Adam`` (fused) over its rows of the stacked tensors,
its own ReduceLROnPlateau, early stopping and best-validation snapshot. A stopped probe is dropped
from the stacked tensors at the end of the epoch (so it costs nothing more and never changes), and
the fit ends when none is left.

Probe order inside the bank ("positions"): by seed, and within a seed the single-state probes first,
then the weighted ones, so that each seed's probes, and each kind within it, are contiguous rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch

from marble_eval.probes.core import (
    EVAL_ROWS,
    WEIGHTED,
    HeadShape,
    Layer,
    dropout_mask,
    epoch_batches,
    init_head,
    init_state_logits,
    item_probabilities,
    mix_states,
    monitor_value,
    probe_loss,
    stream,
)
from marble_eval.probes.data import SplitTensors
from marble_eval.probes.evaluation import monitor_scores
from marble_eval.probes.recipe import ProbeRecipe


@dataclass(frozen=True)
class ProbeConfig:
    """One point of the grid."""

    lr: float
    layer: Layer
    seed: int


def _linear_blocks(x: list[torch.Tensor], weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """Consecutive row blocks of stacked linears: block k is x[k] [P_k, B, in] @ weights[k] + biases[k]."""
    return torch.cat([torch.baddbmm(b, block, w) for block, w, b in zip(x, weights, biases)])


def head_logits(params: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stacked heads: x [P, B, D] -> logits [P, B, T]; ``mask``: dropout mask broadcast to [P, B, H].
    Weights are stored [P, in, out] (nn.Linear's weight transposed)."""
    if "w" in params:
        return torch.baddbmm(params["b"], x, params["w"])
    hidden = torch.baddbmm(params["b1"], x, params["w1"]).relu()
    if mask is not None:
        hidden = hidden * mask
    return torch.baddbmm(params["b2"], hidden, params["w2"])


def eval_inputs(states: torch.Tensor, layer_of: torch.Tensor, state_logits: torch.Tensor) -> torch.Tensor:
    """Inputs of every stacked probe from shared windows: states [R, L, D] -> [P, R, D]
    (``layer_of`` -1: the probe's weighted sum of states 1..L-1)."""
    single = torch.nonzero(layer_of >= 0).flatten()
    inputs = torch.empty(len(layer_of), states.shape[0], states.shape[2])
    if single.numel():
        inputs[single] = states.transpose(0, 1)[layer_of[single]]
    # One weighted probe at a time keeps the [R, L-1, D] temporary small.
    for row in torch.nonzero(layer_of < 0).flatten().tolist():
        inputs[row] = mix_states(state_logits[row], states[:, 1:])
    return inputs


def predict_items(params: dict[str, torch.Tensor], state_logits: torch.Tensor, layer_of: torch.Tensor,
                  split: SplitTensors, task: str) -> torch.Tensor:
    """Item probabilities [P, n_items, T] of every stacked probe on one split (no dropout)."""
    with torch.no_grad():
        chunks = []
        for start in range(0, split.n_windows, EVAL_ROWS):
            states = split.features[start : start + EVAL_ROWS].float()
            chunks.append(head_logits(params, eval_inputs(states, layer_of, state_logits)))
        # Per probe: elementwise kernels vectorise by position in the tensor, and exp/sigmoid round
        # differently in their SIMD and scalar paths; one probe at a time matches the one-probe trainer.
        logits = torch.cat(chunks, dim=1)
        return torch.stack([item_probabilities(row, split.item_of_window, split.windows_per_item, task) for row in logits])


class ProbeBank(L.LightningModule):
    """The probes of ``configs`` (one recipe) stacked and trained together; see the module docstring."""

    def __init__(self, recipe: ProbeRecipe, splits: dict[str, SplitTensors], task: str, configs: list[ProbeConfig]) -> None:
        super().__init__()
        self.automatic_optimization = False
        train = splits["train"]
        n_states, dim = (int(n) for n in train.features.shape[1:])
        shape = HeadShape(dim, recipe.hidden_dim, int(train.labels.shape[1]), recipe.dropout)
        self.recipe, self.splits, self.task, self.shape = recipe, splits, task, shape
        self.seeds = sorted({c.seed for c in configs})
        order = sorted(range(len(configs)), key=lambda i: (self.seeds.index(configs[i].seed), configs[i].layer == WEIGHTED))
        self.configs = [configs[i] for i in order]  # by position
        self.chunk_index = order  # position -> index in ``configs``
        self.layer_of = torch.tensor([c.layer if c.layer != WEIGHTED else -1 for c in self.configs])
        self.group_of = torch.tensor([self.seeds.index(c.seed) for c in self.configs])
        self.shuffle_gens = [stream(seed, "shuffle") for seed in self.seeds]
        self.dropout_gens = [stream(seed, "dropout") for seed in self.seeds]
        initial = {seed: init_head(seed, shape) for seed in self.seeds}
        self.head_names = ["w", "b"] if shape.hidden is None else ["w1", "b1", "w2", "b2"]
        data = {}
        for k, name in enumerate(self.head_names):
            rows = [initial[c.seed][k] for c in self.configs]
            data[name] = torch.stack([r.t() if name.startswith("w") else r[None] for r in rows])
        data["state_logits"] = torch.stack([init_state_logits(c.seed, n_states - 1, recipe.weighted_init) for c in self.configs])
        self.data = data  # the stacked rows of the active probes (the optimisers update them in place)
        n = len(configs)
        self.active = torch.arange(n)  # positions still training
        self.snapshot = {name: t.clone() for name, t in data.items()}
        self.best_score = np.full(n, -np.inf)  # best monitor (snapshot rule: strictly greater)
        self.stop_best = np.full(n, -np.inf, dtype=np.float32)  # early stopping's best
        self.wait = np.zeros(n, dtype=np.int64)
        self.best_epoch = np.zeros(n, dtype=np.int64)
        self.epochs = np.zeros(n, dtype=np.int64)
        self.stopped = np.zeros(n, dtype=bool)
        self.probe_optimizers: list[torch.optim.Adam | None] = [None] * n
        self.schedulers: list[Any] = [None] * n
        for pos, config in enumerate(self.configs):
            self.probe_optimizers[pos] = torch.optim.Adam(self._rows(pos, pos), lr=config.lr, weight_decay=recipe.weight_decay, fused=True)
            self.schedulers[pos] = self._scheduler(self.probe_optimizers[pos])
        self._leaves = self._make_leaves()
        self._batches: list[list[torch.Tensor]] = []

    # -- per-probe optimisers over rows of the stacked tensors -----------------------------------------

    def _rows(self, pos: int, row: int) -> list[torch.Tensor]:
        """The trained tensors of the probe at ``pos`` (row ``row`` of the stacked tensors), as views."""
        names = self.head_names + (["state_logits"] if self.layer_of[pos] < 0 else [])
        return [self.data[name][row] for name in names]

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        schedule = self.recipe.lr_schedule
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=schedule.factor, patience=schedule.patience, threshold=schedule.threshold
        )

    def _make_leaves(self) -> dict[str, torch.Tensor]:
        """Autograd leaves sharing memory with ``data``: the forward reads them, backward fills their .grad."""
        return {name: t.detach().requires_grad_() for name, t in self.data.items()}

    def _step_optimisers(self) -> None:
        """Hand every active probe its rows of the stacked gradients and step its Adam."""
        for row, pos in enumerate(self.active.tolist()):
            optimizer = self.probe_optimizers[pos]
            params = optimizer.param_groups[0]["params"]
            names = self.head_names + (["state_logits"] if self.layer_of[pos] < 0 else [])
            for param, name in zip(params, names):
                param.grad = self._leaves[name].grad[row]
            optimizer.step()
            for param in params:
                param.grad = None
        for leaf in self._leaves.values():
            leaf.grad = None

    def _compact(self) -> None:
        """Drop stopped probes from the stacked tensors (their snapshots are already taken); each kept
        probe gets an Adam over its new rows carrying its state (moments, step, learning rate)."""
        done = torch.from_numpy(self.stopped[self.active.numpy()])
        for pos in self.active[done].tolist():
            self.probe_optimizers[pos] = self.schedulers[pos] = None
        keep = torch.nonzero(~done).flatten()
        self.data = {name: t[keep].clone() for name, t in self.data.items()}
        self.active = self.active[keep]
        for row, pos in enumerate(self.active.tolist()):
            old_optimizer, old_scheduler = self.probe_optimizers[pos], self.schedulers[pos]
            optimizer = torch.optim.Adam(self._rows(pos, row), fused=True)
            optimizer.load_state_dict(old_optimizer.state_dict())
            scheduler = self._scheduler(optimizer)
            scheduler.load_state_dict(old_scheduler.state_dict())
            self.probe_optimizers[pos], self.schedulers[pos] = optimizer, scheduler
        self._leaves = self._make_leaves()

    def _take_snapshot(self, rows: list[int]) -> None:
        if not rows:
            return
        index = torch.tensor(rows)
        positions = self.active[index]
        for name, tensor in self.data.items():
            self.snapshot[name][positions] = tensor[index]

    # -- Lightning hooks --------------------------------------------------------------------------

    @property
    def n_active(self) -> int:
        return int(self.active.numel())

    def configure_optimizers(self) -> None:
        return None  # each probe's Adam is stepped by the bank itself (_step_optimisers)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        train = self.splits["train"]
        units = train.n_items if self.recipe.batch_unit == "item" else train.n_windows
        n_steps = -(-units // self.recipe.batch_size)
        return torch.utils.data.DataLoader(list(range(n_steps)), batch_size=None)

    def on_train_epoch_start(self) -> None:
        train, unit, size = self.splits["train"], self.recipe.batch_unit, self.recipe.batch_size
        self._batches = [epoch_batches(gen, train, unit, size) for gen in self.shuffle_gens]

    def _blocks(self) -> list[tuple[int, int, int]]:
        """(seed group, single-state rows, weighted rows) of the active probes, in row order."""
        groups = self.group_of[self.active]
        singles = self.layer_of[self.active] >= 0
        blocks = []
        for group in torch.unique_consecutive(groups).tolist():
            mine = groups == group
            n_single = int((mine & singles).sum())
            blocks.append((group, n_single, int(mine.sum()) - n_single))
        return blocks

    def training_step(self, batch: Any, batch_idx: int) -> None:
        train, leaves = self.splits["train"], self._leaves
        blocks = self._blocks()
        sizes = [n for _, n_single, n_weighted in blocks for n in (n_single, n_weighted)]
        # split() (not slicing): its backward writes every block's gradient into one tensor.
        pieces = {name: leaf.split(sizes) for name, leaf in leaves.items()}
        layer_of = self.layer_of[self.active].split(sizes)
        losses = []
        for k, (group, n_single, n_weighted) in enumerate(blocks):
            windows = self._batches[group][batch_idx]
            states = train.features[windows].float()  # [B, L, D]
            targets = train.labels[train.item_of_window[windows]]  # [B, T]
            inputs, used = [], [k_ for k_ in (2 * k, 2 * k + 1) if sizes[k_]]
            if n_single:
                inputs.append(states.transpose(0, 1)[layer_of[2 * k]])
            if n_weighted:
                inputs.append(mix_states(pieces["state_logits"][2 * k + 1], states[None, :, 1:].expand(n_weighted, -1, -1, -1)))
            first = ("w", "b") if self.shape.hidden is None else ("w1", "b1")
            out = _linear_blocks(inputs, [pieces[first[0]][i] for i in used], [pieces[first[1]][i] for i in used])
            if self.shape.hidden is not None:
                hidden = out.relu()
                if self.shape.dropout > 0:
                    mask = dropout_mask(self.dropout_gens[group], (states.shape[0], self.shape.hidden), self.shape.dropout)
                    hidden = hidden * mask
                w2, b2 = (torch.cat([pieces[name][i] for i in used]) for name in ("w2", "b2"))
                out = torch.baddbmm(b2, hidden, w2)
            # One probe at a time, for the same reason as in predict_items (BCE's sigmoid in backward).
            losses += [probe_loss(row, targets, self.task) for row in out]
        self.manual_backward(torch.stack(losses).sum())
        self._step_optimisers()

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        valid = self.splits["valid"]
        probs = predict_items(self.data, self.data["state_logits"], self.layer_of[self.active], valid, self.task)
        scores = monitor_scores(valid.labels, probs, self.recipe.empty_tags, self.task)
        stopping = self.recipe.early_stopping
        improved, finished = [], []
        for row, (pos, score) in enumerate(zip(self.active.tolist(), scores)):
            self.epochs[pos] = epoch
            if score > self.best_score[pos]:  # the snapshot rule of the one-probe trainer
                self.best_score[pos], self.best_epoch[pos] = score, epoch
                improved.append(row)
            # Lightning's EarlyStopping rule, one probe at a time (the callback stops the whole Trainer).
            if not np.isfinite(score):
                self.stopped[pos] = True
            elif np.float32(score) - np.float32(stopping.min_delta) > self.stop_best[pos]:
                self.stop_best[pos], self.wait[pos] = score, 0
            else:
                self.wait[pos] += 1
                self.stopped[pos] = self.wait[pos] >= stopping.patience
            self.schedulers[pos].step(monitor_value(score))
            if self.stopped[pos] or epoch >= self.trainer.max_epochs:
                finished.append(row)
        self._take_snapshot(improved if self.recipe.restore_best else finished)
        if self.stopped[self.active.numpy()].any():
            self._compact()
        if self.n_active == 0:
            self.trainer.should_stop = True

    # -- results ------------------------------------------------------------------------------------

    def final_probabilities(self, split: SplitTensors) -> torch.Tensor:
        """Item probabilities [P, n_items, T] of every probe with its kept weights, by chunk index."""
        probs = predict_items(self.snapshot, self.snapshot["state_logits"], self.layer_of, split, self.task)
        by_chunk = torch.empty_like(probs)
        by_chunk[torch.tensor(self.chunk_index)] = probs
        return by_chunk

    def training_record(self) -> list[dict[str, int]]:
        """Epochs run and best epoch of every probe, by chunk index."""
        record: list[dict[str, int]] = [{}] * len(self.configs)
        for pos, index in enumerate(self.chunk_index):
            record[index] = {"epochs": int(self.epochs[pos]), "best_epoch": int(self.best_epoch[pos])}
        return record
