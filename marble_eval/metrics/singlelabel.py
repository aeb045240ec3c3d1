"""Single-label metrics (multiclass and key): accuracy, macro-F1 and the MIREX key score.

Inputs are one-hot label rows [n_items, C] and class probabilities [n_items, C] (or [P, n_items, C]
for many probes at once); the prediction is the arg-max.
"""

from __future__ import annotations

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.keys import weighted_scores


def class_indices(one_hot: np.ndarray) -> np.ndarray:
    """Class index of each one-hot row."""
    rows = np.asarray(one_hot)
    if rows.ndim != 2 or not np.all(rows.sum(-1) == 1):
        raise MarbleEvalError("metrics: single-label y_true must be one-hot rows [n_items, n_classes]")
    return rows.argmax(-1)


def predicted(probs: np.ndarray) -> np.ndarray:
    """Arg-max class of probabilities [..., n_items, C] -> [..., n_items]."""
    probs = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(probs).all():
        raise MarbleEvalError("metrics: probabilities hold NaN or inf; the probe diverged (try a lower lr)")
    return probs.argmax(-1)


def accuracy(truth: np.ndarray, guess: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Share of correct items: truth [n], guess [..., n] -> [...]; ``weights`` [B, n] give [B, ...]."""
    correct = (np.asarray(guess) == truth).astype(np.float64)
    if weights is None:
        return correct.mean(-1)
    return (weights @ correct.T).T / weights.sum(-1) if correct.ndim > 1 else weights @ correct / weights.sum(-1)


def macro_f1(truth: np.ndarray, guess: np.ndarray, n_classes: int) -> float:
    """Macro F1 over the classes present in ``truth`` or ``guess`` (scikit-learn's default labels;
    a class with no true and no predicted item is not averaged, one with either scores its F1)."""
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (truth, guess), 1.0)
    tp = np.diag(confusion)
    support, predicted_count = confusion.sum(1), confusion.sum(0)
    present = (support + predicted_count) > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted_count, 1e-300), 0.0)
    return float(f1[present].mean())


def key_score(truth: np.ndarray, guess: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean MIREX weighted score: truth [n] key classes, guess [..., n] -> [...] (``weights`` as accuracy)."""
    scores = weighted_scores(np.broadcast_to(truth, np.shape(guess)), guess)
    if weights is None:
        return scores.mean(-1)
    return weights @ scores / weights.sum(-1)


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``accuracy`` and ``macro_f1`` of one probe's probabilities against one-hot ``y_true``."""
    truth, guess = class_indices(y_true), predicted(probs)
    return {"accuracy": float(accuracy(truth, guess)), "macro_f1": macro_f1(truth, guess, np.shape(y_true)[1])}


def key_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """``key_score`` (MIREX weighted) and ``accuracy`` of one probe's key probabilities [n, 24]."""
    truth, guess = class_indices(y_true), predicted(probs)
    if np.shape(y_true)[1] != 24:
        raise MarbleEvalError(f"metrics: a key task has 24 classes, got {np.shape(y_true)[1]}")
    return {"key_score": float(key_score(truth, guess)), "accuracy": float(accuracy(truth, guess))}
