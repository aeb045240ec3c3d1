"""Build ProbeResult objects (and their predictions files) for the results, leaderboard and report tests
(no training involved), for every task type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from marble_eval.files import sha256_json
from marble_eval.metrics.keys import KEY_CLASSES
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import write_predictions, write_result
from marble_eval.tasks import TASK_TYPES, expand_metrics

TEST_IDS = [f"t{i}" for i in range(10)]
CREATED = "2026-01-01T00:00:00+00:00"
# Each task type's vocabulary in these tests: tags, classes, key classes or regression targets.
VOCABULARY = {"multilabel": ["a", "b"], "multiclass": ["rock", "jazz", "folk"], "key": list(KEY_CLASSES),
              "regression": ["arousal", "valence"]}


def stat(mean: float, std: float = 0.0, n: int = 5) -> dict[str, Any]:
    return {"mean": mean, "std": std, "n": n}


def _base(model: str, dataset_name: str, task: str, summary: dict[str, Any], recipe: str, lrs: tuple[float, ...],
          ids: list[str], test_total: int | None, preset: str | None, name: str | None, fingerprint: str | None,
          seeds: tuple[int, ...], created: str) -> dict[str, Any]:
    return {
        "created": created,
        "model": {"id": model, "name": name, "family": "mert", "fingerprint": fingerprint or f"fp-{model}",
                  "hidden_states": 3, "dim": 32, "parameters": 1000},
        "dataset": {"name": dataset_name, "version": "1", "task": task, "identity": f"id-{dataset_name}",
                    "tags": VOCABULARY[task], "splits": {"train": 20, "valid": 10, "test": len(ids)},
                    "split_items": {"train": 20, "valid": 10, "test": test_total or len(ids)},
                    "test_items_digest": sha256_json(sorted(ids))},
        "protocol": {"preset": preset, "recipe": {"name": recipe}, "grid": {"lrs": list(lrs),
                                                                          "layers": [0, 1, 2, "weighted"],
                                                                          "seeds": list(seeds)},
                     "window_seconds": 0.0, "max_seconds": None, "precision": "fp32", "storage": "fp16",
                     "cache_key": f"key-{model}-{dataset_name}"},
        "extraction": {"cache_dir": "/cache"},
        "summary": summary, "selected": [], "grid": [],
        "environment": {"packages": {"torch": "2.x"}, "python": "3.11", "platform": "linux", "git_commit": None},
        "timings": {"load_seconds": 0.1, "probe_seconds": 1.0},
    }


def _finish(data: dict[str, Any], parts: dict[str, Any]) -> ProbeResult:
    for key, value in parts.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return ProbeResult.model_validate(data)


def make_result(model: str, dataset_name: str, auc: float, ap: float, recipe: str = "mlp", std: float = 0.0,
                lrs: tuple[float, ...] = (1e-3,), test_ids: list[str] | None = None, test_total: int | None = None,
                preset: str | None = None, name: str | None = None, fingerprint: str | None = None,
                seeds: tuple[int, ...] = (0, 1, 2, 3, 4), created: str = CREATED, **parts: Any) -> ProbeResult:
    """A minimal valid tagging result: ROC-AUC ``auc`` / mAP ``ap`` (fractions), F1s 0.5 / 0.25."""
    ids = TEST_IDS if test_ids is None else test_ids
    n = len(seeds)
    keys = TASK_TYPES["multilabel"].metrics
    summary = dict(zip(keys, (stat(auc, std, n), stat(ap, std, n), stat(0.5, 0.0, n), stat(0.25, 0.0, n))))
    return _finish(_base(model, dataset_name, "multilabel", summary, recipe, lrs, ids, test_total, preset, name,
                         fingerprint, seeds, created), parts)


def make_task_result(model: str, dataset_name: str, task: str, scores: tuple[float, ...], std: float = 0.0,
                     seeds: tuple[int, ...] = (0, 1, 2, 3, 4), test_ids: list[str] | None = None,
                     created: str = CREATED, preset: str | None = None, name: str | None = None,
                     **parts: Any) -> ProbeResult:
    """A valid result of any task type; ``scores`` are its metrics (fractions) in the task's order
    (regression: r2, then one per target of VOCABULARY)."""
    ids = TEST_IDS if test_ids is None else test_ids
    targets = VOCABULARY[task] if TASK_TYPES[task].labels == "targets" else ()
    keys = expand_metrics(TASK_TYPES[task].metrics, targets)
    summary = {key: stat(value, std, len(seeds)) for key, value in zip(keys, scores, strict=True)}
    return _finish(_base(model, dataset_name, task, summary, "mlp", (1e-3,), ids, None, preset, name, None, seeds,
                         created), parts)


def predictions_for(task: str, n_items: int, n_seeds: int, skill: float, rng: np.random.Generator,
                    y_true: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y_true [n, T], outputs [S, n, T]) of a task: probabilities, or predictions in the targets' units;
    a larger ``skill`` puts the outputs nearer the truth."""
    width = len(VOCABULARY[task])
    labels = TASK_TYPES[task].labels
    if y_true is None:
        if labels == "multi_hot":
            y_true = (rng.random((n_items, width)) < 0.4).astype(np.float32)
        elif labels == "one_hot":
            y_true = np.eye(width, dtype=np.float32)[rng.integers(0, width, n_items)]
        else:
            y_true = rng.normal(5.0, 2.0, (n_items, width)).astype(np.float32)
    noise = rng.normal(size=(n_seeds, *y_true.shape))
    if labels == "targets":
        return y_true, (y_true + noise * 2.0 / max(skill, 1e-3)).astype(np.float32)
    logits = skill * y_true + noise
    if labels == "one_hot":
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    else:
        probs = 1 / (1 + np.exp(-logits))
    return y_true, probs.astype(np.float32)


def write_with_predictions(results_dir: Path, result: ProbeResult, y_true: np.ndarray, outputs: np.ndarray,
                           item_ids: list[str]) -> Path:
    """Write ``result`` and its predictions file (the store's own writer); returns the JSON's path."""
    path = write_result(results_dir, result)
    write_predictions(path, item_ids, y_true, list(outputs), list(result.protocol.grid.seeds)[: len(outputs)],
                      result.dataset.tags, task=result.task)
    return path
