"""Tiny random AST checkpoints in the on-disk layout of the hub's MAEST and MIT AST repos (tests only).

Same config.json shape as mtg-upf/discogs-maest-* (ASTConfig fields, 96 mel bins, max_length,
layer_norm_eps 1e-6, torch_dtype "float16", labels), ASTForAudioClassification weights under
the transformers-4.x key names (``encoder.layer.N.attention.attention.query`` ...) in
model.safetensors and/or pytorch_model.bin, MAEST's preprocessor_config.json, and a stand-in
for the hub's remote feature-extractor code that must never be imported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from marble_eval.models.families import maest_frontend as fe
from marble_eval.models.loading import build_config

# transformers 5.x parameter names -> the 4.x names the hub checkpoints use.
LEGACY_NAMES = (
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)
_REMOTE_CODE = '''"""Stand-in for the hub's remote feature extractor. marble-eval must never import this file."""
raise RuntimeError("remote code was imported: marble-eval must never run a checkpoint's Python files")
'''
_LABELS = ("Blues---Boogie Woogie", "Electronic---Techno", "Folk, World, & Country---Fado", "Jazz---Bebop")


def tiny_ast_config(hidden_size: int = 32, layers: int = 2, max_length: int = 316, num_mel_bins: int = fe.N_MELS,
                    model_type: str = "audio-spectrogram-transformer", **overrides: Any) -> dict[str, Any]:
    """A config.json dict shaped like discogs-maest's (small sizes)."""
    config = {
        "_name_or_path": "./tiny-maest", "architectures": ["ASTForAudioClassification"],
        "attention_probs_dropout_prob": 0.0, "frequency_stride": 10, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "hidden_size": hidden_size, "id2label": {str(i): label for i, label in enumerate(_LABELS)},
        "initializer_range": 0.02, "intermediate_size": hidden_size * 2,
        "label2id": {label: i for i, label in enumerate(_LABELS)}, "layer_norm_eps": 1e-06, "max_length": max_length,
        "model_type": model_type, "num_attention_heads": 4, "num_hidden_layers": layers, "num_mel_bins": num_mel_bins,
        "patch_size": 16, "qkv_bias": True, "time_stride": 10, "torch_dtype": "float16",
        "transformers_version": "4.34.0.dev0",
    }
    config.update(overrides)
    return config


def maest_preprocessor_config(max_length: int) -> dict[str, Any]:
    """The preprocessor_config.json of the hub's MAEST repos."""
    return {
        "auto_map": {"AutoFeatureExtractor": "feature_extraction_maest.MAESTFeatureExtractor"},
        "do_normalize": True, "feature_extractor_type": "MAESTFeatureExtractor", "feature_size": 1,
        "hop_length": fe.HOP_LENGTH, "log_compression": "logC", "max_length": max_length, "mean": fe.MEAN,
        "n_fft": fe.N_FFT, "num_mel_bins": fe.N_MELS, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False, "sampling_rate": fe.SAMPLE_RATE, "std": fe.STD,
    }


def legacy_ast_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under the transformers-4.x key names."""
    renamed = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in LEGACY_NAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value.detach().clone().contiguous()
    return renamed


def _write_weights(directory: Path, state: dict[str, torch.Tensor], weights: str) -> None:
    if weights not in ("bin", "safetensors", "both"):
        raise ValueError(f"weights must be bin, safetensors or both, got {weights!r}")
    if weights in ("bin", "both"):
        torch.save(state, directory / "pytorch_model.bin")
    if weights in ("safetensors", "both"):
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_maest(directory: Path, weights: str = "safetensors", seed: int = 0, max_length: int = 316,
                     model_type: str = "audio-spectrogram-transformer", preprocessor: bool = True,
                     **config_overrides: Any) -> Path:
    """Write a deterministic tiny random MAEST-layout checkpoint into ``directory`` (weights: bin|safetensors|both)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = tiny_ast_config(max_length=max_length, model_type=model_type, **config_overrides)
    torch.manual_seed(seed)
    model = ASTForAudioClassification(build_config(ASTConfig, config)).eval()
    _write_weights(directory, legacy_ast_state_dict(model), weights)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if preprocessor:
        (directory / "preprocessor_config.json").write_text(
            json.dumps(maest_preprocessor_config(max_length), indent=2) + "\n")
    (directory / "feature_extraction_maest.py").write_text(_REMOTE_CODE)
    return directory


def build_tiny_ast(directory: Path, weights: str = "safetensors", seed: int = 0, max_length: int = 100,
                   num_mel_bins: int = 128, **config_overrides: Any) -> Path:
    """Write a tiny random AST checkpoint shaped like MIT/ast-finetuned-audioset-* (ASTFeatureExtractor config)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = tiny_ast_config(max_length=max_length, num_mel_bins=num_mel_bins, _name_or_path="./tiny-ast",
                             layer_norm_eps=1e-12, torch_dtype="float32", **config_overrides)
    torch.manual_seed(seed)
    model = ASTForAudioClassification(build_config(ASTConfig, config)).eval()
    _write_weights(directory, legacy_ast_state_dict(model), weights)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    ASTFeatureExtractor(num_mel_bins=num_mel_bins, max_length=max_length).save_pretrained(str(directory))
    return directory
