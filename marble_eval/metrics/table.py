"""The metric table: every reported metric declared once (key, labels, direction, task types).

Leaderboards, compare, export, plots, the report, significance tests and the results schema read
labels and directions from here; ``marble_eval.tasks`` says which task reports which metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from marble_eval.errors import MarbleEvalError
from marble_eval.tasks import TASK_TYPES


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its key in results, how tables name it, and which way is better."""

    key: str
    label: str            # plain text / Markdown / HTML
    latex: str            # LaTeX table header
    description: str
    higher_is_better: bool = True
    percent: bool = True  # shown x100 in tables
    index_type: str = ""  # Hugging Face model-index metric type (empty: the key)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task types that report this metric."""
        family = "r2_*" if self.key.startswith("r2_") else self.key
        return tuple(name for name, task in TASK_TYPES.items() if family in task.metrics)


METRICS: dict[str, MetricSpec] = {spec.key: spec for spec in (
    MetricSpec("roc_auc", "ROC-AUC", "ROC-AUC", "macro ROC-AUC over tags (exact)"),
    MetricSpec("map", "mAP", "mAP", "macro average precision over tags (exact)", index_type="average_precision"),
    MetricSpec("micro_f1", "micro-F1", "micro-F1", "micro F1 at threshold 0.5", index_type="f1"),
    MetricSpec("macro_f1", "macro-F1", "macro-F1", "macro F1 (multilabel: at threshold 0.5; multiclass: of the "
               "arg-max, over the classes in y_true or the predictions, as scikit-learn's f1_score)", index_type="f1"),
    MetricSpec("accuracy", "accuracy", "Acc.", "share of items whose arg-max class is the true class"),
    MetricSpec("r2", "R²", "R$^2$", "coefficient of determination, uniform average over targets",
               index_type="r_squared"),
    MetricSpec("key_score", "key score", "Key score", "MIREX weighted key score (1 / 0.5 fifth / 0.3 relative / "
               "0.2 parallel)"),
)}


# Validation scores made of several metrics (a protocol's `selection` may name one): their mean.
COMPOSITE_SCORES: dict[str, tuple[str, ...]] = {"roc_auc_ap_mean": ("roc_auc", "map")}  # the MARBLE paper's


def score_parts(score: str) -> tuple[str, ...]:
    """The metrics a selection score averages: a composite's parts, or the metric itself."""
    return COMPOSITE_SCORES.get(score, (score,))


def metric_spec(key: str) -> MetricSpec:
    """The spec of ``key``; ``r2_<target>`` is the R² of one regression target."""
    if key in METRICS:
        return METRICS[key]
    if key.startswith("r2_") and len(key) > 3:
        target = key[3:]
        return MetricSpec(key, f"R² {target}", f"R$^2$ {target}", f"R² of the target {target!r}",
                          index_type="r_squared")
    raise MarbleEvalError(f"unknown metric {key!r}; known: {', '.join(METRICS)} and r2_<target>")


def is_metric(key: str) -> bool:
    """Whether ``key`` names a metric of the table."""
    return key in METRICS or (key.startswith("r2_") and len(key) > 3)


def metric_label(key: str) -> str:
    """How tables name ``key``."""
    return metric_spec(key).label
