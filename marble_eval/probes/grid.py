"""The MARBLE grid (PROTOCOL 3): every (lr, layer, seed) probe of a recipe, trained batched,
selected per seed on validation, summarised over seeds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import RootModel

from marble_eval.devices import probe_device
from marble_eval.errors import MarbleEvalError
from marble_eval.lightning_utils import torch_threads
from marble_eval.metrics.table import score_parts
from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.checkpoint import GridCheckpoint, grid_digest
from marble_eval.probes.core import EVAL_ROWS, WEIGHTED, Layer
from marble_eval.probes.data import SplitData, SplitTensors, check_data
from marble_eval.probes.evaluation import split_metrics
from marble_eval.probes.lightning_utils import deterministic_on, make_trainer, quiet_fit
from marble_eval.probes.progress import ProbeProgress
from marble_eval.probes.recipe import ProbeRecipe
from marble_eval.probes.selection import scalar_metrics, select_index, selection_score, summarise
from marble_eval.progress import progress_bar
from marble_eval.tasks import task_type

MARBLE_LRS = (5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
# The quick grid's learning rates: MARBLE's three largest. With item batches a small dataset gives a
# few optimiser steps per epoch, and early stopping (patience 10 epochs) ends a probe at lr 1e-3
# before it has trained (issue #20: ROC-AUC 55 on 150 real files); lr 5e-3 and 1e-2 train in those steps.
QUICK_LRS = (1e-3, 5e-3, 1e-2)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)  # CultureMERT reports the mean over five seeds
MEMORY_BUDGET = 2 * 1024**3  # bytes of probe state per chunk when chunk_size is not given


@dataclass(frozen=True)
class GridSpec:
    """Learning rates x layers (hidden-state index or "weighted") x seeds."""

    lrs: list[float]
    layers: list[Layer]
    seeds: list[int]

    @classmethod
    def marble(cls, n_hidden_states: int, seeds: list[int] | tuple[int, ...] = DEFAULT_SEEDS) -> "GridSpec":
        """The full grid: six learning rates x every single hidden state and the weighted sum."""
        return cls(list(MARBLE_LRS), [*range(n_hidden_states), WEIGHTED], list(seeds))

    @classmethod
    def quick(cls, seeds: list[int] | tuple[int, ...] = DEFAULT_SEEDS) -> "GridSpec":
        """The weighted sum of hidden states at QUICK_LRS (three probes per seed, trained together)."""
        return cls(list(QUICK_LRS), [WEIGHTED], list(seeds))

    def configs(self) -> list[ProbeConfig]:
        """Every configuration in grid order: seed, then layer, then lr (the order ties fall back on)."""
        return [ProbeConfig(lr, layer, seed) for seed in self.seeds for layer in self.layers for lr in self.lrs]

    def check(self, n_states: int) -> None:
        """One-line errors for an empty, duplicated or out-of-range grid."""
        for name, values in (("lrs", self.lrs), ("layers", self.layers), ("seeds", self.seeds)):
            if not values or len(set(values)) != len(values):
                raise MarbleEvalError(f"grid {name} {values!r} must be non-empty and without repeats")
        if any(not lr > 0 for lr in self.lrs):
            raise MarbleEvalError(f"grid lrs {self.lrs!r} must all be positive")
        for layer in self.layers:
            single = isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < n_states
            if not (single or (layer == WEIGHTED and n_states >= 2)):
                raise MarbleEvalError(
                    f"grid layer {layer!r} is not a hidden state 0..{n_states - 1} or 'weighted' (needs >= 2 states)"
                )


@dataclass
class GridResult:
    """Every configuration's metrics, each seed's selected configuration and the summary over seeds.

    ``configs``: {lr, layer, seed, epochs, best_epoch, valid, test} with scalar metrics (None for a
    probe that diverged), every trained configuration in grid order; a task with several window
    aggregations (key) adds ``aggregation``, the one chosen on validation for that configuration.
    ``selected``: per seed {seed, index (into configs), lr, layer, valid, test} (plus ``aggregation``
    where configs have it) with the full test metrics (per-tag ROC-AUC/AP,
    excluded/zeroed tags). ``summary``: {metric: {mean, std, n}} over seeds of the selected test
    metrics. ``excluded_tags`` / ``zeroed_tags``: tags left out of / scored 0 in the test split's
    macro averages (no positive, or no negative, test item). ``protocol``: the recipe's resolved open
    choices (ProbeRecipe.protocol())."""

    task: str
    tags: list[str]
    recipe: dict[str, Any]
    grid: dict[str, Any]
    max_epochs: int
    configs: list[dict[str, Any]]
    selected: list[dict[str, Any]]
    summary: dict[str, dict[str, float]]
    seconds: float = 0.0
    excluded_tags: list[Any] = field(default_factory=list)
    zeroed_tags: list[Any] = field(default_factory=list)
    protocol: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # Per seed (grid.seeds order): test item outputs [n_test, T] of the selected probe (probabilities;
    # regression: predictions in the z-scored units the probe was trained on).
    # Kept out of the JSON (it can be large); results.write_predictions stores it beside it.
    test_probabilities: list[np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (without the test probabilities)."""
        data = asdict(replace(self, test_probabilities=None))
        del data["test_probabilities"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GridResult":
        """Inverse of to_dict (per-tag keys come back as strings after a JSON round trip)."""
        return cls(**data)


def auto_chunk_size(recipe: ProbeRecipe, n_states: int, dim: int, n_labels: int) -> int:
    """How many probes fit MEMORY_BUDGET: parameters x 5 (weights, gradient, two Adam moments,
    snapshot) plus one training batch and one evaluation block of activations, in float32."""
    widths = [dim, n_labels] if recipe.hidden_dim is None else [dim, recipe.hidden_dim, n_labels]
    params = sum(a * b + b for a, b in zip(widths, widths[1:])) + n_states
    activations = (recipe.batch_size * 3 + EVAL_ROWS) * sum(widths)
    return max(1, MEMORY_BUDGET // (4 * (5 * params + activations)))


def _choose_aggregation(outputs: dict[str, torch.Tensor], labels: torch.Tensor, task: str, tags: list[str],
                        recipe: ProbeRecipe) -> tuple[str, dict[str, Any] | None]:
    """The window aggregation with the best validation selection score of one probe (ties: the higher
    tie-break metric, then the task's order, which puts the training rule first), and its metrics."""
    kind = task_type(task)
    score, tie = kind.selection_for(recipe.selection), kind.tie_break
    best: tuple[tuple[float, float, int], str, dict[str, Any] | None] | None = None
    for order, how in enumerate(kind.aggregations):
        metrics = split_metrics(labels, outputs[how], task, tags, recipe.empty_tags)
        key = (-selection_score(metrics, score), -(metrics[tie] if tie else 0.0), order) if metrics else (np.inf, np.inf, order)
        if best is None or key < best[0]:
            best = (key, how, metrics)
    assert best is not None
    return best[1], best[2]


def _train_chunk(
    configs: list[ProbeConfig], splits: dict[str, SplitTensors], recipe: ProbeRecipe, task: str,
    tags: list[str], max_epochs: int, callback: ProbeProgress, timing: dict[str, float],
) -> list[dict[str, Any]]:
    """Train one chunk of configurations as one ProbeBank; their results (with test outputs)."""
    started = time.perf_counter()
    device = splits["train"].features.device
    bank = ProbeBank(recipe, splits, task, configs, device)
    with quiet_fit(deterministic_on(device)):
        make_trainer(max_epochs, [callback], validate=False, device=device).fit(bank)
    trained = time.perf_counter()
    timing["train_seconds"] += trained - started
    records = bank.training_record()
    aggregations = task_type(task).aggregations
    outputs = {name: bank.final_outputs(splits[name], aggregations) for name in ("valid", "test")}
    labels = {name: splits[name].labels.cpu() for name in outputs}
    results = []
    for index, config in enumerate(configs):
        chosen = {}
        if len(aggregations) > 1:  # choose the clip ensemble on validation (MARBLE v1 GS)
            how, valid = _choose_aggregation({a: o[index] for a, o in outputs["valid"].items()}, labels["valid"], task, tags, recipe)
            chosen = {"aggregation": how}
        else:
            how = aggregations[0]
            valid = split_metrics(labels["valid"], outputs["valid"][how][index], task, tags, recipe.empty_tags)
        test_outputs = outputs["test"][how][index]
        metrics = {"valid": valid, "test": split_metrics(labels["test"], test_outputs, task, tags, recipe.empty_tags)}
        if recipe.restore_best and records[index]["best_epoch"] == 0:  # never had a finite score
            metrics = {name: None for name in metrics}
        results.append({"lr": config.lr, "layer": config.layer, "seed": config.seed, **chosen, **records[index], **metrics,
                        "_test_probs": test_outputs.numpy().astype(np.float32)})
    timing["eval_seconds"] += time.perf_counter() - trained
    return results


def _winners(results: dict[int, dict[str, Any]], seeds: list[int], selection: str, task: str) -> set[int]:
    """Grid indices of each seed's selection among the finished configurations so far.

    Selection is a total order over configurations in grid order, so the winner so far is the
    only one that can still be selected: other test probabilities can be freed (and need not be saved).
    """
    indices = sorted(results)
    done = [results[i] for i in indices]
    winners = set()
    for seed in seeds:
        try:
            winners.add(indices[select_index(done, seed, selection, task)])
        except MarbleEvalError:
            pass  # this seed has no finished (or no finite) configuration yet
    return winners


class _Trainer:
    """Trains configurations chunk by chunk, reusing (and saving) completed chunks in a checkpoint."""

    def __init__(self, splits: dict[str, SplitTensors], recipe: ProbeRecipe, task: str, tags: list[str],
                 epochs: int, size: int, checkpoint: GridCheckpoint | None, bar: Any, task_id: Any) -> None:
        self.splits, self.recipe, self.task, self.tags, self.epochs = splits, recipe, task, tags, epochs
        self.size, self.checkpoint, self.bar, self.task_id = size, checkpoint, bar, task_id
        self.timing = {"train_seconds": 0.0, "eval_seconds": 0.0}
        self.resumed = 0

    def run(self, configs: list[ProbeConfig], seeds: list[int]) -> list[dict[str, Any]]:
        """Results of ``configs`` (in their order), each trained once across checkpoint and run."""
        saved = self.checkpoint.load() if self.checkpoint else {}
        results: dict[int, dict[str, Any]] = {}
        for index, config in enumerate(configs):
            if config in saved:
                results[index] = saved[config]
        self.resumed += len(results)
        self.bar.advance(self.task_id, len(results))
        todo = [index for index in range(len(configs)) if index not in results]
        chunks = [todo[start : start + self.size] for start in range(0, len(todo), self.size)]
        for number, chunk in enumerate(chunks, 1):
            callback = ProbeProgress(self.bar, self.task_id, number, len(chunks))
            trained = _train_chunk([configs[i] for i in chunk], self.splits, self.recipe, self.task, self.tags,
                                   self.epochs, callback, self.timing)
            results.update(zip(chunk, trained))
            winners = _winners(results, seeds, self.recipe.selection, self.task)
            for index, result in results.items():
                if index not in winners:
                    result["_test_probs"] = None
            if self.checkpoint:
                self.checkpoint.save([configs[i] for i in chunk], [results[i] for i in chunk])
        return [results[index] for index in range(len(configs))]


def untrained_warnings(selected: list[dict[str, Any]], results: list[dict[str, Any]], train: SplitTensors,
                       recipe: ProbeRecipe) -> list[str]:
    """One line per seed whose selected probe never improved on validation after its first epoch
    (it has not trained: too few optimiser steps for its learning rate before early stopping)."""
    units = train.n_items if recipe.batch_unit == "item" else train.n_windows
    steps = -(-units // recipe.batch_size)
    lines = []
    for chosen in selected:
        record = results[chosen["index"]]
        if record["valid"] is not None and record["best_epoch"] <= 1 < record["epochs"]:
            lines.append(f"seed {chosen['seed']}: the selected probe (lr {chosen['lr']:g}, layer {chosen['layer']}) never "
                         f"improved after its first epoch ({steps} optimiser steps per epoch with {recipe.batch_unit} "
                         f"batches): it has not trained; run --grid marble, or --batch-unit window")
    return lines


@dataclass(frozen=True)
class GridOptions:
    """How a grid runs (not what it computes, except ``max_epochs``): see run_grid."""

    progress: bool = True
    max_epochs: int | None = None
    chunk_size: int | None = None
    threads: int | None = None
    checkpoint_dir: Path | None = None
    features_digest: str | None = None
    device: str | torch.device | None = None


def run_grid(data: dict[str, SplitData], recipe: ProbeRecipe, grid: GridSpec, task: str, tags: list[str],
             options: GridOptions = GridOptions()) -> GridResult:
    """Train every configuration of ``grid`` batched (``options.chunk_size`` probes at a time; results do
    not depend on it), select on validation as the recipe says (``selection``, ``selection_scope``), and
    summarise over seeds. ``threads``: torch intra-op threads while training (None: torch's setting);
    ``max_epochs``: replaces the recipe's; ``progress``: show a progress bar.

    ``checkpoint_dir``: completed chunks are saved there (atomically) under a digest of everything
    the result depends on (``features_digest``, recipe, grid, task, tags, epochs; without a
    ``features_digest`` the features' bytes are hashed), and a rerun with the same inputs trains only
    what is missing; its result equals an uninterrupted run's.

    ``device``: where the probes train (cpu, cuda, cuda:N); None: ``cuda`` when torch sees a GPU, else
    ``cpu`` (marble_eval.devices.default_device). The features go there once. CPU is the reference: on CUDA
    results agree with it within the tolerances of docs/probes.md, not bit for bit."""
    started = time.perf_counter()
    progress, max_epochs, chunk_size, threads = options.progress, options.max_epochs, options.chunk_size, options.threads
    checkpoint_dir, features_digest, device = options.checkpoint_dir, options.features_digest, options.device
    if max_epochs is not None and max_epochs < 1:
        raise MarbleEvalError(f"max_epochs {max_epochs}: probes must train at least one epoch; use --max-epochs 1 or more")
    where = probe_device(device)
    splits = {name: split.to(where) for name, split in check_data(data, task).items()}
    n_states, dim = (int(n) for n in splits["train"].features.shape[1:])
    n_labels = int(splits["train"].labels.shape[1])
    if len(tags) != n_labels:
        raise MarbleEvalError(f"{len(tags)} tag names for {n_labels} label columns; pass one name per column")
    grid.check(n_states)
    epochs = max_epochs or recipe.max_epochs
    size = chunk_size or auto_chunk_size(recipe, n_states, dim, n_labels)
    recipe_dict = RootModel[ProbeRecipe](recipe).model_dump()
    checkpoint = None
    if checkpoint_dir is not None:
        digest = grid_digest(features_digest, data, recipe_dict, asdict(grid), task, list(tags), epochs, where.type)
        checkpoint = GridCheckpoint(Path(checkpoint_dir), digest)
    with progress_bar(progress) as bar, torch_threads(threads):
        once = recipe.selection_scope == "once" and len(grid.seeds) > 1
        first = [c for c in grid.configs() if c.seed == grid.seeds[0]] if once else grid.configs()
        rest_seeds = grid.seeds[1:] if once else []
        task_id = bar.add_task("probes", total=len(first) + len(rest_seeds))
        trainer = _Trainer(splits, recipe, task, list(tags), epochs, size, checkpoint, bar, task_id)
        results = trainer.run(first, grid.seeds)
        if once:  # seed 0 chose; the other seeds train only its configuration
            chosen = results[select_index(results, grid.seeds[0], recipe.selection, task)]
            results += trainer.run([ProbeConfig(chosen["lr"], chosen["layer"], seed) for seed in rest_seeds], rest_seeds)
    selected, test_probabilities = [], []
    for seed in grid.seeds:
        index = select_index(results, seed, recipe.selection, task)
        chosen = results[index]
        selected.append({
            "seed": seed, "index": index, "lr": chosen["lr"], "layer": chosen["layer"],
            **({"aggregation": chosen["aggregation"]} if "aggregation" in chosen else {}),
            "valid": scalar_metrics(chosen["valid"]), "test": chosen["test"],
        })
        test_probabilities.append(chosen["_test_probs"])
    warnings = untrained_warnings(selected, results, splits["train"], recipe)
    configs_out = [{**{k: v for k, v in r.items() if k != "_test_probs"}, "valid": scalar_metrics(r["valid"]),
                    "test": scalar_metrics(r["test"])} for r in results]
    first_test = selected[0]["test"] or {}
    kind = task_type(task)
    score = kind.selection_for(recipe.selection)
    parts = score_parts(score)
    rule = f"mean of valid {' and '.join(parts)}" if len(parts) > 1 else f"valid {score}"
    tie = f"then valid {kind.tie_break}, " if kind.tie_break else ""
    return GridResult(
        task=task,
        tags=list(tags),
        recipe=recipe_dict,
        grid=asdict(grid),
        max_epochs=epochs,
        configs=configs_out,
        selected=selected,
        summary=summarise(selected),
        seconds=time.perf_counter() - started,
        excluded_tags=list(first_test.get("excluded_tags", [])),
        zeroed_tags=list(first_test.get("zeroed_tags", [])),
        protocol=recipe.protocol(),
        test_probabilities=test_probabilities,
        meta={"chunk_size": size, "selection": f"max {rule}, {tie}then grid order ({recipe.selection_scope})",
              "monitor": f"valid {kind.monitor}", "device": str(where), "resumed_configs": trainer.resumed,
              "warnings": warnings,
              **trainer.timing},
    )
