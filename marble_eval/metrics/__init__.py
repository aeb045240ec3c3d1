"""Metrics of every task type, and the table that declares them (``metrics.table``).

``task_metrics`` scores one probe's item outputs on one split; ``monitor_scores`` gives the task's
monitored validation metric of many probes at once; ``bootstrap_statistics`` gives the task's metrics
under item re-weightings (paired bootstrap). Outputs are probabilities for classification tasks
(after the task's activation) and predictions for regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.multilabel import (
    EmptyTags,
    compute_metrics,
    macro_roc_auc,
    weighted_macro_metrics,
)
from marble_eval.metrics.regression import r2_per_target, regression_metrics
from marble_eval.metrics.singlelabel import (
    accuracy,
    class_indices,
    key_metrics,
    key_score,
    multiclass_metrics,
    predicted,
)
from marble_eval.tasks import task_type

__all__ = ["EmptyTags", "bootstrap_statistics", "compute_metrics", "macro_roc_auc", "monitor_scores",
           "task_metrics", "weighted_macro_metrics"]


def _numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def task_metrics(task: str, y_true: Any, outputs: Any, names: Sequence[str],
                 empty_tags: EmptyTags = "exclude") -> dict[str, Any]:
    """The metrics of ``task`` for one probe: y_true / outputs [n_items, T] (tags, classes or targets,
    named by ``names``). Multilabel adds ``excluded_tags``, ``zeroed_tags`` and ``per_tag``."""
    kind = task_type(task).name
    truth, out = _numpy(y_true), _numpy(outputs)
    if kind == "multilabel":
        return compute_metrics(truth, out, tags=list(names), empty_tags=empty_tags)
    if kind == "multiclass":
        return multiclass_metrics(truth, out)
    if kind == "key":
        return key_metrics(truth, out)
    return regression_metrics(truth, out, list(names))


def monitor_scores(task: str, y_true: Any, outputs: Any, empty_tags: EmptyTags = "exclude") -> np.ndarray:
    """The task's monitored metric (``TaskType.monitor``) of many probes: outputs [P, n_items, T] -> [P]
    float64; NaN for a probe whose outputs are not finite (it diverged)."""
    kind = task_type(task)
    out = _numpy(outputs).astype(np.float64, copy=False)
    truth = _numpy(y_true)
    finite = np.isfinite(out.reshape(out.shape[0], -1)).all(1)
    scores = np.full(out.shape[0], np.nan)
    if not finite.any():
        return scores
    good = out[finite]
    if kind.monitor == "roc_auc":
        scores[finite] = macro_roc_auc(truth, good, empty_tags)
    elif kind.monitor == "accuracy":
        scores[finite] = accuracy(class_indices(truth), predicted(good))
    elif kind.monitor == "key_score":
        scores[finite] = key_score(class_indices(truth), predicted(good))
    elif kind.monitor == "r2":
        scores[finite] = r2_per_target(truth, good).mean(-1)
    else:  # a TaskType names a monitor this module does not compute
        raise MarbleEvalError(f"task {kind.name}: no batched monitor for {kind.monitor!r}")
    return scores


def bootstrap_statistics(task: str, y_true: Any, outputs: Any, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The task's bootstrap statistics of one probe's outputs when item i counts ``weights[b, i]`` times:
    {metric: [B]} (multilabel: roc_auc and map; multiclass: accuracy; key: key_score and accuracy;
    regression: r2)."""
    kind = task_type(task).name
    truth, out, weights = _numpy(y_true), _numpy(outputs), np.asarray(weights, dtype=np.float64)
    if kind == "multilabel":
        return weighted_macro_metrics(truth, out, weights)
    if kind == "regression":
        return {"r2": r2_per_target(truth, out, weights).mean(-1)}
    classes, guess = class_indices(truth), predicted(out)
    stats = {"accuracy": accuracy(classes, guess, weights)}
    if kind == "key":
        stats["key_score"] = key_score(classes, guess, weights)
    return stats
