"""Choosing each seed's configuration on validation, and summarising the chosen test metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.table import is_metric, score_parts
from marble_eval.tasks import task_type


def scalar_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The macro numbers and excluded tags of a metrics dict, without the per-tag table."""
    if metrics is None:
        return None
    return {key: value for key, value in metrics.items() if key != "per_tag"}


def selection_score(valid: dict[str, Any], selection: str) -> float:
    """The validation score a configuration is selected on: a metric of the task (``roc_auc``,
    ``accuracy``, ``r2``, ``key_score``, ...) or ``roc_auc_ap_mean``, the mean of macro ROC-AUC and mAP."""
    parts = score_parts(selection)
    return sum(valid[part] for part in parts) / len(parts)


def select_index(configs: list[dict[str, Any]], seed: int, selection: str = "roc_auc",
                 task: str = "multilabel") -> int:
    """Index of the selected configuration of ``seed``: highest ``selection_score`` (resolved for the
    task: ``TaskType.selection_for``); ties go to the higher validation tie-break metric of the task
    (multilabel: mAP), then to the configuration that comes first in grid order.
    Configurations without validation metrics (diverged) are never selected."""
    kind = task_type(task)
    score, tie = kind.selection_for(selection), kind.tie_break
    candidates = [
        (-selection_score(c["valid"], score), -(c["valid"][tie] if tie else 0.0), index)
        for index, c in enumerate(configs)
        if c["seed"] == seed and c["valid"] is not None
    ]
    if not candidates:
        raise MarbleEvalError(f"every configuration of seed {seed} diverged (NaN scores); try lower learning rates")
    return min(candidates)[2]


def summarise(selected: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one seed) over seeds of each test metric
    (every key of the metric table) of the selected configurations."""
    keys = [key for s in selected if s["test"] for key in s["test"] if is_metric(key)]
    summary = {}
    for key in dict.fromkeys(keys):
        values = [s["test"][key] for s in selected if s["test"] is not None and s["test"].get(key) is not None]
        if values:
            array = np.asarray(values, dtype=np.float64)
            std = float(array.std(ddof=1)) if len(values) > 1 else 0.0
            summary[key] = {"mean": float(array.mean()), "std": std, "n": len(values)}
    return summary
