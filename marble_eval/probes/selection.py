"""Choosing each seed's configuration on validation, and summarising the chosen test metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from marble_eval.errors import MarbleEvalError

SCALARS = ("roc_auc", "map", "micro_f1", "macro_f1", "accuracy")


def scalar_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The macro numbers and excluded tags of a metrics dict, without the per-tag table."""
    if metrics is None:
        return None
    return {key: value for key, value in metrics.items() if key != "per_tag"}


def selection_score(valid: dict[str, Any], selection: str) -> float:
    """The validation score a configuration is selected on: macro ROC-AUC (``roc_auc``) or the mean
    of macro ROC-AUC and mAP (``roc_auc_ap_mean``)."""
    if selection == "roc_auc":
        return valid["roc_auc"]
    return (valid["roc_auc"] + valid["map"]) / 2


def select_index(configs: list[dict[str, Any]], seed: int, selection: str = "roc_auc") -> int:
    """Index of the selected configuration of ``seed``: highest ``selection_score``; ties go to the
    higher validation mAP, then to the configuration that comes first in grid order.
    Configurations without validation metrics (diverged) are never selected."""
    candidates = [
        (-selection_score(c["valid"], selection), -c["valid"]["map"], index)
        for index, c in enumerate(configs)
        if c["seed"] == seed and c["valid"] is not None
    ]
    if not candidates:
        raise MarbleEvalError(f"every configuration of seed {seed} diverged (NaN scores); try lower learning rates")
    return min(candidates)[2]


def summarise(selected: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one seed) over seeds of each scalar
    test metric of the selected configurations."""
    summary = {}
    for key in SCALARS:
        values = [s["test"][key] for s in selected if s["test"] is not None and key in s["test"]]
        if values:
            array = np.asarray(values, dtype=np.float64)
            std = float(array.std(ddof=1)) if len(values) > 1 else 0.0
            summary[key] = {"mean": float(array.mean()), "std": std, "n": len(values)}
    return summary
