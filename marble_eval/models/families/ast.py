"""Any AST checkpoint (e.g. MIT/ast-finetuned-audioset-*) through ASTModel and transformers' ASTFeatureExtractor.

MAEST checkpoints share model_type "audio-spectrogram-transformer" but need MAEST's own
front-end: a checkpoint whose preprocessor_config.json names MAESTFeatureExtractor (or,
without one, whose config has 96 mel bins) is handed to the MAEST adapter.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import AudioEncoder, ModelInfo
from marble_eval.models.families import maest_frontend
from marble_eval.models.families.maest import load_maest
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import build_config, load_pretrained, model_info, preprocessor_config
from marble_eval.models.spectrogram_transformer import (
    HEAD_KEYS,
    HIDDEN_STATE_LAYOUT,
    SpectrogramTransformerEncoder,
    options_record,
)
from marble_eval.models.token_pooling import DEFAULT_POOLING, check_pooling, pooled_width

# ASTFeatureExtractor: Kaldi-style fbank, 25 ms frames every 10 ms at 16 kHz, no centring.
FRAME_LENGTH = 400
FRAME_SHIFT = 160


class AstEncoder(SpectrogramTransformerEncoder):
    """AST: model-length windows through ASTFeatureExtractor (fbank, pad/truncate, mean/std), pooled tokens."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, extractor: ASTFeatureExtractor, pooling: str) -> None:
        super().__init__(module, info, window_samples(extractor), extractor.max_length, pooling)
        self.extractor = extractor

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        batch = self.extractor([w for w in waves.cpu().numpy().astype(np.float32)],
                               sampling_rate=self.extractor.sampling_rate, return_tensors="np")
        return torch.from_numpy(np.asarray(batch["input_values"], dtype=np.float32)).to(waves.device)

    def spectrogram_frames(self, n_samples: int) -> int:
        return 1 + (n_samples - FRAME_LENGTH) // FRAME_SHIFT if n_samples >= FRAME_LENGTH else 0


def window_samples(extractor: ASTFeatureExtractor) -> int:
    """Samples of one model input: exactly max_length Kaldi frames."""
    return (extractor.max_length - 1) * FRAME_SHIFT + FRAME_LENGTH


def is_maest_checkpoint(model: ResolvedModel) -> bool:
    """True for MAEST's layout: its feature extractor named, or no extractor config and 96 mel bins."""
    raw = model.config()
    if raw.get("model_type") == "maest":
        return True
    preprocessor = preprocessor_config(model)
    if preprocessor is not None:
        return preprocessor.get("feature_extractor_type") == "MAESTFeatureExtractor"
    return raw.get("num_mel_bins") == maest_frontend.N_MELS



def load_ast(model: ResolvedModel, family: str = "ast", pooling: str | None = None) -> AudioEncoder:
    """Load an AST checkpoint in float32 (MAEST ones go to load_maest); ``pooling`` as in token_pooling.POOLINGS."""
    if is_maest_checkpoint(model):
        return load_maest(model, "maest", pooling)
    pooling = check_pooling(pooling or DEFAULT_POOLING)
    config = build_config(ASTConfig, model.config())
    preprocessor = preprocessor_config(model)
    extractor = (ASTFeatureExtractor.from_pretrained(str(model.directory)) if preprocessor is not None
                 else ASTFeatureExtractor())
    source = model.directory / ("preprocessor_config.json" if preprocessor is not None else "config.json")
    for name in ("num_mel_bins", "max_length"):
        if getattr(extractor, name) != getattr(config, name):
            raise MarbleEvalError(f"{source}: feature extractor {name} {getattr(extractor, name)} differs from the "
                                  f"model's {getattr(config, name)} in config.json; fix preprocessor_config.json")
    module = load_pretrained(ASTModel, model, config, family, allowed_unexpected=HEAD_KEYS)
    window = window_samples(extractor)
    info = model_info(
        model, module, family, sample_rate=extractor.sampling_rate, dim=pooled_width(config.hidden_size, pooling),
        fixed_window_seconds=window / extractor.sampling_rate,
        extra={"front_end": f"ASTFeatureExtractor (mean {extractor.mean}, std {extractor.std}, "
                            f"do_normalize {extractor.do_normalize})",
               "hidden_state_layout": HIDDEN_STATE_LAYOUT, **options_record(pooling, extractor.max_length, window)})
    return AstEncoder(module, info, extractor, pooling)
