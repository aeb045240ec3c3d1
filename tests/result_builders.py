"""Build ProbeResult objects for the results, leaderboard and report tests (no training involved)."""

from __future__ import annotations

from typing import Any

from marble_eval.files import sha256_json
from marble_eval.results.schema import ProbeResult

TEST_IDS = [f"t{i}" for i in range(10)]


def stat(mean: float, std: float = 0.0, n: int = 5) -> dict[str, Any]:
    return {"mean": mean, "std": std, "n": n}


def make_result(model: str, dataset_name: str, auc: float, ap: float, recipe: str = "mlp", std: float = 0.0,
                lrs: tuple[float, ...] = (1e-3,), test_ids: list[str] | None = None, test_total: int | None = None,
                preset: str | None = None, name: str | None = None, fingerprint: str | None = None,
                **parts: Any) -> ProbeResult:
    """A minimal valid result: ROC-AUC ``auc`` / mAP ``ap`` (fractions), F1s 0.5 / 0.25."""
    ids = TEST_IDS if test_ids is None else test_ids
    data: dict[str, Any] = {
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"id": model, "name": name, "family": "mert", "fingerprint": fingerprint or f"fp-{model}",
                  "hidden_states": 3, "dim": 32, "parameters": 1000},
        "dataset": {"name": dataset_name, "version": "1", "task": "multilabel", "identity": f"id-{dataset_name}",
                    "tags": ["a", "b"], "splits": {"train": 20, "valid": 10, "test": len(ids)},
                    "split_items": {"train": 20, "valid": 10, "test": test_total or len(ids)},
                    "test_items_digest": sha256_json(sorted(ids))},
        "protocol": {"preset": preset, "recipe": {"name": recipe}, "grid": {"lrs": list(lrs),
                                                                          "layers": [0, 1, 2, "weighted"],
                                                                          "seeds": [0, 1, 2, 3, 4]},
                     "window_seconds": 0.0, "max_seconds": None, "precision": "fp32", "storage": "fp16",
                     "cache_key": f"key-{model}-{dataset_name}"},
        "extraction": {"cache_dir": "/cache"},
        "summary": {"roc_auc": stat(auc, std), "map": stat(ap, std), "micro_f1": stat(0.5), "macro_f1": stat(0.25)},
        "selected": [], "grid": [],
        "environment": {"packages": {"torch": "2.x"}, "python": "3.11", "platform": "linux", "git_commit": None},
        "timings": {"load_seconds": 0.1, "probe_seconds": 1.0},
    }
    for key, value in parts.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return ProbeResult.model_validate(data)
