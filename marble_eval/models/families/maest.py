"""MAEST (mtg-upf/discogs-maest-*): transformers' ASTModel with MAEST's own mel front-end.

The hub checkpoints are ASTForAudioClassification in the transformers-4.x key layout;
ASTModel.from_pretrained renames the keys and ignores the 4 classifier.* keys. The config
is always rebuilt as an ASTConfig (some copies say model_type "maest", which transformers
does not know). The front-end is in maest_frontend; windows, short clips (zero-padded)
and the pooling of CLS / DIST / patch tokens in spectrogram_transformer and token_pooling.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import ASTConfig, ASTModel

from marble_eval.errors import MarbleEvalError
from marble_eval.models.base import ModelInfo
from marble_eval.models.families import maest_frontend as fe
from marble_eval.models.hub import ResolvedModel
from marble_eval.models.loading import build_config, load_pretrained, model_info, preprocessor_config
from marble_eval.models.spectrogram_transformer import (
    HEAD_KEYS,
    HIDDEN_STATE_LAYOUT,
    SpectrogramTransformerEncoder,
    options_record,
)
from marble_eval.models.token_pooling import DEFAULT_POOLING, check_pooling, pooled_width

# preprocessor_config.json fields the front-end implements; any other value is refused.
FRONT_END_FIELDS: dict[str, Any] = {
    "sampling_rate": fe.SAMPLE_RATE, "n_fft": fe.N_FFT, "hop_length": fe.HOP_LENGTH, "num_mel_bins": fe.N_MELS,
    "log_compression": "logC", "do_normalize": True, "mean": fe.MEAN, "std": fe.STD,
    "feature_extractor_type": "MAESTFeatureExtractor",
}
PAPER_EMBEDDING = "hidden state 7 (block 6) with pooling cls-dist-patch-mean (2304-d for the 768-d models)"


class MaestEncoder(SpectrogramTransformerEncoder):
    """MAEST: 16 kHz mono, model-length windows through the MAEST log-mel front-end, pooled tokens."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, max_length: int, pooling: str) -> None:
        super().__init__(module, info, fe.window_samples(max_length), max_length, pooling)
        self.front_end = fe.MaestFrontEnd(max_length)

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        return self.front_end(waves)

    def spectrogram_frames(self, n_samples: int) -> int:
        return fe.spectrogram_frames(n_samples)


def maest_config(model: ResolvedModel) -> ASTConfig:
    """The ASTConfig of a MAEST checkpoint, checked against the front-end implemented here."""
    source = model.directory / "config.json"
    config = build_config(ASTConfig, model.config())
    if config.num_mel_bins != fe.N_MELS:
        raise MarbleEvalError(f"{source}: num_mel_bins is {config.num_mel_bins}, MAEST's front-end has {fe.N_MELS} "
                              f"mel bands; for other AST models pass --family ast")
    preprocessor = preprocessor_config(model) or {}
    expected = {**FRONT_END_FIELDS, "max_length": config.max_length}
    for name, value in expected.items():
        if name in preprocessor and preprocessor[name] != value:
            raise MarbleEvalError(f"{model.directory / 'preprocessor_config.json'}: {name} is {preprocessor[name]!r} "
                                  f"but MAEST's front-end here uses {value!r}; not a supported MAEST checkpoint")
    return config


def load_maest(model: ResolvedModel, family: str = "maest", pooling: str | None = None) -> MaestEncoder:
    """Load a MAEST checkpoint in float32; ``pooling`` is one of token_pooling.POOLINGS (default patch-mean)."""
    pooling = check_pooling(pooling or DEFAULT_POOLING)
    config = maest_config(model)
    module = load_pretrained(ASTModel, model, config, family, allowed_unexpected=HEAD_KEYS)
    window = fe.window_samples(config.max_length)
    info = model_info(
        model, module, family, sample_rate=fe.SAMPLE_RATE, dim=pooled_width(config.hidden_size, pooling),
        fixed_window_seconds=window / fe.SAMPLE_RATE,
        extra={"front_end": "maest-logmel (see marble_eval.models.families.maest_frontend)",
               "hidden_state_layout": HIDDEN_STATE_LAYOUT, "paper_embedding": PAPER_EMBEDDING,
               **options_record(pooling, config.max_length, window)})
    return MaestEncoder(module, info, config.max_length, pooling)
