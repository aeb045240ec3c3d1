"""The probe stage: recipes, the one-probe Lightning trainer, the batched grid, selection."""

from marble_eval.probes.bank import ProbeBank, ProbeConfig
from marble_eval.probes.data import SplitData
from marble_eval.probes.grid import DEFAULT_SEEDS, MARBLE_LRS, GridResult, GridSpec, run_grid
from marble_eval.probes.recipe import ProbeRecipe, known_recipes, load_recipe
from marble_eval.probes.single import ProbeModule, train_probe

__all__ = [
    "DEFAULT_SEEDS",
    "MARBLE_LRS",
    "GridResult",
    "GridSpec",
    "ProbeBank",
    "ProbeConfig",
    "ProbeModule",
    "ProbeRecipe",
    "SplitData",
    "known_recipes",
    "load_recipe",
    "run_grid",
    "train_probe",
]
