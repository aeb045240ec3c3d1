"""Any AST checkpoint (e.g. MIT/ast-finetuned-audioset-*) through ASTModel and transformers' ASTFeatureExtractor.

MAEST checkpoints share model_type "audio-spectrogram-transformer" but need MAEST's own
front-end: a checkpoint whose preprocessor_config.json names MAESTFeatureExtractor (or,
without one, whose config has 96 mel bins) is handed to the MAEST adapter.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from transformers import ASTConfig, ASTFeatureExtractor, ASTModel
from transformers.audio_utils import mel_filter_bank, window_function

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
FFT_LENGTH = 512
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, as the extractor's


class AstFrontEnd:
    """ASTFeatureExtractor's filterbank (its numpy path: symmetric Hann window, DC offset removed,
    pre-emphasis 0.97, 512-point power spectrum, Kaldi mel bank from 20 Hz, log with a floor), padded or
    cut to max_length frames and normalised, computed in torch on the waves' device (no host round trip).
    Agrees with the extractor to float32 rounding (tests/test_ast_frontend.py)."""

    def __init__(self, extractor: ASTFeatureExtractor) -> None:
        self.max_length = int(extractor.max_length)
        self.do_normalize = bool(extractor.do_normalize)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        with warnings.catch_warnings():  # 128 Kaldi bands over 257 bins leave one empty: the extractor's, too
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            filters = mel_filter_bank(num_frequency_bins=FFT_LENGTH // 2 + 1,
                                      num_mel_filters=extractor.num_mel_bins, min_frequency=20,
                                      max_frequency=extractor.sampling_rate // 2,
                                      sampling_rate=extractor.sampling_rate, norm=None, mel_scale="kaldi",
                                      triangularize_in_mel_space=True)
        self.filters = torch.from_numpy(np.asarray(filters, dtype=np.float32))  # [257, mel bins]
        self.window = torch.from_numpy(window_function(FRAME_LENGTH, "hann", periodic=False).astype(np.float32))

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        """[B, n] float waves -> [B, max_length, mel bins] float32 normalised log-mel, on the waves' device."""
        waves = waves.float()
        if waves.shape[1] < FRAME_LENGTH:  # no whole frame: all padding, as the extractor gives
            fbank = waves.new_zeros((waves.shape[0], 0, self.filters.shape[1]))
        else:
            frames = waves.unfold(1, FRAME_LENGTH, FRAME_SHIFT)[:, :self.max_length]  # [B, frames, 400]
            frames = frames - frames.mean(dim=-1, keepdim=True)
            frames = torch.cat([frames[..., :1] * (1 - PREEMPHASIS),
                                frames[..., 1:] - PREEMPHASIS * frames[..., :-1]], dim=-1)
            spectrum = torch.fft.rfft(frames * self.window.to(waves.device), n=FFT_LENGTH)
            power = spectrum.real.square() + spectrum.imag.square()  # [B, frames, 257]
            fbank = torch.log(torch.clamp(power @ self.filters.to(waves.device), min=MEL_FLOOR))
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, self.max_length - fbank.shape[1]))
        return (fbank - self.mean) / (self.std * 2) if self.do_normalize else fbank


class AstEncoder(SpectrogramTransformerEncoder):
    """AST: model-length windows through ASTFeatureExtractor (fbank, pad/truncate, mean/std), pooled tokens."""

    def __init__(self, module: torch.nn.Module, info: ModelInfo, extractor: ASTFeatureExtractor, pooling: str) -> None:
        super().__init__(module, info, window_samples(extractor), extractor.max_length, pooling)
        self.extractor = extractor
        self.front_end = AstFrontEnd(extractor)

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """The extractor's filterbank, on the model's device (AstFrontEnd)."""
        return self.front_end(waves)

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
