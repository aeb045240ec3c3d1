"""Pick the adapter for a checkpoint from its config.json, and load it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.models.hub import ResolvedModel, resolve_model
from marble_eval.models.tiny import FIXTURE_MODEL, fixture_model_dir
from marble_eval.paths import cache_root

# family name -> "module:function(ResolvedModel, family) -> AudioEncoder". One adapter per family.
FAMILIES: dict[str, str] = {
    "mert": "marble_eval.models.mert:load_mert",
}
# config.json model_type -> family.
MODEL_TYPES: dict[str, str] = {
    "mert_model": "mert",
}


def family_of(model: ResolvedModel) -> str:
    """The family named by the checkpoint's model_type."""
    model_type = model.config().get("model_type")
    if model_type not in MODEL_TYPES:
        raise MarbleEvalError(f"{model.directory / 'config.json'}: unknown model_type {model_type!r}; pass "
                              f"--family with one of: {', '.join(sorted(FAMILIES))}")
    return MODEL_TYPES[model_type]


def family_loader(family: str) -> Callable[[ResolvedModel, str], AudioEncoder]:
    """The load function of a family adapter."""
    if family not in FAMILIES:
        raise MarbleEvalError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module_name, function = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), function)


def resolve(spec: str, root: Path | None = None) -> ResolvedModel:
    """Resolve a model spec; "fixture" is the tiny built-in MERT checkpoint."""
    if spec == FIXTURE_MODEL:
        return ResolvedModel(spec, fixture_model_dir(root or cache_root()), None)
    return resolve_model(spec)


def load_model(spec: str, family: str | None = None, device: str = "cpu", precision: str = "fp32",
               root: Path | None = None) -> AudioEncoder:
    """Load any supported checkpoint (hub id, directory, or "fixture") as a frozen AudioEncoder."""
    model = resolve(spec, root)
    family = family or family_of(model)
    return family_loader(family)(model, family).to(device, precision)
