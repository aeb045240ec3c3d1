"""Turning item outputs into the monitor value and the reported metrics, per task type."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from marble_eval.metrics import EmptyTags, task_metrics
from marble_eval.metrics import monitor_scores as task_monitor_scores
from marble_eval.probes.core import monitor_value


def monitor_score(labels: torch.Tensor, probs: torch.Tensor, empty_tags: EmptyTags, task: str = "multilabel") -> float:
    """The task's validation monitor of one probe, rounded as Lightning logs it; NaN when the probe
    diverged (early stopping then stops it, as Lightning's check_finite)."""
    return float(monitor_scores(labels, probs[None], empty_tags, task)[0])


def monitor_scores(labels: torch.Tensor, probs: torch.Tensor, empty_tags: EmptyTags,
                   task: str = "multilabel") -> np.ndarray:
    """monitor_score of many probes at once: probs [P, n_items, T] -> [P]."""
    return np.array([monitor_value(value) for value in task_monitor_scores(task, labels, probs, empty_tags)])


def split_metrics(labels: torch.Tensor, probs: torch.Tensor, task: str, tags: list[str] | None,
                  empty_tags: EmptyTags) -> dict[str, Any] | None:
    """The task's metrics of one probe on one split; None when its outputs are not finite (a probe
    that diverged from its first epoch)."""
    if not bool(torch.isfinite(probs).all()):
        return None
    return task_metrics(task, labels, probs, tags or [str(i) for i in range(probs.shape[-1])], empty_tags)
