"""A self-contained static HTML report: sortable leaderboard, significance, plots, per-dataset provenance.

The page is one file (inline CSS and JS; figures inlined as PNG data URIs, with PNG and SVG copies in
``figures/`` beside it for papers). Clicking a column header sorts its table (numbers
descending first, text ascending; again to reverse); the URL fragment ``#sort=<column>`` (or
``#sort=<column>:desc``) clicks that header of the first leaderboard on load, which is how the
headless-browser test drives it.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pandas as pd

from marble_eval.datasets.registry import MARBLE_TASKS
from marble_eval.files import atomic_write_bytes, atomic_write_json
from marble_eval.metrics.table import metric_label
from marble_eval.report.columns import column_title, metric_columns, ordered_datasets
from marble_eval.report.leaderboard import (
    leaderboard_frames,
    results_for_recipe,
    significance_frame,
)
from marble_eval.report.plots import plot_layer_curves, plot_per_tag
from marble_eval.report.published import published_rows
from marble_eval.report.runs import grid_label, model_name, n_seeds, order_runs, run_labels
from marble_eval.report.significance import (
    Comparison,
    compare_results,
    significant_winners,
)
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import utc_now
from marble_eval.tasks import task_type

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
  padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:#f3f5f8;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.published td{color:#555;font-style:italic;background:#fafafa}
tr.delta td{color:#0a5;font-size:12px}
.sig{color:#b00;font-weight:bold}
.warning{background:#fff4e0;border-left:4px solid #e69500;padding:4px 8px}
figure{display:inline-block;margin:8px 8px 8px 0;vertical-align:top;max-width:380px}
figure img{max-width:380px;width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
details{margin:6px 0 12px}summary{cursor:pointer;color:#036}
code{background:#f3f3f3;padding:0 3px;border-radius:3px;font-size:12px}
.note{color:#8a5a00}
"""

SCRIPT = """
(function(){
  function key(cell){var v=cell.getAttribute('data-sort');
    if(v===null||v===''){return null;} var f=parseFloat(v); return isNaN(f)?v.toLowerCase():f;}
  function sortTable(table,col,desc){
    var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col]), y=key(b.cells[col]);
      if(x===null&&y===null){return 0;} if(x===null){return 1;} if(y===null){return -1;}
      var c=(x<y)?-1:(x>y?1:0); return desc?-c:c;});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      if(i===col){th.setAttribute('aria-sort',desc?'descending':'ascending');}else{th.removeAttribute('aria-sort');}});
  }
  function columnOf(table,name){var cells=table.tHead.rows[0].cells;
    for(var i=0;i<cells.length;i++){if(cells[i].getAttribute('data-col')===name){return i;}} return -1;}
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      th.addEventListener('click',function(){
        var desc=th.getAttribute('aria-sort')!=='descending' && i>0;
        if(i===0){desc=th.getAttribute('aria-sort')==='ascending';}
        sortTable(table,i,desc);});});});
  // #sort=<column>[:desc]: click that header (as a reader would) until it sorts in the asked direction.
  var m=/#sort=([^&]+)/.exec(window.location.hash);
  if(m){var parts=decodeURIComponent(m[1]).split(':'), table=document.querySelector('table.sortable');
    var want=parts[1]==='desc'?'descending':'ascending', col=table?columnOf(table,parts[0]):-1;
    for(var n=0;col>=0&&n<2&&table.tHead.rows[0].cells[col].getAttribute('aria-sort')!==want;n++){
      table.tHead.rows[0].cells[col].click();}}
})();
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def sort_key(cell: str) -> str:
    """The value a cell sorts by: its first number ("77.1* / 71.9" -> "77.1"), else its text."""
    match = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", cell)
    return match.group(1) if match else cell


def frame_html(frame: pd.DataFrame, table_id: str, sortable: bool = False, row_classes: list[str] | None = None) -> str:
    """An HTML table of ``frame`` (strings); "*" marks become red; cells carry data-sort keys."""
    head = "".join(f'<th data-col="{_esc(c)}">{_esc(c)}</th>' for c in frame.columns)
    rows = []
    for i, record in enumerate(frame.astype(str).itertuples(index=False)):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td data-sort="{_esc(sort_key(v))}">{_esc(v).replace("*", "<span class=sig>*</span>")}'
                        f"</td>" for v in record)
        rows.append(f"<tr{cls}>{cells}</tr>")
    klass = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{klass}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _row_class(model: str) -> str:
    return "published" if model.endswith("(published)") else "delta" if model.startswith("Δ") else ""


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg").name
    return (f'<figure><a href="figures/{_esc(svg)}"><img alt="{_esc(caption)}" src="data:image/png;base64,{data}"></a>'
            f'<figcaption>{_esc(caption)} (click for the SVG)</figcaption></figure>')


def _stat(result: ProbeResult, metric: str) -> str:
    stat = result.stat(metric)
    if stat is None:
        return ""
    return f"{100 * stat.mean:.1f} ± {100 * stat.std:.1f}" if stat.n > 1 else f"{100 * stat.mean:.1f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _provenance(result: ProbeResult) -> str:
    """Where every number of one result comes from: model, code, packages, protocol, selection, grid."""
    model, env, protocol, dataset = result.model, result.environment, result.protocol, result.dataset
    grid = protocol.grid
    task = task_type(result.task)
    facts = [
        ("results file", result.path.name if result.path else ""), ("created", result.created),
        ("model id / fingerprint", f"{model.id} / {model.fingerprint}"), ("model revision", model.revision),
        ("model licence", model.licence or "not recorded"),
        ("family / hidden states / dim", f"{model.family} / {model.hidden_states} / {model.dim}"),
        ("git commit", env.git_commit), ("python / platform", f"{env.python} / {env.platform}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in env.packages.items())),
        ("preset / recipe / overrides", f"{protocol.preset or 'none'} / {protocol.recipe_name} / "
                                        f"{', '.join(protocol.overrides) or 'none'}"),
        ("grid", f"{grid_label(result)}: lrs {grid.lrs}, layers {grid.layers}, seeds {grid.seeds}"),
        ("batch unit / selection", f"{protocol.batch_unit} / {protocol.selection}"),
        ("window / max seconds", f"{protocol.window_seconds} / {protocol.max_seconds}"),
        ("precision / cache key", f"{protocol.precision} / {protocol.cache_key}"),
        ("dataset task / version / identity", f"{dataset.task} / {dataset.version} / {dataset.identity}"),
        ("split", f"made by {dataset.split_origin}" if dataset.split_origin else "the dataset's published split"),
        ("items probed per split", dataset.splits),
        ("excluded tags", ", ".join(result.excluded_tags) or "none"),
        ("excluded items", len(result.extraction.excluded_items)),
    ]
    facts_html = "".join(f"<tr><td>{_esc(k)}</td><td style='text-align:left'>{_esc(v)}</td></tr>" for k, v in facts)
    monitor, tests = task.monitor, metric_columns(result)
    selected = pd.DataFrame([{
        "seed": s.seed, "lr": s.lr, "layer": s.layer, **({"aggregation": s.aggregation} if s.aggregation else {}),
        f"valid {metric_label(monitor)}": _percent(s.valid.value(monitor)) if s.valid else "",
        **{f"test {metric_label(m)}": _percent(s.test.value(m)) for m in tests if s.test and s.test.value(m) is not None},
    } for s in result.selected])
    shown = task.cells[0]
    grid_rows = pd.DataFrame([{
        "lr": g.lr, "layer": g.layer, "seed": g.seed,
        **{f"valid {metric_label(m)}": _percent(g.valid.value(m)) for m in shown},
        **{f"test {metric_label(m)}": _percent(g.test.value(m)) for m in shown},
        "epochs": g.epochs, "best epoch": g.best_epoch,
    } for g in result.grid if g.valid and g.test])
    slug = re.sub(r"\W+", "-", result.path.stem if result.path else model.id)
    parts = [f"<table>{facts_html}</table>",
             f"<b>Selected probe per seed</b> (best validation score: {_esc(protocol.selection or monitor)})",
             frame_html(selected, f"sel-{slug}") if not selected.empty else "<p>none</p>"]
    if not grid_rows.empty:
        parts.append(f"<details><summary>Full grid ({len(grid_rows)} configurations)</summary>"
                     f"{frame_html(grid_rows, f'grid-{slug}', sortable=True)}</details>")
    return "".join(parts)


MIN_VALID_ITEMS = 50  # below this, choosing among ~80 grid configurations on validation is mostly noise


def small_split_warnings(results: list[ProbeResult]) -> list[str]:
    """One warning per run that selected among several configurations on a too small validation split
    (none where the grid has one configuration per seed: nothing was selected)."""
    labels = run_labels(results)
    warnings = []
    for r in results:
        configurations = len(r.protocol.grid.lrs) * len(r.protocol.grid.layers)
        valid = r.dataset.splits.get("valid", MIN_VALID_ITEMS)
        if configurations > 1 and valid < MIN_VALID_ITEMS:
            warnings.append(f"{labels[id(r)]}: only {valid} validation items; selecting among "
                            f"{configurations} configurations on so few is mostly noise (under {MIN_VALID_ITEMS})")
    return warnings


def _dataset_section(dataset: str, results: list[ProbeResult], comparisons: list[Comparison],
                     figures: dict[str, list[tuple[Path, str]]], names: dict[int, str]) -> str:
    title = column_title(dataset)
    metrics = list(dict.fromkeys(m for r in results for m in metric_columns(r)))
    summary = pd.DataFrame([{"Model": names[id(r)], **{metric_label(m): _stat(r, m) for m in metrics},
                             "seeds": n_seeds(r), "test items": r.dataset.splits.get("test", "")} for r in results])
    out = [f'<h2 id="ds-{_esc(dataset)}">{_esc(title)}</h2>',
           "<p>Test metrics of the validation-selected probe, mean ± std over seeds (one seed: no std), "
           f"×100; task: {_esc(task_type(results[0].task).description)}.</p>",
           frame_html(summary, f"summary-{dataset}", sortable=True)]
    out += [f"<p class=warning>{_esc(warning)}</p>" for warning in small_split_warnings(results)]
    pairs = [c for c in comparisons if c.dataset == dataset]
    if pairs:
        out += [("<b>Paired bootstrap</b> (model A - model B, percent points, 95% interval; "
                 "<span class=sig>*</span> = interval excludes 0)"),
                frame_html(significance_frame(pairs), f"sig-{dataset}")]
    out += [_figure(p, c) for p, c in figures.get(dataset, [])]
    for result in results:
        out.append(f"<details><summary>Provenance: {_esc(names[id(result)])}</summary>"
                   f"{_provenance(result)}</details>")
    return "".join(out)


def _compare_section(chosen: list[ProbeResult], pairs: list[tuple[str, str]], n_boot: int) -> str:
    """One "A vs B" section per pair: per dataset summary and per tag tables (report.compare)."""
    from marble_eval.report.compare import compare_models, summary_frame, tag_table

    out = []
    for k, (a, b) in enumerate(pairs):
        comparisons = compare_models(chosen, a, b, n_boot=max(n_boot, 1))
        names = (model_name(comparisons[0].a.model), model_name(comparisons[0].b.model))
        out += [f'<h2 id="compare-{k}">{_esc(names[0])} vs {_esc(names[1])}</h2>',
                "<p>A = first, B = second; each model's reference run; test, ×100; Δ = A - B with its 95% "
                "paired-bootstrap interval (<span class=sig>*</span> = excludes 0).</p>",
                frame_html(summary_frame(comparisons), f"compare-{k}-summary")]
        for c in comparisons:
            if not c.tags.empty:
                out.append(f"<details><summary>{_esc(column_title(c.dataset))}: per tag "
                           f"(support = positive test items)</summary>"
                           f"{frame_html(tag_table(c.tags), f'compare-{k}-{c.dataset}', sortable=True)}</details>")
    return "".join(out)


def _has_published(results: list[ProbeResult], layout: str) -> bool:
    """True when a measured dataset has numbers in the layout's published rows."""
    measured = {r.dataset.name for r in results}
    return any(measured & set(entry.scores) for entry in published_rows(layout))


def _boards(chosen: list[ProbeResult], published: bool, winners: dict[tuple[str, str, str], bool]) -> str:
    """The per-task-type tables, and the MARBLE-layout table when a MARBLE task was measured."""
    layouts = ["culturemert"] + (["marble"] if {r.dataset.name for r in chosen} & set(MARBLE_TASKS) else [])
    boards, k = [], 0
    for layout in layouts:
        board = leaderboard_frames(chosen, published=published and _has_published(chosen, layout), winners=winners,
                                   layout=layout)
        for title, frame in board.frames.items():
            classes = [_row_class(m) for m in frame["Model"]]
            boards.append(f"<h3>{_esc(title)} (%)</h3>" + frame_html(frame, f"leaderboard-{k}", True, classes))
            k += 1
        boards.append("<ul>" + "".join(f"<li>{_esc(note)}</li>" for note in board.notes) + "</ul>")
    return "".join(boards)


def _figures(chosen: list[ProbeResult], figure_dir: Path) -> dict[str, list[tuple[Path, str]]]:
    figures: dict[str, list[tuple[Path, str]]] = {}
    for dataset in sorted({r.dataset.name for r in chosen}):
        subset = [r for r in chosen if r.dataset.name == dataset]
        figures[dataset] = [
            (p, f"Validation (dashed) and test (solid) {metric_label(metric)} per hidden state")
            for metric in task_type(subset[0].task).cells[0]
            for p in plot_layer_curves(subset, figure_dir, metric) if p.suffix == ".png"
        ] + [(p, "Per-tag test ROC-AUC by tag category") for p in plot_per_tag(subset, figure_dir) if p.suffix == ".png"]
    return figures


def build_page(results: list[ProbeResult], output: Path, recipe: str | None = None, n_boot: int = 1000,
               published: bool = True, compare: list[tuple[str, str]] | None = None) -> Path:
    """Write ``output``/index.html (and figures/ beside it); returns the page's path.

    ``published`` shows a layout's published rows where a measured dataset has published numbers.
    ``compare`` adds a section per (model A, model B) pair (see marble_eval.report.compare).
    """
    output = Path(output)
    chosen = results_for_recipe(results, recipe)
    compare_html = _compare_section(chosen, compare or [], n_boot)
    recipe_name = chosen[0].protocol.recipe_name
    comparisons, notes = compare_results(chosen, n_boot=n_boot) if n_boot > 0 else ([], ["significance skipped"])
    boards = _boards(chosen, published, significant_winners(comparisons))
    figures = _figures(chosen, output / "figures")
    names = run_labels(chosen)
    datasets = ordered_datasets({r.dataset.name for r in chosen})
    nav = " · ".join(f'<a href="#ds-{_esc(d)}">{_esc(column_title(d))}</a>' for d in datasets)
    significance = (frame_html(significance_frame(comparisons), "significance") if comparisons
                    else "<p>No pair of comparable models with per-item predictions on the same dataset.</p>")
    note_html = "".join(f"<li class=note>{_esc(n)}</li>" for n in notes)
    sections = "".join(_dataset_section(d, order_runs([r for r in chosen if r.dataset.name == d]),
                                        comparisons, figures, names) for d in datasets)
    body = f"""<h1>marble-eval report</h1>
<p class="sub">Recipe <code>{_esc(recipe_name)}</code> · {len(chosen)} result(s) · generated {_esc(utc_now())} ·
datasets: {nav}</p>
<h2>Leaderboard</h2>
<p>Test metrics of the validation-selected probe, mean over seeds, ×100; each task type has its own tables, and Avg is
taken only over numbers of the same metrics (the notes under each table say over which datasets). A model's row holds
its reference run per dataset (the preset's own grid and seeds first, then the most seeds, then the latest); its other
runs get rows named by what differs. <i>(published)</i> rows are the published numbers (CultureMERT model cards; MARBLE
v1 paper); Δ rows are measured - published.
<span class=sig>*</span>: significantly better than every other measured model on that dataset (paired bootstrap,
95%). Click a column header to sort.</p>
{boards}
<h2>Significance</h2>
<p>Paired bootstrap over test items (paired by item id) and seeds ({n_boot} replicates) on each task's own statistic:
Δ = model A - model B in points with the 2.5 / 97.5 percentile interval, A being the model with the higher mean main
metric; <span class=sig>*</span> = the interval excludes 0. <code>marble-eval compare A B</code> shows the same
interval.</p>
{significance}<ul>{note_html}</ul>
{compare_html}
{sections}
"""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>marble-eval report</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{body}<script>{SCRIPT}</script></body></html>\n")
    output.mkdir(parents=True, exist_ok=True)
    path = output / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    atomic_write_json(output / "report.json", {
        "recipe": recipe_name, "results": [str(r.path) if r.path else None for r in chosen], "notes": notes,
        "comparisons": [{"dataset": c.dataset, "model_a": c.model_a, "model_b": c.model_b, "n_items": c.n_items,
                         "n_boot": c.n_boot, "intervals": {m: vars(i) for m, i in c.intervals.items()}}
                        for c in comparisons]})
    return path
