"""The pipeline and its Python API: dataset + model -> features (cache) -> probe grid -> result.

``evaluate`` runs both stages; ``extract`` and ``probe`` run one each. The command line calls
these functions and nothing else; they take names or loaded objects, and a protocol preset
(protocols/<name>.yaml) whose single fields explicit arguments override.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from marble_eval.data_config import load_data_config
from marble_eval.datasets.base import SPLITS, Dataset
from marble_eval.errors import MarbleEvalError
from marble_eval.features.cache import FeatureCache
from marble_eval.features.extract import ExtractSettings, ExtractSummary, open_cache
from marble_eval.files import sha256_json
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.paths import cache_root
from marble_eval.probes import GridSpec, ProbeRecipe, SplitData, load_recipe, run_grid
from marble_eval.protocol import FROM_DATASET, Protocol, resolve_protocol
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
        features, item_of_window = cache.load_windows([item.id for item in items])  # one array, no concatenation
        data[split] = SplitData(features=features, item_of_window=item_of_window, labels=dataset.label_matrix(items))
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
                             protocol_record(cache, recipe, grid, max_epochs, **fields),
                             probed_audio_digest(cache, dataset))


def probed_audio_digest(cache: FeatureCache, dataset: Dataset) -> str | None:
    """Digest of the audio of the items a probe uses (every cached item not recorded as failed);
    None while the cache is incomplete (``probe_inputs`` then names what is missing)."""
    failures = cache.failures()
    try:
        return cache.audio_digest(sorted(item.id for item in dataset.items if item.id not in failures))
    except MarbleEvalError:
        return None


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
    # completed chunks are kept beside the features: a rerun of an interrupted grid trains only the rest
    audio_digest = probed_audio_digest(cache, dataset)
    features_digest = sha256_json([cache.key.digest(), dataset.identity(), audio_digest,
                                   sorted(excluded_items)])
    trained = run_grid(data, recipe, grid, task=dataset.task, tags=dataset.vocabulary,
                       progress=show_progress, max_epochs=max_epochs,
                       threads=threads if threads is not None else auto_threads(model.dim),
                       checkpoint_dir=cache.directory / "probe-checkpoints", features_digest=features_digest)
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
                              vocabulary_source=dataset.vocabulary_source, limit=dataset.limit,
                              notes=list(dataset.notes)),
        protocol=protocol_record(cache, recipe, grid, max_epochs, **(protocol_fields or {})),
        extraction=ExtractionRecord(cache_dir=str(cache.directory), excluded_items=excluded_items,
                                    data_dir=str(dataset.data_dir) if dataset.data_dir else None,
                                    audio_digest=audio_digest),
        summary={metric: SummaryStat(**stats) for metric, stats in grid_result["summary"].items()},
        selected=[SelectedConfig(**selected) for selected in grid_result["selected"]],
        grid=[GridConfig(**config) for config in grid_result["configs"]],
        excluded_tags=grid_result.get("excluded_tags", []),
        zeroed_tags=grid_result.get("zeroed_tags", []),
        environment=environment(),
        timings=Timings(load_seconds=round(loaded - started, 3), probe_seconds=round(finished - loaded, 3)),
    )
    return result, predictions


def recipe_dict(recipe: ProbeRecipe) -> dict[str, Any]:
    return asdict(recipe)


def grid_dict(grid: GridSpec) -> dict[str, Any]:
    return {"lrs": list(grid.lrs), "layers": list(grid.layers), "seeds": list(grid.seeds)}


# -- the public API ---------------------------------------------------------------------------

Seeds = int | Sequence[int] | None
# ExtractSettings fields that change only speed and memory, never the features
SPEED_SETTINGS = ("batch_size", "batch_seconds", "num_workers", "checkpoint_seconds", "shard_items")
Log = Callable[[str], None]


def load_model(spec: str, *, family: str | None = None, device: str = "cpu", precision: str = "fp32",
               **options: Any) -> AudioEncoder:
    """A frozen model by hub id, local directory or "fixture" (see marble_eval.models.load_model)."""
    from marble_eval.models import load_model as load

    quiet_transformers()
    return load(spec, family=family, device=device, precision=precision, **options)


def load_dataset(name: str | Path, *, data_dir: Path | str | None = None, reference_dir: Path | str | None = None,
                 metadata: Path | str | None = None, **options: Any) -> Dataset:
    """A benchmark by name or YAML path (see marble_eval.datasets.registry.load_dataset)."""
    from marble_eval.datasets.registry import load_dataset as load

    reference = reference_dir or os.environ.get("MARBLE_EVAL_REFERENCE_DIR")
    return load(str(name), data_dir=Path(data_dir) if data_dir else None,
                reference_dir=Path(reference) if reference else None,
                metadata=Path(metadata) if metadata else None, **options)


def quiet_transformers() -> None:
    """Silence transformers' load-time progress bars and warnings (marble-eval shows its own)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def features_root(cache_dir: Path | str | None) -> Path:
    """The feature cache root: ``cache_dir`` or <MARBLE_EVAL_HOME>/features."""
    return Path(cache_dir) if cache_dir else cache_root() / "features"


def seed_list(seeds: Seeds) -> tuple[int, ...] | None:
    """``seeds`` as a tuple: N means 0..N-1; None keeps the protocol's."""
    if seeds is None:
        return None
    if isinstance(seeds, int):
        if seeds < 1:
            raise MarbleEvalError(f"--seeds must be at least 1, got {seeds}")
        return tuple(range(seeds))
    return tuple(int(seed) for seed in seeds)


def extraction_settings(protocol: Protocol, *, storage: str = "fp16", **run: Any) -> ExtractSettings:
    """The ExtractSettings a protocol implies; ``run`` holds the speed-only knobs (batch size, workers)."""
    return ExtractSettings(window_seconds=protocol.window_seconds,
                           max_seconds=None if protocol.max_seconds == FROM_DATASET else protocol.max_seconds,
                           precision=protocol.precision, storage=storage,
                           **{key: value for key, value in run.items() if value is not None})


def grid_spec(name: str, n_hidden_states: int, seeds: Sequence[int], lrs: Sequence[float] | None = None,
              layers: Sequence[int | str] | None = None) -> GridSpec:
    """The named grid ("marble" | "quick") over ``seeds``, with explicit lrs/layers replacing its own."""
    if name not in ("marble", "quick"):
        raise MarbleEvalError(f"grid {name!r}: must be marble or quick")
    grid = GridSpec.marble(n_hidden_states, list(seeds)) if name == "marble" else GridSpec.quick(list(seeds))
    return GridSpec(lrs=list(lrs) if lrs else grid.lrs, layers=list(layers) if layers else grid.layers,
                    seeds=list(seeds))


def recipe_for(protocol: Protocol) -> ProbeRecipe:
    """The protocol's recipe with the protocol's probe fields applied."""
    base = load_recipe(protocol.recipe)
    fields = {key: value for key, value in protocol.probe.items() if hasattr(base, key)}
    return dataclasses.replace(base, **fields) if fields else base


def as_dataset(dataset: str | Path | Dataset, data_dir: Path | str | None = None, vocabulary: str = "counted",
               options: dict[str, Any] | None = None) -> Dataset:
    """``dataset`` itself, or the dataset it names loaded with ``data_dir``, ``vocabulary`` and ``options``."""
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset, data_dir=data_dir, vocabulary=vocabulary, **(options or {}))


def as_model(model: str | AudioEncoder, device: str = "cpu", options: dict[str, Any] | None = None) -> AudioEncoder:
    """``model`` itself, or the model it names loaded on ``device`` with ``options`` (family, pooling)."""
    if isinstance(model, AudioEncoder):
        return model
    return load_model(model, device=device, **{key: value for key, value in (options or {}).items()
                                              if value is not None})


def extract(model: str | AudioEncoder, dataset: str | Path | Dataset, *,
            protocol: str | Path | Protocol | None = None, data_dir: Path | str | None = None,
            cache_dir: Path | str | None = None, device: str = "cpu", precision: str | None = None,
            window_seconds: float | None = None, max_seconds: float | None = None, vocabulary: str | None = None,
            storage: str = "fp16", devices: int | None = None, num_nodes: int = 1, strategy: str = "ddp",
            show_progress: bool = False, model_options: dict[str, Any] | None = None,
            dataset_options: dict[str, Any] | None = None, log: Log | None = None, **run: Any) -> ExtractSummary:
    """Fill the feature cache of ``model`` x ``dataset`` (resumable; bad audio skipped and listed).

    ``run`` takes the speed-only settings of ExtractSettings (batch_size, num_workers, batch_seconds,
    checkpoint_seconds). Settings, the device and the dataset are checked before the model loads.
    ``devices`` x ``num_nodes`` > 1 runs a distributed extraction (docs/scale.md).
    """
    from marble_eval.features.extract import extract_dataset, validate_settings

    chosen = resolve_protocol(protocol, precision=precision, window_seconds=window_seconds, max_seconds=max_seconds,
                              vocabulary=vocabulary)
    settings = extraction_settings(chosen, storage=storage, **run)
    validate_settings(settings, device)
    if (devices is not None and devices < 1) or num_nodes < 1:
        raise MarbleEvalError(f"--devices {devices} / --num-nodes {num_nodes}: must be 1 or more")
    dataset = as_dataset(dataset, data_dir, chosen.vocabulary, dataset_options)
    dataset.check_ready(need_audio=True)
    if (devices or 1) * num_nodes > 1:
        from marble_eval.features.distributed import accelerator_for, extract_distributed

        # every rank loads on the host; Lightning then moves the weights to that rank's own device
        model = as_model(model, "cpu", model_options)
        summary = extract_distributed(model, dataset, features_root(cache_dir), settings, devices=devices or 1,
                                      num_nodes=num_nodes, strategy=strategy, accelerator=accelerator_for(device),
                                      show_progress=show_progress)
    else:
        model = as_model(model, device, model_options)
        summary = extract_dataset(model, dataset, features_root(cache_dir), settings, show_progress=show_progress)
    for line in summary.lines() if log and summary.global_rank == 0 else ():
        log(line)
    return summary


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


def cached_model_info(spec: str, dataset: Dataset, settings: ExtractSettings, cache_dir: Path | str | None,
                      options: dict[str, Any] | None = None) -> tuple[FeatureCache, ModelInfo]:
    """The feature cache of model ``spec`` and what the model is, found without building the model.

    The model is identified by its fingerprint (its files hashed, not loaded); a pooling in
    ``options`` must match the cache's.
    """
    from marble_eval.features.cache import locate_cache
    from marble_eval.models.hub import fingerprint
    from marble_eval.models.registry import resolve

    resolved = resolve(spec)
    pooling = (options or {}).get("pooling")
    cache = locate_cache(features_root(cache_dir), dataset, fingerprint(resolved), settings,
                         {"pooling": pooling} if pooling else None)
    key = cache.key
    return cache, ModelInfo(model_id=spec, family=key.family, sample_rate=key.sample_rate,
                            n_hidden_states=key.n_hidden_states, dim=key.dim, n_parameters=key.n_parameters,
                            fingerprint=key.model_fingerprint, revision=resolved.revision,
                            extra=dict(key.model_settings))


def probe(model: str | AudioEncoder, dataset: str | Path | Dataset, **options: Any) -> ProbeResult:
    """Train the protocol's probe grid on the cached features, select on validation, write the result.

    A result of exactly this model, dataset and protocol already in ``results_dir`` is returned as it
    is, without training (``overwrite=True`` redoes it). Options: see ``probe_stage``.
    """
    return probe_stage(model, dataset, **options)[0]


def probe_stage(model: str | AudioEncoder, dataset: str | Path | Dataset, *,
          protocol: str | Path | Protocol | None = None, recipe: str | Path | None = None, seeds: Seeds = None,
          grid: str | None = None, lrs: Sequence[float] | None = None, layers: Sequence[int | str] | None = None,
          data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
          results_dir: Path | str | None = "results", precision: str | None = None,
          window_seconds: float | None = None, max_seconds: float | None = None, vocabulary: str | None = None,
          storage: str = "fp16", max_epochs: int | None = None, threads: int | None = None,
          name: str | None = None, overwrite: bool = False, show_progress: bool = False, device: str = "cpu",
          model_options: dict[str, Any] | None = None, dataset_options: dict[str, Any] | None = None,
          log: Log | None = None, **choices: str | None) -> tuple[ProbeResult, bool]:
    """``probe``, also saying whether the result was already there (True) or trained now (False).

    ``choices`` override the protocol's probe fields (batch_unit, weighted_init, selection,
    selection_scope, empty_tags).
    """
    chosen = resolve_protocol(protocol, recipe=None if recipe is None else str(recipe), grid=grid,
                              seeds=seed_list(seeds), precision=precision, window_seconds=window_seconds,
                              max_seconds=max_seconds, vocabulary=vocabulary, **choices)
    dataset = as_dataset(dataset, data_dir, chosen.vocabulary, dataset_options)
    dataset.check_ready(need_audio=False)
    settings = extraction_settings(chosen, storage=storage)
    if isinstance(model, AudioEncoder):
        cache, info = open_cache(features_root(cache_dir), model, dataset, settings), model.info
    else:
        cache, info = cached_model_info(model, dataset, settings, cache_dir, model_options)
    check_features_current(cache, dataset)
    spec = grid_spec(chosen.grid, info.n_hidden_states, chosen.seeds, lrs, layers)
    spec.check(info.n_hidden_states)
    recipe_ = recipe_for(chosen)
    fields = chosen.record(cache.key.window_seconds, cache.key.max_seconds)
    existing = None if results_dir is None else find_existing(
        Path(results_dir), result_identity(cache, dataset, info, recipe_, spec, max_epochs, **fields))
    if existing is not None and not overwrite:
        result = ProbeResult.from_disk(existing)
        if log:
            log(f"results: {existing} (already computed with this model, dataset and protocol; --overwrite to redo)")
            log(summary_line(result))
        return result, True
    result, predictions = run_probe_with_predictions(cache, dataset, info, recipe_, spec,
                                                     show_progress=show_progress, max_epochs=max_epochs,
                                                     threads=threads, display_name=name, protocol_fields=fields)
    if results_dir is not None:
        path = write_result(Path(results_dir), result, overwrite=True)
        if predictions.probs:
            write_predictions(path, predictions.item_ids, predictions.y_true, predictions.probs, predictions.seeds,
                              predictions.tags)
        if log:
            log(f"results: {path}")
    if log:
        log(summary_line(result))
    return result, False


def summary_line(result: ProbeResult) -> str:
    """One line: the dataset's row (test metrics, mean ± std over seeds, in percent) and the selections."""
    parts = []
    for metric, label in (("roc_auc", "ROC-AUC"), ("map", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
        stats = result.stat(metric)
        if stats:
            parts.append(f"{label} {100 * stats.mean:.1f} ± {100 * stats.std:.1f}")
    chosen = ", ".join(f"seed {s.seed}: lr {s.lr:g} layer {s.layer}" for s in result.selected)
    return f"{result.model.display} on {result.dataset.name}: {'  '.join(parts)}  (selected {chosen})"


def evaluate(model: str | AudioEncoder, dataset: str | Path | Dataset, **options: Any) -> ProbeResult:
    """The whole benchmark for one (model, dataset): extract what is not cached, probe, write the result.

    Options: see ``evaluate_pair`` (protocol, recipe, seeds, grid, data_dir, cache_dir, results_dir, ...).
    """
    return evaluate_pair(model, dataset, **options)[0]


def evaluate_pair(model: str | AudioEncoder, dataset: str | Path | Dataset, *,
             protocol: str | Path | Protocol | None = None, recipe: str | Path | None = None, seeds: Seeds = None,
             grid: str | None = None, data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
             results_dir: Path | str | None = "results", device: str = "cpu", precision: str | None = None,
             window_seconds: float | None = None, max_seconds: float | None = None, vocabulary: str | None = None,
             storage: str = "fp16", show_progress: bool = False, model_options: dict[str, Any] | None = None,
             dataset_options: dict[str, Any] | None = None, extract_options: dict[str, Any] | None = None,
             log: Log | None = None, **probe_options: Any) -> tuple[ProbeResult, bool]:
    """``evaluate``, also saying whether the result was already there (True) or computed now (False).

    ``extract_options`` go to ``extract`` (batch_size, num_workers, ...), ``probe_options`` to ``probe``.
    """
    from marble_eval.features.extract import validate_settings

    chosen = resolve_protocol(protocol, precision=precision, window_seconds=window_seconds, max_seconds=max_seconds,
                              vocabulary=vocabulary)
    speed = {key: value for key, value in (extract_options or {}).items() if key in SPEED_SETTINGS}
    validate_settings(extraction_settings(chosen, storage=storage, **speed), device)  # before anything loads
    dataset = as_dataset(dataset, data_dir, chosen.vocabulary, dataset_options)
    dataset.check_ready(need_audio=True)
    for note in dataset.notes if log else ():
        log(f"note: {note}")
    model = as_model(model, device, model_options)
    common = {"protocol": chosen, "cache_dir": cache_dir, "storage": storage, "show_progress": show_progress,
              "log": log}
    extract(model, dataset, **common, **(extract_options or {}))
    return probe_stage(model, dataset, recipe=recipe, seeds=seeds, grid=grid, results_dir=results_dir, **common,
                       **probe_options)


# -- suites: several models x several datasets in one call ------------------------------------

PUBLISHED_DATASETS = ("makam", "hindustani", "carnatic", "lyra", "fma", "mtat")


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one (model, dataset) pair of a suite: ran, done before, or failed (and why)."""

    model: str
    dataset: str
    status: str                 # "ran" | "done" | "failed"
    detail: str = ""            # the result path, or the one-line error
    result: ProbeResult | None = None


def dataset_names(spec: str | Sequence[str]) -> list[str]:
    """"all" -> the six published datasets; "makam,lyra,my.yaml" -> its parts (a list passes through)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip()
            names += list(PUBLISHED_DATASETS) if name == "all" else [name] if name else []
    if not names:
        raise MarbleEvalError("--dataset: name at least one dataset (a name, a YAML path, or all)")
    return list(dict.fromkeys(names))


def evaluate_suite(models: Sequence[str | AudioEncoder], datasets: str | Sequence[str], *,
                   data_config: Path | str | None = None, log: Log | None = None,
                   dataset_options: dict[str, Any] | None = None, data_dir: Path | str | None = None,
                   **options: Any) -> list[PairOutcome]:
    """``evaluate`` for every (model, dataset) pair; a failing pair is reported and the others go on.

    ``data_config`` (a YAML, see ``DataConfig``) gives each dataset its data_dir, metadata and
    reference_dir; ``data_dir`` applies to a single dataset only. Pairs whose result under the same
    protocol exists are reported as done.
    """
    names = dataset_names(datasets)
    config = load_data_config(data_config) if data_config else {}
    if data_dir and len(names) > 1:
        raise MarbleEvalError("--data-dir names one dataset's audio; for several datasets pass --data-config "
                              "data.yaml mapping each dataset to its data_dir")
    outcomes = []
    for name in names:
        entry = config.get(name) or config.get(Path(name).stem)
        options_for = {**(dataset_options or {}), **(entry.options() if entry else {})}
        try:
            dataset = load_dataset(name, data_dir=entry.data_dir if entry else data_dir,
                                   vocabulary=resolve_protocol(options.get("protocol"),
                                                               vocabulary=options.get("vocabulary")).vocabulary,
                                   **options_for)
        except MarbleEvalError as exc:
            outcomes += [PairOutcome(model_label(model), name, "failed", str(exc)) for model in models]
            continue
        for model in models:
            if log and len(models) * len(names) > 1:
                log(f"== {model_label(model)} on {dataset.name}")
            try:
                result, reused = evaluate_pair(model, dataset, log=log, **options)
            except MarbleEvalError as exc:
                outcomes.append(PairOutcome(model_label(model), dataset.name, "failed", str(exc)))
                if log:
                    log(f"failed: {exc}")
                continue
            outcomes.append(PairOutcome(model_label(model), dataset.name, "done" if reused else "ran",
                                        str(result.path or ""), result))
    return outcomes


def model_label(model: str | AudioEncoder) -> str:
    """How a model is named in a suite's summary."""
    return model.info.model_id if isinstance(model, AudioEncoder) else str(model)


def suite_lines(outcomes: Sequence[PairOutcome]) -> list[str]:
    """The closing summary of a suite: one line per pair, then the counts."""
    lines = [f"{outcome.status:<6} {outcome.model} on {outcome.dataset}: {outcome.detail}" for outcome in outcomes]
    counts = {status: sum(outcome.status == status for outcome in outcomes) for status in ("ran", "done", "failed")}
    lines.append(f"suite: {len(outcomes)} pairs: {counts['ran']} ran, {counts['done']} already done, "
                 f"{counts['failed']} failed")
    return lines
