"""The pipeline and its Python API: dataset + model -> features (cache) -> probe grid -> result.

``evaluate`` runs both stages; ``extract`` and ``probe`` run one each. Each call resolves its
(model, dataset) pair once into a ``PairRun`` (marble_eval.run: protocol, dataset, settings, paths,
all checked before anything loads); the stages take the run and hand objects on: ``extract_stage``
returns the feature cache, ``probe_stage`` takes it. The command line calls these functions and
nothing else; suites of pairs live in marble_eval.suites.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marble_eval.datasets.base import Dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import FeatureCache
from marble_eval.features.extract import ExtractSummary, open_cache
from marble_eval.files import sha256_json
from marble_eval.metrics.table import metric_label
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.probes import GridOptions, GridSpec, ProbeRecipe, SplitData, run_grid
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
from marble_eval.results.store import environment, find_existing, utc_now, write_predictions, write_result
from marble_eval.run import (
    PairRun,
    features_root,
    load_dataset,
    plan_pair,
)
from marble_eval.tasks import SPLITS, expand_metrics, task_type

__all__ = ["evaluate", "extract", "features_root", "load_dataset", "load_model", "probe"]


# -- probe inputs: the cached features of a dataset, per split ---------------------------------

@dataclass(frozen=True)
class ProbeInputs:
    """What the probe grid trains on, read once from the cache: per-split features and label rows (targets
    z-scored for regression), the items left out because their audio failed, and the probed audio's digest."""

    data: dict[str, SplitData]
    excluded: dict[str, dict[str, Any]]
    test_ids: list[str]
    audio_digest: str | None
    target_stats: tuple[np.ndarray, np.ndarray] | None = None  # regression: (mean, std) per target


def _failures_and_digest(cache: FeatureCache, dataset: Dataset) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The cache's failure records and the digest of the audio of every other item (None while incomplete)."""
    failures = cache.failures()
    try:
        digest = cache.audio_digest(sorted(item.id for item in dataset.items if item.id not in failures))
    except MarbleEvalError:
        digest = None
    return failures, digest


def probe_inputs(cache: FeatureCache, dataset: Dataset) -> ProbeInputs:
    """Per split features/labels from the cache; items whose audio failed extraction are left out.

    Items neither cached nor recorded as failed mean the extraction is incomplete: that is
    an error naming them and the command that fills them.
    """
    if not cache.exists():
        raise MarbleEvalError(f"no features for this model and dataset in {cache.directory.parent}; run "
                              f"`marble-eval extract --model {cache.key.model_id} --dataset {dataset.name}` first")
    failures, digest = _failures_and_digest(cache, dataset)
    done = cache.done_ids()
    missing = [item.id for item in dataset.items if item.id not in done and item.id not in failures]
    if missing:
        raise MarbleEvalError(
            f"{cache.directory}: {len(missing)} item(s) not extracted yet (e.g. {', '.join(missing[:3])}); "
            f"run `marble-eval extract --model {cache.key.model_id} --dataset {dataset.name}` to fill them")
    stats = dataset.target_stats() if task_type(dataset.task).labels == "targets" else None
    data, test_ids = {}, []
    for split in SPLITS:
        items = [item for item in dataset.split(split) if item.id not in failures]
        if not items:
            raise MarbleEvalError(f"dataset {dataset.name!r} has no usable {split} items; check its audio "
                                  f"(`marble-eval data check {dataset.name}`)")
        features, item_of_window = cache.load_windows([item.id for item in items])  # one array, no concatenation
        counts = np.bincount(item_of_window, minlength=len(items))
        labels = dataset.label_matrix(items)
        ids = [item.id for item in items]
        if dataset.score_per == "window":  # every window its own example (VocalSet's 3-s chunks)
            labels, ids = labels[item_of_window], [f"{i}#{w}" for i, n in zip(ids, counts) for w in range(n)]
            item_of_window = np.arange(len(item_of_window))
        if stats is not None:
            labels = ((labels - stats[0]) / stats[1]).astype(np.float32)
        data[split] = SplitData(features=features, item_of_window=item_of_window, labels=labels)
        test_ids = ids if split == "test" else test_ids
    return ProbeInputs(data, dict(failures), test_ids, digest, stats)


# -- the probe stage ----------------------------------------------------------------------------

def auto_threads(dim: int) -> int | None:
    """Torch threads for the probe grid: 1 for small features, where per-probe optimiser and loss calls
    dominate and OpenMP synchronisation costs more than it gains (measured 6x on the fixture); else torch's."""
    return 1 if dim < 512 else None


def protocol_record(cache: FeatureCache, recipe: ProbeRecipe, grid: GridSpec, max_epochs: int | None = None,
                    **fields: Any) -> ProtocolRecord:
    """The protocol part of a result: the recipe, grid and the extraction settings of ``cache``;
    ``fields`` sets the others (preset, overrides, batch_unit, ..., see ProtocolRecord)."""
    key = cache.key
    return ProtocolRecord(**{"recipe": asdict(recipe), "grid": grid_dict(grid),
                             "window_seconds": key.window_seconds, "max_seconds": key.max_seconds,
                             "precision": key.precision, "storage": key.storage, "cache_key": key.digest(),
                             "max_epochs_override": max_epochs, **fields})


def grid_dict(grid: GridSpec) -> dict[str, Any]:
    return {"lrs": list(grid.lrs), "layers": list(grid.layers), "seeds": list(grid.seeds)}


@dataclass(frozen=True)
class ProbePlan:
    """One probe stage's inputs: where the features are, what model made them, and how to probe."""

    cache: FeatureCache
    dataset: Dataset
    model: ModelInfo
    recipe: ProbeRecipe
    grid: GridSpec
    max_epochs: int | None = None
    threads: int | None = None
    device: str | None = None
    display_name: str | None = None
    protocol_fields: dict[str, Any] | None = None

    def identity(self, audio_digest: str | None) -> ResultIdentity:
        """The identity the result will have (before training: a rerun can be skipped)."""
        return ResultIdentity.of(self.model.fingerprint, self.dataset.name, self.dataset.identity(),
                                 protocol_record(self.cache, self.recipe, self.grid, self.max_epochs,
                                                 **(self.protocol_fields or {})), audio_digest)


@dataclass(frozen=True)
class TestPredictions:
    """Test-split outputs of each seed's selected probe (for paired significance tests and re-scoring):
    probabilities for classification, predictions in the targets' units for regression."""

    item_ids: list[str]
    y_true: np.ndarray          # [n_test, T] (targets' units for regression)
    outputs: list[np.ndarray]   # per seed [n_test, T]
    seeds: list[int]
    tags: list[str]


def run_probe(cache: FeatureCache, dataset: Dataset, model: ModelInfo, recipe: ProbeRecipe, grid: GridSpec,
              show_progress: bool = True, max_epochs: int | None = None, threads: int | None = None) -> ProbeResult:
    """Train the grid on the cached features and return the full result (results/schema.py)."""
    plan = ProbePlan(cache, dataset, model, recipe, grid, max_epochs=max_epochs, threads=threads)
    return train_plan(plan, probe_inputs(cache, dataset), show_progress)[0]


def train_plan(plan: ProbePlan, inputs: ProbeInputs, show_progress: bool = False
               ) -> tuple[ProbeResult, TestPredictions]:
    """Train ``plan``'s grid on ``inputs``; the result and the selected probes' test outputs."""
    started = time.perf_counter()
    dataset, model = plan.dataset, plan.model
    # completed chunks are kept beside the features: a rerun of an interrupted grid trains only the rest
    features_digest = sha256_json([plan.cache.key.digest(), dataset.identity(), inputs.audio_digest,
                                   sorted(inputs.excluded)])
    options = GridOptions(progress=show_progress, max_epochs=plan.max_epochs,
                          threads=plan.threads if plan.threads is not None else auto_threads(model.dim),
                          checkpoint_dir=plan.cache.directory / "probe-checkpoints", features_digest=features_digest,
                          device=plan.device)
    trained = run_grid(inputs.data, plan.recipe, plan.grid, dataset.task, dataset.vocabulary, options)
    grid_result = trained.to_dict()
    finished = time.perf_counter()
    y_true, outputs = inputs.data["test"].labels, list(trained.test_probabilities or [])
    if inputs.target_stats is not None:  # back to the targets' units
        mean, std = inputs.target_stats
        y_true = y_true * std + mean
        outputs = [output * std + mean for output in outputs]
    predictions = TestPredictions(inputs.test_ids, np.asarray(y_true, dtype=np.float32), outputs,
                                  list(plan.grid.seeds), list(dataset.vocabulary))
    result = ProbeResult(
        created=utc_now(),
        model=ModelRecord(id=model.model_id, name=plan.display_name, family=model.family,
                          fingerprint=model.fingerprint, revision=model.revision,
                          hidden_states=model.n_hidden_states, dim=model.dim, parameters=model.n_parameters,
                          licence=model.licence),
        dataset=dataset_record(dataset, inputs),
        protocol=protocol_record(plan.cache, plan.recipe, plan.grid, plan.max_epochs, **(plan.protocol_fields or {})),
        extraction=ExtractionRecord(cache_dir=str(plan.cache.directory), excluded_items=inputs.excluded,
                                    data_dir=str(dataset.data_dir) if dataset.data_dir else None,
                                    audio_digest=inputs.audio_digest),
        summary={metric: SummaryStat(**stats) for metric, stats in grid_result["summary"].items()},
        selected=[SelectedConfig(**selected) for selected in grid_result["selected"]],
        grid=[GridConfig(**config) for config in grid_result["configs"]],
        excluded_tags=grid_result.get("excluded_tags", []),
        zeroed_tags=grid_result.get("zeroed_tags", []),
        warnings=list(trained.meta.get("warnings", [])),
        environment=environment(),
        timings=Timings(load_seconds=0.0, probe_seconds=round(finished - started, 3)),
    )
    return result, predictions


def dataset_record(dataset: Dataset, inputs: ProbeInputs) -> DatasetRecord:
    """The dataset part of a result, as it resolved for these inputs."""
    stats = inputs.target_stats
    return DatasetRecord(name=dataset.name, version=str(dataset.version), task=dataset.task,
                         identity=dataset.identity(), tags=list(dataset.vocabulary),
                         splits={split: int(inputs.data[split].labels.shape[0]) for split in SPLITS},
                         split_items={split: len(dataset.split(split)) for split in SPLITS},
                         test_items_digest=sha256_json(sorted(inputs.test_ids)),
                         vocabulary_source=dataset.vocabulary_source, limit=dataset.limit,
                         notes=list(dataset.notes),
                         target_stats=None if stats is None else {"mean": [float(v) for v in stats[0]],
                                                                  "std": [float(v) for v in stats[1]]},
                         target_stats_source=dataset.target_stats_source if stats is not None
                         else None,
                         split_origin=dataset.split_origin)


def check_features_current(cache: FeatureCache, dataset: Dataset) -> None:
    """Refuse features whose audio changed since extraction (when the dataset names its audio folder)."""
    from marble_eval.features.extract import todo_items

    if dataset.data_dir is None or not cache.exists():
        return
    done = cache.done_ids()
    _, check = todo_items(cache, dataset, [item for item in dataset.items if item.id in done])
    if check.changed:
        changed = sorted(check.changed)
        raise MarbleEvalError(f"{cache.directory}: the audio of {len(changed)} cached item(s) changed since they "
                              f"were extracted (e.g. {', '.join(changed[:3])}); run `marble-eval extract` with the "
                              f"same options to extract them again")


def cached_model_info(run: PairRun) -> tuple[FeatureCache, ModelInfo]:
    """The feature cache of the run's model and what the model is, found without building the model.

    The model is identified by its fingerprint (its files hashed, not loaded); a pooling in the run's
    model options must match the cache's.
    """
    from marble_eval.features.cache import locate_cache
    from marble_eval.models.catalog import catalog_entry
    from marble_eval.models.hub import fingerprint
    from marble_eval.models.registry import resolve

    if isinstance(run.model, AudioEncoder):
        return open_cache(run.cache_root, run.model, run.dataset, run.settings), run.model.info
    resolved = resolve(str(run.model))
    pooling = run.model_options.get("pooling")
    cache = locate_cache(run.cache_root, run.dataset, fingerprint(resolved), run.settings,
                         {"pooling": pooling} if pooling else None)
    key, entry = cache.key, catalog_entry(str(run.model))
    return cache, ModelInfo(model_id=str(run.model), family=key.family, sample_rate=key.sample_rate,
                            n_hidden_states=key.n_hidden_states, dim=key.dim, n_parameters=key.n_parameters,
                            fingerprint=key.model_fingerprint, revision=resolved.revision,
                            licence=entry.licence if entry else None, extra=dict(key.model_settings))


def probe_stage(run: PairRun, cache: FeatureCache, info: ModelInfo) -> tuple[ProbeResult, bool]:
    """Train the run's grid on ``cache`` (made by the model ``info``) and write the result; a result of
    exactly this identity already in the results folder is returned instead (True) unless overwrite."""
    if not run.audio_checked:
        check_features_current(cache, run.dataset)
    load_started = time.perf_counter()
    inputs = probe_inputs(cache, run.dataset)
    load_seconds = time.perf_counter() - load_started
    plan = ProbePlan(cache, run.dataset, info, run.recipe, run.grid(info.n_hidden_states),
                     max_epochs=run.probe.max_epochs, threads=run.probe.threads, device=run.probe.device,
                     display_name=run.probe.name,
                     protocol_fields=protocol_fields(run, cache))
    results_dir = run.probe.results_dir
    existing = None if results_dir is None else find_existing(results_dir, plan.identity(inputs.audio_digest))
    if existing is not None and not run.probe.overwrite:
        result = ProbeResult.from_disk(existing)
        run.say(f"results: {existing} (already computed with this model, dataset and protocol; --overwrite to redo)")
        run.say(summary_line(result))
        return result, True
    result, predictions = train_plan(plan, inputs, run.show_progress)
    result.timings.load_seconds = round(load_seconds, 3)
    if results_dir is not None:
        path = write_result(results_dir, result, overwrite=True)
        if predictions.outputs:
            write_predictions(path, predictions.item_ids, predictions.y_true, predictions.outputs, predictions.seeds,
                              predictions.tags, task=run.dataset.task)
        run.say(f"results: {path}")
    for warning in result.warnings:
        run.say(f"warning: {warning}")
    run.say(summary_line(result))
    return result, False


def protocol_fields(run: PairRun, cache: FeatureCache) -> dict[str, Any]:
    """The protocol keys a result records beyond recipe, grid and cache: the preset and what overrode it
    (explicit --lrs / --layer count as overrides of the grid), the probe choices, the named grid."""
    fields = run.protocol.record(cache.key.window_seconds, cache.key.max_seconds)
    explicit = [name for name, value in (("lrs", run.probe.lrs), ("layers", run.probe.layers)) if value]
    fields["overrides"] = [*fields["overrides"], *explicit]
    fields["grid_name"] = "custom" if explicit else run.protocol.grid
    return fields


def summary_line(result: ProbeResult) -> str:
    """One line: the dataset's row (test metrics, mean ± std over seeds, in percent) and the selections."""
    parts = []
    for metric in expand_metrics(task_type(result.task).metrics, result.dataset.tags):
        stats = result.stat(metric)
        if stats:
            spread = f" ± {100 * stats.std:.1f}" if stats.n > 1 else ""
            parts.append(f"{metric_label(metric)} {100 * stats.mean:.1f}{spread}")
    chosen = ", ".join(f"seed {s.seed}: lr {s.lr:g} layer {s.layer}" + (f" {s.aggregation}" if s.aggregation else "")
                       for s in result.selected)
    return f"{result.model.display} on {result.dataset.name}: {'  '.join(parts)}  (selected {chosen})"


# -- the extraction stage -----------------------------------------------------------------------

def extract_stage(run: PairRun, model: AudioEncoder) -> tuple[FeatureCache, ExtractSummary]:
    """Fill the feature cache of ``model`` x the run's dataset and return it (with what the extraction did);
    the run remembers that its audio was checked."""
    from marble_eval.features.extract import extract_dataset

    devices, nodes = run.distributed.get("devices", 1), run.distributed.get("num_nodes", 1)
    if devices * nodes > 1:
        from marble_eval.features.distributed import accelerator_for, extract_distributed

        summary = extract_distributed(model, run.dataset, run.cache_root, run.settings, devices=devices,
                                      num_nodes=nodes, strategy=run.distributed.get("strategy", "ddp"),
                                      accelerator=accelerator_for(run.device), show_progress=run.show_progress)
    else:
        summary = extract_dataset(model, run.dataset, run.cache_root, run.settings, show_progress=run.show_progress)
    run.audio_checked = True
    for line in summary.lines() if summary.global_rank == 0 else ():
        run.say(line)
    return open_cache(run.cache_root, model, run.dataset, run.settings), summary


def loaded_model(run: PairRun, device: str | None = None) -> AudioEncoder:
    """The run's model: itself when already loaded, else loaded by name on ``device`` (the run's by default)."""
    if isinstance(run.model, AudioEncoder):
        return run.model
    return load_model(str(run.model), device=device or run.device, **run.model_options)


# -- the public API ---------------------------------------------------------------------------

def load_model(spec: str, *, family: str | None = None, device: str = "cpu", precision: str = "fp32",
               **options: Any) -> AudioEncoder:
    """A frozen model by hub id, local directory or "fixture" (see marble_eval.models.load_model)."""
    from marble_eval.models import load_model as load

    quiet_transformers()
    return load(spec, family=family, device=device, precision=precision, **options)


def quiet_transformers() -> None:
    """Silence transformers' load-time progress bars and warnings (marble-eval shows its own)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def extract(model: str | AudioEncoder, dataset: str | Path | Dataset, **options: Any) -> ExtractSummary:
    """Fill the feature cache of ``model`` x ``dataset`` (resumable; bad audio skipped and listed).

    Options: protocol, data_dir, cache_dir, device, precision, window_seconds, max_seconds, vocabulary,
    storage, show_progress, model_options, dataset_options, log, and the speed-only settings (batch_size,
    num_workers, batch_seconds, checkpoint_seconds) and the distributed run (devices, num_nodes, strategy,
    docs/scale.md). Settings, the device and the dataset are checked before the model loads.
    """
    speed = {key: options.pop(key) for key in list(options) if key in EXTRACT_KEYS}
    run = plan_pair(model, dataset, need_audio=True, options={**options, "extract_options": speed})
    distributed = run.distributed.get("devices", 1) * run.distributed.get("num_nodes", 1) > 1
    # distributed: every rank loads on the host; Lightning then moves the weights to that rank's own device
    return extract_stage(run, loaded_model(run, "cpu" if distributed else None))[1]


EXTRACT_KEYS = ("batch_size", "batch_seconds", "num_workers", "checkpoint_seconds", "shard_items", "devices",
                "num_nodes", "strategy")


def probe(model: str | AudioEncoder, dataset: str | Path | Dataset, **options: Any) -> ProbeResult:
    """Train the protocol's probe grid on the cached features, select on validation, write the result.

    The cache is found from the model's fingerprint, without building the model. A result of exactly
    this model, dataset and protocol already in ``results_dir`` is returned as it is, without training
    (``overwrite=True`` redoes it). Options: protocol, recipe, seeds, grid, lrs, layers, batch_unit,
    weighted_init, selection, selection_scope, empty_tags, max_epochs, threads, probe_device, name,
    overwrite, results_dir, data_dir, cache_dir, precision, window_seconds, max_seconds, vocabulary,
    storage, show_progress, model_options, dataset_options, log.
    """
    run = plan_pair(model, dataset, need_audio=False, options=options)
    cache, info = cached_model_info(run)
    return probe_stage(run, cache, info)[0]


def evaluate(model: str | AudioEncoder, dataset: str | Path | Dataset, **options: Any) -> ProbeResult:
    """The whole benchmark for one (model, dataset): extract what is not cached, probe, write the result.

    Options: those of ``probe`` and ``extract``; ``extract_options`` (batch_size, num_workers, ...) go to
    the extraction. Everything is checked before the model loads.
    """
    return evaluate_pair(model, dataset, options)[0]


def evaluate_pair(model: str | AudioEncoder, dataset: str | Path | Dataset,
                  options: dict[str, Any]) -> tuple[ProbeResult, bool]:
    """``evaluate``, also saying whether the result was already there (True) or computed now (False)."""
    run = plan_pair(model, dataset, need_audio=True, options=options)
    for note in run.dataset.notes:
        run.say(f"note: {note}")
    encoder = loaded_model(run)
    run.grid(encoder.info.n_hidden_states)  # a grid that cannot fit the model fails before any audio is decoded
    cache, _ = extract_stage(run, encoder)
    return probe_stage(run, cache, encoder.info)
