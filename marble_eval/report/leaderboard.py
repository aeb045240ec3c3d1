"""Leaderboards from the results, comparing like with like, in two layouts (report.columns).

- ``culturemert`` (default): per task type its own tables; tagging keeps the CultureMERT cards'
  "ROC-AUC / mAP" and "micro-F1 / macro-F1". Avg is the mean of a table's numbers over the datasets
  every measured row of that table has (the notes say which).
- ``marble``: one table, one column per dataset with its task's MARBLE metric(s), in MARBLE's order;
  "Avg <metric>" columns only where a metric spans several columns.

Rows: one per model (its reference run per dataset, report.runs), then one per other kind of run of
the model, named by what differs ("fixture (quick grid, 1 seed, window batches)"). Within a dataset
column, the most common protocol (and test items) among the reference runs is the reference: a result
run with another protocol is marked "†", one scored on other test items (or another dataset version)
"§"; neither is tested for significance. A column whose split marble-eval made (VocalSet) is marked
"‡". A result that could not use every test item the dataset lists shows "(k/n test)".

Optionally the published rows (report.published) and "Δ" rows (measured - published, "≈" within 0.5
point, "!" beyond twice the seed std), and "*" marks from the paired bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from marble_eval.errors import MarbleEvalError
from marble_eval.files import atomic_write_bytes
from marble_eval.metrics.table import metric_label
from marble_eval.report.columns import (
    DATASET_COLUMNS,
    LAYOUTS,
    OWN_SPLIT,
    column_title,
    marble_cell,
    marble_cell_title,
    ordered_datasets,
    own_split,
    task_tables,
)
from marble_eval.report.comparable import ColumnReference, column_references, items_key, protocol_differences
from marble_eval.report.latex import latex_escape
from marble_eval.report.published import PublishedModel, find_published, published_rows
from marble_eval.report.runs import model_labels, run_labels, runs_by_model
from marble_eval.results.schema import ProbeResult
from marble_eval.tasks import TASK_TYPES

__all__ = ["DATASET_COLUMNS", "FORMATS", "LAYOUTS", "Leaderboard", "column_title", "full_runs",
           "leaderboard_frames", "ordered_datasets", "render", "render_significance", "results_for_recipe",
           "significance_frame", "write_leaderboard_md"]

FORMATS = ("md", "csv", "latex")
OTHER_PROTOCOL, OTHER_ITEMS = "†", "§"
CLOSE, FAR = "≈", "!"
CLOSE_POINTS = 0.5
REFERENCE_RULE = "the preset's own grid and seeds first, then the most seeds, then the latest"


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


def _fmt(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else (f"{value:+.1f}" if signed else f"{value:.1f}")


def _mean(numbers: list[float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


@dataclass
class Row:
    """One leaderboard row: a model's reference runs (``reference``) or one other kind of its runs."""

    label: str
    model_id: str
    reference: bool
    cells: dict[str, ProbeResult] = field(default_factory=dict)


def leaderboard_rows(results: list[ProbeResult]) -> list[Row]:
    """Per model (by label): the reference row, then a row per other kind of run, named by what differs."""
    labels, names = model_labels(results), run_labels(results)
    ordered = runs_by_model(results)
    rows: dict[str, Row] = {}
    for fingerprint in sorted({fp for fp, _ in ordered}, key=lambda fp: labels[fp]):
        for (fp, dataset), runs in ordered.items():
            if fp != fingerprint:
                continue
            for k, run in enumerate(runs):
                name = names[id(run)]
                rows.setdefault(name, Row(name, run.model.id, k == 0)).cells[dataset] = run
    return list(rows.values())


@dataclass(frozen=True)
class Column:
    """A dataset column: its header and the metrics its cells show ("a / b")."""

    dataset: str
    header: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class AvgColumn:
    """An average column: the (dataset, metric) numbers it averages, and the published average it matches."""

    header: str
    cells: tuple[tuple[str, str], ...]
    printed: tuple[str, ...] | None = None  # a published row's printed average of this metric group


@dataclass
class Leaderboard:
    """The tables ({title: DataFrame[Model, <datasets...>, Avg...]}) and the notes printed under them."""

    frames: dict[str, pd.DataFrame]
    notes: list[str]
    avg_datasets: dict[str, list[str]]  # per table, the datasets its Avg covers
    layout: str = "culturemert"


@dataclass
class _Marks:
    protocol: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    skipped: bool = False


def _cell(row: Row, column: Column, reference: ColumnReference, winners: dict[tuple[str, str, str], bool],
          marks: _Marks) -> str:
    result = row.cells.get(column.dataset)
    if result is None:
        return ""
    text = " / ".join(_fmt(_percent(result, m)) + ("*" if winners.get((column.dataset, row.label, m)) else "")
                      for m in column.metrics)
    skipped = result.dataset.skipped_test_items
    if skipped:
        marks.skipped = True
        total = result.dataset.split_items["test"]
        text += f" ({total - skipped}/{total} test)"
    if result.comparison_key() != reference.protocol:
        marks.protocol.add(column.dataset)
        text += OTHER_PROTOCOL
    elif items_key(result) != reference.test_items:
        marks.items.add(column.dataset)
        text += OTHER_ITEMS
    return text


def _avg(cells: dict[str, ProbeResult], avg: AvgColumn) -> str:
    if not avg.cells or any(dataset not in cells for dataset, _ in avg.cells):
        return ""
    values = [_percent(cells[dataset], metric) for dataset, metric in avg.cells]
    return _fmt(_mean([v for v in values if v is not None]))


def _published_avg(entry: PublishedModel, avg: AvgColumn) -> str:
    datasets = {dataset for dataset, _ in avg.cells}
    if avg.printed is not None and avg.printed in entry.averages and datasets == set(entry.scores):
        return _fmt(entry.averages[avg.printed])  # the source's own (printed) average
    values = [entry.value(dataset, metric) for dataset, metric in avg.cells]
    return "" if not values or None in values else _fmt(_mean([v for v in values if v is not None]))


def _delta(result: ProbeResult, entry: PublishedModel, dataset: str, metric: str) -> tuple[str, float | None]:
    measured, stat, published = _percent(result, metric), result.stat(metric), entry.value(dataset, metric)
    if measured is None or stat is None or published is None:
        return "–", None
    delta = measured - published
    far = stat.n > 1 and abs(delta) > 2 * 100 * stat.std
    return _fmt(delta, signed=True) + (CLOSE if abs(delta) <= CLOSE_POINTS else FAR if far else ""), delta


def _published_rows(entries: tuple[PublishedModel, ...], rows: list[Row], columns: list[Column],
                    avgs: list[AvgColumn]) -> list[dict[str, str]]:
    """Published rows, then "Δ" rows (measured - published) for measured reference rows with a published twin."""
    out = []
    for entry in entries:
        record = {"Model": f"{entry.model_id} (published)"}
        for column in columns:
            values = [entry.value(column.dataset, m) for m in column.metrics]
            record[column.header] = " / ".join(map(_fmt, values)) if any(v is not None for v in values) else ""
        record.update({avg.header: _published_avg(entry, avg) for avg in avgs})
        out.append(record)
    for row in rows:
        entry = find_published(row.model_id, entries) if row.reference else None
        if entry is None:
            continue
        record = {"Model": f"Δ {row.label} (measured - published)"}
        deltas: dict[tuple[str, str], float] = {}
        for column in columns:
            result = row.cells.get(column.dataset)
            if result is None or column.dataset not in entry.scores:
                record[column.header] = ""
                continue
            parts = []
            for metric in column.metrics:
                text, delta = _delta(result, entry, column.dataset, metric)
                parts.append(text)
                if delta is not None:
                    deltas[(column.dataset, metric)] = delta
            record[column.header] = " / ".join(parts)
        for avg in avgs:
            shown = [deltas[cell] for cell in avg.cells if cell in deltas]
            record[avg.header] = _fmt(_mean(shown), signed=True) if shown else ""
        if any(record[c.header] for c in columns):
            out.append(record)
    return out


def _frame(columns: list[Column], avgs: list[AvgColumn], rows: list[Row], references: dict[str, ColumnReference],
           winners: dict[tuple[str, str, str], bool], marks: _Marks,
           published: tuple[PublishedModel, ...]) -> pd.DataFrame:
    table = []
    for row in rows:
        record = {"Model": row.label}
        for column in columns:
            reference = references.get(column.dataset)
            record[column.header] = _cell(row, column, reference, winners, marks) if reference else ""
        record.update({avg.header: _avg(row.cells, avg) for avg in avgs})
        table.append(record)
    table += _published_rows(published, rows, columns, avgs) if published else []
    return pd.DataFrame(table, columns=["Model", *(c.header for c in columns), *(a.header for a in avgs)])


def _header(dataset: str, results: list[ProbeResult], suffix: str = "") -> str:
    return column_title(dataset) + (OWN_SPLIT if own_split(results, dataset) else "") + suffix


def _common(rows: list[Row], datasets: list[str]) -> list[str]:
    """The datasets every reference row (with a cell among ``datasets``) has."""
    measured = [row for row in rows if row.reference and any(d in row.cells for d in datasets)]
    return [d for d in datasets if measured and all(d in row.cells for row in measured)]


def _culturemert(chosen: list[ProbeResult], rows: list[Row], references: dict[str, ColumnReference],
                 winners: dict[tuple[str, str, str], bool], published: bool, marks: _Marks,
                 notes: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    entries = published_rows("culturemert") if published else ()
    tagging = TASK_TYPES["multilabel"].name
    tasks = {r.task for r in chosen} | ({tagging} if published else set())
    frames, scopes = {}, {}
    for table in task_tables(tasks):
        names = {r.dataset.name for r in chosen if r.task == table.task}
        if table.task == tagging:
            names |= {d for entry in entries for d in entry.scores}
        datasets = ordered_datasets(names)
        columns = [Column(d, _header(d, chosen), table.metrics) for d in datasets]
        scope = _common(rows, datasets)
        avg = AvgColumn("Avg", tuple((d, m) for d in scope for m in table.metrics), table.metrics)
        shown = [row for row in rows if any(d in row.cells for d in datasets)]
        frames[table.title] = _frame(columns, [avg], shown, references, winners, marks,
                                     entries if table.task == tagging else ())
        scopes[table.title] = scope
        if scope:
            notes.append(f"Avg ({table.title}): mean of the {table.title} numbers over "
                         f"{', '.join(map(column_title, scope))} (the datasets every measured row of this table has)"
                         + ("; published rows: the card's own Avg when that is all six"
                            if entries and table.task == tagging else ""))
        else:
            notes.append(f"Avg ({table.title}): none (no dataset is shared by every measured row of this table)")
    return frames, scopes


def _marble(chosen: list[ProbeResult], rows: list[Row], references: dict[str, ColumnReference],
            winners: dict[tuple[str, str, str], bool], published: bool, marks: _Marks,
            notes: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, list[str]]]:
    entries = published_rows("marble") if published else ()
    cells: dict[str, tuple[str, ...]] = {}
    for result in chosen:
        cells.setdefault(result.dataset.name, tuple(marble_cell(result)))
    for entry in entries:
        for dataset, scores in entry.scores.items():
            cells.setdefault(dataset, tuple(scores))
    datasets = ordered_datasets(set(cells), "marble")
    columns = [Column(d, _header(d, chosen, f" ({marble_cell_title(list(cells[d]))})"), cells[d]) for d in datasets]
    scope = _common(rows, datasets)
    by_metric: dict[str, list[str]] = {}
    for dataset in scope:
        for metric in cells[dataset]:
            by_metric.setdefault(metric, []).append(dataset)
    avgs = [AvgColumn(f"Avg {metric_label(metric)}", tuple((d, metric) for d in spanned))
            for metric, spanned in by_metric.items() if len(spanned) > 1]
    title = "MARBLE tasks, each with its own metric"
    frame = _frame(columns, avgs, rows, references, winners, marks, entries)
    for avg in avgs:
        spanned = [d for d, _ in avg.cells]
        notes.append(f"{avg.header}: mean over {', '.join(map(column_title, spanned))} (the columns with this metric "
                     f"that every measured row has)")
    if not avgs:
        notes.append("Avg: none (no metric spans several columns that every measured row has)")
    return {title: frame}, {title: sorted({d for avg in avgs for d, _ in avg.cells}, key=datasets.index)}


def leaderboard_frames(results: list[ProbeResult], recipe: str | None = None, published: bool = False,
                       winners: dict[tuple[str, str, str], bool] | None = None,
                       layout: str = "culturemert") -> Leaderboard:
    """The leaderboard of one recipe (default: the most common) in ``layout`` (report.columns.LAYOUTS).

    ``published`` adds the layout's published rows ("<id> (published)": the CultureMERT cards, or the
    MARBLE v1 paper's MERT-v1-95M / 330M) and, for each measured model whose id matches one, a row
    "Δ <name> (measured - published)". ``winners`` (from significance.significant_winners, keyed by
    (dataset, row label, metric)) marks a number "*".
    """
    if layout not in LAYOUTS:
        raise MarbleEvalError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    chosen = results_for_recipe(results, recipe)
    rows = leaderboard_rows(chosen)
    references = column_references([r for row in rows if row.reference for r in row.cells.values()])
    marks, notes = _Marks(), []
    build = _marble if layout == "marble" else _culturemert
    frames, scopes = build(chosen, rows, references, winners or {}, published, marks, notes)
    notes += _notes(chosen, rows, references, marks, published, layout)
    return Leaderboard(frames, notes, scopes, layout)


def _notes(chosen: list[ProbeResult], rows: list[Row], references: dict[str, ColumnReference], marks: _Marks,
           published: bool, layout: str) -> list[str]:
    notes = []
    if any(not row.reference for row in rows):
        notes.append(f"a row \"<model> (...)\" holds the model's other runs, named by what differs from its reference "
                     f"run (the row without a suffix; {REFERENCE_RULE})")
    for dataset in ordered_datasets({r.dataset.name for r in chosen}, layout):
        if own_split(chosen, dataset):
            notes.append(f"{OWN_SPLIT} {column_title(dataset)}: split made by marble-eval (the dataset publishes none "
                         f"that MARBLE used); not comparable with published numbers")
    for dataset in ordered_datasets(marks.protocol, layout):
        reference = references[dataset]
        fields = sorted({f for r in chosen if r.dataset.name == dataset and r.comparison_key() != reference.protocol
                         for f in protocol_differences(r, reference.example)})
        notes.append(f"{OTHER_PROTOCOL} {column_title(dataset)}: run with another protocol than the column's reference "
                     f"runs ({', '.join(fields)}); not compared with them")
    for dataset in ordered_datasets(marks.items, layout):
        notes.append(f"{OTHER_ITEMS} {column_title(dataset)}: scored on other test items (or another version of "
                     f"the dataset) than the column's other results; not compared with them")
    if marks.skipped:
        notes.append("(k/n test): k of the dataset's n test items had usable audio")
    if published:
        source = published_rows(layout)[0].source
        notes.append(f"published rows: {source}; Δ rows: measured - published in points; {CLOSE} within "
                     f"{CLOSE_POINTS} point, {FAR} more than twice the seed std away")
    return notes


def _latex_table(title: str, frame: pd.DataFrame) -> str:
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(title)} (\\%)}}",
             r"\begin{tabular}{l" + "c" * (len(frame.columns) - 1) + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in record) + r" \\" for record in frame.astype(str).itertuples(index=False)]
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def render(board: Leaderboard, fmt: str = "md", recipe_note: str = "") -> str:
    """Render the tables (and their notes) as Markdown, CSV or LaTeX (marks as \\dag, \\ddag, \\S)."""
    if fmt not in FORMATS:
        raise MarbleEvalError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    parts = []
    for title, frame in board.frames.items():
        if fmt == "md":
            parts.append(f"### {title} (%){recipe_note}\n\n{frame.to_markdown(index=False, disable_numparse=True)}\n")
        elif fmt == "csv":
            parts.append(f"# {title}\n{frame.to_csv(index=False)}")
        else:
            parts.append(_latex_table(title, frame))
    if fmt == "md":
        parts.append("".join(f"- {note}\n" for note in board.notes))
    elif fmt == "csv":
        parts.append("".join(f"# {note}\n" for note in board.notes))
    else:
        parts.append("".join(f"% {latex_escape(note)}\n" for note in board.notes))
    return "\n".join(parts)


def write_leaderboard_md(results_dir: Path, text: str) -> Path:
    """Regenerate results/LEADERBOARD.md (atomically)."""
    path = Path(results_dir) / "LEADERBOARD.md"
    header = ("# marble-eval leaderboard\n\nGenerated by `marble-eval leaderboard` from the results JSONs in this "
              "folder: test metrics of the validation-selected probe, mean over seeds.\n\n")
    atomic_write_bytes(path, (header + text).encode())
    return path


def interval_text(interval: Any) -> str:
    """"+17.0 [+3.8, +31.1] *" (percent points) of a significance.Interval."""
    return (f"{100 * interval.diff:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
            + (" *" if interval.significant else ""))


def significance_frame(comparisons: list[Any]) -> pd.DataFrame:
    """One row per compared pair (significance.Comparison): Δ = A - B per metric with 95% intervals, percent."""
    metrics = list(dict.fromkeys(m for c in comparisons for m in c.intervals))
    rows = []
    for c in comparisons:
        row = {"Dataset": column_title(c.dataset), "Model A": c.model_a, "Model B": c.model_b}
        for metric in metrics:
            row[f"Δ {metric_label(metric)}"] = interval_text(c.intervals[metric]) if metric in c.intervals else ""
        row["Items"] = str(c.n_items)
        row["Seeds"] = f"{c.n_seeds[0]} / {c.n_seeds[1]}"
        rows.append(row)
    columns = ["Dataset", "Model A", "Model B", *(f"Δ {metric_label(m)}" for m in metrics), "Items", "Seeds"]
    return pd.DataFrame(rows, columns=columns)


def render_significance(comparisons: list[Any], notes: list[str]) -> str:
    """Markdown section: the pairwise table (or why there is none) and the notes."""
    text = ("### Paired bootstrap: Δ = model A - model B (percent points, 95% interval; * = interval excludes 0)\n\n"
            "A is the model with the higher mean main metric on the dataset; `marble-eval compare A B` shows the "
            "same interval, and `compare B A` its mirror image.\n\n")
    if comparisons:
        c = comparisons[0]
        text += significance_frame(comparisons).to_markdown(index=False, disable_numparse=True) + (
            f"\n\n{c.n_boot} replicates resampling test items (paired by item id) and one seed per model; "
            "* in the tables above: significantly better than every other measured model on that dataset.\n")
    else:
        text += "No pair of comparable models with per-item predictions on the same dataset.\n"
    return text + "".join(f"\n- {note}" for note in notes) + ("\n" if notes else "")

