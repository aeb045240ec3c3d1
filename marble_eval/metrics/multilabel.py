"""Multi-label metrics (PROTOCOL 4): exact macro ROC-AUC and mAP, F1 at a threshold, undefined tags excluded.

F1 comes from torchmetrics' functional API. ROC-AUC and AP are computed here, on the
same curves as torchmetrics' (thresholds=None: one point per distinct score) but for every column at
once: torchmetrics walks the columns in a Python loop, which made the metrics of an 84-probe x
50-tag grid cost a fifth of its run. On top of that:
- scores must be probabilities: torchmetrics applies its own sigmoid when any value lies outside
  [0, 1], so scores are checked and clamped to [0, 1] before they reach it;
- a tag whose metric is undefined in the evaluated split (ROC-AUC: no positive or no negative item;
  AP and F1: no positive item) is handled as ``empty_tags`` says: ``exclude`` leaves it out of the
  macro average and names it in ``excluded_tags``; ``zero`` scores it 0, averages it in and names it
  in ``zeroed_tags`` (torchmetrics >= 1.4's macro AUROC, AP and F1); ``v1`` scores its ROC-AUC and
  F1 0 but leaves its AP out, as MARBLE v1 printed them (torchmetrics < 1.4: an empty tag's AP was NaN).

Micro-F1 is computed over every tag (false positives on an empty tag are real errors); macro-F1,
a macro average, treats tags with no positive item like ROC-AUC and AP do.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_f1_score,
    multilabel_f1_score,
)

from marble_eval.errors import MarbleEvalError
from marble_eval.probe_choices import EmptyTags

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(values: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    return tensor.to(dtype)


def _checked_inputs(y_true: ArrayLike, y_score: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as 2-D tensors (int targets, float64 probabilities in [0, 1]); one-line errors otherwise."""
    target = _as_tensor(y_true, torch.float64)
    preds = _as_tensor(y_score, torch.float64)
    if target.ndim != 2 or preds.shape != target.shape:
        raise MarbleEvalError(
            f"metrics: y_true {tuple(target.shape)} and y_score {tuple(preds.shape)} must both be [n_items, n_tags]"
        )
    if target.shape[0] == 0:
        raise MarbleEvalError("metrics: no items to evaluate; the split is empty")
    if not bool(((target == 0) | (target == 1)).all()):
        raise MarbleEvalError("metrics: y_true must hold only 0 and 1")
    if not bool(torch.isfinite(preds).all()):
        raise MarbleEvalError("metrics: y_score holds NaN or inf; the probe diverged (try a lower lr)")
    if bool(((preds < -1e-6) | (preds > 1 + 1e-6)).any()):
        raise MarbleEvalError("metrics: y_score must be probabilities in [0, 1]; apply the sigmoid first")
    # Clamp rounding noise so that torchmetrics never decides to apply a sigmoid of its own.
    return target.long(), preds.clamp_(0.0, 1.0)


def _names(tags: Sequence[str] | None, n_tags: int) -> list[Any]:
    if tags is None:
        return list(range(n_tags))
    if len(tags) != n_tags:
        raise MarbleEvalError(f"metrics: {len(tags)} tag names for {n_tags} score columns; pass one name per column")
    return list(tags)


# Columns ranked at once: bounds the ~10 float64 temporaries of _ranking_metrics to ~100 MB.
_COLUMN_CHUNK = 1024


def _ranking_metrics(preds: torch.Tensor, target: torch.Tensor,
                     weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ROC-AUC and average precision of every column of ``preds`` [n_items, n_cols] (float64):
    [n_cols] each; with ``weights`` [n_weightings, n_items] (how many times each item counts, e.g. a
    bootstrap's draw counts), [n_weightings, n_cols] each.

    Each column is sorted by descending score (once, whatever the weightings); the curve has one point
    at the end of every run of equal scores (tied items enter together), with true and false positive
    counts tp, fp there. ROC-AUC is the trapezoid sum over those points, AP the sum of recall steps
    times precision. Sums run as cumsums along each column, so a column's value does not depend on the
    other columns. A column with no positive gives NaN for both, one with no negative NaN ROC-AUC:
    callers pick defined columns.
    """
    n_items = preds.shape[0]
    scores, order = preds.t().sort(dim=1, descending=True, stable=True)
    hits = target.t().to(torch.float64).gather(1, order)
    ends = torch.ones_like(hits, dtype=torch.bool)
    ends[:, :-1] = scores[:, 1:] != scores[:, :-1]
    positions = torch.arange(n_items).expand_as(ends)
    last_end = torch.where(ends, positions, -1).cummax(dim=1).values
    previous = torch.cat([torch.full_like(last_end[:, :1], -1), last_end[:, :-1]], dim=1)
    if weights is None:  # one weighting, every item once
        tps, fps = hits.cumsum(1)[None], (1.0 - hits).cumsum(1)[None]
    else:
        counts = weights.to(torch.float64).index_select(1, order.flatten()).reshape(-1, *order.shape)  # [W, cols, n]
        tps, fps = (counts * hits).cumsum(2), (counts * (1.0 - hits)).cumsum(2)
    after_previous = (previous + 1).expand_as(tps)  # index into the counts with a 0 prepended

    def at_previous_point(counts: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(counts, (1, 0)).gather(2, after_previous)

    tp_before, fp_before = at_previous_point(tps), at_previous_point(fps)
    n_pos, n_neg = tps[..., -1], fps[..., -1]
    trapezoids = torch.where(ends, (fps - fp_before) * (tps + tp_before), 0.0)
    # (with weights, points before the first counted item have tps + fps == 0 and add nothing)
    steps = torch.where(ends & (tps + fps > 0), (tps - tp_before) * tps / (tps + fps), 0.0)
    roc_auc = trapezoids.cumsum(2)[..., -1] / (2.0 * n_pos * n_neg)
    average_precision = steps.cumsum(2)[..., -1] / n_pos
    if weights is None:
        return roc_auc[0], average_precision[0]
    return roc_auc, average_precision


def _per_column(preds: torch.Tensor, target: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ROC-AUC, AP) [len(columns)] of the selected columns, in chunks of ``_COLUMN_CHUNK``."""
    # split() gives at least one (maybe empty) chunk, and an empty one ranks to empty results
    results = [_ranking_metrics(preds[:, chunk], target[:, chunk]) for chunk in columns.split(_COLUMN_CHUNK)]
    return torch.cat([auc for auc, _ in results]), torch.cat([ap for _, ap in results])


def weighted_macro_metrics(y_true: ArrayLike, y_score: ArrayLike, weights: ArrayLike) -> dict[str, np.ndarray]:
    """Macro ROC-AUC and AP [n_weightings] of ``y_score`` [n_items, n_tags] when item i counts
    ``weights[b, i]`` times in weighting b (a bootstrap replicate's draw counts; [n_weightings, n_items]).

    Equal to compute_metrics on the explicitly repeated items (ties, including an item's copies,
    form one point of the curve); a tag without a positive (ROC-AUC: or without a negative) under a
    weighting is left out of that weighting's averages, which are NaN when no tag is left.
    """
    target, preds = _checked_inputs(y_true, y_score)
    counts = _as_tensor(weights, torch.float64)
    n_items, n_tags = preds.shape
    if counts.ndim != 2 or counts.shape[1] != n_items or bool((counts < 0).any()):
        raise MarbleEvalError(f"metrics: weights {tuple(counts.shape)} must be non-negative [n_weightings, {n_items}]")
    per_chunk = max(1, (1 << 22) // (n_tags * n_items))  # ~32 MB per float64 temporary
    auc_parts, ap_parts = [], []
    hits = target.to(torch.float64)
    for chunk in counts.split(per_chunk):
        auc, ap = _ranking_metrics(preds, target, chunk)  # [w, n_tags] each
        n_pos, n_neg = chunk @ hits, chunk @ (1.0 - hits)
        auc_parts.append(torch.where((n_pos > 0) & (n_neg > 0), auc, torch.nan))
        ap_parts.append(torch.where(n_pos > 0, ap, torch.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": no tag left in a weighting
        return {"roc_auc": np.nanmean(torch.cat(auc_parts).numpy(), axis=1),
                "map": np.nanmean(torch.cat(ap_parts).numpy(), axis=1)}


def _f1(preds: torch.Tensor, target: torch.Tensor, threshold: float, average: str) -> float:
    """F1 at ``threshold`` (micro or macro) over all columns of ``preds`` (checked by _checked_inputs:
    torchmetrics' own validation, a unique() over every value, would cost as much as the metric)."""
    if preds.shape[1] == 1:
        return float(binary_f1_score(preds[:, 0], target[:, 0], threshold=threshold, validate_args=False))
    return float(multilabel_f1_score(preds, target, num_labels=preds.shape[1], threshold=threshold, average=average,
                                     validate_args=False))


def macro_roc_auc(y_true: ArrayLike, y_score: ArrayLike, empty_tags: EmptyTags = "exclude") -> np.ndarray:
    """Macro ROC-AUC (the probe monitor) of one or many score matrices against the same labels.

    ``y_score`` is [n_items, n_tags] or [n_probes, n_items, n_tags]; returns a float64 array of shape
    [] or [n_probes]. Tags without both positive and negative items are left out (``exclude``) or
    count as 0 (``zero``), as in compute_metrics.
    """
    scores = _as_tensor(y_score, torch.float64)
    stacked = scores if scores.ndim == 3 else scores.unsqueeze(0)
    n_probes, n_items, n_tags = stacked.shape
    # One torchmetrics call over every (probe, tag) column: items stay rows, probes go side by side.
    side_by_side = stacked.permute(1, 0, 2).reshape(n_items, n_probes * n_tags)
    target, preds = _checked_inputs(_as_tensor(y_true, torch.float64).repeat(1, n_probes), side_by_side)
    positives = target[:, :n_tags].sum(0)
    valid = torch.nonzero((positives > 0) & (positives < n_items)).flatten()
    if valid.numel() == 0:
        raise MarbleEvalError("metrics: no tag has both positive and negative items; ROC-AUC is undefined")
    columns = (torch.arange(n_probes)[:, None] * n_tags + valid[None, :]).flatten()
    per_tag = _per_column(preds, target, columns)[0].reshape(n_probes, -1).numpy()
    if empty_tags in ("zero", "v1"):
        per_tag = np.concatenate([per_tag, np.zeros((n_probes, n_tags - valid.numel()))], axis=1)
    means = np.array([row.mean() for row in per_tag])
    return means if scores.ndim == 3 else means[0]


def compute_metrics(
    y_true: ArrayLike,
    y_score: ArrayLike,
    threshold: float = 0.5,
    tags: Sequence[str] | None = None,
    empty_tags: EmptyTags = "exclude",
) -> dict[str, Any]:
    """Multi-label metrics of probabilities ``y_score`` [n_items, n_tags] against 0/1 ``y_true``.

    Returns ``roc_auc``, ``map`` (macro, exact), ``micro_f1``, ``macro_f1`` (predicted positive when
    score > threshold), ``excluded_tags`` (tags left out of at least one macro average),
    ``zeroed_tags`` (tags scored 0 in at least one, with ``empty_tags="zero"``) and ``per_tag``
    ({tag: {"roc_auc", "ap"}}, None where undefined and excluded). Tags are named by ``tags`` or by
    column index.
    """
    target, preds = _checked_inputs(y_true, y_score)
    names = _names(tags, target.shape[1])
    positives = target.sum(0)
    has_pos = positives > 0
    has_both = has_pos & (positives < target.shape[0])
    auc_cols = torch.nonzero(has_both).flatten()
    ap_cols = torch.nonzero(has_pos).flatten()
    if auc_cols.numel() == 0:
        raise MarbleEvalError("metrics: no tag has both positive and negative items; ROC-AUC is undefined")

    auc_of_ap_cols, ap = _per_column(preds, target, ap_cols)  # every ROC-AUC column also has a positive
    auc = auc_of_ap_cols[has_both[ap_cols]]
    micro_f1 = _f1(preds, target, threshold, "micro")
    zero = empty_tags in ("zero", "v1")
    f1_cols = slice(None) if zero else ap_cols  # torchmetrics scores a tag without positives 0
    macro_f1 = _f1(preds[:, f1_cols], target[:, f1_cols], threshold, "macro")

    undefined = None if not zero else 0.0
    per_tag: dict[Any, dict[str, float | None]] = {
        name: {"roc_auc": undefined, "ap": None if empty_tags == "v1" else undefined} for name in names}
    for column, value in zip(auc_cols.tolist(), auc.tolist()):
        per_tag[names[column]]["roc_auc"] = value
    for column, value in zip(ap_cols.tolist(), ap.tolist()):
        per_tag[names[column]]["ap"] = value
    empty = [names[i] for i in torch.nonzero(~has_both).flatten().tolist()]
    n_tags = len(names)
    if zero:  # the zeros after the defined values: the same sum as macro_roc_auc's
        roc_auc = float(np.concatenate([auc.numpy(), np.zeros(n_tags - auc.numel())]).mean())
        ap_zeros = 0 if empty_tags == "v1" else n_tags - ap.numel()  # v1: an empty tag's AP is left out
        average_precision = float(np.concatenate([ap.numpy(), np.zeros(ap_zeros)]).mean())
    else:
        roc_auc, average_precision = float(auc.numpy().mean()), float(ap.numpy().mean())
    return {
        "roc_auc": roc_auc,
        "map": average_precision,
        "micro_f1": float(micro_f1),
        "macro_f1": float(macro_f1),
        "excluded_tags": [] if zero else empty,
        "zeroed_tags": empty if zero else [],
        "per_tag": per_tag,
    }
