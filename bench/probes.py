"""Probe-stage benchmark: the batched grid trainer on an MTAT-sized synthetic cache.

``run(report)`` reports, through ``report(name, value, unit)``:
- this machine's fp32 matmul peak (one big torch.matmul, best of several before and after the grid);
- probes per second (and probe-epochs per second) of the batched grid: the MARBLE grid of one
  seed (6 lrs x 13 hidden states + weighted = 84 MLP probes) for ``epochs`` epochs;
- the GFLOP/s of its training (forward + backward + per-epoch validation, counted analytically,
  over the time inside the Lightning fits) and its share of the peak;
- the ceiling of that share on this machine: one training step's matmuls at the measured peak
  plus one step of the probes' Adams (one fused torch.optim.Adam per probe) at its measured speed. Adam reads and writes every
  parameter and both moments once per step (memory-bound, ~30 bytes per parameter) while the
  matmuls do only 4 x 64 FLOPs per parameter at batch 64, so Adam alone caps the share;
- the speed-up over training the same probes one Lightning fit at a time (the same trainer with
  one probe per fit, i.e. run_grid on a one-configuration grid). Only a few of the sequential fits
  are timed; their mean is extrapolated to all probes (the unit says how many).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from marble_eval.lightning_utils import torch_threads
from marble_eval.probes import GridSpec, load_recipe, run_grid
from marble_eval.probes.core import WEIGHTED
from marble_eval.probes.recipe import ProbeRecipe
from marble_eval.probes.synthetic import synthetic_splits

Report = Callable[[str, float, str], None]
MTAT_ITEMS = (15_244, 1_529, 4_332)  # PROTOCOL 5, clean split
N_STATES, DIM, N_TAGS = 13, 768, 50


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a size x size matmul on the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def adam_seconds(params_per_probe: int, n_probes: int, repeats: int = 5) -> float:
    """Best time of one optimiser step of ``n_probes`` probes as the grid trainer runs it: one
    torch.optim.Adam(fused=True) per probe over its row of a stacked [n_probes, params_per_probe] tensor."""
    stacked, grads = torch.zeros(n_probes, params_per_probe), torch.randn(n_probes, params_per_probe)
    optimizers = []
    for row in range(n_probes):
        param = stacked[row]
        param.grad = grads[row]
        optimizers.append(torch.optim.Adam([param], lr=1e-3, fused=True))
    best = float("inf")
    for _ in range(repeats + 1):  # the first step allocates the moments
        start = time.perf_counter()
        for optimizer in optimizers:
            optimizer.step()
        best = min(best, time.perf_counter() - start)
    return best


def head_params(recipe: ProbeRecipe) -> int:
    """Trained parameters of one probe head (the weighted sum's 12 logits left out)."""
    widths = [DIM, N_TAGS] if recipe.hidden_dim is None else [DIM, recipe.hidden_dim, N_TAGS]
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def probe_flops(recipe: ProbeRecipe, layer: object, n_train: int, n_valid: int, epochs: int) -> float:
    """Floating-point operations of one probe: per epoch forward + backward on the training windows
    and a forward on the validation windows (the final valid/test evaluation is left out)."""
    widths = [DIM, N_TAGS] if recipe.hidden_dim is None else [DIM, recipe.hidden_dim, N_TAGS]
    products = sum(a * b for a, b in zip(widths, widths[1:]))
    forward = 2 * products
    weight_grads = 2 * products
    hidden_grads = 2 * (products - widths[0] * widths[1])  # no gradient into the frozen features...
    if layer == WEIGHTED:  # ...except through the weighted sum of states
        hidden_grads += 2 * widths[0] * widths[1] + 3 * 2 * (N_STATES - 1) * DIM
    train = n_train * (forward + weight_grads + hidden_grads)
    return epochs * (train + n_valid * forward)


def run(report: Report, scale: float = 1.0, epochs: int = 2, seeds: tuple[int, ...] = (0,),
        sequential_probes: int = 3, recipe_name: str = "mlp", threads: int | None = None,
        quick: bool = False) -> dict[str, float]:
    """Measure and report; returns the numbers by name. ``scale`` shrinks the item counts;
    ``threads`` sets torch's intra-op threads for the whole run (None: leave torch's setting);
    ``quick``: a smoke run (5% of the items, one epoch, one sequential fit)."""
    if quick:
        scale, epochs, sequential_probes = 0.05, 1, 1
    with torch_threads(threads):
        return _measure(report, scale, epochs, seeds, sequential_probes, recipe_name)


def _measure(report: Report, scale: float, epochs: int, seeds: tuple[int, ...], sequential_probes: int,
             recipe_name: str) -> dict[str, float]:
    results: dict[str, float] = {}

    def emit(name: str, value: float, unit: str) -> None:
        results[name] = value
        report(name, value, unit)

    threads = torch.get_num_threads()
    emit("probes.torch_threads", threads, "threads")
    peak_before = matmul_peak_gflops()  # measured again after the grid: the best of both is the peak

    sizes = tuple(max(64, round(n * scale)) for n in MTAT_ITEMS)
    data = synthetic_splits(sizes=sizes, n_states=N_STATES, dim=DIM, n_tags=N_TAGS, dtype=np.float16, seed=0)
    tags = [f"tag{i}" for i in range(N_TAGS)]
    recipe = load_recipe(recipe_name)
    grid = GridSpec.marble(N_STATES, list(seeds))
    configs = grid.configs()
    emit("probes.cache_items", sum(sizes), f"items ({'/'.join(map(str, sizes))}, {N_STATES}x{DIM} fp16, {N_TAGS} tags)")

    start = time.perf_counter()
    result = run_grid(data, recipe, grid, "multilabel", tags, progress=False, max_epochs=epochs)
    batched = time.perf_counter() - start
    epochs_run = sum(c["epochs"] for c in result.configs)
    emit("probes.batched_seconds", batched, f"s ({len(configs)} {recipe_name} probes, {epochs} epochs)")
    emit("probes.batched_probes_per_s", len(configs) / batched, f"probes/s at {epochs} epochs")
    emit("probes.batched_probe_epochs_per_s", epochs_run / batched, "probe-epochs/s")
    flops = sum(probe_flops(recipe, c.layer, sizes[0], sizes[1], c_epochs["epochs"])
                for c, c_epochs in zip(configs, result.configs))
    training = result.meta["train_seconds"]
    peak = max(peak_before, matmul_peak_gflops())
    emit("probes.matmul_peak_fp32", peak, "GFLOP/s (best before and after the grid; shared machines vary)")
    emit("probes.batched_train_seconds", training, "s inside the fits (the rest: final valid/test metrics)")
    achieved = flops / training / 1e9
    emit("probes.batched_train_gflops", achieved, "GFLOP/s")
    emit("probes.batched_fraction_of_peak", achieved / peak, "x of matmul peak")
    n_params = head_params(recipe) * len(configs)
    step_flops = sum(probe_flops(recipe, c.layer, recipe.batch_size, 0, 1) for c in configs)
    adam = adam_seconds(head_params(recipe), len(configs))
    emit("probes.adam_step_seconds", adam, f"s per step ({n_params / 1e6:.0f} M parameters, "
         f"{28 * n_params / adam / 1e9:.0f} GB/s)")
    emit("probes.ceiling_fraction_of_peak", step_flops / peak / 1e9 / (step_flops / peak / 1e9 + adam),
         "x of matmul peak (step's matmuls at peak + Adam at its measured speed)")

    chosen = [configs[i] for i in np.linspace(0, len(configs) - 1, sequential_probes).round().astype(int)]
    start = time.perf_counter()
    for config in chosen:  # the grid trainer with one probe: one Lightning fit per probe
        run_grid(data, recipe, GridSpec([config.lr], [config.layer], [config.seed]), "multilabel", tags,
                 progress=False, max_epochs=epochs)
    per_probe = (time.perf_counter() - start) / len(chosen)
    sequential = per_probe * len(configs)
    note = f"{len(chosen)} of {len(configs)} timed, extrapolated"
    emit("probes.sequential_seconds_per_probe", per_probe, f"s ({epochs} epochs)")
    emit("probes.sequential_seconds", sequential, f"s ({note})")
    emit("probes.batched_speedup", sequential / batched, f"x vs one Lightning fit at a time ({note})")
    return results


def _print(name: str, value: float, unit: str) -> None:
    print(f"{name:40s} {value:12.4g} {unit}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the MTAT item counts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sequential-probes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    run(_print, scale=args.scale, epochs=args.epochs, sequential_probes=args.sequential_probes, threads=args.threads)
