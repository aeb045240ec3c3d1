"""Tiny random checkpoints in the exact on-disk layout of the hub's MERT repos (tests, CI, `make eval`).

Real weights cannot be downloaded here, so the loading code is exercised on these: same
config.json shape (model_type "mert_model", architectures, auto_map, MERT-only fields), the
legacy weight-norm key names, a pytorch_model.bin or model.safetensors, and the remote-code
files the hub repos carry (which marble-eval must never import).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import HubertConfig, HubertModel

FIXTURE_MODEL = "fixture"
# Built-in model names accepted by --model: name -> (directory under <cache>/models, pre-LN, description).
BUILT_IN_MODELS: dict[str, tuple[str, bool, str]] = {
    FIXTURE_MODEL: ("fixture-tiny-mert", False, "tiny random MERT (post-LN, 4 layers x 32), built in; for tests"),
    "fixture-pre-ln": ("fixture-tiny-mert-pre-ln", True,
                       "tiny random MERT-v1-330M layout (pre-LN, 4 layers x 32), built in; for tests"),
}
_REMOTE_CODE = '''"""Stand-in for the hub's remote code. marble-eval must never import this file."""
raise RuntimeError("remote code was imported: marble-eval must never run a checkpoint's Python files")
'''


def tiny_mert_config(hidden_size: int = 32, layers: int = 4, pre_layer_norm: bool = False,
                     **overrides: object) -> dict:
    """A MERT-style config.json dict (HuBERT fields plus MERT's own) for a tiny model."""
    config = {
        "_name_or_path": "./tiny-mert", "architectures": ["MERTModel"], "model_type": "mert_model",
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        "attention_relax": -1.0, "deepnorm": False, "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336, "sample_rate": 24000, "torch_dtype": "float32",
        "transformers_version": "4.25.1",
        "hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": 4,
        "intermediate_size": hidden_size * 4, "hidden_act": "gelu",
        "conv_dim": [hidden_size] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "num_feat_extract_layers": 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
        "conv_bias": pre_layer_norm, "feat_extract_norm": "layer" if pre_layer_norm else "group",
        "do_stable_layer_norm": pre_layer_norm, "feat_proj_layer_norm": True, "layer_norm_eps": 1e-5,
        "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
        "layerdrop": 0.1, "vocab_size": 32, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    }
    config.update(overrides)
    return config


def legacy_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with the positional conv's weight norm under the old weight_g / weight_v names."""
    renamed = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed[key] = value.detach().clone().contiguous()
    return renamed


def build_tiny_mert(directory: Path, weights: str = "bin", seed: int = 0, pre_layer_norm: bool = False,
                    **config_overrides: object) -> Path:
    """Write a deterministic tiny random MERT checkpoint into ``directory`` (weights: bin|safetensors|both)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = tiny_mert_config(pre_layer_norm=pre_layer_norm, **config_overrides)
    hubert_fields = {k: v for k, v in config.items() if k in HubertConfig().to_dict() and k not in ("architectures", "model_type")}
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig(**hubert_fields)).eval()
    state = legacy_state_dict(model)
    if weights in ("bin", "both"):
        torch.save(state, directory / "pytorch_model.bin")
    if weights in ("safetensors", "both"):
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 24000,
    }, indent=2) + "\n")
    for name in ("configuration_MERT.py", "modeling_MERT.py"):
        (directory / name).write_text(_REMOTE_CODE)
    return directory


def fixture_model_dir(cache_root: Path) -> Path:
    """The default fixture model, built once under the cache root (rebuilt if incomplete)."""
    return built_in_model_dir(FIXTURE_MODEL, cache_root)


def built_in_model_dir(name: str, cache_root: Path) -> Path:
    """A built-in model (see BUILT_IN_MODELS), built once under the cache root (rebuilt if incomplete)."""
    folder, pre_layer_norm, _ = BUILT_IN_MODELS[name]
    directory = Path(cache_root) / "models" / folder
    if not (directory / "pytorch_model.bin").exists() or not (directory / "config.json").exists():
        staging = directory.with_name(directory.name + ".partial")
        build_tiny_mert(staging, weights="bin", seed=0, pre_layer_norm=pre_layer_norm)
        if directory.exists():
            import shutil
            shutil.rmtree(directory)
        staging.rename(directory)
    return directory
