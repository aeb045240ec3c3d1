"""Paired bootstrap of the difference in macro ROC-AUC and mAP between two models on one dataset.

Method (docs/report.md):
- the two models' test predictions are paired by item id (intersection of the two test sets);
- each replicate draws the paired items with replacement (the same draw for both models) and, for
  each model independently, one of its seeds uniformly at random; so the interval carries both the
  test-set sampling noise and the seed-to-seed noise of training a probe;
- on the replicate, macro ROC-AUC and mAP are computed exactly as marble_eval.metrics.compute_metrics
  does (a tag without a positive, or for ROC-AUC without a negative, in the resample is left out of
  the macro average); the computation here is a vectorised, weighted form of the same formulas
  (tests check it against compute_metrics on explicit resamples);
- the point estimate is the difference of the seed means on the full paired test set (what the
  leaderboard shows); the interval is the 2.5 / 97.5 percentile of the replicate differences, and
  the difference is "significant" when the interval excludes 0.

Per-item predictions live beside each results JSON (results.store.predictions_path) with
``item_ids`` [n], ``y_true`` [n, T], ``probs`` [n_seeds, n, T], ``seeds`` [n_seeds], ``tags`` [T].
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.report.comparable import column_references, items_key
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path

METRICS = ("roc_auc", "map")
KEYS = ("item_ids", "y_true", "probs", "seeds", "tags")


@dataclass(frozen=True)
class Predictions:
    """One model's test predictions on one dataset (all seeds)."""

    item_ids: np.ndarray  # [n] str
    y_true: np.ndarray  # [n, T] 0/1
    probs: np.ndarray  # [n_seeds, n, T]
    seeds: np.ndarray  # [n_seeds]
    tags: np.ndarray  # [T] str
    path: str = ""


@dataclass(frozen=True)
class Interval:
    """A difference (model a - model b) with its bootstrap percentile interval; fractions, not percent."""

    diff: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class Comparison:
    """Paired bootstrap of model_a - model_b on one dataset, per metric."""

    dataset: str
    model_a: str
    model_b: str
    intervals: dict[str, Interval]
    n_items: int
    n_seeds: tuple[int, int]
    n_boot: int
    level: float


def load_predictions(path: str | Path) -> Predictions | None:
    """The predictions file at ``path``; None when it does not exist. Malformed files raise MarbleEvalError."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in KEYS if key not in data.files]
            if missing:
                raise MarbleEvalError(f"{path}: predictions file lacks {', '.join(missing)}; rerun `marble-eval probe`")
            arrays = {key: data[key] for key in KEYS}
    except (OSError, ValueError) as exc:
        raise MarbleEvalError(f"{path}: not a readable predictions file ({exc}); delete or regenerate it") from None
    probs, y_true = arrays["probs"].astype(np.float64), arrays["y_true"].astype(np.float64)
    n_items, n_tags = y_true.shape if y_true.ndim == 2 else (-1, -1)
    if (probs.ndim != 3 or probs.shape[1:] != (n_items, n_tags) or len(arrays["item_ids"]) != n_items
            or len(arrays["tags"]) != n_tags or len(arrays["seeds"]) != probs.shape[0]):
        raise MarbleEvalError(f"{path}: inconsistent shapes (y_true {y_true.shape}, probs {probs.shape}); "
                              "delete or regenerate it with `marble-eval probe`")
    return Predictions(arrays["item_ids"].astype(str), y_true, probs, arrays["seeds"], arrays["tags"].astype(str),
                       str(path))


def bootstrap_counts(n_items: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_items] how often each item is drawn in each replicate (draws with replacement)."""
    draws = rng.integers(0, n_items, size=(n_boot, n_items))
    counts = np.zeros((n_boot, n_items), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_items), draws.ravel()), 1.0)
    return counts


def weighted_macro_metrics(y_true: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Macro ROC-AUC and AP [n_boot] of ``scores`` [n, T] when item i appears ``counts[b, i]`` times.

    Equal to compute_metrics on the explicitly resampled arrays: ties (including the copies of a
    drawn item) count one half in ROC-AUC and form one threshold in AP; a tag without a positive
    (ROC-AUC: or without a negative) in a replicate is left out of that replicate's average (NaN when
    no tag is left).
    """
    n_boot, n_tags = counts.shape[0], y_true.shape[1]
    auc = np.full((n_boot, n_tags), np.nan)
    ap = np.full((n_boot, n_tags), np.nan)
    for tag in range(n_tags):
        order = np.argsort(-scores[:, tag], kind="stable")
        ranked = scores[order, tag]
        starts = np.concatenate([[0], np.nonzero(np.diff(ranked))[0] + 1])  # one group per distinct score
        weights = counts[:, order]
        positive = y_true[order, tag] > 0.5
        w_pos = np.add.reduceat(weights * positive, starts, axis=1)  # [B, G], groups by descending score
        w_neg = np.add.reduceat(weights * ~positive, starts, axis=1)
        tp, fp = np.cumsum(w_pos, axis=1), np.cumsum(w_neg, axis=1)
        n_pos, n_neg = tp[:, -1], fp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            below = n_neg[:, None] - fp  # negatives with a strictly lower score
            auc[:, tag] = (w_pos * (below + 0.5 * w_neg)).sum(1) / (n_pos * n_neg)
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
            ap[:, tag] = (w_pos * precision).sum(1) / n_pos
        auc[(n_pos == 0) | (n_neg == 0), tag] = np.nan
        ap[n_pos == 0, tag] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": no tag left in a replicate
        return {"roc_auc": np.nanmean(auc, axis=1), "map": np.nanmean(ap, axis=1)}


def paired_arrays(a: Predictions, b: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true and both models' probs restricted to the common items and tags, in a's order."""
    common = np.intersect1d(a.item_ids, b.item_ids)
    if common.size < 2:
        raise MarbleEvalError(f"{b.path}: shares {common.size} test items with {a.path}; nothing to compare")
    tags = [t for t in a.tags if t in set(b.tags)]
    ia = {item: i for i, item in enumerate(a.item_ids)}
    ib = {item: i for i, item in enumerate(b.item_ids)}
    rows_a, rows_b = [ia[i] for i in common], [ib[i] for i in common]
    ta = [int(np.nonzero(a.tags == t)[0][0]) for t in tags]
    tb = [int(np.nonzero(b.tags == t)[0][0]) for t in tags]
    y_a, y_b = a.y_true[np.ix_(rows_a, ta)], b.y_true[np.ix_(rows_b, tb)]
    if not np.array_equal(y_a > 0.5, y_b > 0.5):
        raise MarbleEvalError(f"{b.path}: labels differ from {a.path} on shared items; regenerate both predictions")
    return y_a, a.probs[:, rows_a][:, :, ta], b.probs[:, rows_b][:, :, tb]


def paired_bootstrap(a: Predictions, b: Predictions, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Interval]:
    """{metric: Interval} of a - b by the paired bootstrap described in the module docstring."""
    y_true, probs_a, probs_b = paired_arrays(a, b)
    return bootstrap_difference(y_true, probs_a, probs_b, n_boot=n_boot, seed=seed, level=level)


def bootstrap_difference(y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict[str, Interval]:
    """{metric: Interval} of a - b for paired arrays: y_true [n, T], probs_* [n_seeds, n, T]."""
    rng = np.random.default_rng(seed)
    n_items = y_true.shape[0]
    counts = bootstrap_counts(n_items, n_boot, rng)
    full = np.ones((1, n_items))
    pick_a = rng.integers(0, probs_a.shape[0], size=n_boot)
    pick_b = rng.integers(0, probs_b.shape[0], size=n_boot)
    per_seed = {}
    point = {}
    for name, probs, pick in (("a", probs_a, pick_a), ("b", probs_b, pick_b)):
        replicate = {m: np.empty(n_boot) for m in METRICS}
        observed = {m: [] for m in METRICS}
        for s in range(probs.shape[0]):
            chosen = np.nonzero(pick == s)[0]
            on_full = weighted_macro_metrics(y_true, probs[s], full)
            on_boot = weighted_macro_metrics(y_true, probs[s], counts[chosen]) if chosen.size else None
            for m in METRICS:
                observed[m].append(float(on_full[m][0]))
                if on_boot is not None:
                    replicate[m][chosen] = on_boot[m]
        per_seed[name], point[name] = replicate, {m: float(np.mean(v)) for m, v in observed.items()}
    tail = 100 * (1 - level) / 2
    intervals = {}
    for m in METRICS:
        diffs = per_seed["a"][m] - per_seed["b"][m]
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.percentile(diffs, [tail, 100 - tail]) if diffs.size else (np.nan, np.nan)
        intervals[m] = Interval(point["a"][m] - point["b"][m], float(low), float(high))
    return intervals


def compare_results(results: list[ProbeResult], n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[list[Comparison], list[str]]:
    """Every comparable pair of models per dataset (one recipe's results); returns comparisons and notes.

    Only results of a dataset's reference protocol and test items (report.comparable) are paired; the
    others, and results without a predictions file beside their JSON, are left out with a note.
    """
    notes: list[str] = []
    references = column_references(results)
    by_dataset: dict[str, list[tuple[str, Predictions]]] = {}
    for result in sorted(results, key=lambda r: (r.dataset.name, r.model.display)):
        name, dataset = result.model.display, result.dataset.name
        reference = references[dataset]
        if (result.comparison_key(), items_key(result)) != (reference.protocol, reference.test_items):
            notes.append(f"{name} on {dataset}: another protocol or other test items than the other results there; "
                         f"no significance test for it")
            continue
        path = predictions_path(result.path) if result.path else None
        predictions = load_predictions(path) if path else None
        if predictions is None:
            notes.append(f"no per-item predictions for {name} on {dataset} "
                         f"({path.name if path else 'result not on disk'} missing): no significance test for it")
            continue
        by_dataset.setdefault(dataset, []).append((name, predictions))
    comparisons = []
    for dataset, models in by_dataset.items():
        for (id_a, pred_a), (id_b, pred_b) in itertools.combinations(models, 2):
            y_true, probs_a, probs_b = paired_arrays(pred_a, pred_b)
            intervals = bootstrap_difference(y_true, probs_a, probs_b, n_boot=n_boot, seed=seed, level=level)
            comparisons.append(Comparison(dataset, id_a, id_b, intervals, y_true.shape[0],
                                          (probs_a.shape[0], probs_b.shape[0]), n_boot, level))
    return comparisons, notes


def significant_winners(comparisons: list[Comparison]) -> dict[tuple[str, str, str], bool]:
    """{(dataset, model, metric): True} when the model is significantly better than every other model there."""
    beats: dict[tuple[str, str, str], list[bool]] = {}
    for c in comparisons:
        for m, interval in c.intervals.items():
            beats.setdefault((c.dataset, c.model_a, m), []).append(interval.low > 0)
            beats.setdefault((c.dataset, c.model_b, m), []).append(interval.high < 0)
    return {key: all(flags) for key, flags in beats.items() if flags and all(flags)}
