"""The probe stage: recipes, the batched grid trainer, selection, resumable grid checkpoints."""

from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.data import SplitData
from marble_eval.probes.grid import DEFAULT_SEEDS, MARBLE_LRS, GridOptions, GridResult, GridSpec, run_grid
from marble_eval.probes.recipe import ProbeRecipe, known_recipes, load_recipe

__all__ = [
    "DEFAULT_SEEDS",
    "MARBLE_LRS",
    "GridOptions",
    "GridResult",
    "GridSpec",
    "ProbeBank",
    "ProbeConfig",
    "ProbeRecipe",
    "SplitData",
    "known_recipes",
    "load_recipe",
    "run_grid",
]
