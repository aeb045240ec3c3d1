"""Pick the adapter for a checkpoint from its config.json, and load it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.hub import ResolvedModel, resolve_model
from marble_eval.paths import cache_root

# family name -> "module:function(ResolvedModel, family[, pooling]) -> AudioEncoder". One adapter per family.
FAMILIES: dict[str, str] = {
    "mert": "marble_eval.models.families.mert:load_mert",
    "hubert": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "wav2vec2": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "wavlm": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "data2vec-audio": "marble_eval.models.families.wav2vec2:load_wav2vec2_style",
    "ast": "marble_eval.models.families.ast:load_ast",
    "maest": "marble_eval.models.families.maest:load_maest",
    "muq": "marble_eval.models.families.muq:load_muq",
    "dasheng": "marble_eval.models.families.dasheng:load_dasheng",
    "musicfm": "marble_eval.models.families.musicfm:load_musicfm",
    "whisper": "marble_eval.models.families.whisper:load_whisper",
    "qwen2-audio": "marble_eval.models.families.whisper:load_qwen2_audio",
}
# Families whose token sequence (CLS, DIST, patches) is pooled by a named token pooling; the others
# mean-pool every hidden state over time and take no pooling option.
TOKEN_POOLING_FAMILIES = ("ast", "maest")
# config.json model_type -> family.
MODEL_TYPES: dict[str, str] = {
    "mert_model": "mert",
    "hubert": "hubert",
    "wav2vec2": "wav2vec2",
    "wavlm": "wavlm",
    "data2vec-audio": "data2vec-audio",
    "audio-spectrogram-transformer": "ast",  # MAEST checkpoints say this too; load_ast hands them to MAEST
    "maest": "maest",
    "dasheng": "dasheng",
    "whisper": "whisper",
    "qwen2_audio": "qwen2-audio",
    "qwen2_audio_encoder": "qwen2-audio",
}


def family_of(model: ResolvedModel) -> str:
    """The family named by the checkpoint's model_type (MuQ and MusicFM have none: told by their files)."""
    from marble_eval.models.families.musicfm import is_musicfm_dir

    if is_musicfm_dir(model.directory):
        return "musicfm"
    config = model.config()
    if "model_type" not in config and isinstance(config.get("w2v2_config"), dict) and "stat" in config:
        return "muq"
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise MarbleEvalError(f"{model.directory / 'config.json'}: unknown model_type {model_type!r}; pass "
                              f"--family with one of: {', '.join(sorted(FAMILIES))}")
    return MODEL_TYPES[model_type]


def family_loader(family: str) -> Callable[..., AudioEncoder]:
    """The load function of a family adapter."""
    if family not in FAMILIES:
        raise MarbleEvalError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module_name, function = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), function)


def check_pooling_option(family: str, pooling: str | None) -> None:
    """Refuse an unknown pooling, or a pooling for a family that has no token pooling (one line)."""
    if pooling is None:
        return
    from marble_eval.models.token_pooling import check_pooling

    check_pooling(pooling)
    if family not in TOKEN_POOLING_FAMILIES:
        raise MarbleEvalError(f"pooling {pooling!r}: family {family!r} mean-pools its hidden states over time and "
                              f"has no token pooling; --pooling applies to {', '.join(TOKEN_POOLING_FAMILIES)}")


def resolve(spec: str, root: Path | None = None) -> ResolvedModel:
    """Resolve a model spec; the built-in names ("fixture", "fixture-pre-ln") are tiny MERT checkpoints."""
    from marble_eval.models.tiny import BUILT_IN_MODELS, built_in_model_dir  # transformers import only when needed

    if spec in BUILT_IN_MODELS:
        return ResolvedModel(spec, built_in_model_dir(spec, root or cache_root()), None)
    return resolve_model(spec)


def load_model(spec: str, family: str | None = None, device: str = "cpu", precision: str = "fp32",
               pooling: str | None = None, root: Path | None = None) -> AudioEncoder:
    """Load any supported checkpoint (hub id, directory, or "fixture") as a frozen AudioEncoder.

    ``family`` overrides the config's model_type; ``pooling`` names a token pooling of
    marble_eval.models.token_pooling.POOLINGS (AST / MAEST only; None = the family's default).
    """
    model = resolve(spec, root)
    family = family or family_of(model)
    loader = family_loader(family)
    check_pooling_option(family, pooling)
    encoder = loader(model, family) if pooling is None else loader(model, family, pooling)
    return encoder.to(device, precision)


def load_model_like(info: ModelInfo, device: str = "cpu", precision: str = "fp32") -> AudioEncoder:
    """Load the model ``info`` describes again, with the same family and pooling (e.g. in a spawned process)."""
    return load_model(info.model_id, family=info.family, device=device, precision=precision,
                      pooling=info.extra.get("pooling"))
