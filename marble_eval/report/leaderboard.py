"""Leaderboard in the CultureMERT paper's layout, from the results, comparing like with like.

Table 1: one row per model, one column per dataset holding "ROC-AUC / mAP" (percent, one decimal);
Table 2: the same for micro-F1 / macro-F1. Avg is the mean of a row's numbers over the datasets that
every measured row has (the notes say which). Within a dataset column, the results of the most
common protocol (and test items) are the reference: a result run with another protocol is marked
"†", one scored on other test items (or another dataset version) "‡", and neither is tested for
significance against the others.
A result that could not use every test item the dataset lists shows "(k/n test)".

Optionally the published rows (marble_eval.report.published) and "Δ" rows (measured - published,
"≈" within 0.5 point, "!" beyond twice the seed std), and "*" marks from the paired bootstrap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_bytes
from marble_eval.report.comparable import (
    ColumnReference,
    column_references,
    items_key,
    protocol_differences,
)
from marble_eval.report.published import PUBLISHED, PublishedModel, find_published
from marble_eval.results.schema import ProbeResult

# Paper column order and titles; other datasets follow in name order.
DATASET_COLUMNS = {"makam": "Turkish-makam", "hindustani": "Hindustani", "carnatic": "Carnatic", "lyra": "Lyra",
                   "fma": "FMA-medium", "mtat": "MTAT"}
TABLES = {"ROC-AUC / mAP": ("roc_auc", "map"), "micro-F1 / macro-F1": ("micro_f1", "macro_f1")}
FORMATS = ("md", "csv", "latex")
OTHER_PROTOCOL, OTHER_ITEMS = "†", "‡"
CLOSE, FAR = "≈", "!"
CLOSE_POINTS = 0.5


def column_title(dataset: str) -> str:
    """The paper's title of a dataset column (the dataset name for others)."""
    return DATASET_COLUMNS.get(dataset, dataset)


def ordered_datasets(names: set[str]) -> list[str]:
    """Paper order first, then the rest by name."""
    order = list(DATASET_COLUMNS)
    return sorted(names, key=lambda name: (order.index(name) if name in order else len(order), name))


def full_runs(results: list[ProbeResult], smoke: bool = False) -> list[ProbeResult]:
    """``results`` without `--limit` smoke runs (they are on a subset of each split), unless ``smoke``."""
    return list(results) if smoke else [r for r in results if r.dataset.limit is None]


def results_for_recipe(results: list[ProbeResult], recipe: str | None = None) -> list[ProbeResult]:
    """The results of ``recipe`` (default: the most common recipe); one-line errors when there are none."""
    if not results:
        raise MarbleEvalError("no results found; run `marble-eval eval --model M --dataset D` (or `make eval`) first")
    recipes = [r.protocol.recipe_name for r in results]
    recipe = recipe or max(sorted(set(recipes)), key=recipes.count)
    chosen = [r for r in results if r.protocol.recipe_name == recipe]
    if not chosen:
        raise MarbleEvalError(f"no results for recipe {recipe!r}; found: {', '.join(sorted(set(recipes)))}")
    return chosen


def _percent(result: ProbeResult, metric: str) -> float | None:
    stat = result.stat(metric)
    return None if stat is None else 100.0 * stat.mean


@dataclass
class _Row:
    label: str
    cells: dict[str, ProbeResult] = field(default_factory=dict)


def _rows(chosen: list[ProbeResult], references: dict[str, ColumnReference]) -> list[_Row]:
    """One row per model (fingerprint); a model with several results on a dataset gets further rows,
    the reference-protocol result first."""
    by_model: dict[tuple[str, str], dict[str, list[ProbeResult]]] = {}
    for r in chosen:
        by_model.setdefault((r.model.display, r.model.fingerprint), {}).setdefault(r.dataset.name, []).append(r)
    names = Counter(display for display, _ in by_model)
    rows = []
    for (display, fingerprint), cells in sorted(by_model.items()):
        label = display if names[display] == 1 else f"{display} [{fingerprint[:8]}]"
        for runs in cells.values():
            runs.sort(key=lambda r: (r.comparison_key() != references[r.dataset.name].protocol,
                                     items_key(r) != references[r.dataset.name].test_items,
                                     r.created), reverse=False)
        for k in range(max(len(runs) for runs in cells.values())):
            row = _Row(label if k == 0 else f"{label} (run {k + 1})")
            row.cells = {dataset: runs[k] for dataset, runs in cells.items() if k < len(runs)}
            rows.append(row)
    return rows


@dataclass
class Leaderboard:
    """The tables ({title: DataFrame[Model, <datasets...>, Avg]}) and the notes printed under them."""

    frames: dict[str, pd.DataFrame]
    notes: list[str]
    avg_datasets: list[str]


def _fmt(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{value:+.1f}" if signed else f"{value:.1f}")


def _mean(numbers: list[float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


def leaderboard_frames(results: list[ProbeResult], recipe: str | None = None, published: bool = False,
                       winners: dict[tuple[str, str, str], bool] | None = None) -> Leaderboard:
    """The leaderboard of one recipe (default: the most common).

    ``published`` adds the PROTOCOL section 6 rows ("<id> (published)") and, for each measured model
    whose id matches a published one, a row "Δ <name> (measured - published)". ``winners`` (from
    significance.significant_winners, keyed by (dataset, row label, metric)) marks a number "*".
    """
    chosen = results_for_recipe(results, recipe)
    references = column_references(chosen)
    rows = _rows(chosen, references)
    datasets = ordered_datasets({r.dataset.name for r in chosen} | (set(DATASET_COLUMNS) if published else set()))
    avg_datasets = [d for d in datasets if all(d in row.cells for row in rows)]
    winners = winners or {}
    marks_used: dict[str, set[str]] = {OTHER_PROTOCOL: set(), OTHER_ITEMS: set()}
    skipped_used = False
    frames = {}
    for title, metrics in TABLES.items():
        table = []
        for row in rows:
            record = {"Model": row.label}
            for dataset in datasets:
                result = row.cells.get(dataset)
                if result is None:
                    record[column_title(dataset)] = ""
                    continue
                reference = references[dataset]
                suffix = ""
                if result.comparison_key() != reference.protocol:
                    suffix += OTHER_PROTOCOL
                    marks_used[OTHER_PROTOCOL].add(dataset)
                elif items_key(result) != reference.test_items:
                    suffix += OTHER_ITEMS
                    marks_used[OTHER_ITEMS].add(dataset)
                numbers = " / ".join(_fmt(_percent(result, m)) + ("*" if winners.get((dataset, row.label, m)) else "")
                                     for m in metrics)
                skipped = result.dataset.skipped_test_items
                if skipped:
                    skipped_used = True
                    total = result.dataset.split_items["test"]
                    numbers += f" ({total - skipped}/{total} test)"
                record[column_title(dataset)] = numbers + suffix
            values = [_percent(row.cells[d], m) for d in avg_datasets for m in metrics]
            record["Avg"] = _fmt(_mean([v for v in values if v is not None])) if avg_datasets else ""
            table.append(record)
        if published:
            table += _published_rows(rows, datasets, avg_datasets, metrics)
        frames[title] = pd.DataFrame(table, columns=["Model", *map(column_title, datasets), "Avg"])
    notes = _notes(chosen, references, marks_used, skipped_used, avg_datasets, datasets, published)
    return Leaderboard(frames, notes, avg_datasets)


def _published_avg(entry: PublishedModel, metrics: tuple[str, str], avg_datasets: list[str]) -> str:
    if set(avg_datasets) >= set(entry.scores):  # every card dataset: the card's own (printed) Avg
        return _fmt(entry.avg_auc_map if metrics == ("roc_auc", "map") else entry.avg_f1)
    if not avg_datasets or not set(avg_datasets) <= set(entry.scores):
        return ""
    return _fmt(_mean([entry.scores[d].metric(m) for d in avg_datasets for m in metrics]))


def _published_rows(rows: list[_Row], datasets: list[str], avg_datasets: list[str],
                    metrics: tuple[str, str]) -> list[dict[str, str]]:
    """Published rows, then "Δ" rows (measured - published) for measured models with a published twin."""
    out = []
    for entry in PUBLISHED:
        record = {"Model": f"{entry.model_id} (published)"}
        for dataset in datasets:
            score = entry.scores.get(dataset)
            record[column_title(dataset)] = " / ".join(_fmt(score.metric(m)) for m in metrics) if score else ""
        record["Avg"] = _published_avg(entry, metrics, avg_datasets)
        out.append(record)
    for row in rows:
        entry = find_published(next(iter(row.cells.values())).model.id)
        if entry is None:
            continue
        record, deltas = {"Model": f"Δ {row.label} (measured - published)"}, []
        for dataset in datasets:
            result, score = row.cells.get(dataset), entry.scores.get(dataset)
            if result is None or score is None:
                record[column_title(dataset)] = ""
                continue
            parts = []
            for m in metrics:
                measured, stat = _percent(result, m), result.stat(m)
                if measured is None or stat is None:
                    parts.append("–")
                    continue
                delta = measured - score.metric(m)
                deltas += [delta] if dataset in avg_datasets else []
                mark = CLOSE if abs(delta) <= CLOSE_POINTS else FAR if abs(delta) > 2 * 100 * stat.std else ""
                parts.append(_fmt(delta, signed=True) + mark)
            record[column_title(dataset)] = " / ".join(parts)
        record["Avg"] = _fmt(_mean(deltas), signed=True) if deltas else ""
        if any(record[column_title(d)] for d in datasets):
            out.append(record)
    return out


def _notes(chosen: list[ProbeResult], references: dict[str, ColumnReference], marks: dict[str, set[str]],
           skipped: bool, avg_datasets: list[str], datasets: list[str], published: bool) -> list[str]:
    notes = []
    if avg_datasets:
        notes.append(f"Avg: mean over {', '.join(map(column_title, avg_datasets))} (the datasets every measured "
                     f"row has)" + ("; published rows: the card's own Avg when that is all six" if published else ""))
    else:
        notes.append("Avg: none (no dataset is shared by every measured row)")
    for dataset in ordered_datasets(marks[OTHER_PROTOCOL]):
        reference = references[dataset]
        fields = sorted({f for r in chosen if r.dataset.name == dataset and r.comparison_key() != reference.protocol
                         for f in protocol_differences(r, reference.example)})
        notes.append(f"{OTHER_PROTOCOL} {column_title(dataset)}: run with another protocol than the column's other "
                     f"results ({', '.join(fields)}); not compared with them")
    for dataset in ordered_datasets(marks[OTHER_ITEMS]):
        notes.append(f"{OTHER_ITEMS} {column_title(dataset)}: scored on other test items (or another version of "
                     f"the dataset) than the column's other results; not compared with them")
    if skipped:
        notes.append("(k/n test): k of the dataset's n test items had usable audio")
    if published:
        notes.append(f"Δ rows: measured - published in points; {CLOSE} within {CLOSE_POINTS} point, {FAR} more than "
                     f"twice the seed std away")
    return notes


def render(board: Leaderboard, fmt: str = "md", recipe_note: str = "") -> str:
    """Render the tables (and their notes) as Markdown, CSV or LaTeX."""
    if fmt not in FORMATS:
        raise MarbleEvalError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    parts = []
    for title, frame in board.frames.items():
        if fmt == "md":
            parts.append(f"### {title} (%){recipe_note}\n\n{frame.to_markdown(index=False, disable_numparse=True)}\n")
        elif fmt == "csv":
            parts.append(f"# {title}\n{frame.to_csv(index=False)}")
        else:
            parts.append(frame.to_latex(index=False, caption=f"{title} (\\%)", escape=True))
    notes = board.notes
    if fmt == "md":
        parts.append("".join(f"- {note}\n" for note in notes))
    elif fmt == "csv":
        parts.append("".join(f"# {note}\n" for note in notes))
    else:
        parts.append("".join(f"% {note}\n" for note in notes))
    return "\n".join(parts)


def write_leaderboard_md(results_dir: Path, text: str) -> Path:
    """Regenerate results/LEADERBOARD.md (atomically)."""
    path = Path(results_dir) / "LEADERBOARD.md"
    header = ("# marble-eval leaderboard\n\nGenerated by `marble-eval leaderboard` from the results JSONs in this "
              "folder: test metrics of the validation-selected probe, mean over seeds.\n\n")
    atomic_write_bytes(path, (header + text).encode())
    return path


def significance_frame(comparisons: list[Any]) -> pd.DataFrame:
    """One row per compared pair (significance.Comparison): differences a - b with 95% intervals, percent."""
    rows = []
    for c in comparisons:
        row = {"Dataset": column_title(c.dataset), "Model A": c.model_a, "Model B": c.model_b}
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
        text += "No pair of comparable models with per-item predictions on the same dataset.\n"
    return text + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")
