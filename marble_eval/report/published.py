"""Published numbers to reproduce (PROTOCOL section 6: the CultureMERT model cards), as typed data.

Every value is a percentage as printed in the model card (one decimal). The leaderboard shows these
rows (marked "(published)") beside measured ones and, for a measured model whose id matches, the
difference measured - published.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "CultureMERT model cards (PROTOCOL section 6)"


@dataclass(frozen=True)
class PublishedScore:
    """One published cell: macro ROC-AUC / mAP and micro-F1 / macro-F1 in percent."""

    roc_auc: float
    map: float
    micro_f1: float
    macro_f1: float

    def metric(self, name: str) -> float:
        """The value of metric ``name`` (``roc_auc``, ``map``, ``micro_f1``, ``macro_f1``), percent."""
        return float(getattr(self, name))


@dataclass(frozen=True)
class PublishedModel:
    """A model's published row: hub id, per-dataset scores, and the card's printed averages."""

    model_id: str
    scores: dict[str, PublishedScore]
    avg_auc_map: float
    avg_f1: float
    source: str = SOURCE


_DATASETS = ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat")


def _row(model_id: str, auc_map: list[tuple[float, float]], f1: list[tuple[float, float]], avg_auc_map: float,
         avg_f1: float) -> PublishedModel:
    scores = {name: PublishedScore(a, m, mi, ma) for name, (a, m), (mi, ma) in zip(_DATASETS, auc_map, f1)}
    return PublishedModel(model_id, scores, avg_auc_map, avg_f1)


PUBLISHED: tuple[PublishedModel, ...] = (
    _row("m-a-p/MERT-v1-95M",
         [(83.2, 53.3), (82.4, 52.9), (74.9, 39.7), (85.7, 56.5), (90.7, 48.1), (89.6, 35.9)],
         [(73.0, 38.9), (71.1, 33.2), (80.1, 30.0), (72.4, 42.6), (57.0, 36.9), (35.7, 21.2)], 66.1, 49.3),
    _row("ntua-slp/CultureMERT-95M",
         [(89.6, 60.6), (88.2, 63.5), (79.2, 43.1), (86.9, 56.7), (90.7, 48.1), (89.4, 35.9)],
         [(77.4, 45.8), (77.8, 50.4), (82.7, 32.5), (73.1, 43.1), (58.3, 36.6), (35.6, 22.9)], 69.3, 52.9),
    _row("ntua-slp/CultureMERT-TA-95M",
         [(89.0, 61.0), (87.5, 59.3), (79.1, 43.3), (87.3, 57.3), (90.8, 49.1), (89.6, 36.4)],
         [(76.9, 45.4), (74.2, 45.0), (82.5, 32.1), (73.0, 45.3), (59.1, 38.2), (35.7, 21.5)], 69.1, 52.4),
)

# MARBLE paper, MERT-v1-95M on MTAT (ROC-AUC / mAP only); kept apart from the model-card rows.
MARBLE_PAPER_MTAT = {"model_id": "m-a-p/MERT-v1-95M", "roc_auc": 91.0, "map": 39.3}


def _short(model_id: str) -> str:
    return model_id.rstrip("/").rsplit("/", 1)[-1].lower()


def find_published(model_id: str) -> PublishedModel | None:
    """The published row whose id matches ``model_id`` (full hub id, or the name after the last "/")."""
    for row in PUBLISHED:
        if model_id == row.model_id or _short(model_id) == _short(row.model_id):
            return row
    return None
