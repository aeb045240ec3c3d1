"""Two models side by side: per dataset mean ± std, the paired-bootstrap difference, and per tag scores.

The models are named as the tables name them (display name, model id, or the part after the last
"/", case-insensitive). Per dataset, a pair of results measured under the same protocol on the same
test items is preferred; when there is none the latest of each is shown and no difference is tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marble_eval.errors import MarbleEvalError
from marble_eval.report.comparable import comparable, protocol_differences
from marble_eval.report.leaderboard import column_title, ordered_datasets
from marble_eval.report.significance import (
    Interval,
    Predictions,
    bootstrap_difference,
    load_predictions,
    paired_arrays,
)
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path

METRICS = ("roc_auc", "map")
TAG_COLUMNS = ["tag", "support", "A ROC-AUC", "B ROC-AUC", "Δ ROC-AUC", "A AP", "B AP", "Δ AP"]


def _matches(result: ProbeResult, name: str) -> bool:
    wanted = name.strip("/").lower()
    return wanted in {result.model.display.lower(), result.model.id.strip("/").lower(),
                      result.model.id.strip("/").rsplit("/", 1)[-1].lower()}


def results_of(results: list[ProbeResult], name: str) -> list[ProbeResult]:
    """The results of the model called ``name``; a one-line error listing the models when there are none."""
    found = [r for r in results if _matches(r, name)]
    if not found:
        known = sorted({r.model.display for r in results})
        raise MarbleEvalError(f"no results for model {name!r}; models with results: {', '.join(known) or 'none'}")
    return found


@dataclass
class DatasetComparison:
    """Models A and B on one dataset."""

    dataset: str
    a: ProbeResult
    b: ProbeResult
    intervals: dict[str, Interval] | None  # A - B; None when not tested (see note)
    note: str
    tags: pd.DataFrame  # TAG_COLUMNS, percent


def _predictions(result: ProbeResult) -> Predictions | None:
    return load_predictions(predictions_path(result.path)) if result.path else None


def _per_tag(result: ProbeResult) -> dict[str, tuple[float, float]]:
    """{tag: (ROC-AUC, AP)} in percent, mean over seeds of the selected probes (tags scored by every seed)."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for selected in result.selected:
        for tag, score in ((selected.test.per_tag if selected.test else None) or {}).items():
            if score.roc_auc is not None and score.ap is not None:
                scores.setdefault(tag, []).append((100 * score.roc_auc, 100 * score.ap))
    return {tag: (float(np.mean([s[0] for s in v])), float(np.mean([s[1] for s in v]))) for tag, v in scores.items()}


def _tag_frame(a: ProbeResult, b: ProbeResult, predictions: Predictions | None) -> pd.DataFrame:
    tags_a, tags_b = _per_tag(a), _per_tag(b)
    support = {}
    if predictions is not None:
        support = {str(tag): int(n) for tag, n in zip(predictions.tags, (predictions.y_true > 0.5).sum(0))}
    rows = []
    for tag in [t for t in a.dataset.tags if t in tags_a and t in tags_b]:
        (auc_a, ap_a), (auc_b, ap_b) = tags_a[tag], tags_b[tag]
        rows.append({"tag": tag, "support": support.get(tag), "A ROC-AUC": auc_a, "B ROC-AUC": auc_b,
                     "Δ ROC-AUC": auc_a - auc_b, "A AP": ap_a, "B AP": ap_b, "Δ AP": ap_a - ap_b})
    return pd.DataFrame(rows, columns=TAG_COLUMNS)


def _pick(runs_a: list[ProbeResult], runs_b: list[ProbeResult]) -> tuple[ProbeResult, ProbeResult, bool]:
    """A comparable pair (latest first) if there is one, else the latest of each."""
    for a in sorted(runs_a, key=lambda r: r.created, reverse=True):
        for b in sorted(runs_b, key=lambda r: r.created, reverse=True):
            if comparable(a, b):
                return a, b, True
    return max(runs_a, key=lambda r: r.created), max(runs_b, key=lambda r: r.created), False


def compare_models(results: list[ProbeResult], model_a: str, model_b: str, dataset: str | None = None,
                   n_boot: int = 1000, seed: int = 0) -> list[DatasetComparison]:
    """Per dataset both models have (or only ``dataset``): the comparison of model A with model B."""
    runs_a, runs_b = results_of(results, model_a), results_of(results, model_b)
    shared = {r.dataset.name for r in runs_a} & {r.dataset.name for r in runs_b}
    if dataset is not None:
        if dataset not in shared:
            raise MarbleEvalError(f"no results of both {model_a!r} and {model_b!r} on dataset {dataset!r}; shared "
                                  f"datasets: {', '.join(ordered_datasets(shared)) or 'none'}")
        shared = {dataset}
    if not shared:
        raise MarbleEvalError(f"{model_a!r} and {model_b!r} have no dataset in common; run both on one dataset first")
    out = []
    for name in ordered_datasets(shared):
        a, b, same = _pick([r for r in runs_a if r.dataset.name == name], [r for r in runs_b if r.dataset.name == name])
        pred_a, pred_b = _predictions(a), _predictions(b)
        intervals, note = None, ""
        if not same:
            differs = ", ".join(protocol_differences(a, b)) or "test items"
            note = f"not tested: the results differ in {differs}"
        elif pred_a is None or pred_b is None:
            note = "not tested: per-item predictions missing"
        else:
            y_true, probs_a, probs_b = paired_arrays(pred_a, pred_b)
            intervals = bootstrap_difference(y_true, probs_a, probs_b, n_boot=n_boot, seed=seed)
            note = f"paired bootstrap over {y_true.shape[0]} test items, {n_boot} replicates"
        out.append(DatasetComparison(name, a, b, intervals, note, _tag_frame(a, b, pred_a or pred_b)))
    return out


def _stat(result: ProbeResult, metric: str) -> str:
    stat = result.stat(metric)
    return "–" if stat is None else f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}"


def _interval(interval: Interval) -> str:
    return (f"{100 * interval.diff:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
            + (" *" if interval.significant else ""))


def summary_frame(comparisons: list[DatasetComparison]) -> pd.DataFrame:
    """One row per dataset: A and B mean ± std and A - B with its 95% interval (percent)."""
    rows = []
    for c in comparisons:
        row = {"Dataset": column_title(c.dataset)}
        for metric, label in (("roc_auc", "ROC-AUC"), ("map", "mAP")):
            row[f"A {label}"], row[f"B {label}"] = _stat(c.a, metric), _stat(c.b, metric)
            row[f"Δ {label}"] = _interval(c.intervals[metric]) if c.intervals else "–"
        row["Note"] = c.note
        rows.append(row)
    return pd.DataFrame(rows)


def tag_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-tag frame with numbers formatted (one decimal; signed differences)."""
    shown = frame.copy()
    for column in TAG_COLUMNS[2:]:
        signed = column.startswith("Δ")
        shown[column] = [f"{v:+.1f}" if signed else f"{v:.1f}" for v in frame[column]]
    shown["support"] = ["?" if pd.isna(v) else str(int(v)) for v in frame["support"]]
    return shown


def render_comparison(comparisons: list[DatasetComparison]) -> str:
    """Markdown: the per-dataset summary, then each dataset's per-tag table."""
    a, b = comparisons[0].a.model.display, comparisons[0].b.model.display
    text = [f"### A = {a}, B = {b} (test, percent; Δ = A - B with its 95% interval, * = excludes 0)\n",
            summary_frame(comparisons).to_markdown(index=False, disable_numparse=True), ""]
    for c in comparisons:
        text += [f"#### {column_title(c.dataset)}: per tag (support = positive test items)\n",
                 tag_table(c.tags).to_markdown(index=False, disable_numparse=True) if not c.tags.empty
                 else "per-tag scores missing in one or both results", ""]
    return "\n".join(text) + "\n"
