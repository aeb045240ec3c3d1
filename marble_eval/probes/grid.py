"""The MARBLE grid (PROTOCOL 3): every (lr, layer, seed) probe of a recipe, trained batched,
selected per seed on validation, summarised over seeds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from pydantic import RootModel

from marble_eval.errors import MarbleEvalError
from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.core import WEIGHTED, EVAL_ROWS, Layer
from marble_eval.probes.data import SplitData, SplitTensors, check_data
from marble_eval.probes.evaluation import split_metrics
from marble_eval.probes.lightning_utils import make_trainer, quiet_lightning, torch_threads
from marble_eval.probes.progress import ProbeProgress, grid_progress
from marble_eval.probes.recipe import ProbeRecipe
from marble_eval.probes.selection import scalar_metrics, select_index, summarise

MARBLE_LRS = (5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
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
        """One configuration per seed: lr 1e-3 on the weighted sum of hidden states."""
        return cls([1e-3], [WEIGHTED], list(seeds))

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
    probe that diverged). ``selected``: per seed {seed, index (into configs), lr, layer, valid, test}
    with the full test metrics (per-tag ROC-AUC/AP, excluded tags). ``summary``: {metric: {mean,
    std, n}} over seeds of the selected test metrics. ``excluded_tags``: tags left out of the test
    split's macro averages (no positive, or no negative, test item)."""

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
    meta: dict[str, Any] = field(default_factory=dict)
    # Per seed (grid.seeds order): test item probabilities [n_test, T] of the selected probe.
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


def _train_chunk(
    configs: list[ProbeConfig], splits: dict[str, SplitTensors], recipe: ProbeRecipe, task: str,
    tags: list[str], max_epochs: int, callback: ProbeProgress, timing: dict[str, float],
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    bank = ProbeBank(recipe, splits, task, configs)
    with quiet_lightning():
        make_trainer(max_epochs, [callback], validate=False).fit(bank)
    trained = time.perf_counter()
    timing["train_seconds"] += trained - started
    records = bank.training_record()
    probs = {name: bank.final_probabilities(splits[name]) for name in ("valid", "test")}
    results = []
    for index, config in enumerate(configs):
        metrics = {name: split_metrics(splits[name].labels, probs[name][index], task, tags) for name in probs}
        if recipe.restore_best and records[index]["best_epoch"] == 0:  # never had a finite score
            metrics = {name: None for name in probs}
        results.append({"lr": config.lr, "layer": config.layer, "seed": config.seed, **records[index], **metrics,
                        "_test_probs": probs["test"][index].numpy().astype(np.float32)})
    timing["eval_seconds"] += time.perf_counter() - trained
    return results


def _keep_winners_probabilities(results: list[dict[str, Any]], seeds: list[int]) -> None:
    """Free the test probabilities of every configuration that is not (yet) its seed's selection.

    Selection is a total order over configurations in grid order, so the winner so far is the
    only one that can still be selected: memory stays at one [n_test, T] array per seed.
    """
    winners = set()
    for seed in seeds:
        try:
            winners.add(select_index(results, seed))
        except MarbleEvalError:
            pass  # this seed has no finished (or no finite) configuration yet
    for index, result in enumerate(results):
        if index not in winners:
            result["_test_probs"] = None


def run_grid(
    data: dict[str, SplitData],
    recipe: ProbeRecipe,
    grid: GridSpec,
    task: str,
    tags: list[str],
    progress: bool = True,
    max_epochs: int | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
) -> GridResult:
    """Train every configuration of ``grid`` batched (``chunk_size`` probes at a time; results do not
    depend on it), select per seed on validation macro ROC-AUC, and summarise over seeds.
    ``threads``: torch intra-op threads while training (None: torch's current setting)."""
    started = time.perf_counter()
    splits = check_data(data, task)
    n_states, dim = (int(n) for n in splits["train"].features.shape[1:])
    n_labels = int(splits["train"].labels.shape[1])
    if len(tags) != n_labels:
        raise MarbleEvalError(f"{len(tags)} tag names for {n_labels} label columns; pass one name per column")
    grid.check(n_states)
    epochs = max_epochs or recipe.max_epochs
    configs = grid.configs()
    size = chunk_size or auto_chunk_size(recipe, n_states, dim, n_labels)
    chunks = [configs[start : start + size] for start in range(0, len(configs), size)]
    results: list[dict[str, Any]] = []
    timing = {"train_seconds": 0.0, "eval_seconds": 0.0}
    with grid_progress(progress) as bar, torch_threads(threads):
        task_id = bar.add_task("probes", total=len(configs))
        for number, chunk in enumerate(chunks, 1):
            callback = ProbeProgress(bar, task_id, number, len(chunks))
            results += _train_chunk(chunk, splits, recipe, task, list(tags), epochs, callback, timing)
            _keep_winners_probabilities(results, grid.seeds)
    selected, test_probabilities = [], []
    for seed in grid.seeds:
        index = select_index(results, seed)
        chosen = results[index]
        selected.append({
            "seed": seed, "index": index, "lr": chosen["lr"], "layer": chosen["layer"],
            "valid": scalar_metrics(chosen["valid"]), "test": chosen["test"],
        })
        test_probabilities.append(chosen["_test_probs"])
    configs_out = [{**{k: v for k, v in r.items() if k != "_test_probs"}, "valid": scalar_metrics(r["valid"]),
                    "test": scalar_metrics(r["test"])} for r in results]
    return GridResult(
        task=task,
        tags=list(tags),
        recipe=RootModel[ProbeRecipe](recipe).model_dump(),
        grid=asdict(grid),
        max_epochs=epochs,
        configs=configs_out,
        selected=selected,
        summary=summarise(selected),
        seconds=time.perf_counter() - started,
        excluded_tags=list(selected[0]["test"]["excluded_tags"]) if selected[0]["test"] else [],
        test_probabilities=test_probabilities,
        meta={"chunk_size": size, "selection": "max valid roc_auc, then valid map, then grid order", **timing},
    )
