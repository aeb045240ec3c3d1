"""Leaderboard in the CultureMERT paper's layout, from the results JSONs.

Table 1: one row per model, one column per dataset holding "ROC-AUC / mAP" (percent, one
decimal), and Avg = the mean of every number in the row. Table 2: the same for micro-F1 / macro-F1.
Optionally the published rows (marble_eval.report.published), measured - published differences, and "*"
marks from the paired bootstrap (marble_eval.report.significance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from marble_eval.errors import MarbleEvalError
from marble_eval.report.published import PUBLISHED, find_published

# Paper column order and titles; other datasets follow in name order.
DATASET_COLUMNS = {"makam": "Turkish-makam", "hindustani": "Hindustani", "carnatic": "Carnatic", "lyra": "Lyra",
                   "fma": "FMA-medium", "mtat": "MTAT"}
TABLES = {"ROC-AUC / mAP": ("roc_auc", "map"), "micro-F1 / macro-F1": ("micro_f1", "macro_f1")}
FORMATS = ("md", "csv", "latex")


def _metric_mean(result: dict[str, Any], metric: str) -> float | None:
    value = result.get("summary", {}).get(metric, {}).get("mean")
    return None if value is None else 100.0 * float(value)


def results_for_recipe(results: list[dict[str, Any]], recipe: str | None = None) -> list[dict[str, Any]]:
    """The results of ``recipe`` (default: the most common recipe); one-line errors when there are none."""
    if not results:
        raise MarbleEvalError("no results found; run `marble-eval eval --model M --dataset D` (or `make eval`) first")
    recipes = [r["protocol"]["recipe"]["name"] for r in results]
    recipe = recipe or max(sorted(set(recipes)), key=recipes.count)
    chosen = [r for r in results if r["protocol"]["recipe"]["name"] == recipe]
    if not chosen:
        raise MarbleEvalError(f"no results for recipe {recipe!r}; found: {', '.join(sorted(set(recipes)))}")
    return chosen


def leaderboard_frames(results: list[dict[str, Any]], recipe: str | None = None, published: bool = False,
                       winners: dict[tuple[str, str, str], bool] | None = None) -> dict[str, pd.DataFrame]:
    """{table title: DataFrame[Model, <datasets...>, Avg]} for one recipe (default: the most common).

    ``published`` adds the PROTOCOL section 6 rows (model "<id> (published)") and, for each measured
    model whose id matches a published one, a row "Δ <id> (measured - published)" over the datasets
    both have. ``winners`` (from significance.significant_winners) marks a number with "*" when that
    model is significantly better than every other measured model on that dataset.
    """
    chosen = results_for_recipe(results, recipe)
    names = {r["dataset"]["name"] for r in chosen} | (set(DATASET_COLUMNS) if published else set())
    datasets = sorted(names, key=lambda name: (list(DATASET_COLUMNS).index(name) if name in DATASET_COLUMNS else 99,
                                               name))
    models = list(dict.fromkeys(r["model"]["id"] for r in sorted(chosen, key=lambda r: r["model"]["id"])))
    by_cell = {(r["model"]["id"], r["dataset"]["name"]): r for r in chosen}
    winners = winners or {}
    frames = {}
    for title, metrics in TABLES.items():
        rows = []
        for model in models:
            values = {d: [_metric_mean(by_cell[(model, d)], m) for m in metrics] for d in datasets
                      if (model, d) in by_cell}
            marks = {d: ["*" if winners.get((d, model, m)) else "" for m in metrics] for d in values}
            rows.append(_row(model, datasets, values, marks))
        if published:
            rows += _published_rows(models, datasets, metrics, by_cell)
        frames[title] = pd.DataFrame(rows)
    return frames


def _cell(pair: list[float | None], marks: list[str] | None = None, signed: bool = False) -> str:
    marks = marks or ["", ""]
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return " / ".join("–" if v is None else fmt.format(v) + mark for v, mark in zip(pair, marks))


def _row(model: str, datasets: list[str], values: dict[str, list[float | None]],
         marks: dict[str, list[str]] | None = None, signed: bool = False) -> dict[str, str]:
    """One table row: a "a / b" cell per dataset (blank where absent) and Avg = mean of every number."""
    row = {"Model": model}
    numbers: list[float] = []
    for dataset in datasets:
        pair = values.get(dataset)
        row[DATASET_COLUMNS.get(dataset, dataset)] = _cell(pair, (marks or {}).get(dataset), signed) if pair else ""
        numbers += [v for v in pair or [] if v is not None]
    mean = sum(numbers) / len(numbers) if numbers else None
    row["Avg"] = "" if mean is None else (f"{mean:+.1f}" if signed else f"{mean:.1f}")
    return row


def _published_rows(models: list[str], datasets: list[str], metrics: tuple[str, str],
                    by_cell: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, str]]:
    """Published rows, then "Δ" rows (measured - published) for measured models with a published twin."""
    rows = []
    for entry in PUBLISHED:
        values = {d: [entry.scores[d].metric(m) for m in metrics] for d in datasets if d in entry.scores}
        row = _row(f"{entry.model_id} (published)", datasets, values)
        row["Avg"] = f"{entry.avg_auc_map if metrics == ('roc_auc', 'map') else entry.avg_f1:.1f}"  # as printed
        rows.append(row)
    for model in models:
        entry = find_published(model)
        if entry is None:
            continue
        diffs: dict[str, list[float | None]] = {}
        for dataset in datasets:
            if (model, dataset) in by_cell and dataset in entry.scores:
                measured = [_metric_mean(by_cell[(model, dataset)], m) for m in metrics]
                diffs[dataset] = [None if v is None else v - entry.scores[dataset].metric(m)
                                  for v, m in zip(measured, metrics)]
        if diffs:
            rows.append(_row(f"Δ {model} (measured - published)", datasets, diffs, signed=True))
    return rows


def render(frames: dict[str, pd.DataFrame], fmt: str = "md", recipe_note: str = "") -> str:
    """Render the tables as Markdown, CSV or LaTeX."""
    if fmt not in FORMATS:
        raise MarbleEvalError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    parts = []
    for title, frame in frames.items():
        if fmt == "md":
            parts.append(f"### {title} (%){recipe_note}\n\n{frame.to_markdown(index=False, disable_numparse=True)}\n")
        elif fmt == "csv":
            parts.append(f"# {title}\n{frame.to_csv(index=False)}")
        else:
            parts.append(frame.to_latex(index=False, caption=f"{title} (\\%)", escape=True))
    return "\n".join(parts)


def write_leaderboard_md(results_dir: Path, text: str) -> Path:
    """Regenerate results/LEADERBOARD.md."""
    path = Path(results_dir) / "LEADERBOARD.md"
    header = ("# marble-eval leaderboard\n\nGenerated by `marble-eval leaderboard` from the results JSONs in this "
              "folder: test metrics of the validation-selected probe, mean over seeds.\n\n")
    path.write_text(header + text)
    return path


def significance_frame(comparisons: list[Any]) -> pd.DataFrame:
    """One row per compared pair (significance.Comparison): differences a - b with 95% intervals, percent."""
    rows = []
    for c in comparisons:
        row = {"Dataset": DATASET_COLUMNS.get(c.dataset, c.dataset), "Model A": c.model_a, "Model B": c.model_b}
        for metric, title in (("roc_auc", "Δ ROC-AUC"), ("map", "Δ mAP")):
            i = c.intervals[metric]
            row[title] = (f"{100 * i.diff:+.1f} [{100 * i.low:+.1f}, {100 * i.high:+.1f}]"
                          + (" *" if i.significant else ""))
        row["Items"] = str(c.n_items)
        row["Seeds"] = f"{c.n_seeds[0]} / {c.n_seeds[1]}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["Dataset", "Model A", "Model B", "Δ ROC-AUC", "Δ mAP", "Items", "Seeds"])


def render_significance(comparisons: list[Any], notes: list[str]) -> str:
    """Markdown section: the pairwise table (or why there is none) and the notes."""
    text = "### Paired bootstrap: model A - model B (percent points, 95% interval; * = interval excludes 0)\n\n"
    if comparisons:
        c = comparisons[0]
        text += significance_frame(comparisons).to_markdown(index=False, disable_numparse=True) + (
            f"\n\n{c.n_boot} replicates resampling test items (paired by item id) and one seed per model; "
            "* in the tables above: significantly better than every other measured model on that dataset.\n")
    else:
        text += "No pair of models with per-item predictions on the same dataset.\n"
    return text + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")
