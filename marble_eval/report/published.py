"""Published numbers to reproduce, as typed data keyed by dataset name and metric key (percent).

- ``CULTUREMERT``: the CultureMERT model cards (PROTOCOL section 6), the six tagging datasets, with
  the cards' printed averages; shown by the CultureMERT-layout leaderboard.
- ``marble_v1_rows()``: the MARBLE v1 paper (arXiv 2306.10548v1, Tables 3-4; PROTOCOL section 8), MERT-v1-95M
  and MERT-v1-330M on each MARBLE task's own metric(s); shown by ``leaderboard --layout marble``.

The numbers of a dataset are those of its task's cells (``marble_eval.tasks``) in their order, so the
metric keys come from the task types, not from this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from marble_eval.tasks import TASK_TYPES

CULTUREMERT_SOURCE = "CultureMERT model cards (PROTOCOL section 6)"
MARBLE_V1_SOURCE = "MARBLE v1 paper, arXiv 2306.10548v1, Tables 3-4 (PROTOCOL section 8)"


@dataclass(frozen=True)
class PublishedModel:
    """A model's published row: hub id, {dataset: {metric key: percent}}, and printed averages
    ({metric group: percent}, e.g. the cards' Avg of the ROC-AUC / mAP cells)."""

    model_id: str
    scores: dict[str, dict[str, float]]
    averages: dict[tuple[str, ...], float] = field(default_factory=dict)
    source: str = CULTUREMERT_SOURCE

    def value(self, dataset: str, metric: str) -> float | None:
        """The published ``metric`` on ``dataset`` in percent (None when not published)."""
        return self.scores.get(dataset, {}).get(metric)


# -- CultureMERT cards: per dataset (ROC-AUC, mAP, micro-F1, macro-F1), then the Avg of each cell pair ----------
_TAGGING = TASK_TYPES["multilabel"]
_CARD_DATASETS = ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat")


def _card(model_id: str, cells: list[tuple[float, float, float, float]], averages: tuple[float, float]) -> PublishedModel:
    keys = [key for group in _TAGGING.cells for key in group]
    scores = {name: dict(zip(keys, values)) for name, values in zip(_CARD_DATASETS, cells)}
    return PublishedModel(model_id, scores, dict(zip(_TAGGING.cells, averages)), CULTUREMERT_SOURCE)


CULTUREMERT: tuple[PublishedModel, ...] = (
    _card("m-a-p/MERT-v1-95M", [(83.2, 53.3, 73.0, 38.9), (82.4, 52.9, 71.1, 33.2), (74.9, 39.7, 80.1, 30.0),
                                (85.7, 56.5, 72.4, 42.6), (90.7, 48.1, 57.0, 36.9), (89.6, 35.9, 35.7, 21.2)],
          (66.1, 49.3)),
    _card("ntua-slp/CultureMERT-95M", [(89.6, 60.6, 77.4, 45.8), (88.2, 63.5, 77.8, 50.4), (79.2, 43.1, 82.7, 32.5),
                                       (86.9, 56.7, 73.1, 43.1), (90.7, 48.1, 58.3, 36.6), (89.4, 35.9, 35.6, 22.9)],
          (69.3, 52.9)),
    _card("ntua-slp/CultureMERT-TA-95M", [(89.0, 61.0, 76.9, 45.4), (87.5, 59.3, 74.2, 45.0),
                                          (79.1, 43.3, 82.5, 32.1), (87.3, 57.3, 73.0, 45.3),
                                          (90.8, 49.1, 59.1, 38.2), (89.6, 36.4, 35.7, 21.5)], (69.1, 52.4)),
)
PUBLISHED = CULTUREMERT  # the CultureMERT layout's published rows

# -- MARBLE v1: each task's published numbers live in its benchmark YAML (``marble_v1.published``) ----------

def marble_v1_rows() -> tuple[PublishedModel, ...]:
    """The MARBLE v1 paper's MERT-v1-95M and MERT-v1-330M rows, read from the MARBLE tasks' YAMLs (one place
    for those numbers; each YAML's ``marble_v1.published`` is checked against the metric table when read)."""
    from marble_eval.datasets.registry import MARBLE_TASKS, load_spec

    by_model: dict[str, dict[str, dict[str, float]]] = {}
    for name in MARBLE_TASKS:
        v1 = load_spec(name).marble_v1
        for model, metrics in (v1.published if v1 else {}).items():
            by_model.setdefault(f"m-a-p/{model}", {})[name] = {key: float(value) for key, value in metrics.items()}
    return tuple(PublishedModel(model_id, scores, {}, MARBLE_V1_SOURCE) for model_id, scores in by_model.items())


def published_rows(layout: str) -> tuple[PublishedModel, ...]:
    """The published rows a layout compares with: the CultureMERT cards or the MARBLE v1 paper."""
    return marble_v1_rows() if layout == "marble" else CULTUREMERT



def _short(model_id: str) -> str:
    return model_id.rstrip("/").rsplit("/", 1)[-1].lower()


def find_published(model_id: str, rows: tuple[PublishedModel, ...] = CULTUREMERT) -> PublishedModel | None:
    """The published row of ``rows`` whose id matches ``model_id`` (full hub id, or the name after the last "/")."""
    for row in rows:
        if model_id == row.model_id or _short(model_id) == _short(row.model_id):
            return row
    return None
