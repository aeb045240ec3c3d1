"""The probe stage's input contract: per split, window features, their items, and item labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.tasks import SPLITS, task_type


@dataclass
class SplitData:
    """One split. ``features`` [n_windows, L, D] float16/float32 (L hidden states of one window),
    ``item_of_window`` [n_windows] int64 in 0..n_items-1, ``labels`` [n_items, T] float32 as the task's
    label kind says (``TaskType.labels``): 0/1 tags (multi_hot), one-hot class rows (one_hot:
    multiclass, key) or finite targets already z-scored by the caller (targets: regression)."""

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

    def to(self, device: torch.device | str) -> "SplitTensors":
        """This split with every tensor on ``device`` (features copied once, in their storage dtype)."""
        if torch.device(device).type == "cpu":
            return self
        return SplitTensors(*(t.to(device) for t in (self.features, self.item_of_window, self.labels, self.windows_per_item)))

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])


def _check_labels(where: str, labels: np.ndarray, task: str) -> None:
    """One-line errors for label rows that do not match the task's label kind."""
    kind = task_type(task).labels
    if kind == "targets":
        if not np.isfinite(labels).all():
            raise MarbleEvalError(f"{where}: regression targets must be finite numbers (item {int(np.argmin(np.isfinite(labels).all(1)))} is not)")
        return
    if not np.isin(labels, (0.0, 1.0)).all():
        raise MarbleEvalError(f"{where}: labels must hold only 0 and 1")
    if kind == "one_hot" and not (labels.sum(1) == 1).all():
        raise MarbleEvalError(f"{where}: {task} labels must be one-hot rows (exactly one 1 per item)")


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
    _check_labels(where, labels, task)
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
    kind = task_type(task)  # a one-line error for an unknown task
    missing = [name for name in SPLITS if name not in data]
    if missing:
        raise MarbleEvalError(f"probe data lacks split(s) {', '.join(missing)}; pass train, valid and test")
    checked = {name: _check_split(name, data[name], task) for name in SPLITS}
    shapes = {name: (tuple(s.features.shape[1:]), s.labels.shape[1]) for name, s in checked.items()}
    if len(set(shapes.values())) != 1:
        raise MarbleEvalError(f"probe data: splits disagree on (L, D) and label count: {shapes}")
    for name in ("valid", "test") if kind.labels == "multi_hot" else ():
        labels = checked[name].labels
        positives = labels.sum(0)
        if not bool(((positives > 0) & (positives < labels.shape[0])).any()):
            raise MarbleEvalError(f"probe data {name!r}: no tag has both positive and negative items; ROC-AUC undefined")
    return checked
