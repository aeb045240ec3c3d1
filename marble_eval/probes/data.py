"""The probe stage's input contract: per split, window features, their items, and item labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.tasks import SPLITS, TASKS


@dataclass
class SplitData:
    """One split. ``features`` [n_windows, L, D] float16/float32 (L hidden states of one window),
    ``item_of_window`` [n_windows] int64 in 0..n_items-1, ``labels`` [n_items, T] float32 0/1
    (one-hot rows for multiclass tasks)."""

    features: np.ndarray
    item_of_window: np.ndarray
    labels: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class SplitTensors:
    """A checked split as torch tensors sharing memory with the arrays, plus windows per item."""

    features: torch.Tensor  # [n_windows, L, D] float16 or float32
    item_of_window: torch.Tensor  # [n_windows] int64
    labels: torch.Tensor  # [n_items, T] float32
    windows_per_item: torch.Tensor  # [n_items] float32 (>= 1)

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])


def _check_split(name: str, split: SplitData, task: str) -> SplitTensors:
    features, items, labels = split.features, split.item_of_window, split.labels
    where = f"probe data {name!r}"
    if not isinstance(features, np.ndarray) or features.ndim != 3 or features.dtype not in (np.float16, np.float32):
        shape = getattr(features, "shape", None)
        raise MarbleEvalError(
            f"{where}: features must be a [n_windows, L, D] float16/float32 array, got {shape} "
            f"{getattr(features, 'dtype', type(features).__name__)}; cast with .astype(np.float32)"
        )
    items = np.asarray(items)
    if items.shape != (features.shape[0],) or items.dtype != np.int64:
        raise MarbleEvalError(
            f"{where}: item_of_window must be int64 of shape ({features.shape[0]},), got {items.shape} {items.dtype}"
        )
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.float32 or labels.shape[0] == 0:
        raise MarbleEvalError(f"{where}: labels must be a non-empty [n_items, T] float32 array, got {labels.shape} {labels.dtype}")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise MarbleEvalError(f"{where}: labels must hold only 0 and 1")
    if task == "multiclass" and not (labels.sum(1) == 1).all():
        raise MarbleEvalError(f"{where}: multiclass labels must be one-hot rows (exactly one 1 per item)")
    n_items = labels.shape[0]
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise MarbleEvalError(f"{where}: item_of_window must lie in 0..{n_items - 1}")
    counts = np.bincount(items, minlength=n_items)
    if (counts == 0).any():
        raise MarbleEvalError(f"{where}: item {int(np.argmin(counts))} has no window; drop it or extract its features")
    for start in range(0, features.shape[0], 4096):
        if not np.isfinite(features[start : start + 4096]).all():
            raise MarbleEvalError(f"{where}: features hold NaN or inf (window {start}..); re-extract them")
    return SplitTensors(
        features=torch.from_numpy(features),
        item_of_window=torch.from_numpy(items),
        labels=torch.from_numpy(labels),
        windows_per_item=torch.from_numpy(counts.astype(np.float32)),
    )


def check_data(data: dict[str, SplitData], task: str) -> dict[str, SplitTensors]:
    """Validate train/valid/test against the contract and each other; one-line errors naming the fix."""
    if task not in TASKS:
        raise MarbleEvalError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    missing = [name for name in SPLITS if name not in data]
    if missing:
        raise MarbleEvalError(f"probe data lacks split(s) {', '.join(missing)}; pass train, valid and test")
    checked = {name: _check_split(name, data[name], task) for name in SPLITS}
    shapes = {name: (tuple(s.features.shape[1:]), s.labels.shape[1]) for name, s in checked.items()}
    if len(set(shapes.values())) != 1:
        raise MarbleEvalError(f"probe data: splits disagree on (L, D) and label count: {shapes}")
    for name in ("valid", "test"):
        labels = checked[name].labels
        positives = labels.sum(0)
        if not bool(((positives > 0) & (positives < labels.shape[0])).any()):
            raise MarbleEvalError(f"probe data {name!r}: no tag has both positive and negative items; ROC-AUC undefined")
    return checked
