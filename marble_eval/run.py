"""One (model, dataset) pair resolved once: the protocol, the dataset, the settings and the paths.

``plan_pair`` turns the keyword options of the public API into a ``PairRun`` and checks every value a
user can get wrong before anything heavy happens (no model loaded, no audio decoded). The stages in
``marble_eval.pipeline`` take the run and hand objects on: extraction returns the feature cache and the
probe stage takes it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from marble_eval.datasets.base import Dataset
from marble_eval.devices import probe_device
from marble_eval.errors import MarbleEvalError
from marble_eval.features.extract import ExtractSettings, validate_settings
from marble_eval.models.base import AudioEncoder
from marble_eval.paths import cache_root
from marble_eval.probe_choices import PROBE_FIELDS
from marble_eval.probes import GridSpec, ProbeRecipe, load_recipe
from marble_eval.protocol import FROM_DATASET, Protocol, resolve_protocol

MARBLE_V1 = "marble-v1"

Log = Callable[[str], None]
Seeds = int | Sequence[int] | None
# ExtractSettings fields that change only speed and memory, never the features
SPEED_SETTINGS = ("batch_size", "batch_seconds", "num_workers", "checkpoint_seconds", "shard_items")
DISTRIBUTED_SETTINGS = ("devices", "num_nodes", "strategy")
GRIDS = ("marble", "quick", "v1")
MERT_330M_STATES = 25  # MERT-v1-330M: 24 layers + the input projection


@dataclass(frozen=True)
class ProbeOptions:
    """What the probe stage needs beyond the protocol: the grid's explicit parts and the run's knobs."""

    lrs: tuple[float, ...] | None = None
    layers: tuple[int | str, ...] | None = None
    max_epochs: int | None = None
    threads: int | None = None
    device: str | None = None     # None: the probe grid's default device
    name: str | None = None       # display name in tables
    overwrite: bool = False
    results_dir: Path | None = Path("results")


@dataclass
class PairRun:
    """Everything one (model, dataset) evaluation needs, resolved once."""

    model: str | AudioEncoder
    dataset: Dataset
    protocol: Protocol
    recipe: ProbeRecipe
    settings: ExtractSettings
    cache_root: Path
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    device: str = "cpu"                     # extraction device
    model_options: dict[str, Any] = field(default_factory=dict)
    distributed: dict[str, Any] = field(default_factory=dict)  # devices, num_nodes, strategy
    show_progress: bool = False
    log: Log | None = None
    audio_checked: bool = False             # the extraction of this run already checked the audio

    def say(self, line: str) -> None:
        """Print ``line`` through the run's log, if any."""
        if self.log:
            self.log(line)

    def grid(self, n_hidden_states: int) -> GridSpec:
        """The protocol's grid for a model with ``n_hidden_states`` states, explicit lrs/layers applied, checked."""
        seeds = list(self.protocol.seeds)
        if self.protocol.grid == "v1":
            named = v1_grid(self.dataset, n_hidden_states, seeds)
        elif self.protocol.grid == "marble":
            named = GridSpec.marble(n_hidden_states, seeds)
        else:
            named = GridSpec.quick(seeds)
        spec = GridSpec(lrs=list(self.probe.lrs or named.lrs), layers=list(self.probe.layers or named.layers),
                        seeds=seeds)
        spec.check(n_hidden_states)
        return spec


def v1_grid(dataset: Dataset, n_hidden_states: int, seeds: list[int]) -> GridSpec:
    """``--grid v1``: only the (layer, lr) MARBLE v1 chose for this task, its MERT-v1-330M choice for a model
    with 25 hidden states and its MERT-v1-95M choice otherwise."""
    v1 = dataset.marble_v1
    if v1 is None:
        raise MarbleEvalError(f"--grid v1: {dataset.name} is not a MARBLE v1 task (no v1 settings in its YAML); "
                              f"use --grid marble")
    large = n_hidden_states == MERT_330M_STATES and v1.layer_330m is not None
    layer, lr = (v1.layer_330m, v1.lr_330m) if large else (v1.layer_95m, v1.lr_95m)
    return GridSpec([float(lr)], [layer], seeds)


def v1_recipe(recipe: ProbeRecipe, dataset: Dataset) -> ProbeRecipe:
    """The recipe with MARBLE v1's per-task epochs, LR patience and early-stopping patience (marble-v1 preset)."""
    v1 = dataset.marble_v1
    if v1 is None:
        return recipe
    return dataclasses.replace(
        recipe, max_epochs=v1.max_epochs,
        lr_schedule=dataclasses.replace(recipe.lr_schedule, patience=v1.lr_patience),
        early_stopping=dataclasses.replace(recipe.early_stopping, patience=v1.es_patience))


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
    seeds = tuple(int(seed) for seed in seeds)
    if not seeds:
        raise MarbleEvalError("--seeds: give at least one seed")
    return seeds


def extraction_settings(protocol: Protocol, *, storage: str = "fp16", **speed: Any) -> ExtractSettings:
    """The ExtractSettings a protocol implies; ``speed`` holds the speed-only knobs (batch size, workers)."""
    unknown = set(speed) - set(SPEED_SETTINGS)
    if unknown:
        raise MarbleEvalError(f"unknown extraction option(s) {', '.join(sorted(unknown))}; known: "
                              f"{', '.join(SPEED_SETTINGS)}")
    return ExtractSettings(window_seconds=protocol.window_seconds,
                           max_seconds=None if protocol.max_seconds == FROM_DATASET else protocol.max_seconds,
                           precision=protocol.precision, storage=storage,
                           **{key: value for key, value in speed.items() if value is not None})


def recipe_for(protocol: Protocol) -> ProbeRecipe:
    """The protocol's recipe with the protocol's probe fields applied."""
    base = load_recipe(protocol.recipe)
    fields = {key: value for key, value in protocol.probe.items() if hasattr(base, key)}
    return dataclasses.replace(base, **fields) if fields else base


def check_probe_options(options: ProbeOptions) -> None:
    """One-line errors for probe values that are wrong whatever the model: before anything loads."""
    if options.lrs is not None and (not options.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in options.lrs)):
        raise MarbleEvalError(f"--lrs {','.join(map(str, options.lrs or ()))}: every learning rate must be a positive "
                              f"number, e.g. --lrs 1e-3,5e-4")
    if options.max_epochs is not None and options.max_epochs < 1:
        raise MarbleEvalError(f"--max-epochs {options.max_epochs}: must be 1 or more (0 would write a result from "
                              f"untrained probes)")
    if options.threads is not None and options.threads < 1:
        raise MarbleEvalError(f"--threads {options.threads}: must be 1 or more")
    for layer in options.layers or ():
        if not (layer == "weighted" or (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0)):
            raise MarbleEvalError(f"--layer {layer!r}: must be a hidden-state index (0 or more) or weighted")
    if options.device is not None:
        probe_device(options.device)


def load_dataset(name: str | Path, *, data_dir: Path | str | None = None, reference_dir: Path | str | None = None,
                 metadata: Path | str | None = None, **options: Any) -> Dataset:
    """A benchmark by name or YAML path (see marble_eval.datasets.registry.load_dataset)."""
    from marble_eval.datasets.registry import load_dataset as load

    reference = reference_dir or os.environ.get("MARBLE_EVAL_REFERENCE_DIR")
    return load(str(name), data_dir=Path(data_dir) if data_dir else None,
                reference_dir=Path(reference) if reference else None,
                metadata=Path(metadata) if metadata else None, **options)


def as_dataset(dataset: str | Path | Dataset, data_dir: Path | str | None = None, vocabulary: str = "counted",
               options: dict[str, Any] | None = None) -> Dataset:
    """``dataset`` itself, or the dataset it names loaded with ``data_dir``, ``vocabulary`` and ``options``."""
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset, data_dir=data_dir, vocabulary=vocabulary, **(options or {}))


def plan_pair(model: str | AudioEncoder, dataset: str | Path | Dataset, *, need_audio: bool,
              options: dict[str, Any]) -> PairRun:
    """Resolve the protocol, load and check the dataset, and check every setting, once, before any model
    loads or audio is decoded. ``options`` are the public API's keywords (see ``marble_eval.evaluate``)."""
    opts = dict(options)
    choices = {key: opts.pop(key, None) for key in PROBE_FIELDS}
    recipe = opts.pop("recipe", None)
    protocol = resolve_protocol(opts.pop("protocol", None), recipe=None if recipe is None else str(recipe),
                                grid=opts.pop("grid", None), seeds=seed_list(opts.pop("seeds", None)),
                                precision=opts.pop("precision", None), window_seconds=opts.pop("window_seconds", None),
                                max_seconds=opts.pop("max_seconds", None), vocabulary=opts.pop("vocabulary", None),
                                **choices)
    if protocol.grid not in GRIDS:
        raise MarbleEvalError(f"--grid {protocol.grid!r}: must be one of {', '.join(GRIDS)}")
    device = opts.pop("device", "cpu") or "cpu"
    speed = dict(opts.pop("extract_options", None) or {})
    distributed = {key: speed.pop(key) for key in DISTRIBUTED_SETTINGS if key in speed}
    distributed = {key: value for key, value in distributed.items() if value is not None}
    settings = extraction_settings(protocol, storage=opts.pop("storage", "fp16"), **speed)
    validate_settings(settings, device)
    if distributed.get("devices", 1) < 1 or distributed.get("num_nodes", 1) < 1:
        raise MarbleEvalError(f"--devices {distributed.get('devices')} / --num-nodes {distributed.get('num_nodes')}: "
                              f"must be 1 or more")
    lrs, layers = opts.pop("lrs", None), opts.pop("layers", None)
    results_dir = opts.pop("results_dir", Path("results"))
    probe = ProbeOptions(lrs=None if lrs is None else tuple(lrs), layers=None if layers is None else tuple(layers),
                         max_epochs=opts.pop("max_epochs", None), threads=opts.pop("threads", None),
                         device=opts.pop("probe_device", None), name=opts.pop("name", None),
                         overwrite=bool(opts.pop("overwrite", False)),
                         results_dir=None if results_dir is None else Path(results_dir))
    check_probe_options(probe)
    recipe_ = recipe_for(protocol)
    name = dataset.name if isinstance(dataset, Dataset) else str(dataset)
    if protocol.preset == MARBLE_V1 and name == "mtat":  # before loading: its labels may not be there
        raise MarbleEvalError("--protocol marble-v1 --dataset mtat: mtat is ccml's clean split (CultureMERT's); "
                              "MARBLE v1 ran its own split: use --dataset mtat-marble")
    loaded = as_dataset(dataset, opts.pop("data_dir", None), protocol.vocabulary, opts.pop("dataset_options", None))
    if protocol.preset == MARBLE_V1:
        recipe_ = v1_recipe(recipe_, loaded)
    score_per = opts.pop("score_per", None)
    if score_per is not None:
        loaded = loaded.with_score_per(score_per)
    loaded.check_ready(need_audio=need_audio)
    run = PairRun(model=model, dataset=loaded, protocol=protocol, recipe=recipe_, settings=settings,
                  cache_root=features_root(opts.pop("cache_dir", None)), probe=probe, device=device,
                  model_options={k: v for k, v in (opts.pop("model_options", None) or {}).items() if v is not None},
                  distributed=distributed,
                  show_progress=bool(opts.pop("show_progress", False)), log=opts.pop("log", None))
    if opts:
        raise MarbleEvalError(f"unknown option(s) {', '.join(sorted(opts))}")
    return run
