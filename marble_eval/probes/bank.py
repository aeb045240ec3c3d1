"""Many probes of one recipe trained at once as one vectorised LightningModule.

Every probe's parameters are rows of stacked tensors [P, ...] and the heads run as batched matmuls
(torch.baddbmm under autograd) on inputs gathered from one shared batch per seed; the losses and the
layer mixing are computed for all probes of a seed at once. Each probe keeps what it would have
alone, as vector state over the stacked rows: Adam (torch.optim.Adam's arithmetic, with a per-probe
learning-rate vector; every probe in a bank has taken the same number of steps), ReduceLROnPlateau,
early stopping and the best-validation snapshot. A stopped probe is dropped from the stacked tensors
at the end of the epoch (so it costs nothing more and never changes), and the fit ends when none is
left. Everything lives on one device (CPU or CUDA); the random streams stay CPU generators.

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
    item_outputs,
    mix_states,
    monitor_value,
    probe_loss,
    stream,
)
from marble_eval.probes.data import SplitTensors
from marble_eval.probes.evaluation import monitor_scores
from marble_eval.probes.recipe import ProbeRecipe

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults (the recipe sets lr and weight decay)
MIX_BYTES = 1 << 26  # bound on the stacked states the weighted sums read at evaluation
PLATEAU_EPS = 1e-8  # ReduceLROnPlateau's default eps: a smaller change of lr is ignored


@dataclass(frozen=True)
class ProbeConfig:
    """One point of the grid."""

    lr: float
    layer: Layer
    seed: int


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
    layer_of = layer_of.to(states.device)
    single = torch.nonzero(layer_of >= 0).flatten()
    inputs = torch.empty(len(layer_of), states.shape[0], states.shape[2], device=states.device)
    if single.numel():
        inputs[single] = states.transpose(0, 1)[layer_of[single]]
    weighted = torch.nonzero(layer_of < 0).flatten()
    # Batched matmuls over groups of weighted probes, each group's copy of the states under MIX_BYTES.
    group = max(1, MIX_BYTES // (4 * states[:, 1:].numel()))
    for rows in weighted.split(group):
        inputs[rows] = mix_states(state_logits[rows], states[None, :, 1:].expand(len(rows), -1, -1, -1))
    return inputs


def predict_items(params: dict[str, torch.Tensor], state_logits: torch.Tensor, layer_of: torch.Tensor,
                  split: SplitTensors, task: str, aggregations: tuple[str, ...] = ("mean_logit",)) -> dict[str, torch.Tensor]:
    """Item outputs [P, n_items, T] (float64) of every stacked probe on one split (no dropout), one
    tensor per window aggregation asked for."""
    with torch.no_grad():
        chunks = []
        for start in range(0, split.n_windows, EVAL_ROWS):
            states = split.features[start : start + EVAL_ROWS].float()
            chunks.append(head_logits(params, eval_inputs(states, layer_of, state_logits)))
        logits = torch.cat(chunks, dim=1)
        return {how: item_outputs(logits, split.item_of_window, split.windows_per_item, task, how) for how in aggregations}


class ProbeBank(L.LightningModule):
    """The probes of ``configs`` (one recipe) stacked and trained together on ``device`` (the splits
    must already be there); see the module docstring."""

    def __init__(self, recipe: ProbeRecipe, splits: dict[str, SplitTensors], task: str, configs: list[ProbeConfig],
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.automatic_optimization = False
        self.where = torch.device(device)
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
        # The stacked rows of the active probes (updated in place), on the device.
        self.data = {name: t.to(self.where).contiguous() for name, t in data.items()}
        n = len(configs)
        self.active = torch.arange(n)  # positions still training
        self.snapshot = {name: t.clone() for name, t in self.data.items()}
        # Adam, as vector state: moments like the stacked rows, one step count (all probes step together).
        self.exp_avg = {name: torch.zeros_like(t) for name, t in self.data.items()}
        self.exp_avg_sq = {name: torch.zeros_like(t) for name, t in self.data.items()}
        self.adam_steps = 0
        # Per position: learning rate and ReduceLROnPlateau state (mode max; torch's arithmetic in float64).
        self.lr = np.array([c.lr for c in self.configs], dtype=np.float64)
        self.plateau_best = np.full(n, -np.inf)
        self.plateau_bad = np.zeros(n, dtype=np.int64)
        self.best_score = np.full(n, -np.inf)  # best monitor (snapshot rule: strictly greater)
        self.stop_best = np.full(n, -np.inf, dtype=np.float32)  # early stopping's best
        self.wait = np.zeros(n, dtype=np.int64)
        self.best_epoch = np.zeros(n, dtype=np.int64)
        self.epochs = np.zeros(n, dtype=np.int64)
        self.stopped = np.zeros(n, dtype=bool)
        self._leaves = self._make_leaves()
        self._buffers_of: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._batches: list[list[torch.Tensor]] = []
        # What epoch_batches reads of the training split, on the CPU (the shuffle streams are CPU ones).
        self._train_index = SplitTensors(torch.empty(train.n_windows, 0, 0), train.item_of_window.cpu(),
                                         torch.empty(train.n_items, 0), train.windows_per_item.cpu())

    # -- Adam over the stacked rows --------------------------------------------------------------------

    def _make_leaves(self) -> dict[str, torch.Tensor]:
        """Autograd leaves sharing memory with ``data``: the forward reads them, backward fills their .grad."""
        return {name: t.detach().requires_grad_() for name, t in self.data.items()}

    def _step_optimisers(self) -> None:
        """One Adam step of every active probe at once: torch.optim.Adam's single-tensor arithmetic
        (same operations in the same order) on the stacked rows, with each probe's learning rate.
        Rows a probe does not use (a single-state probe's layer logits) get zero gradients and stay put."""
        self.adam_steps += 1
        beta1, beta2 = BETAS
        correction1 = 1 - beta1**self.adam_steps
        correction2_sqrt = (1 - beta2**self.adam_steps) ** 0.5
        step_size = torch.from_numpy(self.lr[self.active.numpy()] / correction1).float().to(self.where)
        decay = self.recipe.weight_decay
        for name, leaf in self._leaves.items():
            grad, param = leaf.grad, self.data[name]
            if grad is None:
                continue
            if decay != 0:
                grad = grad.add(param, alpha=decay)
            exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # In place into two scratch tensors (fresh ones per step cost page faults on the CPU):
            # denom = sqrt(v) / correction2_sqrt + eps; param += (exp_avg * -step_size) / denom,
            # which is addcdiv_(exp_avg, denom, value=-step_size) with one step size per probe (row).
            denom, update = self._scratch(name)
            torch.sqrt(exp_avg_sq, out=denom).div_(correction2_sqrt).add_(EPS)
            torch.mul(exp_avg, (-step_size).view(-1, *[1] * (param.dim() - 1)), out=update)
            param.add_(update.div_(denom))
            leaf.grad = None

    def _scratch(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Two scratch tensors shaped like the stacked rows ``name`` (reallocated after compaction)."""
        shape = self.data[name].shape
        buffers = self._buffers_of.get(name)
        if buffers is None or buffers[0].shape != shape:
            buffers = (torch.empty_like(self.data[name]), torch.empty_like(self.data[name]))
            self._buffers_of[name] = buffers
        return buffers

    def _step_schedulers(self, positions: np.ndarray, scores: np.ndarray) -> None:
        """ReduceLROnPlateau.step of each probe at ``positions`` (mode max, relative threshold, no
        cooldown, min_lr 0): torch's rule on vectors."""
        schedule = self.recipe.lr_schedule
        better = scores > self.plateau_best[positions] * (1.0 + schedule.threshold)  # NaN: never better
        self.plateau_best[positions[better]] = scores[better]
        self.plateau_bad[positions] = np.where(better, 0, self.plateau_bad[positions] + 1)
        reduce = positions[self.plateau_bad[positions] > schedule.patience]
        old = self.lr[reduce]
        new = np.maximum(old * schedule.factor, 0.0)
        self.lr[reduce] = np.where(old - new > PLATEAU_EPS, new, old)
        self.plateau_bad[reduce] = 0

    def _compact(self) -> None:
        """Drop stopped probes from the stacked tensors and their Adam moments (their snapshots are
        already taken)."""
        keep = torch.from_numpy(~self.stopped[self.active.numpy()])
        rows = torch.nonzero(keep).flatten().to(self.where)
        for state in (self.data, self.exp_avg, self.exp_avg_sq):
            for name, t in state.items():
                state[name] = t[rows].clone()
        self.active = self.active[keep]
        self._leaves = self._make_leaves()

    def _take_snapshot(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        index = torch.from_numpy(rows).to(self.where)
        positions = self.active[torch.from_numpy(rows)].to(self.where)
        for name, tensor in self.data.items():
            self.snapshot[name][positions] = tensor[index]

    # -- Lightning hooks --------------------------------------------------------------------------

    @property
    def n_active(self) -> int:
        return int(self.active.numel())

    def configure_optimizers(self) -> None:
        return None  # the bank steps its own vectorised Adam (_step_optimisers)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        train = self.splits["train"]
        units = train.n_items if self.recipe.batch_unit == "item" else train.n_windows
        n_steps = -(-units // self.recipe.batch_size)
        return torch.utils.data.DataLoader(list(range(n_steps)), batch_size=None)

    def on_train_epoch_start(self) -> None:
        unit, size = self.recipe.batch_unit, self.recipe.batch_size
        self._batches = [[b.to(self.where) for b in epoch_batches(gen, self._train_index, unit, size)]
                         for gen in self.shuffle_gens]

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
        mixing = leaves["state_logits"].split(sizes)
        layer_of = self.layer_of[self.active].to(self.where).split(sizes)
        inputs, targets, masks = [], [], []
        for k, (group, n_single, n_weighted) in enumerate(blocks):  # one block per seed (its own batch)
            windows = self._batches[group][batch_idx]
            states = train.features[windows].float()  # [B, L, D]
            parts = []
            if n_single:
                parts.append(states.transpose(0, 1)[layer_of[2 * k]])
            if n_weighted:
                parts.append(mix_states(mixing[2 * k + 1], states[None, :, 1:].expand(n_weighted, -1, -1, -1)))
            inputs.append(torch.cat(parts) if len(parts) > 1 else parts[0])  # [probes of the seed, B, D]
            targets.append(train.labels[train.item_of_window[windows]])  # [B, T]
            if self.shape.hidden is not None and self.shape.dropout > 0:
                shape = (states.shape[0], self.shape.hidden)
                masks.append(dropout_mask(self.dropout_gens[group], shape, self.shape.dropout, self.where))
        counts = [n_single + n_weighted for _, n_single, n_weighted in blocks]
        if len({t.shape[0] for t in targets}) == 1:  # same batch size for every seed: one stacked head
            groups = [(leaves, torch.cat(inputs), targets, masks, counts)]
        else:  # (item batches of several seeds) one head per seed, on its rows of the stacked tensors
            pieces = {name: leaf.split(counts) for name, leaf in leaves.items()}
            groups = [({name: pieces[name][k] for name in leaves}, inputs[k], targets[k : k + 1],
                       masks[k : k + 1], counts[k : k + 1]) for k in range(len(blocks))]
        losses = []
        for params, x, block_targets, block_masks, block_counts in groups:
            mask = None
            if block_masks:
                mask = torch.cat([m[None].expand(n, -1, -1) for m, n in zip(block_masks, block_counts)])
            out = head_logits(params, x, mask)
            rows = torch.cat([t[None].expand(n, -1, -1) for t, n in zip(block_targets, block_counts)])
            losses.append(probe_loss(out, rows, self.task))  # [probes]
        self.manual_backward(torch.cat(losses).sum())
        self._step_optimisers()

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        valid = self.splits["valid"]
        probs = predict_items(self.data, self.data["state_logits"], self.layer_of[self.active], valid, self.task)
        scores = monitor_scores(valid.labels, probs["mean_logit"], self.recipe.empty_tags, self.task)
        stopping = self.recipe.early_stopping
        positions = self.active.numpy()
        self.epochs[positions] = epoch
        improved = scores > self.best_score[positions]  # the snapshot rule of the one-probe trainer
        self.best_score[positions[improved]] = scores[improved]
        self.best_epoch[positions[improved]] = epoch
        # Lightning's EarlyStopping rule per probe (the callback would stop the whole Trainer):
        # a non-finite score stops a probe; otherwise it waits ``patience`` epochs without improvement.
        finite = np.isfinite(scores)
        as_logged = scores.astype(np.float32)
        better = finite & (as_logged - np.float32(stopping.min_delta) > self.stop_best[positions])
        self.stop_best[positions[better]] = as_logged[better]
        self.wait[positions] = np.where(better, 0, self.wait[positions] + finite)
        self.stopped[positions] = ~finite | (self.wait[positions] >= stopping.patience)
        self._step_schedulers(positions, np.array([monitor_value(score) for score in scores]))
        finished = self.stopped[positions] | (epoch >= self.trainer.max_epochs)
        self._take_snapshot(np.flatnonzero(improved if self.recipe.restore_best else finished))
        if self.stopped[positions].any():
            self._compact()
        if self.n_active == 0:
            self.trainer.should_stop = True

    # -- results ------------------------------------------------------------------------------------

    def final_outputs(self, split: SplitTensors, aggregations: tuple[str, ...] = ("mean_logit",)) -> dict[str, torch.Tensor]:
        """Item outputs [P, n_items, T] (float64, on the CPU) of every probe with its kept weights, by
        chunk index, one tensor per window aggregation."""
        outputs = predict_items(self.snapshot, self.snapshot["state_logits"], self.layer_of, split, self.task, aggregations)
        by_chunk = {}
        for how, values in outputs.items():
            by_chunk[how] = torch.empty_like(values, device="cpu")
            by_chunk[how][torch.tensor(self.chunk_index)] = values.cpu()
        return by_chunk

    def training_record(self) -> list[dict[str, int]]:
        """Epochs run and best epoch of every probe, by chunk index."""
        record: list[dict[str, int]] = [{}] * len(self.configs)
        for pos, index in enumerate(self.chunk_index):
            record[index] = {"epochs": int(self.epochs[pos]), "best_epoch": int(self.best_epoch[pos])}
        return record
