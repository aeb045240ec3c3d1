"""Task types: each declared once, with what training, evaluation and the tables need of it.

A task type says how a probe is trained (loss, output activation), how an item's windows become one
prediction (window aggregation), which metrics it reports (keys of the metric table in
``marble_eval.metrics.table``), which validation metric early stopping watches and which one selects
a configuration, and which metrics make its leaderboard cells. Nothing else in the package spells
these out per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from marble_eval.errors import MarbleEvalError

SPLITS = ("train", "valid", "test")  # every task is probed on these three splits
Loss = Literal["bce", "cross_entropy", "mse"]
Activation = Literal["sigmoid", "softmax", "identity"]
LabelKind = Literal["multi_hot", "one_hot", "targets"]
# How an item's window outputs become one prediction. ``mean_logit`` (the default) averages the
# window logits before the activation; the key task may also choose among MARBLE v1's clip ensembles.
AGGREGATIONS = ("mean_logit", "mean_softmax", "max_logit", "vote")


@dataclass(frozen=True)
class TaskType:
    """One kind of probing task."""

    name: str
    description: str
    loss: Loss
    activation: Activation
    labels: LabelKind                 # probe label rows: 0/1 tags, one-hot classes, or z-scored targets
    metrics: tuple[str, ...]          # metric keys reported (main metric first); "r2_*": one per target
    monitor: str                      # validation metric early stopping and the LR schedule watch
    selection: str                    # validation metric a configuration is selected on (by default)
    cells: tuple[tuple[str, ...], ...]  # CultureMERT-layout tables: each a group of metrics shown "a / b"
    marble_cell: tuple[str, ...]      # the metric(s) of this task's column in the MARBLE layout
    aggregations: tuple[str, ...] = ("mean_logit",)  # the first is used while training

    def selection_for(self, choice: str) -> str:
        """The validation score this task selects on when a protocol asks for ``choice``: the multilabel
        choices (``roc_auc``, ``roc_auc_ap_mean``) apply to tagging; other tasks select on their own metric."""
        return choice if self.name == "multilabel" else self.selection

    @property
    def tie_break(self) -> str | None:
        """The validation metric that breaks selection ties (the second metric reported), if any."""
        return self.metrics[1] if len(self.metrics) > 1 and self.metrics[1] != "r2_*" else None

    @property
    def main_metric(self) -> str:
        """The metric a leaderboard averages and sorts by."""
        return self.metrics[0]


TASK_TYPES: dict[str, TaskType] = {
    "multilabel": TaskType(
        "multilabel", "multi-label tagging", "bce", "sigmoid", "multi_hot",
        ("roc_auc", "map", "micro_f1", "macro_f1"), monitor="roc_auc", selection="roc_auc",
        cells=(("roc_auc", "map"), ("micro_f1", "macro_f1")), marble_cell=("roc_auc", "map")),
    "multiclass": TaskType(
        "multiclass", "single-label classification", "cross_entropy", "softmax", "one_hot",
        ("accuracy", "macro_f1"), monitor="accuracy", selection="accuracy",
        cells=(("accuracy", "macro_f1"),), marble_cell=("accuracy",)),
    "regression": TaskType(
        "regression", "regression on z-scored numeric targets", "mse", "identity", "targets",
        ("r2", "r2_*"), monitor="r2", selection="r2", cells=(("r2",),), marble_cell=("r2_*",)),
    "key": TaskType(
        "key", "24-class key detection (MIREX weighted score)", "cross_entropy", "softmax", "one_hot",
        ("key_score", "accuracy"), monitor="key_score", selection="key_score",
        cells=(("key_score", "accuracy"),), marble_cell=("key_score",), aggregations=AGGREGATIONS),
}
TASKS = tuple(TASK_TYPES)


def task_type(name: str) -> TaskType:
    """The task type called ``name``; a one-line error naming the known ones otherwise."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise MarbleEvalError(f"unknown task {name!r}; use one of {', '.join(TASKS)}") from None


def expand_metrics(keys: tuple[str, ...], targets: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Metric keys with ``r2_*`` replaced by one ``r2_<target>`` per regression target."""
    out: list[str] = []
    for key in keys:
        out += [f"r2_{target}" for target in targets] if key == "r2_*" else [key]
    return out
