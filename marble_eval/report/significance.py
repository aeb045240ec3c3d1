"""Paired bootstrap of the difference between two models on one dataset, on each task's own statistic.

Method (docs/report.md):
- the two models' test predictions are paired by item id (intersection of the two test sets);
- each replicate draws the paired items with replacement (the same draw for both models) and, for
  each model independently, one of its seeds uniformly at random; so the interval carries both the
  test-set sampling noise and the seed-to-seed noise of training a probe;
- on the replicate, the task's bootstrap statistics (``marble_eval.metrics.bootstrap_statistics``:
  tagging macro ROC-AUC and mAP, multiclass accuracy, key the key score and accuracy, regression R²)
  are computed with the replicate's draw counts as item weights;
- the point estimate is the difference of the seed means on the full paired test set; the interval
  is the 2.5 / 97.5 percentile of the replicate differences; "significant" when it excludes 0.
- One set of replicates per pair: the random draws are seeded from the paired items only and made
  in one fixed order of the two models, so A - B and B - A are exact mirror images (the leaderboard
  and ``compare`` show the same interval, with the sign of the order they state).

Per-item predictions live beside each results JSON (``results.store.read_predictions``).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from marble_eval.errors import MarbleEvalError
from marble_eval.lightning_utils import torch_threads
from marble_eval.metrics import bootstrap_statistics
from marble_eval.report.columns import higher_is_better
from marble_eval.report.comparable import column_references, items_key
from marble_eval.report.runs import model_labels, reference_runs
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path, read_predictions
from marble_eval.tasks import task_type


@dataclass(frozen=True)
class Predictions:
    """One model's test predictions on one dataset (all seeds)."""

    item_ids: np.ndarray  # [n] str
    y_true: np.ndarray  # [n, T]
    outputs: np.ndarray  # [n_seeds, n, T]: probabilities, or predictions (regression)
    seeds: np.ndarray  # [n_seeds]
    tags: np.ndarray  # [T] str: tags, classes or targets
    path: str = ""
    key: str = ""  # what fixes the pair's order for the random draws (the result's identity)


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

    def mirrored(self) -> Interval:
        """The same interval for b - a."""
        return Interval(-self.diff, -self.high, -self.low)


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


def load_predictions(result_json: str | Path, key: str = "") -> Predictions | None:
    """The predictions beside the results JSON ``result_json``; None when there are none. Malformed
    files raise MarbleEvalError."""
    arrays = read_predictions(Path(result_json))
    if arrays is None:
        return None
    path = predictions_path(Path(result_json))
    outputs, y_true = arrays["outputs"].astype(np.float64), arrays["y_true"].astype(np.float64)
    n_items, n_tags = y_true.shape if y_true.ndim == 2 else (-1, -1)
    if (outputs.ndim != 3 or outputs.shape[1:] != (n_items, n_tags) or len(arrays["item_ids"]) != n_items
            or len(arrays["tags"]) != n_tags or len(arrays["seeds"]) != outputs.shape[0]):
        raise MarbleEvalError(f"{path}: inconsistent shapes (y_true {y_true.shape}, outputs {outputs.shape}); "
                              "delete or regenerate it with `marble-eval probe`")
    return Predictions(arrays["item_ids"].astype(str), y_true, outputs, arrays["seeds"], arrays["tags"].astype(str),
                       str(path), key or str(path))


def bootstrap_counts(n_items: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_items] how often each item is drawn in each replicate (draws with replacement)."""
    draws = rng.integers(0, n_items, size=(n_boot, n_items))
    counts = np.zeros((n_boot, n_items), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_items), draws.ravel()), 1.0)
    return counts


def paired_arrays(task: str, a: Predictions, b: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true and both models' outputs on the common items (sorted ids) and, for tagging, the common tags.

    Single-label and regression outputs must name the same classes / targets in the same order."""
    common = np.intersect1d(a.item_ids, b.item_ids)
    if common.size < 2:
        raise MarbleEvalError(f"{b.path}: shares {common.size} test items with {a.path}; nothing to compare")
    if task_type(task).labels == "multi_hot":
        tags = [t for t in a.tags if t in set(b.tags)]
    elif list(a.tags) != list(b.tags):
        raise MarbleEvalError(f"{b.path}: classes or targets differ from {a.path}; the two results are not "
                              f"scored on the same labels")
    else:
        tags = list(a.tags)
    ia = {item: i for i, item in enumerate(a.item_ids)}
    ib = {item: i for i, item in enumerate(b.item_ids)}
    rows_a, rows_b = [ia[i] for i in common], [ib[i] for i in common]
    ta = [int(np.nonzero(a.tags == t)[0][0]) for t in tags]
    tb = [int(np.nonzero(b.tags == t)[0][0]) for t in tags]
    y_a, y_b = a.y_true[np.ix_(rows_a, ta)], b.y_true[np.ix_(rows_b, tb)]
    if not np.allclose(y_a, y_b, rtol=1e-5, atol=1e-6):
        raise MarbleEvalError(f"{b.path}: labels differ from {a.path} on shared items; regenerate both predictions")
    return y_a, a.outputs[:, rows_a][:, :, ta], b.outputs[:, rows_b][:, :, tb]


def items_seed(item_ids: np.ndarray) -> int:
    """The random seed of a pair's replicates: a digest of its (sorted) paired item ids alone."""
    digest = hashlib.sha256("\n".join(sorted(map(str, item_ids))).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def bootstrap_difference(task: str, y_true: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray,
                         n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Interval]:
    """{metric: Interval} of a - b on the task's bootstrap statistics: y_true [n, T], outputs_* [n_seeds, n, T]."""
    with torch_threads(1):  # many small ranking passes: one thread is several times faster (and repeatable)
        return _bootstrap_difference(task, y_true, outputs_a, outputs_b, n_boot, seed, level)


def _bootstrap_difference(task: str, y_true: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray,
                          n_boot: int, seed: int, level: float) -> dict[str, Interval]:
    rng = np.random.default_rng(seed)
    n_items = y_true.shape[0]
    counts = bootstrap_counts(n_items, n_boot, rng)
    full = np.ones((1, n_items))
    picks = (rng.integers(0, outputs_a.shape[0], size=n_boot), rng.integers(0, outputs_b.shape[0], size=n_boot))
    replicates, points = [], []
    for outputs, pick in zip((outputs_a, outputs_b), picks):
        replicate: dict[str, np.ndarray] = {}
        observed: dict[str, list[float]] = {}
        for s in range(outputs.shape[0]):
            for metric, value in bootstrap_statistics(task, y_true, outputs[s], full).items():
                observed.setdefault(metric, []).append(float(value[0]))
                replicate.setdefault(metric, np.full(n_boot, np.nan))
            chosen = np.nonzero(pick == s)[0]
            if chosen.size:
                for metric, values in bootstrap_statistics(task, y_true, outputs[s], counts[chosen]).items():
                    replicate[metric][chosen] = values
        replicates.append(replicate)
        points.append({metric: float(np.mean(values)) for metric, values in observed.items()})
    tail = 100 * (1 - level) / 2
    order = task_type(task).metrics
    intervals = {}
    for metric in sorted(replicates[0], key=lambda m: order.index(m) if m in order else len(order)):
        diffs = replicates[0][metric] - replicates[1][metric]
        diffs = diffs[np.isfinite(diffs)]
        low, high = np.percentile(diffs, [tail, 100 - tail]) if diffs.size else (np.nan, np.nan)
        intervals[metric] = Interval(points[0][metric] - points[1][metric], float(low), float(high))
    return intervals


def paired_bootstrap(task: str, a: Predictions, b: Predictions, n_boot: int = 1000,
                     level: float = 0.95) -> tuple[dict[str, Interval], int]:
    """({metric: Interval of a - b}, paired items). The replicates are seeded from the paired items and
    drawn with the two models in the order of their keys, so swapping a and b mirrors every interval."""
    swap = (b.key or b.path) < (a.key or a.path)
    first, second = (b, a) if swap else (a, b)
    y_true, out_first, out_second = paired_arrays(task, first, second)
    common = np.intersect1d(a.item_ids, b.item_ids)
    intervals = bootstrap_difference(task, y_true, out_first, out_second, n_boot=n_boot, seed=items_seed(common),
                                     level=level)
    if swap:
        intervals = {metric: interval.mirrored() for metric, interval in intervals.items()}
    return intervals, y_true.shape[0]


def result_predictions(result: ProbeResult) -> Predictions | None:
    """The predictions beside ``result``'s JSON (None when it has none or is not on disk)."""
    if result.path is None:
        return None
    return load_predictions(result.path, key=result.identity().digest())


def _main_mean(result: ProbeResult) -> float:
    stat = result.stat(task_type(result.task).main_metric)
    return stat.mean if stat is not None else float("-inf")


def compare_results(results: list[ProbeResult], n_boot: int = 1000,
                    level: float = 0.95) -> tuple[list[Comparison], list[str]]:
    """Every comparable pair of models per dataset (each model's reference run; one recipe's results).

    A is the model with the higher mean main metric (then the name), so Δ = A - B. Only runs of a
    dataset's reference protocol and test items (report.comparable) are paired; the others, and
    results without a predictions file, are left out with a note.
    """
    notes: list[str] = []
    runs = reference_runs(results)
    labels = model_labels(runs)
    references = column_references(runs)
    by_dataset: dict[str, list[tuple[ProbeResult, Predictions]]] = {}
    for result in sorted(runs, key=lambda r: (r.dataset.name, -_main_mean(r), labels[r.model.fingerprint])):
        name, dataset = labels[result.model.fingerprint], result.dataset.name
        reference = references[dataset]
        if (result.comparison_key(), items_key(result)) != (reference.protocol, reference.test_items):
            notes.append(f"{name} on {dataset}: another protocol or other test items than the other results there; "
                         f"no significance test for it")
            continue
        predictions = result_predictions(result)
        if predictions is None:
            missing = predictions_path(result.path).name if result.path else "result not on disk"
            notes.append(f"no per-item predictions for {name} on {dataset} ({missing} missing): no significance "
                         f"test for it")
            continue
        by_dataset.setdefault(dataset, []).append((result, predictions))
    comparisons = []
    for dataset, models in by_dataset.items():
        for (ra, pa), (rb, pb) in itertools.combinations(models, 2):
            intervals, n_items = paired_bootstrap(ra.task, pa, pb, n_boot=n_boot, level=level)
            comparisons.append(Comparison(dataset, labels[ra.model.fingerprint], labels[rb.model.fingerprint],
                                          intervals, n_items, (pa.outputs.shape[0], pb.outputs.shape[0]), n_boot,
                                          level))
    return comparisons, notes


def mirror(comparison: Comparison) -> Comparison:
    """The comparison of B with A."""
    return replace(comparison, model_a=comparison.model_b, model_b=comparison.model_a,
                   intervals={m: i.mirrored() for m, i in comparison.intervals.items()},
                   n_seeds=comparison.n_seeds[::-1])


def significant_winners(comparisons: list[Comparison]) -> dict[tuple[str, str, str], bool]:
    """{(dataset, model, metric): True} when the model is significantly better than every other model there."""
    beats: dict[tuple[str, str, str], list[bool]] = {}
    for c in comparisons:
        for m, interval in c.intervals.items():
            better_a = interval.low > 0 if higher_is_better(m) else interval.high < 0
            better_b = interval.high < 0 if higher_is_better(m) else interval.low > 0
            beats.setdefault((c.dataset, c.model_a, m), []).append(better_a)
            beats.setdefault((c.dataset, c.model_b, m), []).append(better_b)
    return {key: all(flags) for key, flags in beats.items() if flags and all(flags)}

