"""Probe stage orchestration: cached features -> per-split probe data -> grid -> ProbeResult."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from marble_eval.datasets.base import SPLITS, Dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import FeatureCache
from marble_eval.files import sha256_json
from marble_eval.models.base import ModelInfo
from marble_eval.probes import GridSpec, ProbeRecipe, SplitData, run_grid
from marble_eval.results.schema import (
    DatasetRecord,
    ExtractionRecord,
    GridConfig,
    ModelRecord,
    ProbeResult,
    ProtocolRecord,
    ResultIdentity,
    SelectedConfig,
    SummaryStat,
    Timings,
)
from marble_eval.results.store import environment, utc_now


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
              show_progress: bool = True, max_epochs: int | None = None, threads: int | None = None) -> ProbeResult:
    """Train the grid on the cached features and return the full result (results/schema.py)."""
    return run_probe_with_predictions(cache, dataset, model, recipe, grid, show_progress, max_epochs, threads)[0]


def auto_threads(dim: int) -> int | None:
    """Torch threads for the probe grid: 1 for small features, where per-probe optimiser and loss calls
    dominate and OpenMP synchronisation costs more than it gains (measured 6x on the fixture); else torch's."""
    return 1 if dim < 512 else None


def protocol_record(cache: FeatureCache, recipe: ProbeRecipe, grid: GridSpec, max_epochs: int | None = None,
                    **fields: Any) -> ProtocolRecord:
    """The protocol part of a result: the recipe, grid and the extraction settings of ``cache``;
    ``fields`` sets the others (preset, overrides, batch_unit, ..., see ProtocolRecord)."""
    key = cache.key
    return ProtocolRecord(**{"recipe": recipe_dict(recipe), "grid": grid_dict(grid),
                             "window_seconds": key.window_seconds, "max_seconds": key.max_seconds,
                             "precision": key.precision, "storage": key.storage, "cache_key": key.digest(),
                             "max_epochs_override": max_epochs, **fields})


def result_identity(cache: FeatureCache, dataset: Dataset, model: ModelInfo, recipe: ProbeRecipe, grid: GridSpec,
                    max_epochs: int | None = None, **fields: Any) -> ResultIdentity:
    """The identity the result of these inputs will have (before training: a rerun can be skipped)."""
    return ResultIdentity.of(model.fingerprint, dataset.name, dataset.identity(),
                             protocol_record(cache, recipe, grid, max_epochs, **fields))


def run_probe_with_predictions(cache: FeatureCache, dataset: Dataset, model: ModelInfo, recipe: ProbeRecipe,
                               grid: GridSpec, show_progress: bool = True, max_epochs: int | None = None,
                               threads: int | None = None, display_name: str | None = None,
                               protocol_fields: dict[str, Any] | None = None) -> tuple[ProbeResult, TestPredictions]:
    """run_probe, plus the selected probes' per-item test probabilities.

    ``protocol_fields`` fills the ProtocolRecord fields beyond recipe, grid and cache (preset, overrides,
    batch_unit, ...); ``display_name`` is the model's name in tables.
    """
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
    result = ProbeResult(
        created=utc_now(),
        model=ModelRecord(id=model.model_id, name=display_name, family=model.family, fingerprint=model.fingerprint,
                          revision=model.revision, hidden_states=model.n_hidden_states, dim=model.dim,
                          parameters=model.n_parameters),
        dataset=DatasetRecord(name=dataset.name, version=str(dataset.version), task=dataset.task,
                              identity=dataset.identity(), tags=list(dataset.vocabulary),
                              splits={split: int(data[split].labels.shape[0]) for split in SPLITS},
                              split_items={split: len(dataset.split(split)) for split in SPLITS},
                              test_items_digest=sha256_json(sorted(predictions.item_ids)),
                              notes=list(dataset.notes)),
        protocol=protocol_record(cache, recipe, grid, max_epochs, **(protocol_fields or {})),
        extraction=ExtractionRecord(cache_dir=str(cache.directory), excluded_items=excluded_items),
        summary={metric: SummaryStat(**stats) for metric, stats in grid_result["summary"].items()},
        selected=[SelectedConfig(**selected) for selected in grid_result["selected"]],
        grid=[GridConfig(**config) for config in grid_result["configs"]],
        excluded_tags=grid_result.get("excluded_tags", []),
        environment=environment(),
        timings=Timings(load_seconds=round(loaded - started, 3), probe_seconds=round(finished - loaded, 3)),
    )
    return result, predictions


def recipe_dict(recipe: ProbeRecipe) -> dict[str, Any]:
    return asdict(recipe)


def grid_dict(grid: GridSpec) -> dict[str, Any]:
    return {"lrs": list(grid.lrs), "layers": list(grid.layers), "seeds": list(grid.seeds)}
