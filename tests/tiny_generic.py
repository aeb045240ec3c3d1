"""Tiny random HuBERT / wav2vec2 / WavLM / data2vec-audio checkpoints as transformers saves them, and a
weights editor for the refusal tests (tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Data2VecAudioForCTC, HubertForCTC, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, WavLMForCTC

from marble_eval.models.families.wav2vec2 import CLASSES

CTC_CLASSES = {"hubert": HubertForCTC, "wav2vec2": Wav2Vec2ForCTC, "wavlm": WavLMForCTC,
               "data2vec-audio": Data2VecAudioForCTC}


def tiny_config_fields(hidden_size: int = 32, layers: int = 2, pre_layer_norm: bool = False) -> dict[str, Any]:
    """Small sizes for any of the wav2vec2-style config classes."""
    return {
        "hidden_size": hidden_size, "num_hidden_layers": layers, "num_attention_heads": 4,
        "intermediate_size": hidden_size * 2, "conv_dim": [hidden_size] * 7, "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4, "do_stable_layer_norm": pre_layer_norm, "conv_bias": pre_layer_norm,
        "feat_extract_norm": "layer" if pre_layer_norm else "group", "vocab_size": 32,
        "num_buckets": 32, "max_bucket_distance": 64,  # WavLM only; ignored by the others
    }


def build_tiny_wav2vec2_style(directory: Path, family: str, seed: int = 0, pre_layer_norm: bool = False,
                              do_normalize: bool | None = True, ctc_head: bool = False,
                              weights: str = "safetensors", **config_overrides: Any) -> Path:
    """Write a tiny random checkpoint of ``family`` with save_pretrained.

    ``do_normalize=None`` writes no preprocessor_config.json; ``ctc_head`` saves the ForCTC model
    (keys prefixed like the fine-tuned hub checkpoints); ``weights`` is safetensors or bin.
    """
    directory = Path(directory)
    config_class, model_class = CLASSES[family]
    config = config_class(**{**tiny_config_fields(pre_layer_norm=pre_layer_norm), **config_overrides})
    torch.manual_seed(seed)
    model = (CTC_CLASSES[family] if ctc_head else model_class)(config).eval()
    model.save_pretrained(str(directory))
    if weights == "bin":
        (directory / "model.safetensors").unlink()
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "pytorch_model.bin")
    if do_normalize is not None:
        Wav2Vec2FeatureExtractor(do_normalize=do_normalize, sampling_rate=16000,
                                 return_attention_mask=pre_layer_norm).save_pretrained(str(directory))
    return directory


def edit_weights(path: Path, delete: str | None = None, add: str | None = None) -> None:
    """Rewrite a model.safetensors with one tensor deleted and/or one extra (zeros) tensor added."""
    state = load_file(str(path))
    if delete is not None:
        del state[delete]
    if add is not None:
        state[add] = torch.zeros(3)
    save_file(state, str(path), metadata={"format": "pt"})
