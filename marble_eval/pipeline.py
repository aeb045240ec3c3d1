"""Probe stage orchestration: cached features -> per-split probe data -> grid -> result dict."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from marble_eval.features.cache import FeatureCache
from marble_eval.datasets.base import SPLITS, Dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import ModelInfo
from marble_eval.probes import GridSpec, ProbeRecipe, SplitData, run_grid
from marble_eval.results.store import SCHEMA_VERSION, environment, utc_now


def probe_inputs(cache: FeatureCache, dataset: Dataset) -> tuple[dict[str, SplitData], dict[str, dict[str, str]]]:
    """Per split features/labels from the cache; items whose audio failed extraction are left out.

    Items neither cached nor recorded as failed mean the extraction is incomplete: that is
    an error naming them and the command that fills them.
    """
    if not cache.exists():
        raise MarbleEvalError(f"no features for this model and dataset in {cache.directory.parent}; run "
                              f"`marble-eval extract --model {cache.key.model_id} --dataset {dataset.name}` first")
    failures = cache.failures()
    missing = [item.id for item in dataset.items if item.id not in cache.done_ids() and item.id not in failures]
    if missing:
        raise MarbleEvalError(
            f"{cache.directory}: {len(missing)} item(s) not extracted yet (e.g. {', '.join(missing[:3])}); "
            f"run `marble-eval extract --model {cache.key.model_id} --dataset {dataset.name}` to fill them")
    data = {}
    for split in SPLITS:
        items = [item for item in dataset.split(split) if item.id not in failures]
        if not items:
            raise MarbleEvalError(f"dataset {dataset.name!r} has no usable {split} items; check its audio "
                                  f"(`marble-eval data check {dataset.name}`)")
        features, _ = cache.load([item.id for item in items])
        item_of_window = np.repeat(np.arange(len(items)), [len(f) for f in features])
        data[split] = SplitData(features=np.concatenate(features), item_of_window=item_of_window,
                                labels=dataset.label_matrix(items))
    excluded = {item_id: failure for item_id, failure in failures.items()}
    return data, excluded


@dataclass(frozen=True)
class TestPredictions:
    """Test-split probabilities of each seed's selected probe (for paired significance tests)."""

    item_ids: list[str]
    y_true: np.ndarray          # [n_test, T]
    probs: list[np.ndarray]     # per seed [n_test, T]
    seeds: list[int]
    tags: list[str]


def run_probe(cache: FeatureCache, dataset: Dataset, model: ModelInfo, recipe: ProbeRecipe, grid: GridSpec,
              show_progress: bool = True, max_epochs: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train the grid on the cached features and return the full result dict (results.py schema)."""
    return run_probe_with_predictions(cache, dataset, model, recipe, grid, show_progress, max_epochs, threads)[0]


def auto_threads(dim: int) -> int | None:
    """Torch threads for the probe grid: 1 for small features, where per-probe optimiser and loss calls
    dominate and OpenMP synchronisation costs more than it gains (measured 6x on the fixture); else torch's."""
    return 1 if dim < 512 else None


def run_probe_with_predictions(cache: FeatureCache, dataset: Dataset, model: ModelInfo, recipe: ProbeRecipe,
                               grid: GridSpec, show_progress: bool = True, max_epochs: int | None = None,
                               threads: int | None = None) -> tuple[dict[str, Any], TestPredictions]:
    """run_probe, plus the selected probes' per-item test probabilities."""
    started = time.perf_counter()
    data, excluded_items = probe_inputs(cache, dataset)
    loaded = time.perf_counter()
    trained = run_grid(data, recipe, grid, task=dataset.task, tags=dataset.vocabulary,
                       progress=show_progress, max_epochs=max_epochs,
                       threads=threads if threads is not None else auto_threads(model.dim))
    grid_result = trained.to_dict()
    finished = time.perf_counter()
    test_items = [item for item in dataset.split("test") if item.id not in excluded_items]
    predictions = TestPredictions([item.id for item in test_items], data["test"].labels,
                                  list(trained.test_probabilities or []), list(grid.seeds), list(dataset.vocabulary))
    key = cache.key
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": utc_now(),
        "model": {"id": model.model_id, "family": model.family, "fingerprint": model.fingerprint,
                  "revision": model.revision, "hidden_states": model.n_hidden_states, "dim": model.dim,
                  "parameters": model.n_parameters},
        "dataset": {"name": dataset.name, "version": dataset.version, "task": dataset.task,
                    "tags": list(dataset.vocabulary),
                    "splits": {split: int(data[split].labels.shape[0]) for split in SPLITS},
                    "notes": list(dataset.notes)},
        "protocol": {"recipe": recipe_dict(recipe), "grid": grid_dict(grid),
                     "window_seconds": key.window_seconds, "max_seconds": key.max_seconds,
                     "precision": key.precision, "storage": key.storage, "cache_key": key.digest(),
                     "max_epochs_override": max_epochs},
        "extraction": {"cache_dir": str(cache.directory), "excluded_items": excluded_items},
        "summary": grid_result["summary"],
        "selected": grid_result["selected"],
        "grid": grid_result["configs"],
        "excluded_tags": grid_result.get("excluded_tags", []),
        "environment": environment(),
        "timings": {"load_seconds": round(loaded - started, 3), "probe_seconds": round(finished - loaded, 3)},
    }
    return result, predictions


def recipe_dict(recipe: ProbeRecipe) -> dict[str, Any]:
    return asdict(recipe)


def grid_dict(grid: GridSpec) -> dict[str, Any]:
    return {"lrs": list(grid.lrs), "layers": list(grid.layers), "seeds": list(grid.seeds)}
