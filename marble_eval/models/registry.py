"""Pick the adapter for a checkpoint from its config.json, and load it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder
from marble_eval.models.hub import ResolvedModel, resolve_model
from marble_eval.paths import cache_root

# family name -> "module:function(ResolvedModel, family) -> AudioEncoder". One adapter per family.
# AST and MAEST take the token pooling from the name: "maest" pools the default (patch-mean),
# "maest-<pooling>" another one of marble_eval.models.token_pooling.POOLINGS.
FAMILIES: dict[str, str] = {
    "mert": "marble_eval.models.families.mert:load_mert",
    "hubert": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "wav2vec2": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "wavlm": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "data2vec-audio": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "ast": "marble_eval.models.families.ast:load_ast",
    "ast-cls": "marble_eval.models.families.ast:load_ast",
    "ast-dist": "marble_eval.models.families.ast:load_ast",
    "ast-cls-dist-mean": "marble_eval.models.families.ast:load_ast",
    "ast-cls-dist-patch": "marble_eval.models.families.ast:load_ast",
    "maest": "marble_eval.models.families.maest:load_maest",
    "maest-cls": "marble_eval.models.families.maest:load_maest",
    "maest-dist": "marble_eval.models.families.maest:load_maest",
    "maest-cls-dist-mean": "marble_eval.models.families.maest:load_maest",
    "maest-cls-dist-patch": "marble_eval.models.families.maest:load_maest",
}
# config.json model_type -> family.
MODEL_TYPES: dict[str, str] = {
    "mert_model": "mert",
    "hubert": "hubert",
    "wav2vec2": "wav2vec2",
    "wavlm": "wavlm",
    "data2vec-audio": "data2vec-audio",
    "audio-spectrogram-transformer": "ast",  # MAEST checkpoints say this too; load_ast hands them to MAEST
    "maest": "maest",
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
    from marble_eval.models.tiny import FIXTURE_MODEL, fixture_model_dir  # transformers import only when needed

    if spec == FIXTURE_MODEL:
        return ResolvedModel(spec, fixture_model_dir(root or cache_root()), None)
    return resolve_model(spec)


def load_model(spec: str, family: str | None = None, device: str = "cpu", precision: str = "fp32",
               root: Path | None = None) -> AudioEncoder:
    """Load any supported checkpoint (hub id, directory, or "fixture") as a frozen AudioEncoder."""
    model = resolve(spec, root)
    family = family or family_of(model)
    return family_loader(family)(model, family).to(device, precision)
