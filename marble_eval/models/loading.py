"""Shared steps of loading a checkpoint through an explicit transformers class (never remote code)."""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from marble_eval.errors import MarbleEvalError
from marble_eval.models.hub import ResolvedModel

# Bookkeeping fields of config.json that must not reach a config class built by hand.
BOOKKEEPING_FIELDS = ("architectures", "model_type", "auto_map", "transformers_version", "_name_or_path",
                      "torch_dtype", "dtype")


def build_config(config_class: type[PretrainedConfig], raw: dict[str, Any], **overrides: Any) -> PretrainedConfig:
    """A config of ``config_class`` from a config.json dict, bookkeeping fields dropped."""
    kept = {key: value for key, value in raw.items() if key not in BOOKKEEPING_FIELDS}
    kept.update(overrides)
    return config_class.from_dict(kept)


def preprocessor_config(model: ResolvedModel) -> dict[str, Any] | None:
    """The parsed preprocessor_config.json, or None when the checkpoint has none."""
    path = model.directory / "preprocessor_config.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MarbleEvalError(f"{path}: invalid JSON at line {exc.lineno}; fix or re-download it") from None


def load_pretrained(model_class: type[PreTrainedModel], model: ResolvedModel, config: PretrainedConfig,
                    family: str, optional_keys: tuple[str, ...] = ()) -> PreTrainedModel:
    """``model_class.from_pretrained`` in float32; refuses a checkpoint that leaves weights uninitialised.

    transformers only warns about missing keys (they stay random), which would silently
    benchmark a random model; ``optional_keys`` lists parameters unused at inference.
    """
    module, loading = model_class.from_pretrained(
        str(model.directory), config=config, dtype=torch.float32, use_safetensors=model.uses_safetensors(),
        weights_only=True, output_loading_info=True,
    )
    missing = sorted(key for key in loading["missing_keys"] if not any(key.endswith(name) for name in optional_keys))
    if missing:
        raise MarbleEvalError(
            f"{model.weight_files()[0]}: has no weights for {missing[0]!r} ({len(missing)} missing) as a "
            f"{model_class.__name__}; it is not a {family!r} checkpoint, pass --family with the right one")
    return module.float()
