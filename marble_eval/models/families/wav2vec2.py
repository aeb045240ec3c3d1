"""HuBERT, wav2vec 2.0, WavLM and data2vec-audio: one adapter parameterised by the transformers class.

The base of every conv-front-end + transformer model (MERT specialises it in mert.py): the
hidden states are mean-pooled over time and ``n_frames`` follows the conv strides. The input
is normalised per window exactly when Wav2Vec2FeatureExtractor would do it: ``do_normalize``
from preprocessor_config.json (its default, True, when the file or the field is absent).
``tie_last_hidden_states`` makes hidden_states[-1] the final (post LayerNorm) output for
pre-LN models, as transformers 4.x returned it.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from marble_eval.audio.decode import normalize
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import build_config, load_pretrained, model_info, preprocessor_config

# family -> (config class, model class)
CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "hubert": (HubertConfig, HubertModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "wavlm": (WavLMConfig, WavLMModel),
    "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel),
}
FEATURE_EXTRACTOR = "Wav2Vec2FeatureExtractor"
DEFAULT_RATE = 16000
# The mask embedding is used only in masked pre-training and is often absent from checkpoints.
ALLOWED_MISSING = ("masked_spec_embed",)
# Heads of the transformers task classes, unused by the base model: *ForCTC (lm_head), *ForPreTraining
# (project_hid, project_q, quantizer), *ForSequenceClassification (projector, classifier, layer_weights).
HEAD_KEYS = ("lm_head.*", "project_hid.*", "project_q.*", "quantizer.*", "projector.*", "classifier.*",
             "layer_weights")
NORMALIZED = "per-window zero mean, unit variance"


class Wav2Vec2StyleEncoder(AudioEncoder):
    """Conv front-end + transformer: every hidden state mean-pooled over time, input optionally normalised."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, do_normalize: bool) -> None:
        super().__init__(module, info)
        self.do_normalize = do_normalize

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        return normalize(wave) if self.do_normalize else wave.astype(np.float32, copy=False)

    def pooled_states(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = self.module(batch, output_hidden_states=True)
        return torch.stack([state.float().mean(dim=1) for state in outputs.hidden_states], dim=1)

    def n_frames(self, n_samples: int) -> int:
        frames = n_samples
        for kernel, stride in zip(self.module.config.conv_kernel, self.module.config.conv_stride):
            frames = (frames - kernel) // stride + 1
        return max(frames, 0)


def load_wav2vec2_style(model: ResolvedModel, family: str) -> Wav2Vec2StyleEncoder:
    """Load a hubert / wav2vec2 / wavlm / data2vec-audio checkpoint in float32 through its transformers class."""
    if family not in CLASSES:
        raise MarbleEvalError(f"family {family!r} is not wav2vec2-style; known: {', '.join(CLASSES)}")
    config_class, model_class = CLASSES[family]
    preprocessor = preprocessor_config(model)
    source = "preprocessor_config.json" if preprocessor is not None else f"{FEATURE_EXTRACTOR} default"
    preprocessor = preprocessor or {}
    kind = preprocessor.get("feature_extractor_type", FEATURE_EXTRACTOR)
    if kind != FEATURE_EXTRACTOR:
        raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: feature_extractor_type {kind!r} is "
                              f"not {FEATURE_EXTRACTOR}; family {family!r} does not fit this checkpoint")
    do_normalize = bool(preprocessor.get("do_normalize", True))
    config = build_config(config_class, model.config(), tie_last_hidden_states=True)
    module = load_pretrained(model_class, model, config, family, allowed_missing=ALLOWED_MISSING,
                             allowed_unexpected=HEAD_KEYS)
    info = model_info(model, module, family, sample_rate=preprocessor.get("sampling_rate", DEFAULT_RATE), extra={
        "normalize": NORMALIZED if do_normalize else "none", "normalize_source": source,
        "transformers_class": model_class.__name__,
        "pre_layer_norm": bool(getattr(config, "do_stable_layer_norm", False))})
    return Wav2Vec2StyleEncoder(module, info, do_normalize)
