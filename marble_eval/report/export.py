"""Results in other shapes: tidy tables (CSV / JSON), the paper's LaTeX tables, Hugging Face model-index YAML.

- tidy: one row per (model, dataset, metric) with mean, std (percent), n_seeds, n_test_items, preset,
  recipe and the protocol digest (rows of different digests on one dataset are not comparable).
- latex: the CultureMERT tables ("ROC-AUC / mAP", "micro-F1 / macro-F1"), mean ± std over seeds per
  cell, the best measured mean of each column in bold, Avg over the datasets every row has.
- model-index: per model, the ``model-index`` block of a model card's metadata.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import yaml

from marble_eval.errors import MarbleEvalError
from marble_eval.report.leaderboard import (
    TABLES,
    column_title,
    ordered_datasets,
    results_for_recipe,
)
from marble_eval.results.schema import ProbeResult, SummaryStat

FORMATS = ("tidy-csv", "tidy-json", "latex", "model-index")
METRIC_NAMES = {"roc_auc": "ROC-AUC", "map": "mAP", "micro_f1": "micro-F1", "macro_f1": "macro-F1",
                "accuracy": "accuracy"}
# model-index metric types (Hugging Face's names where it has one).
INDEX_TYPES = {"roc_auc": "roc_auc", "map": "average_precision", "micro_f1": "f1", "macro_f1": "f1",
               "accuracy": "accuracy"}
ORDER = tuple(METRIC_NAMES)
TIDY_COLUMNS = ["model", "model_id", "fingerprint", "dataset", "metric", "mean", "std", "n_seeds", "n_test_items",
                "preset", "recipe", "protocol"]


def _ordered(result: ProbeResult) -> list[tuple[str, SummaryStat]]:
    """The result's summary in the tables' metric order (known metrics first)."""
    return sorted(result.summary.items(), key=lambda item: (ORDER.index(item[0]) if item[0] in ORDER else len(ORDER),
                                                            item[0]))


def tidy_frame(results: list[ProbeResult]) -> pd.DataFrame:
    """One row per (model, dataset, metric); mean and std in percent."""
    rows = []
    for r in sorted(results, key=lambda r: (r.model.display, r.dataset.name, r.created)):
        for metric, stat in _ordered(r):
            rows.append({"model": r.model.display, "model_id": r.model.id, "fingerprint": r.model.fingerprint,
                         "dataset": r.dataset.name, "metric": metric, "mean": 100 * stat.mean, "std": 100 * stat.std,
                         "n_seeds": stat.n, "n_test_items": r.dataset.splits.get("test", 0),
                         "preset": r.protocol.preset or "", "recipe": r.protocol.recipe_name,
                         "protocol": r.comparison_key()[:8]})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                          ("^", r"\textasciicircum{}")):
        text = text.replace(char, escaped)
    return text


def latex_tables(results: list[ProbeResult], recipe: str | None = None) -> str:
    """The paper's two tables as LaTeX: mean ± std per metric, the best mean per column and metric bold."""
    chosen = results_for_recipe(results, recipe)
    by_cell: dict[str, dict[str, ProbeResult]] = defaultdict(dict)
    for r in sorted(chosen, key=lambda r: r.created):
        by_cell[r.model.display][r.dataset.name] = r  # the latest run of a model on a dataset
    models = sorted(by_cell)
    datasets = ordered_datasets({r.dataset.name for r in chosen})
    common = [d for d in datasets if all(d in by_cell[m] for m in models)]
    parts = []
    for title, metrics in TABLES.items():
        def mean(model: str, dataset: str, metric: str) -> float | None:
            stat = by_cell[model][dataset].stat(metric) if dataset in by_cell[model] else None
            return None if stat is None else 100 * stat.mean

        def avg(model: str, metric_pair: tuple[str, str]) -> float | None:
            values = [mean(model, d, m) for d in common for m in metric_pair]
            return sum(values) / len(values) if common and None not in values else None

        best = {(d, m): max((v for v in (mean(x, d, m) for x in models) if v is not None), default=None)
                for d in datasets for m in metrics}
        best_avg = max((v for v in (avg(x, metrics) for x in models) if v is not None), default=None)
        scope = _latex_escape(", ".join(map(column_title, common))) or "none"
        caption = (f"\\caption{{{_latex_escape(title)} (\\%), mean $\\pm$ std over seeds; best per column in bold; "
                   f"Avg over {scope}}}")
        lines = [r"\begin{table}[t]", r"\centering", caption,
                 r"\begin{tabular}{l" + "c" * (len(datasets) + 1) + "}", r"\toprule",
                 " & ".join(["Model", *(_latex_escape(column_title(d)) for d in datasets), "Avg"]) + r" \\",
                 r"\midrule"]
        for model in models:
            cells = [_latex_escape(model)]
            for dataset in datasets:
                if dataset not in by_cell[model]:
                    cells.append("--")
                    continue
                pair = []
                for metric in metrics:
                    stat = by_cell[model][dataset].stat(metric)
                    if stat is None:
                        pair.append("--")
                        continue
                    text = f"{100 * stat.mean:.1f} $\\pm$ {100 * stat.std:.1f}"
                    pair.append(f"\\textbf{{{text}}}" if best[(dataset, metric)] == 100 * stat.mean else text)
                cells.append(" / ".join(pair))
            value = avg(model, metrics)
            cells.append("--" if value is None else (f"\\textbf{{{value:.1f}}}" if value == best_avg else f"{value:.1f}"))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def model_index(results: list[ProbeResult], recipe: str | None = None) -> dict[str, dict]:
    """{model display name: {"model-index": [...]}}: a Hugging Face model card metadata block per model."""
    chosen = results_for_recipe(results, recipe)
    latest: dict[str, dict[str, ProbeResult]] = defaultdict(dict)
    for r in sorted(chosen, key=lambda r: r.created):
        latest[r.model.display][r.dataset.name] = r
    blocks = {}
    for model, cells in sorted(latest.items()):
        entries = []
        for dataset in ordered_datasets(set(cells)):
            r = cells[dataset]
            task = ("audio-classification", "Music auto-tagging" if r.dataset.task == "multilabel"
                    else "Music classification")
            entries.append({
                "task": {"type": task[0], "name": task[1]},
                "dataset": {"name": column_title(dataset), "type": dataset},
                "metrics": [{"type": INDEX_TYPES.get(metric, metric), "value": round(100 * stat.mean, 1),
                             "name": f"{METRIC_NAMES.get(metric, metric)} (test, mean of {stat.n} seeds, "
                                     f"{r.protocol.recipe_name} probe)"}
                            for metric, stat in _ordered(r)],
            })
        blocks[model] = {"model-index": [{"name": model, "results": entries}]}
    return blocks


def export(results: list[ProbeResult], fmt: str, recipe: str | None = None) -> str:
    """The results in format ``fmt`` (one of FORMATS) as text."""
    if fmt not in FORMATS:
        raise MarbleEvalError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not results:
        raise MarbleEvalError("no results found; run `marble-eval eval --model M --dataset D` (or `make eval`) first")
    if fmt == "tidy-csv":
        return tidy_frame(results).to_csv(index=False)
    if fmt == "tidy-json":
        return tidy_frame(results).to_json(orient="records", indent=1) + "\n"
    if fmt == "latex":
        return latex_tables(results, recipe)
    return yaml.safe_dump_all(list(model_index(results, recipe).values()), sort_keys=False, allow_unicode=True)
