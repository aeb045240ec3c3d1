"""Regression metrics: R² per target and its uniform average (scikit-learn's r2_score semantics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from marble_eval.errors import MarbleEvalError


def r2_per_target(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """R² of every target: y_true [n, T], y_pred [..., n, T] -> [..., T]; with item ``weights`` [B, n]
    (a bootstrap's draw counts) -> [B, T] for a single y_pred."""
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.ndim != 2 or pred.shape[-2:] != truth.shape:
        raise MarbleEvalError(f"metrics: y_true {truth.shape} and y_pred {pred.shape} must be [n_items, n_targets]")
    if not np.isfinite(pred).all():
        raise MarbleEvalError("metrics: predictions hold NaN or inf; the probe diverged (try a lower lr)")
    if weights is None:
        residual = ((truth - pred) ** 2).sum(-2)
        total = ((truth - truth.mean(0)) ** 2).sum(0)
    else:
        w = np.asarray(weights, dtype=np.float64)
        mean = (w @ truth) / w.sum(1, keepdims=True)                      # [B, T]
        total = w @ truth**2 - w.sum(1, keepdims=True) * mean**2           # weighted sum of squares about the mean
        residual = w @ ((truth - pred) ** 2)
    if np.any(np.asarray(total) <= 0):
        raise MarbleEvalError("metrics: a regression target is constant in the evaluated split; R² is undefined")
    return 1.0 - residual / total


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """``r2`` (uniform average over targets) and ``r2_<target>`` of one probe's predictions."""
    per_target = r2_per_target(y_true, y_pred)
    if len(targets) != per_target.shape[-1]:
        raise MarbleEvalError(f"metrics: {len(targets)} target names for {per_target.shape[-1]} columns")
    return {"r2": float(per_target.mean()), **{f"r2_{name}": float(v) for name, v in zip(targets, per_target)}}
