"""Turning item probabilities into the monitor value and the reported metrics, per task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from marble_eval.metrics import EmptyTags, compute_metrics, compute_multiclass_metrics, macro_roc_auc
from marble_eval.probes.core import monitor_value


def monitor_score(labels: torch.Tensor, probs: torch.Tensor, empty_tags: EmptyTags) -> float:
    """Validation macro ROC-AUC of one probe (one-vs-rest for multiclass), rounded as Lightning logs
    it; NaN when the probe diverged (early stopping then stops it, as Lightning's check_finite)."""
    return float(monitor_scores(labels, probs[None], empty_tags)[0])


def monitor_scores(labels: torch.Tensor, probs: torch.Tensor, empty_tags: EmptyTags) -> np.ndarray:
    """monitor_score of many probes at once: probs [P, n_items, T] -> [P]."""
    finite = torch.isfinite(probs).flatten(1).all(1)
    scores = np.full(probs.shape[0], np.nan)
    if bool(finite.any()):
        scores[finite.numpy()] = macro_roc_auc(labels, probs[finite], empty_tags)
    return np.array([monitor_value(value) for value in scores])


def split_metrics(labels: torch.Tensor, probs: torch.Tensor, task: str, tags: list[str] | None,
                  empty_tags: EmptyTags) -> dict[str, Any] | None:
    """compute_metrics (multilabel) or compute_multiclass_metrics (one-hot labels) of one probe;
    None when its probabilities are not finite (a probe that diverged from its first epoch)."""
    if not bool(torch.isfinite(probs).all()):
        return None
    if task == "multilabel":
        return compute_metrics(labels, probs, tags=tags, empty_tags=empty_tags)
    return compute_multiclass_metrics(labels.argmax(-1), probs, tags=tags, empty_tags=empty_tags)
