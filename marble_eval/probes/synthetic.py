"""Learnable synthetic probe data for tests and benchmarks (no audio, no model)."""

from __future__ import annotations

import numpy as np

from marble_eval.probes.data import SplitData
from marble_eval.tasks import task_type


def synthetic_splits(
    sizes: tuple[int, int, int] = (400, 100, 100),
    n_states: int = 4,
    dim: int = 16,
    n_tags: int = 5,
    windows_per_item: int = 1,
    task: str = "multilabel",
    seed: int = 0,
    dtype: type = np.float32,
) -> dict[str, SplitData]:
    """Items with a latent vector; labels are linear read-outs of it, as the task's label kind says:
    thresholded (multilabel tags), arg-max one-hot rows (multiclass, key: ``n_tags`` classes) or the
    read-outs z-scored (regression targets).
    Hidden state k holds the latent with noise that shrinks with k, so deeper states are more useful.
    Each window adds its own noise to its item's features."""
    rng = np.random.default_rng(seed)
    read_out = rng.standard_normal((dim, n_tags))
    mixing = [rng.standard_normal((dim, dim)) / np.sqrt(dim) for _ in range(n_states)]
    noise = np.linspace(2.0, 0.3, n_states)
    data = {}
    for name, n_items in zip(("train", "valid", "test"), sizes):
        latent = rng.standard_normal((n_items, dim))
        scores = latent @ read_out
        kind = task_type(task).labels
        if kind == "multi_hot":
            labels = (scores > np.quantile(scores, 0.7, axis=0)).astype(np.float32)
        elif kind == "targets":
            labels = ((scores - scores.mean(0)) / scores.std(0)).astype(np.float32)
        else:
            labels = np.eye(n_tags, dtype=np.float32)[scores.argmax(1)]
        item_of_window = np.repeat(np.arange(n_items, dtype=np.int64), windows_per_item)
        base = latent[item_of_window]
        states = [
            (base + noise[k] * rng.standard_normal(base.shape)) @ mixing[k] for k in range(n_states)
        ]
        features = np.stack(states, axis=1).astype(dtype)
        data[name] = SplitData(features=features, item_of_window=item_of_window, labels=labels)
    return data
