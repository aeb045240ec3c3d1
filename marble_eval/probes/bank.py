"""Many probes of one recipe trained at once as one vectorised LightningModule.

Every parameter has a leading probe dimension and the heads run as batched matmuls on inputs
gathered from one shared batch per seed. Each probe keeps what it would have alone: its own Adam
moments (rows of stacked buffers, updated by torch's fused Adam kernel, one call per distinct
learning rate), its own ReduceLROnPlateau, early stopping and best-validation snapshot. A stopped
probe is dropped from the stacked tensors at the end of the epoch (so it costs nothing more and
never changes), and the fit ends when none is left.

Probe order inside the bank: single-state probes first, then weighted ones ("positions").
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
    """y[p] = x[p] @ w[p] + b[p] for every probe p, with x given as consecutive blocks of probe rows.

    Same numbers as autograd's baddbmm (on CPU the batched weight gradient equals mm's bit for bit),
    with two savings: the input gradient is computed only for blocks that need one (the single-state
    probes' inputs are frozen features; only weighted probes backpropagate into their mixture), and
    the weight gradient is written into ``weight_grad``, a buffer the caller keeps from step to step.
    A fresh gradient of this size (~100 MB) would be newly mapped memory on every step, whose page
    faults cost as much as the matmul that fills it; autograd's .grad cannot be told to reuse memory.
    The weight itself is therefore not an autograd input: when ``weight_grad`` is given, backward
    fills it as a side effect (the bias carries the graph)."""

    @staticmethod
    def forward(ctx, bias: torch.Tensor, weight: torch.Tensor, weight_grad: torch.Tensor | None,
                *blocks: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, *blocks)
        ctx.weight_grad = weight_grad
        out = torch.empty(weight.shape[0], blocks[0].shape[1], weight.shape[2], dtype=weight.dtype)
        row = 0
        for block in blocks:
            rows = slice(row, row + block.shape[0])
            torch.baddbmm(bias[rows], block, weight[rows], out=out[rows])
            row = rows.stop
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, *blocks = ctx.saved_tensors
        grad_bias = grad.sum(dim=1, keepdim=True) if ctx.needs_input_grad[0] else None
        grad_weight = ctx.weight_grad
        if grad_weight is None and ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
        grad_blocks: list[torch.Tensor | None] = []
        row = 0
        for index, block in enumerate(blocks):
            rows = slice(row, row + block.shape[0])
            if grad_weight is not None:
                torch.bmm(block.mT, grad[rows], out=grad_weight[rows])
            needs = ctx.needs_input_grad[3 + index]
            grad_blocks.append(torch.bmm(grad[rows], weight[rows].mT) if needs else None)
            row = rows.stop
        returned = grad_weight if ctx.weight_grad is None and ctx.needs_input_grad[1] else None
        return grad_bias, returned, None, *grad_blocks


def head_logits(params: dict[str, torch.Tensor], x: torch.Tensor | list[torch.Tensor],
                mask: torch.Tensor | None = None, weight_grads: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Stacked heads: x [P, B, D] (or consecutive row blocks of it) -> logits [P, B, T]; ``mask`` is
    the dropout mask [P, B, H]; ``weight_grads``: buffers that backward fills with the weights'
    gradients (else the weights get .grad as usual). Weights are stored [P, in, out] (nn.Linear's
    weight transposed) so that their gradients need no transposing copy."""
    blocks = [x] if isinstance(x, torch.Tensor) else [block for block in x if block.shape[0]]
    buffers = weight_grads or {}

    def linear(index: str, *inputs: torch.Tensor) -> torch.Tensor:
        name = f"w{index}"
        return StackedLinear.apply(params[f"b{index}"], params[name], buffers.get(name), *inputs)

    if "w" in params:
        return linear("", *blocks)
    hidden = linear("1", *blocks).relu()
    if mask is not None:
        hidden = hidden * mask
    return linear("2", hidden)


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
        # Biases carry the autograd graph; weights get their gradients in ``weight_grads`` (StackedLinear).
        self.params = {name: t.requires_grad_(name.startswith("b")) for name, t in stacked.items()}
        self.weight_grads = {name: torch.zeros_like(t) for name, t in self.params.items() if name.startswith("w")}
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
        # Adam's moments, stacked like the parameters; one step count for all (they start together).
        self.moments = {name: (torch.zeros_like(t), torch.zeros_like(t)) for name, t in self._tensors().items()}
        self.step_count = 0
        # Per probe, an Adam that is never stepped: it holds the probe's hyper-parameters (torch's
        # defaults, as in the one-probe trainer) and the learning rate its ReduceLROnPlateau lowers.
        self.lr_holders: list[torch.optim.Adam | None] = [None] * n
        self.schedulers: list[Any] = [None] * n
        schedule = recipe.lr_schedule
        for pos, config in enumerate(self.configs):
            holder = torch.optim.Adam([torch.zeros(1)], lr=config.lr, weight_decay=recipe.weight_decay, fused=True)
            self.lr_holders[pos] = holder
            self.schedulers[pos] = torch.optim.lr_scheduler.ReduceLROnPlateau(
                holder, mode="max", factor=schedule.factor, patience=schedule.patience, threshold=schedule.threshold
            )
        self._perms: list[torch.Tensor] = []

    # -- the stacked Adam ---------------------------------------------------------------------------

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every stacked trained tensor by name (the heads' parameters and the state logits)."""
        return {**self.params, "state_logits": self.state_logits}

    def _adam_step(self) -> None:
        """One Adam step of every active probe: torch's fused Adam kernel (the one Adam(fused=True)
        runs) over the probes' rows, one call per distinct hyper-parameter set. The kernel works
        tensor by tensor, so each probe's update is the one its own optimiser would make."""
        self.step_count += 1
        step = torch.tensor(float(self.step_count))
        tensors = self._tensors()
        groups: dict[tuple, list[int]] = {}
        for row, pos in enumerate(self.active.tolist()):
            group = self.lr_holders[pos].param_groups[0]
            key = (group["lr"], group["betas"], group["eps"], group["weight_decay"])
            groups.setdefault(key, []).append(row)
        n_single = self.layout0.take(self.active).n_single
        with torch.no_grad():
            for (lr, (beta1, beta2), eps, weight_decay), rows in groups.items():
                lists: list[list[torch.Tensor]] = [[], [], [], []]
                for name, tensor in tensors.items():
                    exp_avg, exp_avg_sq = self.moments[name]
                    grad = self.weight_grads.get(name, tensor.grad)
                    for row in rows:
                        if name == "state_logits" and row < n_single:
                            continue  # single-state probes have no mixture
                        for target, source in zip(lists, (tensor, grad, exp_avg, exp_avg_sq)):
                            target.append(source[row])
                torch._fused_adam_(*lists, [], [step] * len(lists[0]), lr=lr, beta1=beta1, beta2=beta2,
                                   weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)
        for tensor in tensors.values():
            tensor.grad = None

    def _compact(self) -> None:
        """Drop stopped probes from the stacked tensors (their snapshots are already taken)."""
        done = torch.from_numpy(self.stopped[self.active.numpy()])
        for pos in self.active[done].tolist():
            self.lr_holders[pos] = self.schedulers[pos] = None
        keep = torch.nonzero(~done).flatten()
        self.params = {name: t.detach()[keep].clone().requires_grad_(name.startswith("b")) for name, t in self.params.items()}
        self.weight_grads = {name: torch.empty_like(self.params[name]) for name in self.weight_grads}
        self.state_logits = self.state_logits.detach()[keep].clone().requires_grad_()
        self.moments = {name: (m[keep].clone(), v[keep].clone()) for name, (m, v) in self.moments.items()}
        self.active = self.active[keep]

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
        return None  # the bank steps its stacked Adam itself (_adam_step)

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
        mask = None
        if self.shape.hidden is not None and self.shape.dropout > 0:
            batch_shape = (states.shape[1], self.shape.hidden)
            masks = torch.stack([dropout_mask(gen, batch_shape, self.shape.dropout) for gen in self.dropout_gens])
            mask = masks[layout.group_of]
        logits, targets = head_logits(self.params, parts, mask, self.weight_grads), targets[layout.group_of]
        # One probe at a time, for the same reason as in predict_items (BCE's sigmoid in backward).
        loss = torch.stack([probe_loss(logits[p], targets[p], self.task) for p in range(len(logits))]).sum()
        self.manual_backward(loss)
        self._adam_step()

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
