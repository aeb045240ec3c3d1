"""Probe-stage benchmark: the batched grid trainer on an MTAT-sized synthetic cache.

``run(report)`` reports, through ``report(name, value, unit)``:
- this machine's fp32 matmul peak (one big torch.matmul, best of several before and after the grid);
- probes per second (and probe-epochs per second) of the batched grid: the MARBLE grid of one
  seed (6 lrs x 13 hidden states + weighted = 84 MLP probes) for ``epochs`` epochs;
- the GFLOP/s of its training (forward + backward + per-epoch validation, counted analytically,
  over the time inside the Lightning fits) and its share of the peak;
- the ceiling of that share on this machine: one training step's matmuls at the measured peak
  plus one step of the probes' vectorised Adam (probes.bank) at its measured speed. Adam reads and writes every
  parameter and both moments once per step (memory-bound, ~30 bytes per parameter) while the
  matmuls do only 4 x 64 FLOPs per parameter at batch 64, so Adam alone caps the share;
- the speed-up over training the same probes one Lightning fit at a time (the same trainer with
  one probe per fit, i.e. run_grid on a one-configuration grid). Only a few of the sequential fits
  are timed; their mean is extrapolated to all probes (the unit says how many).

``grid_speedup(device, smoke)`` (called by the GPU check, bench/gpu_check.py) times the same grid
on ``device`` and on the CPU of the same machine, and returns the speed-up as a dict.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from marble_eval.devices import probe_device
from marble_eval.lightning_utils import torch_threads
from marble_eval.probes import MARBLE_LRS, GridOptions, GridSpec, SplitData, load_recipe, run_grid
from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.core import WEIGHTED
from marble_eval.probes.data import check_data
from marble_eval.probes.recipe import EarlyStopping, ProbeRecipe
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


def adam_seconds(recipe: ProbeRecipe, n_probes: int, repeats: int = 5) -> float:
    """Best time of one optimiser step of ``n_probes`` probes as the grid trainer runs it: the bank's
    vectorised Adam over the stacked rows (one set of elementwise kernels for all probes)."""
    data = synthetic_splits(sizes=(64, 64, 64), n_states=N_STATES, dim=DIM, n_tags=N_TAGS, seed=0)
    configs = [ProbeConfig(MARBLE_LRS[k % len(MARBLE_LRS)], k % N_STATES, 0) for k in range(n_probes)]
    bank = ProbeBank(recipe, check_data(data, "multilabel"), "multilabel", configs)
    grads = {name: torch.randn(t.shape) for name, t in bank.data.items()}
    best = float("inf")
    for _ in range(repeats):
        for name, leaf in bank._leaves.items():
            leaf.grad = grads[name]
        start = time.perf_counter()
        bank._step_optimisers()
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
    result = run_grid(data, recipe, grid, "multilabel", tags, GridOptions(progress=False, max_epochs=epochs))
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
    adam = adam_seconds(recipe, len(configs))
    emit("probes.adam_step_seconds", adam, f"s per step ({n_params / 1e6:.0f} M parameters, "
         f"{28 * n_params / adam / 1e9:.0f} GB/s)")
    emit("probes.ceiling_fraction_of_peak", step_flops / peak / 1e9 / (step_flops / peak / 1e9 + adam),
         "x of matmul peak (step's matmuls at peak + Adam at its measured speed)")

    chosen = [configs[i] for i in np.linspace(0, len(configs) - 1, sequential_probes).round().astype(int)]
    start = time.perf_counter()
    for config in chosen:  # the grid trainer with one probe: one Lightning fit per probe
        run_grid(data, recipe, GridSpec([config.lr], [config.layer], [config.seed]), "multilabel", tags, GridOptions(progress=False, max_epochs=epochs))
    per_probe = (time.perf_counter() - start) / len(chosen)
    sequential = per_probe * len(configs)
    note = f"{len(chosen)} of {len(configs)} timed, extrapolated"
    emit("probes.sequential_seconds_per_probe", per_probe, f"s ({epochs} epochs)")
    emit("probes.sequential_seconds", sequential, f"s ({note})")
    emit("probes.batched_speedup", sequential / batched, f"x vs one Lightning fit at a time ({note})")
    return results


def grid_speedup(device: str, smoke: bool = False, scale: float = 0.25, epochs: int = 2,
                 threads: int | None = None) -> dict[str, Any]:
    """The probe grid on ``device`` against the CPU grid of the same machine: one seed of the MARBLE
    grid (84 MLP probes) on an MTAT-sized synthetic cache shrunk by ``scale``, ``epochs`` epochs each
    (early stopping cannot end them sooner). ``smoke``: 2% of the items, one epoch, lr 5e-3 and 1e-2 x layers 0, 6, 12 and weighted (same
    keys: 8 probes). Each device first runs a one-epoch warm-up (CUDA context, cuBLAS), which is not timed.
    Returns {device, device_name, cpu_threads, probes, epochs, items, cpu_seconds, device_seconds,
    speedup}; ``device`` cpu times the CPU twice (speed-up ~1)."""
    if smoke:
        scale, epochs = 0.02, 1
    where = probe_device(device)
    sizes = tuple(max(64, round(n * scale)) for n in MTAT_ITEMS)
    data = synthetic_splits(sizes=sizes, n_states=N_STATES, dim=DIM, n_tags=N_TAGS, dtype=np.float16, seed=0)
    tags = [f"tag{i}" for i in range(N_TAGS)]
    recipe = replace(load_recipe("mlp"), early_stopping=EarlyStopping(patience=epochs + 1))
    grid = GridSpec(list(MARBLE_LRS[-2:]), [0, 6, 12, WEIGHTED], [0]) if smoke else GridSpec.marble(N_STATES, [0])
    warm = {name: SplitData(split.features[:64], np.arange(64, dtype=np.int64) % 32, split.labels[:32])
            for name, split in data.items()}
    seconds = {}
    with torch_threads(threads):
        for name, target in (("cpu", torch.device("cpu")), ("device", where)):
            run_grid(warm, recipe, GridSpec([1e-3], [WEIGHTED], [0]), "multilabel", tags, GridOptions(progress=False, max_epochs=1, device=target))
            start = time.perf_counter()
            run_grid(data, recipe, grid, "multilabel", tags, GridOptions(progress=False, max_epochs=epochs, device=target))
            seconds[name] = time.perf_counter() - start
        cpu_threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu"
    return {"device": str(where), "device_name": name, "cpu_threads": cpu_threads, "probes": len(grid.configs()),
            "epochs": epochs, "items": sum(sizes), "cpu_seconds": round(seconds["cpu"], 3),
            "device_seconds": round(seconds["device"], 3), "speedup": round(seconds["cpu"] / seconds["device"], 2)}


def _print(name: str, value: float, unit: str) -> None:
    print(f"{name:40s} {value:12.4g} {unit}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the MTAT item counts")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sequential-probes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--speedup-device", default=None,
                        help="instead: print grid_speedup's JSON for this device (cpu, cuda, cuda:N)")
    parser.add_argument("--smoke", action="store_true", help="with --speedup-device: the smoke sizes")
    args = parser.parse_args()
    if args.speedup_device:
        print(json.dumps(grid_speedup(args.speedup_device, args.smoke, threads=args.threads)))
    else:
        run(_print, scale=args.scale, epochs=args.epochs, sequential_probes=args.sequential_probes, threads=args.threads)
