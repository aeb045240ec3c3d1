"""Results JSON: one file per (model, dataset, recipe) with the full provenance of every number.

Schema (version 1; documented in docs/results.md):
    schema_version, created (UTC ISO), model {id, family, fingerprint, revision, hidden_states, dim,
    parameters}, dataset {name, version, task, tags, splits {split: n_items}}, protocol {recipe (the whole
    YAML), grid {lrs, layers, seeds}, window_seconds, max_seconds, precision, storage, cache_key},
    extraction {cache_dir, failures {id: {path, reason}}, excluded_items}, summary {metric: {mean, std, n}},
    selected [{seed, lr, layer, valid {...}, test {... per_tag, excluded_tags}}], grid [every configuration],
    excluded_tags, environment {package versions, python, platform, git_commit}, timings {seconds}.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from marble_eval.files import atomic_write_bytes, atomic_write_json
from marble_eval.errors import MarbleEvalError
from marble_eval.paths import source_checkout

SCHEMA_VERSION = 1
METRICS = ("roc_auc", "map", "micro_f1", "macro_f1")
PACKAGES = ("marble-eval", "torch", "transformers", "lightning", "torchmetrics", "numpy", "huggingface_hub",
            "soundfile", "soxr")


def environment() -> dict[str, Any]:
    """Package versions, interpreter, platform and the git commit of the code that ran."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"packages": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "git_commit": git_commit()}


def git_commit() -> str | None:
    """The checkout's HEAD commit (with "-dirty" when there are uncommitted changes), if any.

    None for an installed package: the folder it is installed in may belong to another project's repo."""
    checkout = source_checkout()
    if checkout is None:
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def result_path(results_dir: Path, model_id: str, dataset: str, recipe: str) -> Path:
    """results/<dataset>/<model slug>__<recipe>.json"""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id.strip("/"))[-80:]
    return Path(results_dir) / dataset / f"{slug}__{recipe}.json"


def write_result(results_dir: Path, result: dict[str, Any]) -> Path:
    """Write one result JSON atomically; returns its path."""
    path = result_path(results_dir, result["model"]["id"], result["dataset"]["name"],
                       result["protocol"]["recipe"]["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
    return path


def read_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every result JSON under ``results_dir`` (refuses unknown schema versions, naming the file)."""
    results = []
    for path in sorted(Path(results_dir).glob("**/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MarbleEvalError(f"{path}: not a readable results JSON ({exc}); delete or regenerate it") from None
        if not isinstance(data, dict) or "schema_version" not in data:
            continue  # not a result file (e.g. a report's own JSON)
        if data["schema_version"] != SCHEMA_VERSION:
            raise MarbleEvalError(f"{path}: schema_version {data['schema_version']} is not {SCHEMA_VERSION}; "
                                  f"rerun `marble-eval probe` to regenerate it")
        data["_path"] = str(path)
        results.append(data)
    return results


def predictions_path(result_json: Path) -> Path:
    """The per-item predictions file beside a results JSON."""
    return Path(result_json).with_suffix(".predictions.npz")


def write_predictions(result_json: Path, item_ids: list[str], y_true: np.ndarray, probs: list[np.ndarray],
                      seeds: list[int], tags: list[str]) -> Path:
    """Store the selected probes' test probabilities per seed (for paired bootstrap tests).

    Arrays: item_ids [n], y_true [n, T], probs [seeds, n, T] float32, seeds [S], tags [T].
    """
    path = predictions_path(result_json)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, item_ids=np.array(item_ids), y_true=np.asarray(y_true, dtype=np.float32),
                        probs=np.stack(probs).astype(np.float32), seeds=np.array(seeds, dtype=np.int64),
                        tags=np.array(tags))
    atomic_write_bytes(path, buffer.getvalue())
    return path
