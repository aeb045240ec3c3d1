"""Results in other shapes: tidy tables (CSV / JSON), the paper's LaTeX tables, Hugging Face model-index YAML.

- tidy: one row per (run, metric) with mean, std (percent; empty for one seed), n_seeds, n_test_items,
  preset, recipe, grid, lrs, layers, seeds, batch unit, whether the run is the reference run of its
  (model, dataset) (report.runs), and the protocol digest (rows of different digests on one dataset
  are not comparable).
- latex: the leaderboard's tables of each task type (tagging: "ROC-AUC / mAP", "micro-F1 / macro-F1"),
  each model's reference run, mean ± std over seeds per cell, the best measured mean of each column in
  bold, Avg over the datasets every row has; "\\dag" marks a run of another protocol than the column's.
- model-index: per model, the ``model-index`` block of a model card's metadata (its reference runs).
All three pick a model's run on a dataset by the one reference-run rule of report.runs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import yaml

from marble_eval.errors import MarbleEvalError
from marble_eval.metrics.table import metric_label, metric_spec
from marble_eval.report.columns import (
    MetricTable,
    column_title,
    higher_is_better,
    metric_columns,
    ordered_datasets,
    task_tables,
)
from marble_eval.report.comparable import column_references
from marble_eval.report.latex import latex_escape
from marble_eval.report.leaderboard import results_for_recipe
from marble_eval.report.runs import grid_label, model_labels, reference_runs, runs_by_model
from marble_eval.results.schema import ProbeResult
from marble_eval.tasks import task_type

FORMATS = ("tidy-csv", "tidy-json", "latex", "model-index")
TIDY_COLUMNS = ["model", "model_id", "fingerprint", "dataset", "task", "metric", "mean", "std", "n_seeds",
                "n_test_items", "preset", "recipe", "grid", "lrs", "layers", "seeds", "batch_unit", "reference",
                "created", "protocol"]


def tidy_frame(results: list[ProbeResult]) -> pd.DataFrame:
    """One row per (run, metric); mean and std in percent (std empty for a one-seed run)."""
    labels = model_labels(results)
    references = {id(runs[0]) for runs in runs_by_model(results).values()}
    rows = []
    for r in sorted(results, key=lambda r: (labels[r.model.fingerprint], r.dataset.name, r.created)):
        grid, grid_name = r.protocol.grid, grid_label(r)
        for metric in metric_columns(r):
            stat = r.stat(metric)
            if stat is None:
                continue
            rows.append({"model": labels[r.model.fingerprint], "model_id": r.model.id,
                         "fingerprint": r.model.fingerprint, "dataset": r.dataset.name, "task": r.task,
                         "metric": metric, "mean": 100 * stat.mean, "std": 100 * stat.std if stat.n > 1 else np.nan,
                         "n_seeds": stat.n, "n_test_items": r.dataset.splits.get("test", 0),
                         "preset": r.protocol.preset or "", "recipe": r.protocol.recipe_name,
                         "grid": grid_name, "lrs": " ".join(f"{lr:g}" for lr in grid.lrs),
                         "layers": " ".join(map(str, grid.layers)), "seeds": " ".join(map(str, grid.seeds)),
                         "batch_unit": r.protocol.batch_unit or "", "reference": id(r) in references,
                         "created": r.created, "protocol": r.comparison_key()[:8]})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def _cell_text(result: ProbeResult, metric: str, best: float | None) -> str:
    stat = result.stat(metric)
    if stat is None:
        return "--"
    text = f"{100 * stat.mean:.1f}" + (f" $\\pm$ {100 * stat.std:.1f}" if stat.n > 1 else "")
    return f"\\textbf{{{text}}}" if best is not None and np.isclose(best, 100 * stat.mean) else text


def _best(values: list[float | None], metric: str) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if higher_is_better(metric) else min(present)


def _latex_table(table: MetricTable, by_model: dict[str, dict[str, ProbeResult]],
                 protocols: dict[str, str]) -> str:
    names = sorted(m for m, cells in by_model.items() if any(r.task == table.task for r in cells.values()))
    datasets = ordered_datasets({d for m in names for d, r in by_model[m].items() if r.task == table.task})
    common = [d for d in datasets if all(d in by_model[m] for m in names)]

    def mean(model: str, dataset: str, metric: str) -> float | None:
        result = by_model[model].get(dataset)
        stat = result.stat(metric) if result else None
        return None if stat is None else 100 * stat.mean

    def avg(model: str) -> float | None:
        values = [mean(model, d, m) for d in common for m in table.metrics]
        return sum(v for v in values if v is not None) / len(values) if common and None not in values else None

    best = {(d, m): _best([mean(x, d, m) for x in names], m) for d in datasets for m in table.metrics}
    best_avg = _best([avg(x) for x in names], table.metrics[0])
    scope = latex_escape(", ".join(map(column_title, common))) or "none"
    marked = False
    lines = [r"\begin{table}[t]", r"\centering",
             f"\\caption{{{table.latex_title} (\\%), mean $\\pm$ std over seeds; best per column in bold; "
             f"Avg over {scope}}}",
             r"\begin{tabular}{l" + "c" * (len(datasets) + 1) + "}", r"\toprule",
             " & ".join(["Model", *(latex_escape(column_title(d)) for d in datasets), "Avg"]) + r" \\", r"\midrule"]
    for model in names:
        cells = [latex_escape(model)]
        for dataset in datasets:
            result = by_model[model].get(dataset)
            if result is None:
                cells.append("--")
                continue
            text = " / ".join(_cell_text(result, m, best[(dataset, m)]) for m in table.metrics)
            if result.comparison_key() != protocols[dataset]:
                text, marked = text + r"\dag{}", True
            cells.append(text)
        value = avg(model)
        cells.append("--" if value is None else (f"\\textbf{{{value:.1f}}}" if best_avg is not None
                                                  and np.isclose(value, best_avg) else f"{value:.1f}"))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if marked:
        lines.append(r"{\footnotesize \dag{} run with another protocol than the column's other results; not "
                     r"comparable with them.\par}")
    return "\n".join([*lines, r"\end{table}", ""])


def _reference_cells(results: list[ProbeResult]) -> tuple[dict[str, dict[str, ProbeResult]], list[ProbeResult]]:
    runs = reference_runs(results)
    labels = model_labels(runs)
    by_model: dict[str, dict[str, ProbeResult]] = defaultdict(dict)
    for r in runs:
        by_model[labels[r.model.fingerprint]][r.dataset.name] = r
    return by_model, runs


def latex_tables(results: list[ProbeResult], recipe: str | None = None) -> str:
    """The leaderboard's tables as LaTeX: each model's reference run, mean ± std, the best mean bold."""
    by_model, runs = _reference_cells(results_for_recipe(results, recipe))
    protocols = {dataset: ref.protocol for dataset, ref in column_references(runs).items()}
    return "\n".join(_latex_table(table, by_model, protocols) for table in task_tables({r.task for r in runs}))


def _metric_name(result: ProbeResult, metric: str, n: int) -> str:
    seeds = f"mean of {n} seeds" if n > 1 else "1 seed"
    return f"{metric_label(metric)} (test, {seeds}, {result.protocol.recipe_name} probe)"


def model_index(results: list[ProbeResult], recipe: str | None = None) -> dict[str, dict]:
    """{model name: {"model-index": [...]}}: a Hugging Face model card metadata block per model."""
    by_model, _ = _reference_cells(results_for_recipe(results, recipe))
    blocks = {}
    for model, cells in sorted(by_model.items()):
        entries = []
        for dataset in ordered_datasets(set(cells)):
            r = cells[dataset]
            task = task_type(r.task)
            kind = "other" if task.labels == "targets" else "audio-classification"
            metrics = [{"type": metric_spec(m).index_type or m, "value": round(100 * stat.mean, 1),
                        "name": _metric_name(r, m, stat.n)}
                       for m in metric_columns(r) if (stat := r.stat(m)) is not None]
            entries.append({"task": {"type": kind, "name": f"Music {task.description}"},
                            "dataset": {"name": column_title(dataset), "type": dataset}, "metrics": metrics})
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
