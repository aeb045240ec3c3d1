"""HuBERT, wav2vec 2.0, WavLM and data2vec-audio: one adapter parameterised by the transformers class.

They share MERT's conv front-end and output layout, so MertEncoder's pooling and frame
arithmetic are reused; only the input normalisation differs: Wav2Vec2FeatureExtractor's
``do_normalize`` from preprocessor_config.json (its default, True, when the file or the
field is absent). ``tie_last_hidden_states`` makes hidden_states[-1] the final (post
LayerNorm) output for pre-LN models, as transformers 4.x returned it.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (Data2VecAudioConfig, Data2VecAudioModel, HubertConfig, HubertModel, PretrainedConfig,
                          PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel)

from marble_eval.features.audio import normalize
from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import ModelInfo
from marble_eval.models.loading import build_config, load_pretrained, preprocessor_config
from marble_eval.models.hub import ResolvedModel, fingerprint
from marble_eval.models.families.mert import MertEncoder

# family -> (config class, model class)
CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "hubert": (HubertConfig, HubertModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "wavlm": (WavLMConfig, WavLMModel),
    "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel),
}
FEATURE_EXTRACTOR = "Wav2Vec2FeatureExtractor"
DEFAULT_RATE = 16000
# Used only for masked pre-training; often absent from checkpoints.
OPTIONAL_KEYS = ("masked_spec_embed",)


class Wav2Vec2StyleEncoder(MertEncoder):
    """Conv front-end + transformer; input normalised per window when the feature extractor says so."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, do_normalize: bool) -> None:
        super().__init__(module, info)
        self.do_normalize = do_normalize

    def preprocess(self, wave: np.ndarray) -> np.ndarray:
        return normalize(wave) if self.do_normalize else wave.astype(np.float32, copy=False)


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
    module = load_pretrained(model_class, model, config, family, optional_keys=OPTIONAL_KEYS)
    info = ModelInfo(
        model_id=model.spec, family=family, sample_rate=int(preprocessor.get("sampling_rate", DEFAULT_RATE)),
        n_hidden_states=config.num_hidden_layers + 1, dim=config.hidden_size,
        n_parameters=sum(p.numel() for p in module.parameters()), fingerprint=fingerprint(model),
        revision=model.revision,
        extra={"normalize": "per-window zero mean, unit variance" if do_normalize else "none",
               "normalize_source": source, "transformers_class": model_class.__name__,
               "pre_layer_norm": bool(getattr(config, "do_stable_layer_norm", False))},
    )
    return Wav2Vec2StyleEncoder(module, info, do_normalize)
