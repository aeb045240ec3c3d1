"""MERT family (MERT-v1-95M/330M, CultureMERT-95M, CultureMERT-TA-95M) on transformers' HubertModel.

MERT's hub code is never run: its config is HuBERT plus a few fields, so we build a
HubertConfig from it (PROTOCOL 1) and let HubertModel load the weights, legacy
weight-norm keys included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import HubertConfig, HubertModel

from marble_eval.features.audio import normalize
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.hub import ResolvedModel, fingerprint

# MERT-only or bookkeeping fields that HubertConfig must not see.
DROPPED_FIELDS = ("deepnorm", "attention_relax", "feature_extractor_cqt", "feature_extractor_cqt_bins",
                  "sample_rate", "auto_map", "architectures", "model_type", "transformers_version",
                  "_name_or_path", "torch_dtype", "dtype")
# Fields that change the math of a forward pass; no public checkpoint sets them.
REFUSED_FIELDS = ("deepnorm", "feature_extractor_cqt")
DEFAULT_RATE = 24000


def hubert_config(config: dict[str, Any], source: str) -> HubertConfig:
    """The HubertConfig equivalent of a MERT config.json (refuses deepnorm / CQT front-ends)."""
    for field_name in REFUSED_FIELDS:
        if config.get(field_name):
            raise MarbleEvalError(f"{source}: `{field_name}: true` changes the model's math and is not supported; "
                                  f"no public MERT checkpoint uses it")
    kept = {key: value for key, value in config.items() if key not in DROPPED_FIELDS}
    return HubertConfig(**kept, tie_last_hidden_states=True)


class MertEncoder(AudioEncoder):
    """MERT: 24 kHz mono, per-input zero-mean unit-variance, all hidden states mean-pooled over time."""

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        return normalize(wave)

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = self.module(batch, output_hidden_states=True)
        return torch.stack([state.float().mean(dim=1) for state in outputs.hidden_states], dim=1)

    def n_frames(self, n_samples: int) -> int:
        frames = n_samples
        for kernel, stride in zip(self.module.config.conv_kernel, self.module.config.conv_stride):
            frames = (frames - kernel) // stride + 1
        return max(frames, 0)


def load_mert(model: ResolvedModel, family: str = "mert") -> MertEncoder:
    """Load a MERT-layout checkpoint in float32 without any remote code."""
    raw = model.config()
    config = hubert_config(raw, str(model.directory / "config.json"))
    module = HubertModel.from_pretrained(
        str(model.directory), config=config, dtype=torch.float32,
        use_safetensors=model.uses_safetensors(), weights_only=True, attn_implementation="sdpa",
    )
    info = ModelInfo(
        model_id=model.spec, family=family, sample_rate=int(raw.get("sample_rate", DEFAULT_RATE)),
        n_hidden_states=config.num_hidden_layers + 1, dim=config.hidden_size,
        n_parameters=sum(p.numel() for p in module.parameters()), fingerprint=fingerprint(model),
        revision=model.revision, extra={"normalize": "per-window zero mean, unit variance",
                                        "pre_layer_norm": bool(config.do_stable_layer_norm)},
    )
    return MertEncoder(module, info)
