"""Math shared by the one-probe and the batched trainers, so that both compute the same numbers.

A probe's randomness is a function of its seed alone, drawn from four independent streams:
``init`` (head weights, once), ``shuffle`` (one permutation of the training windows or items per
epoch), ``dropout`` (one mask per training step) and ``mixture`` (the weighted sum's initial layer
logits under ``weighted_init: randn``). Probes of the same seed therefore start from the same
weights and see the same batches whatever their learning rate or layer (common random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from marble_eval.probes.data import SplitTensors
from marble_eval.tasks import task_type

STREAMS = ("init", "shuffle", "dropout", "mixture")
EVAL_ROWS = 256  # windows per forward pass at evaluation (same in both trainers: same matmul shapes)
# Elementwise kernels with transcendental functions (sigmoid, exp, log1p) round differently in their
# SIMD and scalar-tail paths on CPU. Each probe's values are laid out in a row padded to a multiple
# of ALIGN elements, so that every value goes through the same path whether one probe or many are
# stacked: the batched trainer equals the one-probe trainer bit for bit (tests/test_probes.py).
ALIGN = 64
Layer = int | str  # a hidden-state index, or "weighted"
WEIGHTED = "weighted"


def stream(seed: int, name: str) -> torch.Generator:
    """The CPU generator of one random stream of a probe seed. On every device the draws are made on
    the CPU (and the few that training needs per step copied to the device), so a probe sees the same
    random numbers on CPU and GPU."""
    state = np.random.SeedSequence([int(seed), STREAMS.index(name)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class HeadShape:
    """Sizes of a probe head: input dim, hidden width (None for a linear head), labels, dropout."""

    dim: int
    hidden: int | None
    n_labels: int
    dropout: float


def init_head(seed: int, shape: HeadShape) -> list[torch.Tensor]:
    """Initial [weight, bias, ...] of each Linear in order, as nn.Linear's default distribution
    (uniform within 1/sqrt(fan_in)) but drawn from the probe's own ``init`` stream."""
    gen = stream(seed, "init")
    sizes = [(shape.dim, shape.n_labels)] if shape.hidden is None else [(shape.dim, shape.hidden), (shape.hidden, shape.n_labels)]
    tensors = []
    for fan_in, fan_out in sizes:
        bound = 1.0 / math.sqrt(fan_in)
        tensors.append(torch.rand(fan_out, fan_in, generator=gen).mul_(2 * bound).sub_(bound))
        tensors.append(torch.rand(fan_out, generator=gen).mul_(2 * bound).sub_(bound))
    return tensors


def init_state_logits(seed: int, n_states: int, how: str) -> torch.Tensor:
    """Initial logits [n_states] of a weighted sum's softmax over layers: zeros (``uniform``: equal
    weights) or standard normal from the probe's ``mixture`` stream (``randn``, as MARBLE v1's
    ``torch.randn(1, L, 1)`` layer weights)."""
    if how == "uniform":
        return torch.zeros(n_states)
    return torch.randn(n_states, generator=stream(seed, "mixture"))


def epoch_permutation(gen: torch.Generator, n: int) -> torch.Tensor:
    """The order of the training windows (or items) for one epoch (one randperm per epoch, nothing else drawn)."""
    return torch.randperm(n, generator=gen)


def epoch_batches(gen: torch.Generator, split: SplitTensors, batch_unit: str, batch_size: int) -> list[torch.Tensor]:
    """The training batches of one epoch as window indices, from one permutation drawn from ``gen``.
    ``window``: batches of ``batch_size`` windows. ``item`` (MARBLE v1): batches of ``batch_size``
    items with all their windows (in window order within an item), ceil(n_items / batch_size) steps."""
    if batch_unit == "window":
        return list(epoch_permutation(gen, split.n_windows).split(batch_size))
    order = torch.argsort(split.item_of_window, stable=True)
    starts = torch.cat([torch.zeros(1, dtype=torch.int64), split.windows_per_item.long().cumsum(0)])
    batches = []
    for items in epoch_permutation(gen, split.n_items).split(batch_size):
        batches.append(torch.cat([order[starts[i] : starts[i + 1]] for i in items.tolist()]))
    return batches


def dropout_mask(gen: torch.Generator, shape: tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Inverted-dropout mask (0 or 1/(1-p)) drawn (on the CPU) from a probe's ``dropout`` stream, on ``device``."""
    mask = torch.empty(shape).bernoulli_(1.0 - p, generator=gen).div_(1.0 - p)
    return mask if torch.device(device).type == "cpu" else mask.to(device, non_blocking=True)


def mix_states(logits: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Softmax-weighted sum of hidden states: logits [..., S], states [..., B, S, D] -> [..., B, D].
    Written as a batched matmul: its result per probe does not depend on how many probes are
    stacked, whereas a broadcast-and-sum reduction may change order with the tensor's shape."""
    weights = torch.softmax(logits, dim=-1)
    batch, n_states, dim = states.shape[-3:]
    flat = states.reshape(-1, batch, n_states, dim).transpose(1, 2).reshape(-1, n_states, batch * dim)
    mixed = torch.bmm(weights.reshape(-1, 1, n_states), flat)
    return mixed.reshape(*states.shape[:-3], batch, dim)


def aligned(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """``fn`` (elementwise) of ``tensors`` [..., *last ``dims`` dims], computed on rows padded to a
    multiple of ALIGN so that each probe's values do not depend on how many are stacked (see ALIGN)."""
    shape = tensors[0].shape
    lead, n = shape[: len(shape) - dims], math.prod(shape[len(shape) - dims :])
    width = -(-n // ALIGN) * ALIGN
    rows = [F.pad(t.reshape(*lead, n), (0, width - n)) for t in tensors]
    return fn(*rows)[..., :n].reshape(shape)


def probe_loss(logits: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss over a batch, per probe: logits/targets [..., B, T] -> [...], as the task type says
    (``TaskType.loss``): BCE-with-logits (no class weights) on 0/1 tags, cross-entropy on one-hot
    rows, or MSE on (z-scored) targets. Vectorised over the leading (probe) dimensions."""
    loss = task_type(task).loss
    if loss == "bce":
        return aligned(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"), logits, targets).mean(dim=(-2, -1))
    if loss == "mse":
        return (logits - targets).square().mean(dim=(-2, -1))
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1, targets.shape[-1]).argmax(-1), reduction="none")
    return flat.reshape(logits.shape[:-1]).mean(dim=-1)


def activate(values: torch.Tensor, task: str) -> torch.Tensor:
    """The task's output activation (``TaskType.activation``) over the last dimension."""
    activation = task_type(task).activation
    if activation == "sigmoid":
        return aligned(torch.sigmoid, values)
    return torch.softmax(values, dim=-1) if activation == "softmax" else values


def item_outputs(window_logits: torch.Tensor, item_of_window: torch.Tensor, windows_per_item: torch.Tensor,
                 task: str, aggregation: str = "mean_logit") -> torch.Tensor:
    """An item's output from its windows' logits, in float64: window_logits [..., n_windows, T] ->
    [..., n_items, T]. ``mean_logit`` (the default, MARBLE's rule): mean of the window logits, then the
    task's activation. The key task's clip ensembles (MARBLE v1 GS ``predict_result_ensemble``; an
    item's arg-max is its prediction): ``mean_softmax`` the mean of the windows' softmax;
    ``max_logit`` softmax of each class's largest window logit; ``vote`` each class's share of the
    windows' arg-max votes (ties between classes: the lowest class index wins, as scipy's mode)."""
    shape = (*window_logits.shape[:-2], windows_per_item.shape[0], window_logits.shape[-1])
    counts = windows_per_item.to(window_logits.device)[:, None]
    index = item_of_window.to(window_logits.device)
    if aggregation == "mean_logit":
        sums = torch.zeros(shape, dtype=window_logits.dtype, device=window_logits.device).index_add_(-2, index, window_logits)
        return activate((sums / counts).double(), task)
    logits = window_logits.double()
    if aggregation == "max_logit":
        lowest = torch.full(shape, -math.inf, dtype=torch.float64, device=logits.device)
        expanded = index.view(*([1] * (logits.dim() - 2)), -1, 1).expand_as(logits)
        return torch.softmax(lowest.scatter_reduce(-2, expanded, logits, "amax"), dim=-1)
    if aggregation == "mean_softmax":
        per_window = torch.softmax(logits, dim=-1)
    elif aggregation == "vote":
        per_window = F.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}")
    sums = torch.zeros(shape, dtype=torch.float64, device=logits.device).index_add_(-2, index, per_window)
    return sums / counts.double()


def monitor_value(score: float) -> float:
    """The monitored score as Lightning logs it (float32), so both trainers take the same decisions."""
    return float(np.float32(score))
