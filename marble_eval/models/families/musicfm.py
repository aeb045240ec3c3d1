"""MusicFM (minzwon/MusicFM: pretrained_msd.pt / pretrained_fma.pt + msd_stats.json / fma_stats.json).

The release has no config.json: a torch checkpoint whose ``state_dict`` holds the weights under
``model.``, and a json with the mel statistics (``melspec_2048_mean`` / ``_std``). The network is the
one MuQ grew from (marble_eval.models.families.mel_conformer): its sizes are read from the weights'
shapes; the Conformer's other settings are those of facebook/wav2vec2-conformer-rope-large-960h-ft,
which MusicFM's code loads (rotary positions, swish, 16 heads, depthwise kernel from the weights).

The checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain containers only; a
file that needs anything else is refused, never unpickled. 12 x 1024 at 25 Hz; hidden states as
transformers 4.x returned them (input, layers, last after the final LayerNorm).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from transformers import Wav2Vec2ConformerConfig

from marble_eval.errors import MarbleEvalError
from marble_eval.models.families.mel_conformer import (
    FRAME_RATE,
    SAMPLE_RATE,
    TRAINING_ONLY,
    UNUSED_MISSING,
    MelConformer,
    MelConformerEncoder,
)
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import load_state_strict, model_info, read_torch_tensors

FEATURE = "melspec_2048"
# Preferred pairs (weights, statistics); the MSD model first, as MusicFM's README recommends it.
PAIRS = (("pretrained_msd.pt", "msd_stats.json"), ("pretrained_fma.pt", "fma_stats.json"))
# MusicFM trains on 30-s crops.
NATIVE_WINDOW_SECONDS = 30.0
HEADS = 16  # wav2vec2-conformer-rope-large's, which MusicFM's code builds its Conformer from
# MusicFM's front end is a module: torchaudio's window and filters are saved with the weights.
FRONT_END_KEYS = ("preprocessor_*",)
CONFORMER = {"hidden_act": "swish", "position_embeddings_type": "rotary", "rotary_embedding_base": 10000,
             "layer_norm_eps": 1e-5, "conformer_conv_dropout": 0.1, "hidden_dropout": 0.1, "attention_dropout": 0.1,
             "activation_dropout": 0.1, "layerdrop": 0.1, "max_source_positions": 5000}


def checkpoint_files(directory: Path) -> tuple[Path, Path] | None:
    """(weights .pt, statistics json) of a MusicFM directory, or None when it is not one."""
    if (directory / "config.json").exists():
        return None
    for weights, stats in PAIRS:
        if (directory / weights).exists() and (directory / stats).exists():
            return directory / weights, directory / stats
    weights, stats = sorted(directory.glob("*.pt")), sorted(directory.glob("*stats.json"))
    if len(weights) == 1 and len(stats) == 1:
        return weights[0], stats[0]
    return None


def is_musicfm_dir(directory: Path) -> bool:
    """A directory in MusicFM's release layout (a .pt and a stats json, no config.json)."""
    return checkpoint_files(directory) is not None


def _state(path: Path) -> dict[str, torch.Tensor]:
    loaded = read_torch_tensors(path)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MarbleEvalError(f"{path}: expected a dict of tensors (under 'state_dict'); not a MusicFM checkpoint")
    return {key[len("model."):] if key.startswith("model.") else key: value for key, value in state.items()}


def _conformer_config(state: dict[str, torch.Tensor], source: str) -> tuple[Wav2Vec2ConformerConfig, int, int]:
    try:
        hidden, flat = state["conv.linear.weight"].shape
        conv_dim = state["conv.conv.0.conv1.weight"].shape[0]
        intermediate = state["conformer.layers.0.ffn1.intermediate_dense.weight"].shape[0]
        kernel = state["conformer.layers.0.conv_module.depthwise_conv.weight"].shape[-1]
    except KeyError as exc:
        raise MarbleEvalError(f"{source}: missing weight {exc.args[0]!r}; not a MusicFM checkpoint") from None
    layers = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"conformer\.layers\.(\d+)\.", key)))
    fields: dict[str, Any] = dict(CONFORMER, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=HEADS if hidden % HEADS == 0 else 1,
                                  intermediate_size=intermediate, conv_depthwise_kernel_size=kernel)
    return Wav2Vec2ConformerConfig(**fields, attn_implementation="eager"), conv_dim, flat * 4 // conv_dim


def load_musicfm(model: ResolvedModel, family: str = "musicfm") -> MelConformerEncoder:
    """Load MusicFM's released checkpoint (tensors only) with its statistics, in float32."""
    files = checkpoint_files(model.directory)
    if files is None:
        raise MarbleEvalError(f"{model.directory}: a MusicFM directory holds pretrained_msd.pt and msd_stats.json "
                              f"(or the fma pair), as minzwon/MusicFM releases them")
    weights, stats_path = files
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        mean, std = float(stats[f"{FEATURE}_mean"]), float(stats[f"{FEATURE}_std"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise MarbleEvalError(f"{stats_path}: needs numbers {FEATURE}_mean and {FEATURE}_std") from None
    # The convolutional positions are never used by the Conformer encoder (and their sizes are not recorded).
    state = {key: value for key, value in _state(weights).items() if not key.startswith("conformer.pos_conv_embed.")}
    config, conv_dim, n_mels = _conformer_config(state, str(weights))
    module = MelConformer(config, conv_dim=conv_dim, n_mels=n_mels, mean=mean, std=std).eval()
    saved_filters = state.get("preprocessor_melspec_2048.mel_stft.mel_scale.fb")
    if saved_filters is not None and (saved_filters.shape != module.mel.filters.shape
                                      or not torch.allclose(saved_filters.float(), module.mel.filters, atol=1e-6)):
        raise MarbleEvalError(f"{weights}: its saved mel filters differ from MusicFM's (n_fft 2048, 128 bands)")
    load_state_strict(module, state, str(weights), family, allowed_missing=UNUSED_MISSING,
                      allowed_unexpected=TRAINING_ONLY + FRONT_END_KEYS)
    info = model_info(model, module, family, sample_rate=SAMPLE_RATE, dim=config.hidden_size,
                      n_hidden_states=config.num_hidden_layers + 1, native_window_seconds=NATIVE_WINDOW_SECONDS,
                      extra={"front_end": "log-mel 128 (n_fft 2048, hop 240), release statistics",
                             "checkpoint": weights.name, "statistics": stats_path.name, "frame_rate": FRAME_RATE,
                             "hidden_state_layout": "input, layers, last after LayerNorm"})
    return MelConformerEncoder(module, info)
