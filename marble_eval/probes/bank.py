"""Many probes of one recipe trained at once as one vectorised LightningModule.

Every parameter has a leading probe dimension and the heads run as batched matmuls (baddbmm) on
inputs gathered from one shared batch per seed. Each probe keeps what it would have alone: its own
torch Adam (fused; over views into the stacked parameters) and ReduceLROnPlateau, its own early
stopping and best-validation snapshot. A stopped probe is dropped from the stacked tensors at the
end of the epoch (so it costs nothing more and never changes), and the fit ends when none is left.

Probe order inside the bank: single-state probes first, then weighted ones ("positions").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from marble_eval.probes.core import (
    EVAL_ROWS,
    WEIGHTED,
    HeadShape,
    Layer,
    dropout_mask,
    epoch_permutation,
    init_head,
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


@dataclass(frozen=True)
class Layout:
    """Which hidden state(s) each stacked probe reads: the first ``n_single`` read ``layer_of``,
    the rest are weighted sums; ``group_of`` is the probe's seed group (its shared batch)."""

    layer_of: torch.Tensor
    group_of: torch.Tensor
    n_single: int

    def take(self, rows: torch.Tensor) -> "Layout":
        """The layout of a subset of rows (kept in order, so single-state probes stay first)."""
        return Layout(self.layer_of[rows], self.group_of[rows], int((rows < self.n_single).sum()))


class StackedLinear(torch.autograd.Function):
    """y[p] = x[p] @ w[p] + b[p] for every probe p. Same forward and gradients as autograd's
    baddbmm; only the weight gradient is taken one probe at a time with mm, which on CPU runs
    ~1.7x faster than the batched bmm for these shapes (small batch, large weight)."""

    @staticmethod
    def forward(ctx, bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias, x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_bias = grad.sum(dim=1, keepdim=True) if ctx.needs_input_grad[0] else None
        grad_x = torch.bmm(grad, weight.mT) if ctx.needs_input_grad[1] else None
        grad_weight = None
        if ctx.needs_input_grad[2]:
            grad_weight = torch.empty_like(weight)
            for p in range(weight.shape[0]):
                torch.mm(x[p].t(), grad[p], out=grad_weight[p])
        return grad_bias, grad_x, grad_weight


def head_logits(params: dict[str, torch.Tensor], x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stacked heads: x [P, B, D] -> logits [P, B, T]; ``mask`` is the dropout mask [P, B, H].
    Weights are stored [P, in, out] (nn.Linear's weight transposed) so that their gradients need
    no transposing copy."""
    linear = StackedLinear.apply
    if "w" in params:
        return linear(params["b"], x, params["w"])
    hidden = linear(params["b1"], x, params["w1"]).relu()
    if mask is not None:
        hidden = hidden * mask
    return linear(params["b2"], hidden, params["w2"])


def eval_inputs(states: torch.Tensor, layout: Layout, state_logits: torch.Tensor) -> torch.Tensor:
    """Inputs of every stacked probe from shared windows: states [R, L, D] -> [P, R, D]."""
    parts = []
    if layout.n_single:
        parts.append(states[:, layout.layer_of[: layout.n_single]].transpose(0, 1))
    # One weighted probe at a time keeps the [R, L-1, D] temporary small.
    parts += [mix_states(logits, states[:, 1:])[None] for logits in state_logits[layout.n_single :]]
    return torch.cat(parts)


def predict_items(
    params: dict[str, torch.Tensor], state_logits: torch.Tensor, layout: Layout, split: SplitTensors, task: str
) -> torch.Tensor:
    """Item probabilities [P, n_items, T] of every stacked probe on one split (no dropout)."""
    with torch.no_grad():
        chunks = []
        for start in range(0, split.n_windows, EVAL_ROWS):
            states = split.features[start : start + EVAL_ROWS].float()
            chunks.append(head_logits(params, eval_inputs(states, layout, state_logits)))
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
        n_states, dim = train.features.shape[1:]
        shape = HeadShape(int(dim), recipe.hidden_dim, int(train.labels.shape[1]), recipe.dropout)
        self.recipe, self.splits, self.task, self.shape = recipe, splits, task, shape
        order = sorted(range(len(configs)), key=lambda i: configs[i].layer == WEIGHTED)
        self.configs = [configs[i] for i in order]  # by position
        self.chunk_index = order  # position -> index in ``configs``
        seeds = sorted({c.seed for c in configs})
        self.layout0 = Layout(
            layer_of=torch.tensor([c.layer if c.layer != WEIGHTED else -1 for c in self.configs]),
            group_of=torch.tensor([seeds.index(c.seed) for c in self.configs]),
            n_single=sum(c.layer != WEIGHTED for c in self.configs),
        )
        self.shuffle_gens = [stream(seed, "shuffle") for seed in seeds]
        self.dropout_gens = [stream(seed, "dropout") for seed in seeds]
        initial = {seed: init_head(seed, shape) for seed in seeds}
        names = ["w", "b"] if shape.hidden is None else ["w1", "b1", "w2", "b2"]
        stacked = {}
        for k, name in enumerate(names):
            rows = [initial[c.seed][k] for c in self.configs]
            stacked[name] = torch.stack([r.t() if name.startswith("w") else r[None] for r in rows])
        self.params = {name: t.requires_grad_() for name, t in stacked.items()}
        self.state_logits = torch.zeros(len(configs), int(n_states) - 1, requires_grad=True)
        self.active = torch.arange(len(configs))  # positions still training
        n = len(configs)
        self.snapshot = {name: t.detach().clone() for name, t in self.params.items()}
        self.snapshot_logits = self.state_logits.detach().clone()
        self.best_score = np.full(n, -np.inf)  # best monitor (snapshot rule: strictly greater)
        self.stop_best = np.full(n, -np.inf, dtype=np.float32)  # early stopping's best
        self.wait = np.zeros(n, dtype=np.int64)
        self.best_epoch = np.zeros(n, dtype=np.int64)
        self.epochs = np.zeros(n, dtype=np.int64)
        self.stopped = np.zeros(n, dtype=bool)
        self.optimizers_: list[torch.optim.Adam | None] = [None] * n
        self.schedulers: list[Any] = [None] * n
        self.views: list[list[nn.Parameter]] = [[] for _ in range(n)]
        self._bind_views()
        self._perms: list[torch.Tensor] = []

    # -- per-probe optimisers over views into the stacked tensors --------------------------------

    def _bind_views(self) -> None:
        """Point each active probe's optimiser at its rows of the current stacked tensors."""
        schedule = self.recipe.lr_schedule
        for row, pos in enumerate(self.active.tolist()):
            views = [nn.Parameter(t.detach()[row]) for t in self.params.values()]
            if self.configs[pos].layer == WEIGHTED:
                views.append(nn.Parameter(self.state_logits.detach()[row]))
            optimizer = self.optimizers_[pos]
            if optimizer is None:
                optimizer = torch.optim.Adam(views, lr=self.configs[pos].lr, weight_decay=self.recipe.weight_decay, fused=True)
                self.optimizers_[pos] = optimizer
                self.schedulers[pos] = torch.optim.lr_scheduler.ReduceLROnPlateau(
                    optimizer, mode="max", factor=schedule.factor, patience=schedule.patience, threshold=schedule.threshold
                )
            else:
                for old, new in zip(self.views[pos], views):
                    if old in optimizer.state:
                        optimizer.state[new] = optimizer.state.pop(old)
                optimizer.param_groups[0]["params"] = views
            self.views[pos] = views

    def _compact(self) -> None:
        """Drop stopped probes from the stacked tensors (their snapshots are already taken)."""
        done = torch.from_numpy(self.stopped[self.active.numpy()])
        for pos in self.active[done].tolist():
            self.optimizers_[pos] = self.schedulers[pos] = None
            self.views[pos] = []
        keep = torch.nonzero(~done).flatten()
        self.params = {name: t.detach()[keep].clone().requires_grad_() for name, t in self.params.items()}
        self.state_logits = self.state_logits.detach()[keep].clone().requires_grad_()
        self.active = self.active[keep]
        self._bind_views()

    def _take_snapshot(self, rows: list[int]) -> None:
        if not rows:
            return
        index = torch.tensor(rows)
        positions = self.active[index]
        with torch.no_grad():
            for name, tensor in self.params.items():
                self.snapshot[name][positions] = tensor[index]
            self.snapshot_logits[positions] = self.state_logits[index]

    # -- Lightning hooks --------------------------------------------------------------------------

    @property
    def n_active(self) -> int:
        return int(self.active.numel())

    def configure_optimizers(self) -> None:
        return None  # each probe has its own optimiser (see _bind_views)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        n_steps = -(-self.splits["train"].n_windows // self.recipe.batch_size)
        return torch.utils.data.DataLoader(list(range(n_steps)), batch_size=None)

    def on_train_epoch_start(self) -> None:
        n = self.splits["train"].n_windows
        self._perms = [epoch_permutation(gen, n) for gen in self.shuffle_gens]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        train, size = self.splits["train"], self.recipe.batch_size
        windows = [perm[batch_idx * size : (batch_idx + 1) * size] for perm in self._perms]
        states = torch.stack([train.features[w].float() for w in windows])  # [G, B, L, D]
        targets = torch.stack([train.labels[train.item_of_window[w]] for w in windows])  # [G, B, T]
        layout = self.layout0.take(self.active)
        parts = []
        if layout.n_single:
            parts.append(states[layout.group_of[: layout.n_single], :, layout.layer_of[: layout.n_single]])
        if layout.n_single < self.n_active:
            weighted = states[:, :, 1:][layout.group_of[layout.n_single :]]
            parts.append(mix_states(self.state_logits[layout.n_single :], weighted))
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        mask = None
        if self.shape.hidden is not None and self.shape.dropout > 0:
            batch_shape = (states.shape[1], self.shape.hidden)
            masks = torch.stack([dropout_mask(gen, batch_shape, self.shape.dropout) for gen in self.dropout_gens])
            mask = masks[layout.group_of]
        logits, targets = head_logits(self.params, x, mask), targets[layout.group_of]
        # One probe at a time, for the same reason as in predict_items (BCE's sigmoid in backward).
        loss = torch.stack([probe_loss(logits[p], targets[p], self.task) for p in range(len(logits))]).sum()
        self.manual_backward(loss)
        grads = [t.grad for t in self.params.values()]
        logits_grad = self.state_logits.grad
        for row, pos in enumerate(self.active.tolist()):
            views = self.views[pos]
            for view, grad in zip(views, grads):
                view.grad = grad[row]
            if len(views) > len(grads):
                views[-1].grad = logits_grad[row]
            self.optimizers_[pos].step()
        for tensor in [*self.params.values(), self.state_logits]:
            tensor.grad = None

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        layout = self.layout0.take(self.active)
        valid = self.splits["valid"]
        scores = monitor_scores(valid.labels, predict_items(self.params, self.state_logits, layout, valid, self.task))
        stopping = self.recipe.early_stopping
        improved, finished = [], []
        for row, (pos, score) in enumerate(zip(self.active.tolist(), scores)):
            self.epochs[pos] = epoch
            if score > self.best_score[pos]:  # the snapshot rule (KeepWeights in single.py)
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
        probs = predict_items(self.snapshot, self.snapshot_logits, self.layout0, split, self.task)
        by_chunk = torch.empty_like(probs)
        by_chunk[torch.tensor(self.chunk_index)] = probs
        return by_chunk

    def training_record(self) -> list[dict[str, int]]:
        """Epochs run and best epoch of every probe, by chunk index."""
        record: list[dict[str, int]] = [{}] * len(self.configs)
        for pos, index in enumerate(self.chunk_index):
            record[index] = {"epochs": int(self.epochs[pos]), "best_epoch": int(self.best_epoch[pos])}
        return record
