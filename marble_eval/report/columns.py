"""Dataset columns and metric tables of the two leaderboard layouts, read from the task types.

- ``culturemert``: per task type its own tables (``TaskType.cells``): tagging "ROC-AUC / mAP" and
  "micro-F1 / macro-F1" as the CultureMERT cards, multiclass "accuracy / macro-F1", regression "R²",
  key "key score / accuracy"; one column per dataset of that task type.
- ``marble``: one table, one column per dataset holding its task's ``marble_cell`` metric(s), in the
  order of MARBLE's tables; other datasets after.
"""

from __future__ import annotations

from dataclasses import dataclass

from marble_eval.metrics.table import metric_label, metric_spec
from marble_eval.results.schema import ProbeResult
from marble_eval.tasks import TASK_TYPES, expand_metrics, task_type

LAYOUTS = ("culturemert", "marble")
# The CultureMERT cards' column order and titles.
CULTUREMERT_COLUMNS = {"makam": "Turkish-makam", "hindustani": "Hindustani", "carnatic": "Carnatic", "lyra": "Lyra",
                       "fma": "FMA-medium", "mtat": "MTAT"}
# MARBLE v1's table order (Tables 3-4) and titles; marble-eval's MTAT split after MARBLE's.
MARBLE_COLUMNS = {"gtzan": "GTZAN", "gs-key": "GS-key", "emo": "EMO", "nsynth-instrument": "NSynth-instrument",
                  "nsynth-pitch": "NSynth-pitch", "vocalset-technique": "VocalSet-technique",
                  "vocalset-singer": "VocalSet-singer", "mtg-top50": "MTG-top50", "mtg-genre": "MTG-genre",
                  "mtg-instrument": "MTG-instrument", "mtg-moodtheme": "MTG-moodtheme",
                  "mtat-marble": "MTAT (MARBLE split)", "mtat": "MTAT"}
DATASET_COLUMNS = {**CULTUREMERT_COLUMNS, **{k: v for k, v in MARBLE_COLUMNS.items() if k not in CULTUREMERT_COLUMNS}}
OWN_SPLIT = "‡"  # the split was made by marble-eval, not published with the dataset (VocalSet)
MARBLE_EVAL_SPLIT = "marble-eval"


def column_title(dataset: str) -> str:
    """The published title of a dataset column (the dataset name for others)."""
    return DATASET_COLUMNS.get(dataset, dataset)


def ordered_datasets(names: set[str], layout: str = "culturemert") -> list[str]:
    """The layout's published order first, then the rest by name."""
    first = list(MARBLE_COLUMNS) if layout == "marble" else [*CULTUREMERT_COLUMNS, *MARBLE_COLUMNS]
    first = list(dict.fromkeys(first))
    return sorted(names, key=lambda name: (first.index(name) if name in first else len(first), name))


def own_split(results: list[ProbeResult], dataset: str) -> bool:
    """True when a result of ``dataset`` was scored on a split marble-eval made (not the dataset's own)."""
    return any(r.dataset.split_origin == MARBLE_EVAL_SPLIT for r in results if r.dataset.name == dataset)


@dataclass(frozen=True)
class MetricTable:
    """One leaderboard table: its title, its task type, and the metrics of each cell ("a / b")."""

    title: str
    task: str
    metrics: tuple[str, ...]

    @property
    def latex_title(self) -> str:
        """The title in LaTeX."""
        return " / ".join(metric_spec(m).latex for m in self.metrics)


def group_title(metrics: tuple[str, ...] | list[str]) -> str:
    """"ROC-AUC / mAP" for a group of metric keys."""
    return " / ".join(metric_label(m) for m in metrics)


def task_tables(tasks: set[str]) -> list[MetricTable]:
    """The CultureMERT-layout tables of the task types in ``tasks`` (task-type order; titles unique)."""
    tables, titles = [], set()
    for name, task in TASK_TYPES.items():
        if name not in tasks:
            continue
        for metrics in task.cells:
            title = group_title(metrics)
            title = title if title not in titles else f"{title} ({task.description})"
            titles.add(title)
            tables.append(MetricTable(title, name, tuple(metrics)))
    return tables


def marble_cell(result: ProbeResult) -> list[str]:
    """The metric keys of ``result``'s column in the MARBLE layout (regression: R² per target)."""
    task = task_type(result.task)
    targets = result.dataset.tags if task.labels == "targets" else ()
    return expand_metrics(task.marble_cell, targets)


def marble_cell_title(metrics: list[str]) -> str:
    """The header of a MARBLE-layout cell: metric labels joined by " / ", the per-target R² sharing one "R²"."""
    labels = [metric_label(m) for m in metrics]
    prefix = metric_label(TASK_TYPES["regression"].main_metric) + " "
    if len(labels) > 1 and all(label.startswith(prefix) for label in labels):
        return prefix + " / ".join(label[len(prefix):] for label in labels)
    return " / ".join(labels)


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric`` (from the metric table)."""
    return metric_spec(metric).higher_is_better


def metric_columns(result: ProbeResult) -> list[str]:
    """The metric keys a result reports, in its task's order (regression: r2, then R² per target)."""
    task = task_type(result.task)
    return expand_metrics(task.metrics, result.dataset.tags if task.labels == "targets" else ())
