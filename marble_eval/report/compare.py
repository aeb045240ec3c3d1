"""Two models side by side: per dataset each metric's mean ± std, the paired-bootstrap difference, and per tag scores.

The models are named as the tables name them (display name, model id, its short form, or the part
after the last "/", case-insensitive). Per dataset, each model's reference run (report.runs: the
preset's own grid and seeds first, then the most seeds, then the latest) is shown, as in the
leaderboard and the exports; when the two are not comparable (another protocol or other test items),
no difference is tested and the note says what differs. Δ = A - B on the same replicates as the
leaderboard's significance table: ``compare B A`` is the exact mirror of ``compare A B``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.table import metric_label
from marble_eval.report.columns import column_title, metric_columns, ordered_datasets
from marble_eval.report.comparable import comparable, protocol_differences
from marble_eval.report.leaderboard import interval_text
from marble_eval.report.runs import model_name, order_runs, short_model_id
from marble_eval.report.significance import Interval, Predictions, paired_bootstrap, result_predictions
from marble_eval.results.schema import ProbeResult
from marble_eval.tasks import task_type

TAG_COLUMNS = ["tag", "support", "A ROC-AUC", "B ROC-AUC", "Δ ROC-AUC", "A AP", "B AP", "Δ AP"]


def _matches(result: ProbeResult, name: str) -> bool:
    wanted = name.strip("/").lower()
    model_id = result.model.id.strip("/")
    return wanted in {model_name(result.model).lower(), model_id.lower(), model_id.rsplit("/", 1)[-1].lower(),
                      short_model_id(result.model.id).lower()}


def results_of(results: list[ProbeResult], name: str) -> list[ProbeResult]:
    """The results of the model called ``name``; a one-line error listing the models when there are none."""
    found = [r for r in results if _matches(r, name)]
    if not found:
        known = sorted({model_name(r.model) for r in results})
        raise MarbleEvalError(f"no results for model {name!r}; models with results: {', '.join(known) or 'none'}")
    return found


@dataclass
class DatasetComparison:
    """Models A and B on one dataset (each model's reference run)."""

    dataset: str
    a: ProbeResult
    b: ProbeResult
    intervals: dict[str, Interval] | None  # A - B; None when not tested (see note)
    note: str
    tags: pd.DataFrame  # TAG_COLUMNS, percent (tagging only; empty otherwise)


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


def compare_models(results: list[ProbeResult], model_a: str, model_b: str, dataset: str | None = None,
                   n_boot: int = 1000) -> list[DatasetComparison]:
    """Per dataset both models have (or only ``dataset``): model A's reference run against model B's."""
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
        a = order_runs([r for r in runs_a if r.dataset.name == name])[0]
        b = order_runs([r for r in runs_b if r.dataset.name == name])[0]
        pred_a, pred_b = result_predictions(a), result_predictions(b)
        intervals, note = None, ""
        if not comparable(a, b):
            differs = ", ".join(protocol_differences(a, b)) or "test items"
            note = f"not tested: the reference runs differ in {differs}"
        elif pred_a is None or pred_b is None:
            note = "not tested: per-item predictions missing"
        else:
            intervals, n_items = paired_bootstrap(a.task, pred_a, pred_b, n_boot=n_boot)
            note = f"paired bootstrap over {n_items} test items, {n_boot} replicates"
        tags = _tag_frame(a, b, pred_a or pred_b) if a.task == b.task and a.dataset.tags == b.dataset.tags else (
            pd.DataFrame(columns=TAG_COLUMNS))
        out.append(DatasetComparison(name, a, b, intervals, note, tags))
    return out


def stat_text(result: ProbeResult, metric: str) -> str:
    """"85.0 ± 1.0" (percent, mean ± std over seeds); one seed: "85.0 (1 seed)", no std."""
    stat = result.stat(metric)
    if stat is None:
        return "–"
    return f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}" if stat.n > 1 else f"{100 * stat.mean:.1f} (1 seed)"


def summary_frame(comparisons: list[DatasetComparison]) -> pd.DataFrame:
    """One row per dataset and metric: A and B mean ± std and A - B with its 95% interval (percent)."""
    rows = []
    for c in comparisons:
        metrics = list(dict.fromkeys([*metric_columns(c.a), *metric_columns(c.b)]))
        for k, metric in enumerate(metrics):
            interval = (c.intervals or {}).get(metric)
            rows.append({"Dataset": column_title(c.dataset) if k == 0 else "", "Metric": metric_label(metric),
                         "A": stat_text(c.a, metric), "B": stat_text(c.b, metric),
                         "Δ A - B": interval_text(interval) if interval else "–", "Note": c.note if k == 0 else ""})
    return pd.DataFrame(rows, columns=["Dataset", "Metric", "A", "B", "Δ A - B", "Note"])


def tag_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-tag frame with numbers formatted (one decimal; signed differences)."""
    shown = frame.copy()
    for column in TAG_COLUMNS[2:]:
        signed = column.startswith("Δ")
        shown[column] = [f"{v:+.1f}" if signed else f"{v:.1f}" for v in frame[column]]
    shown["support"] = ["?" if pd.isna(v) else str(int(v)) for v in frame["support"]]
    return shown


def render_comparison(comparisons: list[DatasetComparison]) -> str:
    """Markdown: the per-dataset summary, then each tagging dataset's per-tag table."""
    a, b = model_name(comparisons[0].a.model), model_name(comparisons[0].b.model)
    text = [f"### A = {a}, B = {b} (test, percent; Δ = A - B with its 95% interval, * = excludes 0)\n",
            summary_frame(comparisons).to_markdown(index=False, disable_numparse=True), ""]
    for c in comparisons:
        if task_type(c.a.task).labels != "multi_hot":
            continue  # per-tag scores are a tagging task's
        text += [f"#### {column_title(c.dataset)}: per tag (support = positive test items)\n",
                 tag_table(c.tags).to_markdown(index=False, disable_numparse=True) if not c.tags.empty
                 else "per-tag scores missing in one or both results", ""]
    return "\n".join(text) + "\n"
